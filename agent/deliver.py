"""Delivery of spooled packages: the sender for the endpoint, and the retry schedule.

Owns the endpoint conversation and per-package retry timing; the outbox owns durability.
No threads and no sleeps here: the runtime calls ``Deliverer.step()`` in its own loop.
The HTTP sender, TLS, receipts, the token and backoff live in the ``deliver_*`` modules;
their public names are re-exported here, the stage's one import for the runtime and cli.
"""

from __future__ import annotations

import math
import random
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import structlog

from acqharvest import logs
from acqharvest.deliver_backoff import RETRY_AFTER_CAP, backoff_delay, parse_retry_after
from acqharvest.deliver_http import AUTH_TEXT_CAP, PROBE_HEADER, RESPONSE_TEXT_CAP, HttpSender
from acqharvest.deliver_receipts import body_digest, is_endpoint_wide
from acqharvest.deliver_token import DeliveryConfigError, read_token
from acqharvest.durable import fsync_dir, replace_durably, writable_folder
from acqharvest.model import EndpointSettings, Receipt
from acqharvest.rocrate import METADATA_FILE, render_body
from acqharvest.urls import safe_url

__all__ = [
    "AUTH_TEXT_CAP",
    "PROBE_HEADER",
    "RESPONSE_TEXT_CAP",
    "RETRY_AFTER_CAP",
    "CrateSender",
    "Deliverer",
    "DeliveryConfigError",
    "DirectorySender",
    "HttpSender",
    "PendingPackages",
    "Sender",
    "backoff_delay",
    "body_digest",
    "build_sender",
    "parse_retry_after",
    "read_token",
    "safe_url",
]

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")

log = structlog.get_logger(__name__)


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


class DirectorySender:
    """Delivers by writing ``<package_id><suffix>`` atomically into a folder (a share, a
    drop box): ``.json`` for packages, ``.ro-crate-metadata.json`` for RO-Crates."""

    def __init__(self, path: Path, suffix: str = ".json") -> None:
        self.path = path
        self.suffix = suffix

    def send(self, package_id: str, body: bytes) -> Receipt:
        if not _SAFE_ID.fullmatch(package_id):
            return Receipt(package_id, "rejected", None, "package_id is not a safe file name")
        target = self.path / f"{package_id}{self.suffix}"
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


class CrateSender:
    """Renders each spooled package as its RO-Crate at send time and hands that to the
    endpoint's sender (``endpoint.format: ro-crate``). The outbox keeps the package, so the
    package_id and its idempotency are the same in both formats; the crate is a pure
    function of the package, so a resend sends the same bytes, and a receipt's ``sha256``
    is checked against them."""

    def __init__(self, sender: Sender) -> None:
        self._sender = sender

    def send(self, package_id: str, body: bytes) -> Receipt:
        try:
            crate = render_body(body)
        except ValueError as error:
            detail = f"cannot render the package as an RO-Crate: {error}"
            return Receipt(package_id, "rejected", None, detail)
        return self._sender.send(package_id, crate)

    @property
    def endpoint(self) -> Sender:
        """The sender the crates go out through (``doctor`` asks it for the endpoint's clock)."""
        return self._sender

    def probe(self) -> tuple[bool, str]:
        ok, detail = self._sender.probe()
        return ok, f"{detail}; packages go out as RO-Crates"

    def close(self) -> None:
        self._sender.close()


def build_sender(settings: EndpointSettings) -> Sender:
    """The sender for the configured endpoint and format (reads the token for http)."""
    sender = _endpoint_sender(settings)
    return CrateSender(sender) if settings.format == "ro-crate" else sender


def _endpoint_sender(settings: EndpointSettings) -> Sender:
    if settings.type == "directory":
        if settings.path is None:
            raise DeliveryConfigError("endpoint.path is required for a directory endpoint")
        suffix = f".{METADATA_FILE}" if settings.format == "ro-crate" else ".json"
        return DirectorySender(settings.path, suffix)
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
        on_answer: Callable[[Receipt], None] | None = None,
    ) -> None:
        """``on_answer`` hears of each package the endpoint confirmed or refused, once the
        outbox recorded it (the daemon's status and metrics)."""
        self._outbox = outbox
        self._on_answer = on_answer
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
                self._answered(receipt)
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
                self._answered(receipt)
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

    def _answered(self, receipt: Receipt) -> None:
        if self._on_answer is not None:
            self._on_answer(receipt)

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
