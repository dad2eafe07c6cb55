"""Delivery of spooled packages: the HTTP and directory senders, backoff, and the retry schedule.

Owns the endpoint conversation and per-package retry timing; the outbox owns durability.
No threads and no sleeps here: the runtime calls ``Deliverer.step()`` in its own loop.
"""

from __future__ import annotations

import email.utils
import hashlib
import ipaddress
import json
import math
import os
import random
import re
import secrets
import ssl
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import certifi
import httpx
import structlog

from acqharvest import __version__, logs
from acqharvest.durable import fsync_dir, replace_durably, writable_folder
from acqharvest.model import EndpointSettings, Receipt

#: response text kept in a rejection reason or a retry detail.
RESPONSE_TEXT_CAP = 2048
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
        """Whether the endpoint answers at all (for ``acqharvest check``), and how."""
        ...


class PendingPackages(Protocol):
    """What the deliverer needs from the outbox (``acqharvest.outbox.Outbox`` fits)."""

    def pending(self) -> list[str]: ...

    def body(self, package_id: str) -> bytes: ...

    def attempts(self, package_id: str) -> int: ...

    def confirm(self, package_id: str, http_status: int | None, detail: str) -> None: ...

    def reject(self, package_id: str, http_status: int | None, detail: str) -> None: ...

    def note_failure(self, package_id: str, detail: str, next_attempt_at: float) -> None: ...


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
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


# --------------------------------------------------------------------------- senders


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (where plain http is acceptable)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def safe_url(url: str) -> str:
    """The URL without user:password, for messages."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


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


def tls_context(settings: EndpointSettings) -> ssl.SSLContext:
    """The verifying TLS context for https, with the client certificate when one is set.

    Trust comes from ``ca_bundle`` alone when it is set, else from the operating system's
    store plus the certifi (Mozilla) bundle. Errors name the files, never their content.
    """
    if settings.ca_bundle is not None:
        try:
            context = ssl.create_default_context(cafile=str(settings.ca_bundle))
        except (OSError, ssl.SSLError) as exc:
            raise DeliveryConfigError(
                f"cannot load endpoint.ca_bundle {settings.ca_bundle}: {exc}"
            ) from None
    else:
        context = ssl.create_default_context()
        context.load_verify_locations(cafile=certifi.where())
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


def _receipt_problem(
    package_id: str, body: bytes, response: httpx.Response, *, require_receipt: bool
) -> str | None:
    """Why a 2xx answer does not confirm the package; None when it does.

    A receipt is a JSON object with a ``package_id`` (and optionally the ``sha256`` of
    the body). Without one, a 2xx confirms unless ``require_receipt`` is set.
    """
    try:
        document = json.loads(response.content)
    except ValueError:
        document = None
    if not isinstance(document, dict) or "package_id" not in document:
        if require_receipt:
            return (
                f"HTTP {response.status_code} without a receipt naming the package "
                "(endpoint.require_receipt is set); not counted as delivered"
            )
        return None
    echoed = str(document["package_id"])
    if echoed != package_id:
        return (
            f"endpoint confirmed a different package_id {echoed[:100]!r} "
            f"(sent {package_id}); not counted as delivered"
        )
    digest = document.get("sha256")
    if digest is not None and str(digest).lower() != body_digest(body):
        return (
            f"endpoint's receipt has sha256 {str(digest)[:64]!r}, but the body sent has "
            f"{body_digest(body)}; not counted as delivered"
        )
    return None


class HttpSender:
    """POSTs packages over one kept-alive, TLS-verified ``httpx.Client``."""

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
        self._url = settings.url
        self._display_url = safe_url(settings.url)
        self._host = parts.hostname
        self._timeout = settings.timeout_seconds
        self._token = token
        self._client_cert = settings.client_cert
        self._require_receipt = settings.require_receipt
        headers = {"Content-Type": "application/json", "User-Agent": user_agent}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(
            verify=context,
            timeout=httpx.Timeout(settings.timeout_seconds),
            headers=headers,
            follow_redirects=False,
        )

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "[redacted]") if self._token else text

    def send(self, package_id: str, body: bytes) -> Receipt:
        try:
            response = self._client.post(
                self._url, content=body, headers={"Idempotency-Key": package_id}
            )
        except httpx.TimeoutException as exc:
            detail = (
                f"timed out after {self._timeout:g}s posting to {self._display_url} "
                f"({type(exc).__name__})"
            )
            return Receipt(package_id, "retry", None, detail)
        except httpx.HTTPError as exc:
            return Receipt(package_id, "retry", None, self._redact(self._transport_detail(exc)))
        return self._judge(package_id, body, response)

    def _transport_detail(self, exc: httpx.HTTPError) -> str:
        cause = _ssl_cause(exc)
        if isinstance(cause, ssl.SSLCertVerificationError):
            return self._verification_detail(cause)
        if cause is not None:
            return self._tls_detail(cause)
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

    def _judge(self, package_id: str, body: bytes, response: httpx.Response) -> Receipt:
        status = response.status_code
        text = self._redact(response.text[:RESPONSE_TEXT_CAP])
        if 200 <= status < 300:
            problem = _receipt_problem(
                package_id, body, response, require_receipt=self._require_receipt
            )
            if problem is not None:
                return Receipt(package_id, "retry", status, self._redact(problem))
            return Receipt(package_id, "confirmed", status, f"HTTP {status}")
        if status == 409:
            return Receipt(package_id, "confirmed", status, "HTTP 409: endpoint already has it")
        if status in (408, 425, 429) or status >= 500:
            return Receipt(
                package_id,
                "retry",
                status,
                f"HTTP {status}: {text}",
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        if 400 <= status < 500:
            return Receipt(package_id, "rejected", status, f"HTTP {status}: {text}")
        # Redirects are not followed: a POST must not silently go elsewhere.
        location = response.headers.get("location", "")
        detail = f"unexpected HTTP {status} {location}".rstrip()
        return Receipt(package_id, "retry", status, self._redact(detail))

    def probe(self) -> tuple[bool, str]:
        try:
            response = self._client.request("OPTIONS", self._url)
        except httpx.HTTPError as exc:
            return False, self._redact(self._transport_detail(exc))
        tls = ""
        if self._url.startswith("https"):
            tls = " (TLS verified"
            tls += ", client certificate presented)" if self._client_cert else ")"
        return True, f"answered HTTP {response.status_code}{tls}"

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
    return HttpSender(settings, token)


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

    def next_attempt_at(self, package_id: str) -> float | None:
        """When the package is next tried, in the injected clock; None if not scheduled."""
        return self._due.get(package_id)

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
        # The outbox raises its own OutboxError, which this stage may not import.
        except Exception:  # noqa: BLE001
            # Moved away meanwhile (e.g. `outbox` command in another process).
            del self._due[package_id]
            return
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

    def _endpoint_answered(self, package_id: str) -> None:
        del self._due[package_id]
        self._failure_streak = 0
        self._paused_until = -math.inf

    def _schedule_retry(self, receipt: Receipt) -> None:
        attempt = self._outbox.attempts(receipt.package_id) + 1
        delay = backoff_delay(
            attempt, cap=self._max_backoff, retry_after=receipt.retry_after, rng=self._rng
        )
        now = self._clock()
        next_at = now + delay
        self._outbox.note_failure(receipt.package_id, receipt.detail, next_at)
        self._due[receipt.package_id] = next_at
        self._failure_streak += 1
        pause = backoff_delay(
            self._failure_streak,
            cap=self._max_backoff,
            retry_after=receipt.retry_after,
            rng=self._rng,
        )
        self._paused_until = now + pause
        log.warning(
            "delivery_failed",
            package_id=receipt.package_id,
            http_status=receipt.http_status,
            detail=receipt.detail,
            attempt=attempt,
            retry_in=round(delay, 3),
            endpoint_pause=round(pause, 3),
        )
