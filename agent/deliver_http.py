"""The HTTP sender: one kept-alive, TLS-verified httpx client that POSTs packages, bounds each
exchange, masks the token in every answer it reports, and probes for ``acqharvest check``.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from urllib.parse import SplitResult, unquote, urlsplit

import httpx
import structlog

from acqharvest import __version__, logs
from acqharvest.deliver_backoff import parse_retry_after
from acqharvest.deliver_receipts import (
    PACKAGE_REJECTIONS,
    endpoint_wide_detail,
    is_endpoint_wide,
    not_a_receipt,
    receipt_problem,
)
from acqharvest.deliver_tls import (
    CERT_EXPIRED,
    CERT_NOT_YET_VALID,
    CLIENT_CERT_ALERTS,
    HOSTNAME_MISMATCH,
    ssl_cause,
    tls_context,
    verifying_context,
)
from acqharvest.deliver_token import DeliveryConfigError, read_token
from acqharvest.model import EndpointSettings, Receipt
from acqharvest.rocrate import MEDIA_TYPE as CRATE_MEDIA_TYPE
from acqharvest.urls import credential_parameters, is_loopback, safe_url

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
DEFAULT_USER_AGENT = f"acqharvest/{__version__}"

log = structlog.get_logger("acqharvest.deliver")


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
    context = verifying_context(None) if parts.scheme == "https" else None
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
        #: the HTTP ``Date`` header of the last answer (None if it had none), with this
        #: host's clock when the answer came: ``acqharvest doctor`` compares the clocks
        self.last_answer_date: tuple[str | None, float] | None = None
        headers = {
            "Content-Type": CRATE_MEDIA_TYPE
            if settings.format == "ro-crate"
            else "application/json",
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
                self.last_answer_date = (response.headers.get("date"), time.time())
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
        cause = ssl_cause(exc)
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
        if cause.verify_code == HOSTNAME_MISMATCH:
            advice = (
                f"the endpoint's certificate is not issued for {self._host}; "
                "endpoint.url must use a host name the certificate names"
            )
        elif cause.verify_code in (CERT_EXPIRED, CERT_NOT_YET_VALID):
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
        if any(alert in reason for alert in CLIENT_CERT_ALERTS):
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
            problem = receipt_problem(
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
        return not_a_receipt(response.status_code, content_type, content, self._display_url, text)

    def _refusal_detail(self, response: httpx.Response, text: str) -> str:
        status = response.status_code
        location = response.headers.get("location")
        detail = endpoint_wide_detail(status, location, text, self._auth_advice(status))
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
