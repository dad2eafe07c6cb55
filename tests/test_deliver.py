"""Delivery against the real loopback endpoint: senders, outcomes, schedule, token hygiene."""

from __future__ import annotations

import json
import os
import random
import ssl
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from acqharvest import __version__
from acqharvest.deliver import (
    RETRY_AFTER_CAP,
    Deliverer,
    DeliveryConfigError,
    DirectorySender,
    HttpSender,
    backoff_delay,
    build_sender,
    parse_retry_after,
    read_token,
)
from acqharvest.model import EndpointSettings, Package, Receipt
from acqharvest.outbox import Outbox
from tests.endpoint import LoopbackEndpoint
from tests.helpers import FakeClock

TOKEN = "tok-3f9a8c1e-very-secret"


def http_settings(url: str, **kw: object) -> EndpointSettings:
    return EndpointSettings(type="http", url=url, **kw)  # type: ignore[arg-type]


def package(package_id: str) -> Package:
    return Package(package_id, f"key-{package_id}", {"package_id": package_id, "n": 1})


@pytest.fixture
def sender(endpoint: LoopbackEndpoint) -> Iterator[HttpSender]:
    http = HttpSender(http_settings(endpoint.url, timeout_seconds=10.0), TOKEN)
    yield http
    http.close()


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    return Outbox.open(tmp_path / "outbox")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def deliverer(outbox: Outbox, sender: HttpSender | DirectorySender, clock: FakeClock) -> Deliverer:
    return Deliverer(outbox, sender, max_backoff=60.0, clock=clock, rng=random.Random(7))  # noqa: S311 - seeded jitter


# --------------------------------------------------------------------------- HttpSender


def test_post_carries_idempotency_key_token_and_user_agent(
    endpoint: LoopbackEndpoint, sender: HttpSender
) -> None:
    body = b'{"n":1,"package_id":"pkg-1"}'
    receipt = sender.send("pkg-1", body)
    assert receipt == Receipt("pkg-1", "confirmed", 200, "HTTP 200")
    (request,) = endpoint.received
    assert request.method == "POST"
    assert request.path == "/ingest"
    assert request.body == body
    assert request.headers["idempotency-key"] == "pkg-1"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["user-agent"] == f"acqharvest/{__version__}"
    assert request.headers["content-type"] == "application/json"
    assert set(endpoint.unique) == {"pkg-1"}


def test_connection_is_kept_alive(endpoint: LoopbackEndpoint, sender: HttpSender) -> None:
    for package_id in ("a", "b", "c"):
        assert sender.send(package_id, b"{}").outcome == "confirmed"
    assert len({request.client_port for request in endpoint.received}) == 1


def test_no_token_means_no_authorization_header(endpoint: LoopbackEndpoint) -> None:
    http = HttpSender(http_settings(endpoint.url), None)
    try:
        assert http.send("a", b"{}").outcome == "confirmed"
    finally:
        http.close()
    assert "authorization" not in endpoint.received[0].headers


def test_409_confirms(endpoint: LoopbackEndpoint, sender: HttpSender) -> None:
    endpoint.behave("conflict")
    receipt = sender.send("a", b"{}")
    assert (receipt.outcome, receipt.http_status) == ("confirmed", 409)


def test_lying_2xx_is_not_confirmed(endpoint: LoopbackEndpoint, sender: HttpSender) -> None:
    endpoint.behave("lie")
    receipt = sender.send("a", b"{}")
    assert receipt.outcome == "retry"
    assert receipt.http_status == 200
    assert "endpoint confirmed a different package_id" in receipt.detail


@pytest.mark.parametrize("mode", ["fail", "retry_after"])
def test_server_errors_and_throttling_retry(
    endpoint: LoopbackEndpoint, sender: HttpSender, mode: str
) -> None:
    endpoint.behave(mode, seconds=7)
    receipt = sender.send("a", b"{}")
    assert receipt.outcome == "retry"
    assert receipt.http_status == (500 if mode == "fail" else 429)
    assert receipt.retry_after == (7.0 if mode == "retry_after" else None)


def test_other_4xx_rejects_with_capped_response_text(
    endpoint: LoopbackEndpoint, sender: HttpSender
) -> None:
    endpoint.behave("reject", text="missing field instrument.id " + "x" * 10_000)
    receipt = sender.send("a", b"{}")
    assert receipt.outcome == "rejected"
    assert receipt.http_status == 400
    assert "missing field instrument.id" in receipt.detail
    assert len(receipt.detail) < 2100


def test_connection_refused_retries(endpoint: LoopbackEndpoint, sender: HttpSender) -> None:
    endpoint.stop()
    receipt = sender.send("a", b"{}")
    assert receipt.outcome == "retry"
    assert receipt.http_status is None
    assert "cannot connect" in receipt.detail


def test_timeout_retries(endpoint: LoopbackEndpoint) -> None:
    endpoint.behave("slow", seconds=30)
    http = HttpSender(http_settings(endpoint.url, timeout_seconds=0.2), TOKEN)
    try:
        receipt = http.send("a", b"{}")
    finally:
        http.close()
    assert receipt.outcome == "retry"
    assert "timed out after 0.2s" in receipt.detail


def test_plain_http_to_a_remote_host_is_refused() -> None:
    with pytest.raises(DeliveryConfigError, match="plain http"):
        HttpSender(http_settings("http://ingest.example.org/packages"), None)
    allowed = HttpSender(
        http_settings("http://ingest.example.org/packages", allow_plaintext=True), None
    )
    allowed.close()


def test_missing_url_and_bad_ca_bundle_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(DeliveryConfigError, match=r"endpoint\.url is required"):
        HttpSender(EndpointSettings(type="http"), None)
    missing = tmp_path / "nope.pem"
    with pytest.raises(DeliveryConfigError, match=r"nope\.pem"):
        HttpSender(http_settings("https://localhost/x", ca_bundle=missing), None)


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_endpoint(tls_ca: trustme.CA) -> Iterator[LoopbackEndpoint]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    server = LoopbackEndpoint(ssl_context=context).start()
    yield server
    server.stop()


def test_tls_with_ca_bundle_confirms(
    tls_endpoint: LoopbackEndpoint, tls_ca: trustme.CA, tmp_path: Path
) -> None:
    bundle = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(bundle))
    http = HttpSender(http_settings(tls_endpoint.url, ca_bundle=bundle), TOKEN)
    try:
        assert http.send("a", b"{}").outcome == "confirmed"
    finally:
        http.close()
    assert set(tls_endpoint.unique) == {"a"}


def test_tls_with_an_unknown_ca_says_verification_failed(tls_endpoint: LoopbackEndpoint) -> None:
    http = HttpSender(http_settings(tls_endpoint.url), TOKEN)
    try:
        receipt = http.send("a", b"{}")
    finally:
        http.close()
    assert receipt.outcome == "retry"
    assert "certificate verification failed" in receipt.detail
    assert tls_endpoint.received == []


# --------------------------------------------------------------------------- DirectorySender


def test_directory_sender_writes_exact_bytes_atomically(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    sender = DirectorySender(drop)
    assert sender.send("a", b'{"v":1}').outcome == "confirmed"
    assert sender.send("a", b'{"v":2}').outcome == "confirmed"
    assert sorted(path.name for path in drop.iterdir()) == ["a.json"]
    assert (drop / "a.json").read_bytes() == b'{"v":2}'
    sender.close()


def test_directory_sender_failures(tmp_path: Path) -> None:
    blocked = tmp_path / "drop"
    blocked.write_text("a file where the folder should be")
    receipt = DirectorySender(blocked).send("a", b"{}")
    assert receipt.outcome == "retry"
    assert str(blocked) in receipt.detail
    assert DirectorySender(tmp_path).send("../escape", b"{}").outcome == "rejected"
    assert not (tmp_path.parent / "escape.json").exists()


def test_build_sender_picks_by_type(tmp_path: Path, endpoint: LoopbackEndpoint) -> None:
    directory = build_sender(EndpointSettings(type="directory", path=tmp_path / "out"))
    assert isinstance(directory, DirectorySender)
    with pytest.raises(DeliveryConfigError, match=r"endpoint\.path"):
        build_sender(EndpointSettings(type="directory"))
    http = build_sender(http_settings(endpoint.url))
    assert isinstance(http, HttpSender)
    http.close()


# --------------------------------------------------------------------------- token


def test_token_from_file_is_stripped(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"  {TOKEN}\n")
    token_file.chmod(0o600)
    with capture_logs() as logs:
        assert read_token(EndpointSettings(type="http", token_file=token_file)) == TOKEN
    assert logs == []


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_token_file_readable_by_others_warns(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o644)
    with capture_logs() as logs:
        read_token(EndpointSettings(type="http", token_file=token_file))
    (event,) = logs
    assert event["event"] == "token_file_permissions"
    assert event["log_level"] == "warning"
    assert TOKEN not in repr(event)


def test_token_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACQ_TEST_TOKEN", f"{TOKEN}\n")
    assert read_token(EndpointSettings(type="http", token_env="ACQ_TEST_TOKEN")) == TOKEN
    assert read_token(EndpointSettings(type="http")) is None


def test_token_errors_name_the_source_never_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "missing-token"
    with pytest.raises(DeliveryConfigError, match="missing-token does not exist"):
        read_token(EndpointSettings(type="http", token_file=missing))
    empty = tmp_path / "empty-token"
    empty.write_text(" \n")
    with pytest.raises(DeliveryConfigError, match="empty-token is empty"):
        read_token(EndpointSettings(type="http", token_file=empty))
    monkeypatch.delenv("ACQ_UNSET_TOKEN", raising=False)
    with pytest.raises(DeliveryConfigError, match="ACQ_UNSET_TOKEN is not set"):
        read_token(EndpointSettings(type="http", token_env="ACQ_UNSET_TOKEN"))
    monkeypatch.setenv("ACQ_SPACED_TOKEN", "Bearer " + TOKEN)
    with pytest.raises(DeliveryConfigError, match="ACQ_SPACED_TOKEN") as info:
        read_token(EndpointSettings(type="http", token_env="ACQ_SPACED_TOKEN"))
    assert TOKEN not in str(info.value)


# --------------------------------------------------------------------------- backoff


@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    cap=st.floats(min_value=0.1, max_value=10_000),
    retry_after=st.none() | st.floats(min_value=0, max_value=1e7),
    seed=st.integers(),
)
def test_backoff_bounds(attempt: int, cap: float, retry_after: float | None, seed: int) -> None:
    delay = backoff_delay(attempt, cap=cap, retry_after=retry_after, rng=random.Random(seed))  # noqa: S311 - seeded jitter
    exponential = min(cap, 2.0 ** min(attempt - 1, 60))
    floor = 0.0 if retry_after is None else min(retry_after, RETRY_AFTER_CAP)
    assert floor <= delay <= max(exponential, floor)


def test_backoff_grows_then_caps() -> None:
    rng = random.Random(1)  # noqa: S311 - seeded jitter
    first = [backoff_delay(1, cap=300, retry_after=None, rng=rng) for _ in range(200)]
    late = [backoff_delay(30, cap=300, retry_after=None, rng=rng) for _ in range(200)]
    assert max(first) <= 1.0
    assert 150 < max(late) <= 300


def test_parse_retry_after_forms() -> None:
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Wed, 01 May 2024 12:01:30 GMT", now=now) == 90.0
    assert parse_retry_after("Wed, 01 May 2024 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


# --------------------------------------------------------------------------- Deliverer


def test_deliverer_confirms_and_logs(
    endpoint: LoopbackEndpoint, sender: HttpSender, outbox: Outbox, clock: FakeClock
) -> None:
    outbox.spool([package("a"), package("b")])
    with capture_logs() as logs:
        wait = deliverer(outbox, sender, clock).step()
    assert wait == 1.0
    assert outbox.pending() == []
    assert outbox.state_of("a") == outbox.state_of("b") == "delivered"
    assert [r.headers["idempotency-key"] for r in endpoint.received] == ["a", "b"]
    delivered = [e["package_id"] for e in logs if e["event"] == "package_delivered"]
    assert delivered == ["a", "b"]


def test_failure_then_success_is_retried_and_delivered_once(
    endpoint: LoopbackEndpoint, sender: HttpSender, outbox: Outbox, clock: FakeClock
) -> None:
    outbox.spool([package("a")])
    worker = deliverer(outbox, sender, clock)
    endpoint.fail_next(1)
    with capture_logs() as logs:
        wait = worker.step()
    assert outbox.state_of("a") == "pending"
    assert outbox.attempts("a") == 1
    next_at = worker.next_attempt_at("a")
    assert next_at is not None
    assert clock.now <= next_at <= clock.now + 1.0
    assert 0.0 <= wait <= 1.0
    (failed,) = [e for e in logs if e["event"] == "delivery_failed"]
    assert failed["package_id"] == "a"
    assert failed["http_status"] == 500
    clock.advance(1.0)
    worker.step()
    assert outbox.state_of("a") == "delivered"
    assert len(endpoint.requests_for("a")) == 2
    assert list(endpoint.unique) == ["a"]


def test_retry_after_sets_the_schedule(
    endpoint: LoopbackEndpoint, sender: HttpSender, outbox: Outbox, clock: FakeClock
) -> None:
    outbox.spool([package("a")])
    worker = deliverer(outbox, sender, clock)
    endpoint.fail_next(1, "retry_after", seconds=120)
    start = clock.now
    worker.step()
    assert worker.next_attempt_at("a") == pytest.approx(start + 120.0)
    clock.advance(119.0)
    worker.step()
    assert len(endpoint.received) == 1
    clock.advance(1.0)
    worker.step()
    assert outbox.state_of("a") == "delivered"
    assert len(endpoint.received) == 2


def test_a_retrying_package_does_not_block_others(
    endpoint: LoopbackEndpoint, sender: HttpSender, outbox: Outbox, clock: FakeClock
) -> None:
    outbox.spool([package("slowpoke"), package("b")])
    worker = deliverer(outbox, sender, clock)
    endpoint.fail_next(1, "retry_after", seconds=600)
    worker.step()
    assert outbox.state_of("b") == "delivered"
    assert outbox.pending() == ["slowpoke"]
    outbox.spool([package("c")])
    worker.step()
    assert outbox.state_of("c") == "delivered"
    assert len(endpoint.requests_for("slowpoke")) == 1


def test_lying_endpoint_keeps_the_package_pending(
    endpoint: LoopbackEndpoint, sender: HttpSender, outbox: Outbox, clock: FakeClock
) -> None:
    outbox.spool([package("a")])
    endpoint.behave("lie")
    worker = deliverer(outbox, sender, clock)
    worker.step()
    assert outbox.state_of("a") == "pending"
    (problem,) = outbox.summary().problems
    assert problem.last_error is not None
    assert "different package_id" in problem.last_error
    endpoint.behave("ok")
    clock.advance(60.0)
    worker.step()
    assert outbox.state_of("a") == "delivered"


def test_400_is_rejected_with_the_response_saved(
    endpoint: LoopbackEndpoint, sender: HttpSender, outbox: Outbox, clock: FakeClock
) -> None:
    outbox.spool([package("a")])
    endpoint.behave("reject", text="schema_version 9 is not supported")
    with capture_logs() as logs:
        deliverer(outbox, sender, clock).step()
    assert outbox.state_of("a") == "rejected"
    reason = json.loads((outbox.root / "rejected" / "a.reason.json").read_bytes())
    assert reason["http_status"] == 400
    assert "schema_version 9 is not supported" in reason["detail"]
    assert [e["package_id"] for e in logs if e["event"] == "package_rejected"] == ["a"]


def test_endpoint_down_for_a_while_then_up(
    endpoint: LoopbackEndpoint, sender: HttpSender, outbox: Outbox, clock: FakeClock
) -> None:
    outbox.spool([package("warmup")])
    worker = deliverer(outbox, sender, clock)
    worker.step()  # opens the kept-alive connection
    endpoint.stop()
    outbox.spool([package("a")])
    worker.step()
    worker.step()
    assert outbox.state_of("a") == "pending"
    assert outbox.attempts("a") == 1
    endpoint.start()
    clock.advance(60.0)
    worker.step()
    assert outbox.state_of("a") == "delivered"
    assert set(endpoint.unique) == {"warmup", "a"}


def test_timeout_is_retried(endpoint: LoopbackEndpoint, outbox: Outbox, clock: FakeClock) -> None:
    outbox.spool([package("a")])
    endpoint.fail_next(1, "slow", seconds=30)
    http = HttpSender(http_settings(endpoint.url, timeout_seconds=0.2), None)
    try:
        worker = deliverer(outbox, http, clock)
        worker.step()
        assert outbox.state_of("a") == "pending"
        clock.advance(60.0)
        worker.step()
    finally:
        http.close()
    assert outbox.state_of("a") == "delivered"


def test_step_reports_idle_and_honours_stop(
    endpoint: LoopbackEndpoint, sender: HttpSender, outbox: Outbox, clock: FakeClock
) -> None:
    worker = Deliverer(outbox, sender, max_backoff=60.0, clock=clock, idle_wait=2.5)
    assert worker.step() == 2.5
    outbox.spool([package("a")])
    assert worker.step(should_stop=lambda: True) == 0.0
    assert endpoint.received == []
    worker.step()
    assert outbox.state_of("a") == "delivered"


def test_a_crashing_sender_does_not_stop_the_loop(outbox: Outbox, clock: FakeClock) -> None:
    class Exploding:
        def send(self, package_id: str, body: bytes) -> Receipt:
            raise RuntimeError("bug")

        def probe(self) -> tuple[bool, str]:
            return True, "never asked"

        def close(self) -> None:
            pass

    outbox.spool([package("a")])
    Deliverer(outbox, Exploding(), max_backoff=5.0, clock=clock).step()
    assert outbox.attempts("a") == 1
    assert outbox.state_of("a") == "pending"


def test_deliverer_with_directory_sender(tmp_path: Path, outbox: Outbox, clock: FakeClock) -> None:
    outbox.spool([package("a")])
    expected = outbox.body("a")
    deliverer(outbox, DirectorySender(tmp_path / "drop"), clock).step()
    assert outbox.state_of("a") == "delivered"
    assert (tmp_path / "drop" / "a.json").read_bytes() == expected


def test_token_never_in_logs_receipts_or_outbox_files(
    endpoint: LoopbackEndpoint, sender: HttpSender, outbox: Outbox, clock: FakeClock
) -> None:
    outbox.spool([package(i) for i in ("ok", "fail", "lie", "echo")])
    endpoint.fail_next(1, "ok")
    endpoint.fail_next(1, "fail")
    endpoint.fail_next(1, "lie")
    # an endpoint that echoes the Authorization header back in its error text
    endpoint.fail_next(1, "reject", text=f"bad auth header: Bearer {TOKEN}")
    with capture_logs() as logs:
        worker = deliverer(outbox, sender, clock)
        worker.step()
        endpoint.stop()
        clock.advance(120.0)
        worker.step()
    assert len(endpoint.received) == 4
    receipts = [sender.send(package_id, b"{}") for package_id in ("fail", "lie")]
    assert {e["event"] for e in logs} == {
        "package_delivered",
        "delivery_failed",
        "package_rejected",
    }
    assert all(TOKEN not in repr(event) for event in logs)
    assert all(TOKEN not in repr(receipt) for receipt in receipts)
    assert outbox.state_of("echo") == "rejected"
    for path in outbox.root.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
