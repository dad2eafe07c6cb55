"""A real daemon against a misbehaving loopback endpoint: outages, errors, throttling,
timeouts, bad TLS and receipts that do not confirm. Every package arrives once the
endpoint is healthy, and the number of requests stays within what the backoff allows.

Counts are bounded with ``max_attempts_within``, the most attempts the endpoint-wide
backoff permits in the measured window: a slow machine can only make the count smaller.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.endpoint import (
    LoopbackEndpoint,
    RawListener,
    client_identity,
    max_attempts_within,
    tls_server,
    write_pem,
)
from tests.helpers import wait_until
from tests.integration.conftest import TOKEN, Harness, drop_files, validate_package

pytestmark = pytest.mark.integration

#: acquisitions per test (of tests.integration.conftest.SMALL_TIFFS)
FILES = 4
BACKOFF_CAP = 4.0


def configure(harness: Harness, **endpoint: Any) -> None:
    harness.settle = 0.5
    harness.write_config(
        harness.tmp / "token",
        group_quiet_seconds=0.5,
        endpoint={"max_backoff_seconds": BACKOFF_CAP, **endpoint},
    )


def failures(harness: Harness) -> list[dict[str, Any]]:
    return [e for e in harness.events() if e.get("event") == "delivery_failed"]


def assert_all_delivered(endpoint: LoopbackEndpoint, count: int) -> None:
    assert len(endpoint.unique) == count
    for request in endpoint.unique.values():
        validate_package(request.json)


# --------------------------------------------------------------------------- outages


def endpoint_down_then_up(
    harness: Harness, corpus: Path, endpoint: LoopbackEndpoint, outage: float
) -> None:
    configure(harness)
    endpoint.stop()
    down_since = time.monotonic()
    harness.start()
    drop_files(harness, corpus, FILES)
    harness.mark()
    assert harness.wait_log("acquisition_packaged", count=FILES, timeout=60)
    assert harness.wait_log("delivery_failed", timeout=30), harness.output()
    time.sleep(max(0.0, outage - (time.monotonic() - down_since)))
    window = time.monotonic() - down_since
    endpoint.start()
    assert endpoint.wait_for(FILES, timeout=120), harness.output()
    assert harness.stop() == 0

    attempts = len(failures(harness))
    assert 1 <= attempts <= max_attempts_within(window, BACKOFF_CAP), (attempts, window)
    # once it is up, each package needs exactly one request
    assert len(endpoint.received) == FILES
    assert_all_delivered(endpoint, FILES)
    assert harness.pending() == []


def test_endpoint_down_then_up(harness: Harness, corpus: Path, endpoint: LoopbackEndpoint) -> None:
    endpoint_down_then_up(harness, corpus, endpoint, outage=15.0)


@pytest.mark.long
@pytest.mark.timeout(900)
def test_endpoint_down_for_minutes_then_up(
    harness: Harness, corpus: Path, endpoint: LoopbackEndpoint
) -> None:
    endpoint_down_then_up(harness, corpus, endpoint, outage=240.0)


def test_run_once_stops_at_the_first_endpoint_failure(
    harness: Harness, corpus: Path, endpoint: LoopbackEndpoint
) -> None:
    configure(harness)
    endpoint.stop()
    drop_files(harness, corpus, FILES)
    result = harness.run_once()
    assert result.returncode == 1, result.stderr
    assert f"{FILES} undelivered" in result.stderr
    # the other packages would meet the same refused connection: they wait for the next run
    assert len(failures(harness)) == 1
    assert len(harness.pending()) == FILES


# --------------------------------------------------------------------------- HTTP errors


def test_server_errors_then_healthy(
    harness: Harness, corpus: Path, endpoint: LoopbackEndpoint
) -> None:
    configure(harness)
    endpoint.behave("fail", text="database unavailable")
    harness.start()
    drop_files(harness, corpus, FILES)
    harness.mark()
    assert wait_until(lambda: len(endpoint.received) >= 3, timeout=60), harness.output()
    first = endpoint.received[0].at
    time.sleep(8.0)
    endpoint.behave("ok")
    healthy_since = time.monotonic()
    assert endpoint.wait_for(FILES, timeout=120), harness.output()
    assert harness.stop() == 0

    failing = [r for r in endpoint.received if r.at < healthy_since]
    assert len(failing) <= max_attempts_within(healthy_since - first, BACKOFF_CAP)
    assert len(endpoint.received) - len(failing) <= FILES
    assert_all_delivered(endpoint, FILES)
    assert any("HTTP 500: database unavailable" in e["detail"] for e in failures(harness))


def test_429_retry_after_is_honoured_for_the_whole_endpoint(
    harness: Harness, corpus: Path, endpoint: LoopbackEndpoint
) -> None:
    configure(harness, max_backoff_seconds=1)
    throttled = 3
    endpoint.fail_next(throttled, "retry_after", seconds=3)
    drop_files(harness, corpus, 3)
    harness.start()
    assert endpoint.wait_for(3, timeout=120), harness.output()
    assert harness.stop() == 0

    received = list(endpoint.received)
    assert len(received) == throttled + 3
    # After each 429 nothing at all is sent for Retry-After seconds, though the backoff
    # cap is 1 s and other packages wait. (A lower bound: a slow machine only adds to it.)
    for answered, following in itertools.pairwise(received[: throttled + 1]):
        assert following.at - answered.at >= 3.0
    assert_all_delivered(endpoint, 3)


def test_timeouts_then_answers(harness: Harness, corpus: Path, endpoint: LoopbackEndpoint) -> None:
    configure(harness, timeout_seconds=1)
    endpoint.behave("slow", seconds=3)
    drop_files(harness, corpus, 2)
    harness.start()
    assert harness.wait_log("delivery_failed", count=2, timeout=60), harness.output()
    first = endpoint.received[0].at
    endpoint.behave("ok")
    healthy_since = time.monotonic()
    assert wait_until(lambda: not harness.pending(), timeout=120), harness.output()
    assert harness.stop() == 0

    timed_out = [e for e in failures(harness) if "timed out after 1s" in e["detail"]]
    assert len(timed_out) >= 2
    slow = [r for r in endpoint.received if r.at < healthy_since]
    assert len(slow) <= max_attempts_within(healthy_since - first, BACKOFF_CAP)
    # the slow endpoint kept what it got: at least once, one key per acquisition
    assert_all_delivered(endpoint, 2)


def test_slow_responses_within_the_timeout_are_sent_once(
    harness: Harness, corpus: Path, endpoint: LoopbackEndpoint
) -> None:
    configure(harness, timeout_seconds=20)
    endpoint.behave("slow", seconds=1.5)
    drop_files(harness, corpus, 3)
    harness.start()
    assert endpoint.wait_for(3, timeout=120), harness.output()
    assert wait_until(lambda: not harness.pending(), timeout=30)
    assert harness.stop() == 0
    assert len(endpoint.received) == 3
    assert failures(harness) == []


# --------------------------------------------------------------------------- receipts


@pytest.mark.parametrize(
    ("mode", "require_receipt", "message"),
    [
        ("lie", False, "endpoint confirmed a different package_id"),
        ("lie_digest", False, "but the body sent has"),
        ("no_receipt", True, "/ingest is not a receipt (text/html"),
        ("login_portal", False, "is not a receipt (text/html; charset=utf-8, 'Sign in"),
        ("conflict_lie", False, "endpoint confirmed a different package_id"),
        ("conflict_bare", True, "HTTP 409 without a receipt naming the package"),
    ],
)
def test_a_2xx_that_does_not_confirm_keeps_the_package(
    harness: Harness,
    corpus: Path,
    endpoint: LoopbackEndpoint,
    mode: str,
    require_receipt: bool,
    message: str,
) -> None:
    configure(harness, require_receipt=require_receipt)
    endpoint.behave(mode)
    drop_files(harness, corpus, 2)
    harness.start()
    assert harness.wait_log("delivery_failed", count=3, timeout=60), harness.output()
    first = endpoint.received[0].at
    assert len(harness.pending()) == 2, "an unconfirmed package must stay in the outbox"
    assert endpoint.unique == {}
    status = harness.command("status")
    assert message in status.stdout, status.stdout
    endpoint.behave("ok")
    healthy_since = time.monotonic()
    assert endpoint.wait_for(2, timeout=120), harness.output()
    assert wait_until(lambda: not harness.pending(), timeout=30)
    assert harness.stop() == 0

    assert all(message in e["detail"] for e in failures(harness))
    lied_to = [r for r in endpoint.received if r.at < healthy_since]
    assert len(lied_to) <= max_attempts_within(healthy_since - first, BACKOFF_CAP)
    assert_all_delivered(endpoint, 2)


# --------------------------------------------------------------------------- endpoint set-up


def test_a_refused_token_holds_every_package_until_it_is_fixed(
    harness: Harness, corpus: Path, endpoint: LoopbackEndpoint
) -> None:
    configure(harness)
    endpoint.behave("status", code=401, text="token expired")
    drop_files(harness, corpus, 3)
    harness.start()
    assert harness.wait_log("delivery_failed", count=3, timeout=60), harness.output()
    status = harness.command("status")
    check = harness.command("check")
    assert "rejected 0" in status.stdout, status.stdout
    assert "does not accept the token" in status.stdout
    assert check.returncode == 1
    assert "FAIL" in check.stdout
    assert "HTTP 401: the endpoint does not accept the token" in check.stdout
    endpoint.behave("ok")
    assert endpoint.wait_for(3, timeout=120), harness.output()
    assert wait_until(lambda: not harness.pending(), timeout=30)
    assert harness.stop() == 0
    refusals = [e for e in harness.events() if e.get("event") == "endpoint_refuses_packages"]
    assert len(refusals) == 1, "one error line while the refusal lasts"
    assert harness.count_events("endpoint_accepts_again") == 1
    assert harness.count_events("package_rejected") == 0
    assert_all_delivered(endpoint, 3)


def test_a_token_rotated_while_running_is_read_again_on_401(
    harness: Harness, corpus: Path, endpoint: LoopbackEndpoint
) -> None:
    # a query value may be a secret the daemon cannot recognise: it is never shown
    configure(harness, url=f"{endpoint.url}?project=b104-confidential")
    token_file = harness.tmp / "token"
    endpoint.token = TOKEN
    check = harness.command("check")
    assert check.returncode == 0, check.stdout
    assert "answered HTTP 204 to the no-store probe (token accepted)" in check.stdout
    harness.start()
    drop_files(harness, corpus, 1)
    harness.mark()
    assert endpoint.wait_for(1, timeout=60), harness.output()
    # the endpoint's side of a rotation comes first: the daemon's token is now refused
    rotated = "rotated-7e3b5a9c1d-token"
    endpoint.token = rotated
    check = harness.command("check")
    token_file.write_text(rotated + "\n")
    drop_files(harness, corpus, 3)  # the first again, unchanged: not sent again
    harness.mark()
    assert endpoint.wait_for(3, timeout=60), harness.output()
    assert harness.stop() == 0

    assert check.returncode == 1
    assert (
        f"HTTP 401: the endpoint does not accept the token from token file {token_file} "
        "(read again after each 401)" in check.stdout
    ), check.stdout
    assert endpoint.probes[-1].headers["authorization"] == f"Bearer {TOKEN}"
    reloads = [e for e in harness.events() if e.get("event") == "token_reloaded"]
    assert [e["path"] for e in reloads] == [str(token_file)]
    first, *later = endpoint.unique.values()
    refused = [r for r in endpoint.received if r.at > first.at]
    assert refused[0].headers["authorization"] == f"Bearer {TOKEN}", "401, then read again"
    assert [r.headers["authorization"] for r in later] == [f"Bearer {rotated}"] * 2
    assert harness.count_events("package_rejected") == 0
    (started,) = [e for e in harness.events() if e.get("event") == "daemon_started"]
    assert started["endpoint"] == f"{endpoint.url}?project=[redacted]"
    for text in (harness.output(), check.stdout):
        assert "b104-confidential" not in text
        assert rotated not in text
    assert (
        endpoint.unique[first.headers["idempotency-key"]].path
        == "/ingest?project=b104-confidential"
    )
    assert_all_delivered(endpoint, 3)


def test_an_endpoint_that_cannot_be_set_up_is_a_config_error_not_a_crash_loop(
    harness: Harness,
) -> None:
    configure(harness, token_file=str(harness.tmp / "no-such-token"))
    for command in (("run",), ("run", "--once"), ("check",)):
        result = harness.command(*command)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        output = result.stdout + result.stderr
        assert "no-such-token does not exist" in output
        assert "Traceback" not in output
    # nothing but the log is written before the endpoint is usable
    assert sorted(path.name for path in harness.state.iterdir()) == ["acqharvest.log"]


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def server_ca() -> trustme.CA:
    return trustme.CA()


@pytest.mark.parametrize(
    ("trusted", "hosts", "message"),
    [
        ("another CA", ("localhost",), "set endpoint.ca_bundle to that CA's certificate"),
        ("server CA", ("ingest.example.org",), "not issued for localhost"),
    ],
)
def test_tls_with_a_wrong_certificate_is_refused_and_sends_nothing(
    harness: Harness,
    corpus: Path,
    server_ca: trustme.CA,
    trusted: str,
    hosts: tuple[str, ...],
    message: str,
) -> None:
    bundle_ca = trustme.CA() if trusted == "another CA" else server_ca
    with tls_server(server_ca, *hosts) as server:
        configure(
            harness, url=server.url, ca_bundle=str(write_pem(bundle_ca, harness.tmp / "ca.pem"))
        )
        drop_files(harness, corpus, 1)
        harness.start()
        assert harness.wait_log("delivery_failed", count=2, timeout=60), harness.output()
        check = harness.command("check")
        status = harness.command("status")
        assert harness.stop() == 0
        assert server.received == [], "nothing may reach an endpoint that failed verification"
    for event in failures(harness):
        assert "TLS certificate verification failed for localhost" in event["detail"]
        assert message in event["detail"]
        assert "nothing was sent" in event["detail"]
    assert check.returncode == 1
    assert "FAIL" in check.stdout, check.stdout
    assert message in check.stdout, check.stdout
    assert message in status.stdout
    assert len(harness.pending()) == 1


def test_https_url_to_a_plain_http_server_never_falls_back_to_clear(
    harness: Harness, corpus: Path
) -> None:
    with RawListener() as listener:
        configure(harness, url=f"https://localhost:{listener.port}/ingest")
        drop_files(harness, corpus, 1)
        harness.start()
        assert harness.wait_log("delivery_failed", count=2, timeout=60), harness.output()
        assert harness.stop() == 0
        seen = listener.received
    assert seen, "the daemon should have tried a TLS handshake"
    assert seen[0] == 0x16, "only TLS handshakes may reach the port"
    (pending,) = harness.pending()
    for secret in (pending.stem.encode(), TOKEN.encode(), b"schema_version", b"POST "):
        assert secret not in seen
    assert all("does not answer in TLS" in e["detail"] for e in failures(harness))


def test_mutual_tls_with_a_client_certificate(
    harness: Harness, corpus: Path, server_ca: trustme.CA
) -> None:
    client_ca = trustme.CA()
    identity = client_identity(client_ca, harness.tmp)
    bundle = str(write_pem(server_ca, harness.tmp / "ca.pem"))
    with tls_server(server_ca, "localhost", client_ca=client_ca) as server:
        configure(harness, url=server.url, ca_bundle=bundle)
        drop_files(harness, corpus, 2)
        harness.start()
        assert harness.wait_log("delivery_failed", timeout=60), harness.output()
        assert harness.stop() == 0
        assert server.received == []
        assert "requires a client certificate" in failures(harness)[0]["detail"]

        configure(
            harness,
            url=server.url,
            ca_bundle=bundle,
            client_cert=str(identity.cert),
            client_key=str(identity.key),
        )
        check = harness.command("check")
        assert "client certificate presented" in check.stdout, check.stdout
        harness.start()
        assert server.wait_for(2, timeout=120), harness.output()
        assert harness.stop() == 0
    assert_all_delivered(server, 2)
    assert server.received[0].headers["authorization"] == f"Bearer {TOKEN}"
