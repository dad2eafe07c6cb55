"""Delivery of spooled packages: the HTTP and directory senders, backoff, and the retry schedule.

Owns the endpoint conversation and per-package retry timing; the outbox owns durability.
No threads and no sleeps here: the runtime calls ``Deliverer.step()`` in its own loop.
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
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
        if os.name == "posix":
            mode = path.stat().st_mode & 0o777
            if mode & 0o077:
                log.warning(
                    "token_file_permissions",
                    path=str(path),
                    mode=oct(mode),
                    hint=f"other users may read it; run: chmod 600 {path}",
                )
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


# --------------------------------------------------------------------------- backoff


def backoff_delay(
    attempt: int,
    *,
    base: float = 1.0,
    cap: float,
    retry_after: float | None,
    rng: random.Random,
) -> float:
    """Seconds to wait before attempt ``attempt + 1``: capped exponential, full jitter.

    ``attempt`` counts failures so far (1 after the first). A ``retry_after`` from the
    endpoint is a floor, itself capped at ``RETRY_AFTER_CAP``.
    """
    exponent = min(max(attempt - 1, 0), 60)
    delay = rng.uniform(0.0, min(cap, base * 2.0**exponent))
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


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _echoed_package_id(response: httpx.Response) -> str | None:
    try:
        document = json.loads(response.content)
    except ValueError:
        return None
    if isinstance(document, dict) and "package_id" in document:
        return str(document["package_id"])
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
        verify: ssl.SSLContext | bool = True
        if settings.ca_bundle is not None:
            try:
                verify = ssl.create_default_context(cafile=str(settings.ca_bundle))
            except (OSError, ssl.SSLError) as exc:
                raise DeliveryConfigError(
                    f"cannot load endpoint.ca_bundle {settings.ca_bundle}: {exc}"
                ) from None
        self._url = settings.url
        self._display_url = safe_url(settings.url)
        self._host = parts.hostname
        self._timeout = settings.timeout_seconds
        self._token = token
        headers = {"Content-Type": "application/json", "User-Agent": user_agent}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(
            verify=verify,
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
        return self._judge(package_id, response)

    def _transport_detail(self, exc: httpx.HTTPError) -> str:
        cause = _ssl_cause(exc)
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (
                f"TLS certificate verification failed for {self._host}: "
                f"{cause.verify_message or cause.reason}; set endpoint.ca_bundle if the "
                "endpoint uses a private CA"
            )
        if cause is not None:
            return f"TLS handshake with {self._host} failed: {cause}"
        if isinstance(exc, httpx.ConnectError):
            return f"cannot connect to {self._display_url}: {exc}"
        return f"HTTP transport error posting to {self._display_url} ({type(exc).__name__}): {exc}"

    def _judge(self, package_id: str, response: httpx.Response) -> Receipt:
        status = response.status_code
        text = self._redact(response.text[:RESPONSE_TEXT_CAP])
        if 200 <= status < 300:
            echoed = _echoed_package_id(response)
            if echoed is not None and echoed != package_id:
                detail = (
                    f"endpoint confirmed a different package_id {echoed[:100]!r} "
                    f"(sent {package_id}); not counted as delivered"
                )
                return Receipt(package_id, "retry", status, self._redact(detail))
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
        tls = " (TLS verified)" if self._url.startswith("https") else ""
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
    """Sends due pending packages in spool order; each package keeps its own retry schedule."""

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
        #: every package this deliverer has tried to send, whatever the outcome.
        self.attempted: set[str] = set()

    def next_attempt_at(self, package_id: str) -> float | None:
        """When the package is next tried, in the injected clock; None if not scheduled."""
        return self._due.get(package_id)

    def step(self, should_stop: Callable[[], bool] | None = None) -> float:
        """Send every due package once; returns seconds until the next step is useful.

        New pending packages are due at once (after a restart too: the queue flushes
        first). The wait is never longer than ``idle_wait`` so packages spooled
        meanwhile are not stuck behind a long backoff.
        """
        now = self._clock()
        pending = self._outbox.pending()
        listed = set(pending)
        for gone in [package_id for package_id in self._due if package_id not in listed]:
            del self._due[gone]
        for package_id in pending:
            self._due.setdefault(package_id, now)
        for package_id in pending:
            if should_stop is not None and should_stop():
                break
            if self._due[package_id] <= now:
                self._deliver(package_id)
        if not self._due:
            return self._idle_wait
        return max(0.0, min(min(self._due.values()) - self._clock(), self._idle_wait))

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
                del self._due[package_id]
                log.info(
                    "package_delivered", package_id=package_id, http_status=receipt.http_status
                )
                return
            if receipt.outcome == "rejected":
                self._outbox.reject(package_id, receipt.http_status, receipt.detail)
                del self._due[package_id]
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

    def _schedule_retry(self, receipt: Receipt) -> None:
        attempt = self._outbox.attempts(receipt.package_id) + 1
        delay = backoff_delay(
            attempt, cap=self._max_backoff, retry_after=receipt.retry_after, rng=self._rng
        )
        next_at = self._clock() + delay
        self._outbox.note_failure(receipt.package_id, receipt.detail, next_at)
        self._due[receipt.package_id] = next_at
        log.warning(
            "delivery_failed",
            package_id=receipt.package_id,
            http_status=receipt.http_status,
            detail=receipt.detail,
            attempt=attempt,
            retry_in=round(delay, 3),
        )
