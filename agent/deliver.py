"""Delivery of spooled packages: the HTTP and directory senders, backoff, and the retry schedule.

Owns the endpoint conversation and per-package retry timing; the outbox owns durability.
No threads and no sleeps here: the runtime calls ``Deliverer.step()`` in its own loop.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import json
import math
import os
import random
import re
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import SplitResult, unquote, urlsplit

import certifi
import httpx
import structlog

from acqharvest import __version__, logs
from acqharvest.durable import fsync_dir, replace_durably, writable_folder
from acqharvest.model import EndpointSettings, Receipt
from acqharvest.urls import credential_parameters, is_loopback

# re-exported: the runtime and the tests import it from the delivery stage
from acqharvest.urls import safe_url as safe_url

#: response text kept in a rejection reason or a retry detail.
RESPONSE_TEXT_CAP = 2048
#: response text kept of a 401, 403 or 407: the answers in which endpoints echo the
#: credentials they refused, so little of them is worth keeping.
AUTH_TEXT_CAP = 200
_AUTH_REFUSALS = frozenset({401, 403, 407})
#: the header marking ``acqharvest check``'s request, which the endpoint answers like a
#: package (authentication included) but stores nothing for (README, "The HTTP contract").
PROBE_HEADER = "Acqharvest-Probe"
#: most bytes of an answer that are read; a receipt is far smaller, the rest is dropped.
RESPONSE_BODY_CAP = 64 * 1024
#: a Retry-After longer than this is treated as this (a misconfigured endpoint must not
#: park a package for days).
RETRY_AFTER_CAP = 3600.0
DEFAULT_USER_AGENT = f"acqharvest/{__version__}"

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")
_TOKEN = re.compile(r"[\x21-\x7e]+")

log = structlog.get_logger(__name__)


class DeliveryConfigError(Exception):
    """The endpoint settings cannot work (missing token, bad URL, unreadable CA bundle)."""


class Sender(Protocol):
    """Delivers one package's bytes and says what happened; never raises for the endpoint."""

    def send(self, package_id: str, body: bytes) -> Receipt: ...

    def close(self) -> None: ...

    def probe(self) -> tuple[bool, str]:
        """Whether the endpoint would take packages (for ``acqharvest check``), and how;
        nothing is stored by asking."""
        ...


class PendingPackages(Protocol):
    """What the deliverer needs from the outbox (``acqharvest.outbox.Outbox`` fits)."""

    def pending(self) -> list[str]: ...

    def body(self, package_id: str) -> bytes: ...

    def attempts(self, package_id: str) -> int: ...

    def confirm(self, package_id: str, http_status: int | None, detail: str) -> None: ...

    def reject(self, package_id: str, http_status: int | None, detail: str) -> None: ...

    def note_failure(self, package_id: str, detail: str) -> None: ...


# --------------------------------------------------------------------------- token


def read_token(settings: EndpointSettings) -> str | None:
    """The bearer token from ``token_file`` (preferred) or ``token_env``; None if neither is set.

    Errors name the file or variable, never the token.
    """
    if settings.token_file is not None:
        path = settings.token_file
        try:
            token = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise DeliveryConfigError(f"token file {path} does not exist") from None
        except UnicodeDecodeError:
            raise DeliveryConfigError(f"token file {path} is not UTF-8 text") from None
        except OSError as exc:
            raise DeliveryConfigError(f"cannot read token file {path}: {exc.strerror}") from None
        if not token:
            raise DeliveryConfigError(f"token file {path} is empty")
        warn_if_readable_by_others(path, "token_file_permissions")
        source = f"token file {path}"
    elif settings.token_env is not None:
        value = os.environ.get(settings.token_env)
        if value is None:
            raise DeliveryConfigError(f"environment variable {settings.token_env} is not set")
        token = value.strip()
        if not token:
            raise DeliveryConfigError(f"environment variable {settings.token_env} is empty")
        source = f"environment variable {settings.token_env}"
    else:
        return None
    # A control character or space would otherwise surface in an HTTP library error
    # that quotes the header, token included.
    if not _TOKEN.fullmatch(token):
        raise DeliveryConfigError(f"the token in {source} contains spaces or control characters")
    return token


def warn_if_readable_by_others(path: Path, event: str) -> None:
    """Log ``event`` when a secret file (token, private key) is open to other users."""
    if os.name != "posix":
        return
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return  # the caller reports an unreadable file itself
    if mode & 0o077:
        log.warning(
            event,
            path=str(path),
            mode=oct(mode),
            hint=f"other users may read it; run: chmod 600 {path}",
        )


# --------------------------------------------------------------------------- backoff


def backoff_delay(
    attempt: int,
    *,
    base: float = 1.0,
    cap: float,
    retry_after: float | None,
    rng: random.Random,
) -> float:
    """Seconds to wait before attempt ``attempt + 1``: capped exponential, "equal" jitter.

    ``attempt`` counts failures so far (1 after the first). The delay is drawn from the
    upper half of the exponential step, so jitter spreads many agents apart while a
    failing endpoint still gets at most one attempt per half step (no retry storm). A
    ``retry_after`` from the endpoint is a floor, itself capped at ``RETRY_AFTER_CAP``.
    """
    exponent = min(max(attempt - 1, 0), 60)
    step = min(cap, base * 2.0**exponent)
    delay = rng.uniform(step / 2.0, step)
    if retry_after is not None:
        delay = max(delay, min(max(retry_after, 0.0), RETRY_AFTER_CAP))
    return delay


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date); None if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


# --------------------------------------------------------------------------- senders


#: OpenSSL certificate verification codes that call for their own advice.
_CERT_NOT_YET_VALID = 9
_CERT_EXPIRED = 10
_HOSTNAME_MISMATCH = 62
#: TLS alerts by which a server says it wants a (different) client certificate.
_CLIENT_CERT_ALERTS = (
    "CERTIFICATE_REQUIRED",
    "HANDSHAKE_FAILURE",
    "UNKNOWN_CA",
    "BAD_CERTIFICATE",
    "CERTIFICATE_UNKNOWN",
    "CERTIFICATE_EXPIRED",
    "ACCESS_DENIED",
)


def _no_password() -> bytes:
    # Without a callback OpenSSL asks for the pass phrase on the terminal: a service would
    # hang. An empty answer makes an encrypted key fail to load, with a clear error.
    return b""


def _verifying_context(cafile: Path | None) -> ssl.SSLContext:
    """A client context that verifies certificates and host names and logs no TLS keys.

    Built by hand rather than with ``ssl.create_default_context``, which opens the file
    named by ``SSLKEYLOGFILE`` and would write every session key there: anyone setting
    that variable on the service could decrypt the traffic, token included.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname, CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.keylog_filename = None  # type: ignore[assignment]
    if cafile is not None:
        context.load_verify_locations(cafile=str(cafile))
    else:
        context.load_default_certs()
        context.load_verify_locations(cafile=certifi.where())
    return context


def tls_context(settings: EndpointSettings) -> ssl.SSLContext:
    """The verifying TLS context for https, with the client certificate when one is set.

    Trust comes from ``ca_bundle`` alone when it is set, else from the operating system's
    store plus the certifi (Mozilla) bundle. Errors name the files, never their content.
    """
    try:
        context = _verifying_context(settings.ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        raise DeliveryConfigError(
            f"cannot load endpoint.ca_bundle {settings.ca_bundle}: {exc}"
        ) from None
    if settings.client_key is not None and settings.client_cert is None:
        raise DeliveryConfigError("endpoint.client_key is set but endpoint.client_cert is not")
    if settings.client_cert is not None:
        _load_client_certificate(context, settings.client_cert, settings.client_key)
    return context


def _load_client_certificate(context: ssl.SSLContext, cert: Path, key: Path | None) -> None:
    key_file = key or cert  # a PEM file may hold the certificate and its key
    for name, path in (("client_cert", cert), ("client_key", key_file)):
        if not path.is_file():
            raise DeliveryConfigError(f"endpoint.{name} {path} does not exist or is not a file")
    warn_if_readable_by_others(key_file, "client_key_permissions")
    try:
        context.load_cert_chain(str(cert), str(key_file), password=_no_password)
    except ssl.SSLError as exc:
        raise DeliveryConfigError(
            f"cannot use endpoint.client_cert {cert} with the key in {key_file} "
            f"({exc.reason or 'unreadable or encrypted key'}); both must be PEM, the key "
            "unencrypted and matching the certificate"
        ) from None
    except OSError as exc:
        raise DeliveryConfigError(
            f"cannot read endpoint.client_cert {cert} or its key {key_file}: {exc.strerror}"
        ) from None


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def body_digest(body: bytes) -> str:
    """The ``sha256`` an endpoint's receipt may echo: hex SHA-256 of the request body."""
    return hashlib.sha256(body).hexdigest()


def _json_object(content: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(content)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


_TITLE = re.compile(r"<title[^>]*>(.*?)</title", re.IGNORECASE | re.DOTALL)


def _not_a_receipt(
    status: int, content_type: str, content: bytes, where: str, text: str
) -> str | None:
    """Why a 2xx or 409 cannot be an ingest endpoint's answer; None when it can.

    Only an empty body or a JSON object can be: a wrong URL that lands on a web page or
    a login portal answers 2xx to anything, with HTML, and must not empty the outbox.
    ``text`` is the masked answer, shown in short (the page title when there is one).
    """
    html = "html" in content_type.lower()
    if not html and (not content.strip() or _json_object(content) is not None):
        return None
    title = _TITLE.search(text)
    shown = " ".join((title.group(1) if title else text).split())[:120]
    what = f"{content_type or 'no Content-Type'}" + (f", {shown!r}" if shown else "")
    return (
        f"HTTP {status} from {where} is not a receipt ({what}): a web page or a login portal "
        "answers 2xx to anything, so check endpoint.url; only an empty answer or a JSON "
        "receipt confirms a package"
    )


def _receipt_problem(
    package_id: str,
    body: bytes,
    status: int,
    content: bytes,
    *,
    require_receipt: bool,
    redact: Callable[[str], str],
) -> str | None:
    """Why a 2xx or 409 answer (empty or a JSON object) does not confirm the package; None
    when it does.

    A receipt is a JSON object with a ``package_id`` (and optionally the ``sha256`` of
    the body). Without one, the answer confirms unless ``require_receipt`` is set. Echoed
    values are masked by ``redact`` before they are cut, so no token prefix shows.
    """
    document = _json_object(content)
    if document is None or "package_id" not in document:
        if require_receipt:
            return (
                f"HTTP {status} without a receipt naming the package "
                "(endpoint.require_receipt is set); not counted as delivered"
            )
        return None
    echoed = str(document["package_id"])
    if echoed != package_id:
        return (
            f"endpoint confirmed a different package_id {redact(echoed)[:100]!r} "
            f"(sent {package_id}); not counted as delivered"
        )
    digest = document.get("sha256")
    if digest is not None and str(digest).lower() != body_digest(body):
        return (
            f"endpoint's receipt has sha256 {redact(str(digest))[:64]!r}, but the body sent "
            f"has {body_digest(body)}; not counted as delivered"
        )
    return None


#: answers that say the endpoint as a whole cannot take packages now (a wrong URL, an
#: expired token, a proxy wanting credentials), whichever package is sent.
_ENDPOINT_WIDE_ADVICE = {
    401: "the endpoint does not accept the token: check token_file/token_env (expired?)",
    403: "the endpoint refuses this client: check the token's permissions",
    404: "nothing at this URL takes packages: check endpoint.url",
    405: "this URL does not take POST requests: check endpoint.url",
    407: "the proxy wants credentials: put them in endpoint.proxy (http://user:pass@host:port)",
}
#: 4xx answers about the one package sent: it is kept aside as rejected.
PACKAGE_REJECTIONS = frozenset({400, 413, 415, 422})


def is_endpoint_wide(http_status: int | None) -> bool:
    """Whether an answer means the endpoint itself is misconfigured, not the package.

    Redirects, 401/403/404/405/407 and any 4xx that is not about the package
    (``PACKAGE_REJECTIONS``) or a plain retry (408, 425, 429).
    """
    if http_status is None:
        return False
    if 300 <= http_status < 400:
        return True
    return (
        400 <= http_status < 500
        and http_status not in PACKAGE_REJECTIONS
        and http_status not in (408, 409, 425, 429)
    )


def _endpoint_wide_detail(
    status: int, location: str | None, text: str, advice: str | None = None
) -> str:
    if 300 <= status < 400:
        target = location or "(no Location header)"
        return (
            f"HTTP {status}: the endpoint redirects to {target}: set endpoint.url to it "
            "(redirects are never followed: a package must not silently go elsewhere)"
        )
    advice = advice or _ENDPOINT_WIDE_ADVICE.get(
        status, "the endpoint refuses every package this way"
    )
    return f"HTTP {status}: {advice}; retried with backoff, nothing is rejected: {text}"


class _Deadline:
    """Cuts an exchange off after ``seconds`` by shutting its socket down.

    httpx's timeout limits each read, so an endpoint dripping a byte at a time could hold
    one attempt forever; this bounds connecting, sending and reading the answer together.
    The socket comes from httpcore's trace events (the last connection made: one request
    at a time goes through a sender).
    """

    def __init__(self, stream: Callable[[], object | None], seconds: float) -> None:
        self._stream = stream
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self.expired = False

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def _expire(self) -> None:
        self.expired = True
        stream = self._stream()
        get_info = getattr(stream, "get_extra_info", None)
        sock = get_info("socket") if get_info is not None else None
        if isinstance(sock, socket.socket):
            # the plain socket's shutdown: SSLSocket.shutdown would tear its TLS state down
            # under the reading thread; this only makes that read return at once.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _read_capped(response: httpx.Response, cap: int) -> bytes:
    """Up to ``cap`` bytes of the answer; the rest is left unread (the connection is dropped)."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        chunks.append(chunk[: cap - size])
        size += len(chunk)
        if size >= cap:
            break
    return b"".join(chunks)


def _proxy(settings: EndpointSettings, url_parts: SplitResult) -> httpx.Proxy | None:
    if settings.proxy is None:
        return None
    parts = urlsplit(settings.proxy)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DeliveryConfigError(
            f"endpoint.proxy {safe_url(settings.proxy)} is not an http:// or https:// URL"
        )
    if url_parts.scheme != "https":
        raise DeliveryConfigError(
            "endpoint.proxy is set but endpoint.url is plain http: the proxy would see the "
            "packages and the token; use an https endpoint (tunnelled, TLS end to end)"
        )
    if parts.password:
        logs.register_secret(parts.password)
        logs.register_secret(unquote(parts.password))
    # A https proxy is verified like any endpoint without a ca_bundle.
    context = _verifying_context(None) if parts.scheme == "https" else None
    return httpx.Proxy(settings.proxy, ssl_context=context)


class HttpSender:
    """POSTs packages over one kept-alive, TLS-verified ``httpx.Client``.

    The environment is never trusted: no ``HTTP(S)_PROXY``/``ALL_PROXY`` (a proxy would
    see a plain-http loopback exchange, token included), no ``.netrc``, no
    ``SSL_CERT_FILE``, no ``SSLKEYLOGFILE``. A proxy is used only when configured.
    """

    def __init__(
        self,
        settings: EndpointSettings,
        token: str | None,
        *,
        user_agent: str = DEFAULT_USER_AGENT,
    ) -> None:
        if not settings.url:
            raise DeliveryConfigError("endpoint.url is required for an http endpoint")
        parts = urlsplit(settings.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DeliveryConfigError(
                f"endpoint.url {safe_url(settings.url)} is not an http(s) URL"
            )
        if parts.username is not None or parts.password is not None:
            raise DeliveryConfigError(
                f"endpoint.url {safe_url(settings.url)} carries a user name or password; "
                "put the credential in token_file or token_env"
            )
        if credential_parameters(settings.url):
            raise DeliveryConfigError(
                f"endpoint.url {safe_url(settings.url)} carries a credential in its query "
                f"({', '.join(credential_parameters(settings.url))}); put it in token_file or "
                "token_env"
            )
        if (
            parts.scheme == "http"
            and not settings.allow_plaintext
            and not is_loopback(parts.hostname)
        ):
            raise DeliveryConfigError(
                f"endpoint.url {safe_url(settings.url)} is plain http to a remote host; "
                "use https or set endpoint.allow_plaintext"
            )
        context = tls_context(settings)
        proxy = _proxy(settings, parts)
        self._url = settings.url
        self._display_url = safe_url(settings.url)
        self._host = parts.hostname
        self._timeout = settings.timeout_seconds
        self._settings = settings
        self._token = token
        #: masks every token this sender has used, raw and in the forms an echo may take
        self._masker = logs.Masker([token] if token else [])
        self._client_cert = settings.client_cert
        self._require_receipt = settings.require_receipt
        #: the network stream of the last connection opened, for ``_Deadline``
        self._stream: object | None = None
        headers = {
            "Content-Type": "application/json",
            "User-Agent": user_agent,
            # a compressed answer could expand far beyond RESPONSE_BODY_CAP as it is read
            "Accept-Encoding": "identity",
        }
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(
            verify=context,
            timeout=httpx.Timeout(settings.timeout_seconds),
            headers=headers,
            follow_redirects=False,
            trust_env=False,
            proxy=proxy,
        )

    def _redact(self, text: str) -> str:
        return self._masker(text)

    def _excerpt(self, content: bytes, status: int) -> str:
        """The answer as text for a message: masked whole, then cut, so that an echo of the
        token straddling the cut cannot show its first characters."""
        text = self._redact(content.decode("utf-8", errors="replace"))
        return text[: AUTH_TEXT_CAP if status in _AUTH_REFUSALS else RESPONSE_TEXT_CAP]

    def _auth_advice(self, status: int) -> str | None:
        """What to do about a 401 or 403, naming where the token comes from."""
        if status not in (401, 403):
            return None
        if self._token is None:
            return (
                "the endpoint wants a token and none is configured: set endpoint.token_file "
                "or endpoint.token_env"
            )
        token, fresh = "the token", ""
        if self._settings.token_file is not None:
            token = f"the token from token file {self._settings.token_file}"
            fresh = " (read again after each 401)"
        elif self._settings.token_env is not None:
            token = f"the token from environment variable {self._settings.token_env}"
        if status == 401:
            return (
                f"the endpoint does not accept {token}{fresh}: replace it if it expired or "
                "was revoked"
            )
        return (
            f"the endpoint refuses this client: {token} lacks the permission to post to "
            "this URL, or the client certificate or address is not allowed"
        )

    def _reload_token(self) -> bool:
        """Read ``token_file`` again after a 401, so that a token rotated while the daemon
        runs is used without a restart; True when it holds a new token."""
        path = self._settings.token_file
        if path is None or self._token is None:
            return False
        try:
            token = read_token(self._settings)
        except DeliveryConfigError as error:
            log.warning("token_reload_failed", error=str(error), action="the old token is kept")
            return False
        if token is None or token == self._token:
            return False
        logs.register_secret(token)
        self._masker.add(token)
        self._token = token
        self._client.headers["Authorization"] = f"Bearer {token}"
        log.info(
            "token_reloaded",
            path=str(path),
            reason="the endpoint refused the token read before (HTTP 401)",
        )
        return True

    def _trace(self, event: str, info: dict[str, object]) -> None:
        if event.endswith(("connect_tcp.complete", "start_tls.complete")):
            self._stream = info.get("return_value")

    def send(self, package_id: str, body: bytes) -> Receipt:
        receipt = self._post(package_id, body)
        if receipt.http_status == 401 and self._reload_token():
            # the same bytes and key again, now with the new token: an idempotent resend
            receipt = self._post(package_id, body)
        return receipt

    def _post(self, package_id: str, body: bytes) -> Receipt:
        answer = self._exchange(body, {"Idempotency-Key": package_id})
        if isinstance(answer, str):
            return Receipt(package_id, "retry", None, answer)
        return self._judge(package_id, body, *answer)

    def _exchange(self, body: bytes, headers: dict[str, str]) -> tuple[httpx.Response, bytes] | str:
        """POST ``body``: the response and up to ``RESPONSE_BODY_CAP`` bytes of its body, or
        why there is none (a timeout, a connection or TLS failure), masked."""
        deadline = _Deadline(lambda: self._stream, self._timeout)
        try:
            with (
                deadline,
                self._client.stream(
                    "POST",
                    self._url,
                    content=body,
                    headers=headers,
                    extensions={"trace": self._trace},
                ) as response,
            ):
                return response, _read_capped(response, RESPONSE_BODY_CAP)
        except httpx.HTTPError as exc:
            if deadline.expired or isinstance(exc, httpx.TimeoutException):
                return (
                    f"timed out after {self._timeout:g}s posting to {self._display_url} "
                    f"({type(exc).__name__}; endpoint.timeout_seconds bounds the whole "
                    "exchange)"
                )
            return self._redact(self._transport_detail(exc))

    def _transport_detail(self, exc: httpx.HTTPError) -> str:
        cause = _ssl_cause(exc)
        if isinstance(cause, ssl.SSLCertVerificationError):
            return self._verification_detail(cause)
        if cause is not None:
            return self._tls_detail(cause)
        if isinstance(exc, httpx.ProxyError):
            return f"the proxy refused to reach {self._display_url}: {exc}"
        if isinstance(exc, httpx.ConnectError):
            return f"cannot connect to {self._display_url}: {exc}"
        return f"HTTP transport error posting to {self._display_url} ({type(exc).__name__}): {exc}"

    def _verification_detail(self, cause: ssl.SSLCertVerificationError) -> str:
        problem = cause.verify_message or cause.reason or str(cause)
        if cause.verify_code == _HOSTNAME_MISMATCH:
            advice = (
                f"the endpoint's certificate is not issued for {self._host}; "
                "endpoint.url must use a host name the certificate names"
            )
        elif cause.verify_code in (_CERT_EXPIRED, _CERT_NOT_YET_VALID):
            advice = "the endpoint's certificate must be renewed, or this PC's clock is wrong"
        else:
            advice = (
                "if the endpoint uses a private CA, set endpoint.ca_bundle to that CA's "
                "certificate (PEM)"
            )
        return (
            f"TLS certificate verification failed for {self._host}: {problem}; {advice}; "
            "nothing was sent"
        )

    def _tls_detail(self, cause: ssl.SSLError) -> str:
        reason = str(cause.reason or "")
        if "WRONG_VERSION_NUMBER" in reason:
            return (
                f"{self._display_url} does not answer in TLS (a plain http server?): "
                f"{reason}; nothing was sent"
            )
        if any(alert in reason for alert in _CLIENT_CERT_ALERTS):
            if self._client_cert is None:
                return (
                    f"TLS handshake with {self._host} failed ({reason}): the endpoint "
                    "probably requires a client certificate; set endpoint.client_cert and "
                    "endpoint.client_key"
                )
            return (
                f"the endpoint {self._host} refused the client certificate "
                f"{self._client_cert} ({reason}); it must be issued by a CA the endpoint "
                "trusts and still valid"
            )
        return f"TLS handshake with {self._host} failed: {cause}"

    def _judge(
        self, package_id: str, body: bytes, response: httpx.Response, content: bytes
    ) -> Receipt:
        status = response.status_code
        text = self._excerpt(content, status)
        if 200 <= status < 300 or status == 409:
            # 409 means "stored already", so it is held to the same receipt rules: an
            # endpoint using 409 for "a request with this key is in progress" must not
            # confirm a package it may still fail to store.
            foreign = self._not_a_receipt(response, content, text)
            if foreign is not None:
                detail = f"{foreign}; not counted as delivered"
                return Receipt(package_id, "retry", status, detail, endpoint_wide=True)
            problem = _receipt_problem(
                package_id,
                body,
                status,
                content,
                require_receipt=self._require_receipt,
                redact=self._redact,
            )
            if problem is not None:
                return Receipt(package_id, "retry", status, self._redact(problem))
            meaning = ": endpoint already has it" if status == 409 else ""
            return Receipt(package_id, "confirmed", status, f"HTTP {status}{meaning}")
        if status in (408, 425, 429) or status >= 500:
            return Receipt(
                package_id,
                "retry",
                status,
                f"HTTP {status}: {text}",
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        if status in PACKAGE_REJECTIONS:
            return Receipt(package_id, "rejected", status, f"HTTP {status}: {text}")
        if is_endpoint_wide(status):
            return Receipt(package_id, "retry", status, self._refusal_detail(response, text))
        return Receipt(package_id, "retry", status, f"unexpected HTTP {status}: {text}")

    def _not_a_receipt(self, response: httpx.Response, content: bytes, text: str) -> str | None:
        content_type = response.headers.get("content-type", "")
        return _not_a_receipt(response.status_code, content_type, content, self._display_url, text)

    def _refusal_detail(self, response: httpx.Response, text: str) -> str:
        status = response.status_code
        location = response.headers.get("location")
        detail = _endpoint_wide_detail(status, location, text, self._auth_advice(status))
        return self._redact(detail)

    def probe(self) -> tuple[bool, str]:
        """Whether the endpoint takes packages from this client, asked without storing one.

        An empty POST marked with ``PROBE_HEADER``, authenticated like a package: an
        endpoint following the HTTP contract answers it 2xx (or 401/403) and stores
        nothing; one that does not know the probe refuses the empty body (400, 415, 422)
        after accepting the token, which counts too.
        """
        answer = self._exchange(b"", {PROBE_HEADER: "check"})
        if isinstance(answer, str):
            return False, answer
        response, content = answer
        status = response.status_code
        text = self._excerpt(content, status)
        tls = ""
        if self._url.startswith("https"):
            tls = ", TLS verified"
            tls += ", client certificate presented" if self._client_cert else ""
        accepted = "token accepted" if self._token else "no token configured"
        if 200 <= status < 300:
            foreign = self._not_a_receipt(response, content, text)
            if foreign is not None:
                return False, foreign
            return True, f"answered HTTP {status} to the no-store probe ({accepted}{tls})"
        if status in PACKAGE_REJECTIONS:
            return True, (
                f"answered HTTP {status} to the no-store probe ({accepted}{tls}); the endpoint "
                "does not know the probe (see the README's HTTP contract) and refused its "
                "empty body"
            )
        if is_endpoint_wide(status):
            return False, self._refusal_detail(response, text)
        return False, f"HTTP {status} to the no-store probe: the endpoint fails now: {text}"

    def close(self) -> None:
        self._client.close()


class DirectorySender:
    """Delivers by writing ``<package_id>.json`` atomically into a folder (a share, a drop box)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def send(self, package_id: str, body: bytes) -> Receipt:
        if not _SAFE_ID.fullmatch(package_id):
            return Receipt(package_id, "rejected", None, "package_id is not a safe file name")
        target = self.path / f"{package_id}.json"
        # Dot-prefixed so folder watchers on the other side ignore the partial file.
        tmp = self.path / f".{package_id}.{secrets.token_hex(4)}.tmp"
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            replace_durably(tmp, target, body)
            fsync_dir(self.path)
        except OSError as exc:
            return Receipt(package_id, "retry", None, f"cannot write {target}: {exc}")
        return Receipt(package_id, "confirmed", None, f"written to {target}")

    def probe(self) -> tuple[bool, str]:
        return writable_folder(self.path)

    def close(self) -> None:
        """Nothing to release; present for the Sender protocol."""


def build_sender(settings: EndpointSettings) -> Sender:
    """The sender for the configured endpoint (reads the token for http)."""
    if settings.type == "directory":
        if settings.path is None:
            raise DeliveryConfigError("endpoint.path is required for a directory endpoint")
        return DirectorySender(settings.path)
    token = read_token(settings)
    if token:
        logs.register_secret(token)
    try:
        return HttpSender(settings, token)
    except DeliveryConfigError:
        raise
    # Whatever else fails here fails at every start: a config problem, never a crash loop.
    except Exception as exc:  # noqa: BLE001
        raise DeliveryConfigError(
            f"cannot set up the HTTP client for {safe_url(str(settings.url))}: "
            f"{type(exc).__name__}: {logs.mask(str(exc))}"
        ) from None


# --------------------------------------------------------------------------- schedule


class Deliverer:
    """Sends due pending packages in spool order; each package keeps its own retry schedule.

    On top of that, the endpoint as a whole backs off: after any failed attempt nothing is
    sent until the endpoint's own (capped, exponential) pause is over, then the next due
    package goes alone. So an endpoint that is down, throttling (Retry-After) or failing
    sees about one request per pause, however many packages wait, while a single package
    the endpoint keeps refusing does not hold up the others (they are due before it).
    """

    def __init__(
        self,
        outbox: PendingPackages,
        sender: Sender,
        *,
        max_backoff: float,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        idle_wait: float = 1.0,
    ) -> None:
        self._outbox = outbox
        self._sender = sender
        self._max_backoff = max_backoff
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._idle_wait = idle_wait
        #: next attempt time (in ``clock``) of every pending package this deliverer knows.
        self._due: dict[str, float] = {}
        #: failed attempts in a row, whatever the package; 0 once the endpoint confirms
        #: or rejects (it answers properly again).
        self._failure_streak = 0
        #: no request before this time (in ``clock``): the endpoint-wide backoff.
        self._paused_until = -math.inf
        #: every package this deliverer has tried to send, whatever the outcome.
        self.attempted: set[str] = set()
        #: the endpoint-wide refusal going on (a redirect, 401...), logged once per change
        self._endpoint_problem: str | None = None
        #: pending packages whose file cannot be read, logged once each
        self._unreadable: set[str] = set()

    @property
    def endpoint_failing(self) -> bool:
        """Whether the last attempt failed and nothing was confirmed or rejected since."""
        return self._failure_streak > 0

    def step(self, should_stop: Callable[[], bool] | None = None) -> float:
        """Send every due package once; returns seconds until the next step is useful.

        New pending packages are due at once (after a restart too: the queue flushes
        first), unless the endpoint is pausing after a failure. The wait is never longer
        than ``idle_wait`` so packages spooled meanwhile are not stuck behind a long backoff.
        """
        now = self._clock()
        pending = self._outbox.pending()
        listed = set(pending)
        for gone in [package_id for package_id in self._due if package_id not in listed]:
            del self._due[gone]
        for package_id in pending:
            self._due.setdefault(package_id, now)
        # Longest-waiting first (spool order among equals): a package that just failed
        # goes behind the others, so it cannot take every slot the endpoint backoff leaves.
        due = sorted(
            (self._due[package_id], position, package_id)
            for position, package_id in enumerate(pending)
            if self._due[package_id] <= now
        )
        for _, _, package_id in due:
            if should_stop is not None and should_stop():
                break
            if self._paused_until > self._clock():
                break
            self._deliver(package_id)
        if not self._due:
            return self._idle_wait
        next_useful = max(min(self._due.values()), self._paused_until)
        return max(0.0, min(next_useful - self._clock(), self._idle_wait))

    def _deliver(self, package_id: str) -> None:
        self.attempted.add(package_id)
        try:
            body = self._outbox.body(package_id)
        except OSError as exc:
            self._unreadable_package(package_id, exc)
            return
        # The outbox raises its own OutboxError, which this stage may not import.
        except Exception:  # noqa: BLE001
            # Moved away meanwhile (e.g. `retry` or a confirm in another process).
            del self._due[package_id]
            return
        self._unreadable.discard(package_id)
        try:
            receipt = self._sender.send(package_id, body)
        # A broken sender must not stop delivery of the other packages.
        except Exception as exc:  # noqa: BLE001
            receipt = Receipt(package_id, "retry", None, f"sender failed: {type(exc).__name__}")
        try:
            if receipt.outcome == "confirmed":
                self._outbox.confirm(package_id, receipt.http_status, receipt.detail)
                self._endpoint_answered(package_id)
                log.info(
                    "package_delivered", package_id=package_id, http_status=receipt.http_status
                )
                return
            if receipt.outcome == "rejected":
                self._outbox.reject(package_id, receipt.http_status, receipt.detail)
                self._endpoint_answered(package_id)
                log.error(
                    "package_rejected",
                    package_id=package_id,
                    http_status=receipt.http_status,
                    detail=receipt.detail,
                )
                return
        # Disk full or similar: the package is still pending, so sending again is safe.
        except Exception as exc:  # noqa: BLE001
            receipt = Receipt(
                package_id,
                "retry",
                receipt.http_status,
                f"outbox could not record the outcome ({receipt.outcome}): {exc}",
            )
        self._schedule_retry(receipt)

    def _unreadable_package(self, package_id: str, error: OSError) -> None:
        """A pending file that cannot be read (permissions, a folder in its place).

        It stays pending and is tried again on its own backoff, counted in the outbox
        (``acqharvest status`` shows it) and logged once; the endpoint is not paused.
        """
        detail = f"cannot read the spooled package: {error}"
        if package_id not in self._unreadable:
            self._unreadable.add(package_id)
            log.error(
                "package_unreadable",
                package_id=package_id,
                error=str(error),
                action="fix the file's permissions in the outbox; it is retried",
            )
        attempt = self._outbox.attempts(package_id) + 1
        self._outbox.note_failure(package_id, detail)
        delay = backoff_delay(attempt, cap=self._max_backoff, retry_after=None, rng=self._rng)
        self._due[package_id] = self._clock() + delay

    def _endpoint_answered(self, package_id: str) -> None:
        del self._due[package_id]
        self._failure_streak = 0
        self._paused_until = -math.inf
        if self._endpoint_problem is not None:
            log.info("endpoint_accepts_again", problem=self._endpoint_problem)
            self._endpoint_problem = None

    def _note_endpoint_problem(self, receipt: Receipt) -> None:
        """One error line when an endpoint-wide refusal starts or changes, none per retry."""
        if not (receipt.endpoint_wide or is_endpoint_wide(receipt.http_status)):
            return
        if receipt.detail != self._endpoint_problem:
            self._endpoint_problem = receipt.detail
            log.error(
                "endpoint_refuses_packages",
                http_status=receipt.http_status,
                detail=receipt.detail,
                action="every package waits and is retried with backoff; none is rejected",
            )

    def _schedule_retry(self, receipt: Receipt) -> None:
        attempt = self._outbox.attempts(receipt.package_id) + 1
        delay = backoff_delay(
            attempt, cap=self._max_backoff, retry_after=receipt.retry_after, rng=self._rng
        )
        now = self._clock()
        self._outbox.note_failure(receipt.package_id, receipt.detail)
        self._due[receipt.package_id] = now + delay
        self._failure_streak += 1
        pause = backoff_delay(
            self._failure_streak,
            cap=self._max_backoff,
            retry_after=receipt.retry_after,
            rng=self._rng,
        )
        self._paused_until = now + pause
        self._note_endpoint_problem(receipt)
        log.warning(
            "delivery_failed",
            package_id=receipt.package_id,
            http_status=receipt.http_status,
            detail=receipt.detail,
            attempt=attempt,
            retry_in=round(delay, 3),
            endpoint_pause=round(pause, 3),
        )
