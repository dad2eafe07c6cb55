"""Delivery against the real loopback endpoint: senders, outcomes, schedule, token hygiene."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from acqharvest import __version__
from acqharvest.deliver import (
    AUTH_TEXT_CAP,
    PROBE_HEADER,
    RESPONSE_TEXT_CAP,
    RETRY_AFTER_CAP,
    CrateSender,
    Deliverer,
    DeliveryConfigError,
    DirectorySender,
    HttpSender,
    Sender,
    backoff_delay,
    body_digest,
    build_sender,
    parse_retry_after,
    read_token,
    safe_url,
)
from acqharvest.model import EndpointSettings, Package, Receipt
from acqharvest.outbox import Outbox
from acqharvest.rocrate import crate_bytes
from tests.endpoint import (
    ECHO_ENCODINGS,
    ConnectProxy,
    LoopbackEndpoint,
    RawListener,
    client_identity,
    max_attempts_within,
    tls_server,
    write_pem,
)
from tests.helpers import FakeClock

TOKEN = "tok-3f9a8c1e-very-secret"


def http_settings(url: str, **kw: object) -> EndpointSettings:
    return EndpointSettings(type="http", url=url, **kw)  # type: ignore[arg-type]


def package(package_id: str) -> Package:
    return Package(package_id, f"key-{package_id}", {"package_id": package_id, "n": 1})


def send_once(
    settings: EndpointSettings, token: str | None, package_id: str, body: bytes
) -> Receipt:
    """One send through a sender of its own, closed afterwards."""
    http = HttpSender(settings, token)
    try:
        return http.send(package_id, body)
    finally:
        http.close()


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


def deliverer(outbox: Outbox, sender: Sender, clock: FakeClock) -> Deliverer:
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
    assert send_once(http_settings(endpoint.url), None, "a", b"{}").outcome == "confirmed"
    assert "authorization" not in endpoint.received[0].headers


def test_409_confirms(endpoint: LoopbackEndpoint, sender: HttpSender) -> None:
    endpoint.behave("conflict")
    receipt = sender.send("a", b"{}")
    assert (receipt.outcome, receipt.http_status) == ("confirmed", 409)


@pytest.fixture
def lenient_and_strict(endpoint: LoopbackEndpoint) -> Iterator[tuple[HttpSender, HttpSender]]:
    """Senders to ``endpoint`` without and with ``require_receipt``."""
    lenient = HttpSender(http_settings(endpoint.url), None)
    strict = HttpSender(http_settings(endpoint.url, require_receipt=True), None)
    yield lenient, strict
    lenient.close()
    strict.close()


def test_409_is_held_to_the_receipt_rules(
    endpoint: LoopbackEndpoint, lenient_and_strict: tuple[HttpSender, HttpSender]
) -> None:
    lenient, strict = lenient_and_strict
    endpoint.behave("conflict_lie")
    lied = lenient.send("a", b"{}")
    endpoint.behave("conflict_bare")
    bare_lenient = lenient.send("a", b"{}")
    bare_strict = strict.send("a", b"{}")
    endpoint.behave("conflict")
    named_strict = strict.send("a", b"{}")
    assert (lied.outcome, lied.http_status) == ("retry", 409)
    assert "different package_id" in lied.detail
    assert bare_lenient.outcome == "confirmed"
    assert (bare_strict.outcome, bare_strict.http_status) == ("retry", 409)
    assert "HTTP 409 without a receipt" in bare_strict.detail
    assert named_strict.outcome == "confirmed"


def test_lying_2xx_is_not_confirmed(endpoint: LoopbackEndpoint, sender: HttpSender) -> None:
    endpoint.behave("lie")
    receipt = sender.send("a", b"{}")
    assert receipt.outcome == "retry"
    assert receipt.http_status == 200
    assert "endpoint confirmed a different package_id" in receipt.detail


def test_receipt_with_another_digest_is_not_confirmed(
    endpoint: LoopbackEndpoint, sender: HttpSender
) -> None:
    endpoint.behave("lie_digest")
    receipt = sender.send("a", b'{"package_id":"a"}')
    assert (receipt.outcome, receipt.http_status) == ("retry", 200)
    assert "sha256" in receipt.detail
    assert body_digest(b'{"package_id":"a"}') in receipt.detail


def test_a_matching_receipt_confirms(endpoint: LoopbackEndpoint, sender: HttpSender) -> None:
    assert sender.send("a", b'{"package_id":"a"}').outcome == "confirmed"
    (request,) = endpoint.received
    assert request.headers["idempotency-key"] == "a"


@pytest.mark.parametrize(
    ("mode", "kw"),
    [
        ("status", {"code": 204}),
        ("status", {"code": 200, "text": '{"stored": true}'}),
    ],
    ids=["empty", "json-without-package-id"],
)
def test_an_empty_or_json_2xx_confirms_unless_a_receipt_is_required(
    endpoint: LoopbackEndpoint,
    lenient_and_strict: tuple[HttpSender, HttpSender],
    mode: str,
    kw: dict[str, object],
) -> None:
    lenient, strict = lenient_and_strict
    endpoint.behave(mode, **kw)
    assert lenient.send("a", b"{}").outcome == "confirmed"
    receipt = strict.send("a", b"{}")
    assert (receipt.outcome, receipt.http_status) == ("retry", kw["code"])
    assert "without a receipt" in receipt.detail
    assert "require_receipt" in receipt.detail


@pytest.mark.parametrize(
    ("mode", "kw", "shown"),
    [
        ("login_portal", {}, "text/html; charset=utf-8, 'Sign in - Example University SSO'"),
        ("no_receipt", {}, "text/html, '<html><body>Welcome to the proxy</body></html>'"),
        ("status", {"code": 200, "text": "OK"}, "text/plain; charset=utf-8, 'OK'"),
        ("status", {"code": 409, "text": "<p>exists</p>"}, "text/plain; charset=utf-8"),
    ],
    ids=["login-portal", "html-page", "plain-text", "409-text"],
)
def test_a_2xx_that_is_not_a_receipt_never_confirms(
    endpoint: LoopbackEndpoint,
    lenient_and_strict: tuple[HttpSender, HttpSender],
    mode: str,
    kw: dict[str, object],
    shown: str,
) -> None:
    for sender in lenient_and_strict:
        endpoint.behave(mode, **kw)
        receipt = sender.send("a", b"{}")
        assert (receipt.outcome, receipt.endpoint_wide) == ("retry", True)
        assert receipt.detail.startswith(
            f"HTTP {receipt.http_status} from {endpoint.url} is not a receipt ({shown}"
        ), receipt.detail
        assert "check endpoint.url" in receipt.detail
        assert receipt.detail.endswith("not counted as delivered")
    assert endpoint.unique == {}


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
    receipt = send_once(http_settings(endpoint.url, timeout_seconds=0.2), TOKEN, "a", b"{}")
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


@pytest.mark.parametrize(
    ("code", "advice"),
    [
        (401, "does not accept the token"),
        (403, "refuses this client"),
        (404, "check endpoint.url"),
        (405, "does not take POST"),
        (407, "the proxy wants credentials"),
        (410, "refuses every package"),
    ],
)
def test_endpoint_wide_refusals_are_retried_never_rejected(
    endpoint: LoopbackEndpoint, sender: HttpSender, code: int, advice: str
) -> None:
    endpoint.behave("status", code=code, text="go away")
    receipt = sender.send("a", b"{}")
    assert (receipt.outcome, receipt.http_status) == ("retry", code)
    assert advice in receipt.detail
    assert "nothing is rejected" in receipt.detail


@pytest.mark.parametrize("code", [400, 413, 415, 422])
def test_refusals_of_the_package_itself_reject_it(
    endpoint: LoopbackEndpoint, sender: HttpSender, code: int
) -> None:
    endpoint.behave("status", code=code, text="bad package")
    receipt = sender.send("a", b"{}")
    assert (receipt.outcome, receipt.http_status, receipt.detail) == (
        "rejected",
        code,
        f"HTTP {code}: bad package",
    )


@pytest.mark.parametrize("code", [301, 302, 307, 308])
def test_a_redirect_is_never_followed_and_names_the_new_url(
    endpoint: LoopbackEndpoint, sender: HttpSender, code: int
) -> None:
    target = "https://ingest.example.org/v2/packages"
    endpoint.behave("status", code=code, location=target)
    receipt = sender.send("a", b"{}")
    assert (receipt.outcome, receipt.http_status) == ("retry", code)
    assert f"redirects to {target}: set endpoint.url to it" in receipt.detail
    assert len(endpoint.received) == 1, "a redirect must not be followed"
    ok, detail = sender.probe()
    assert not ok
    assert target in detail


def test_check_fails_on_a_refused_token(endpoint: LoopbackEndpoint, sender: HttpSender) -> None:
    endpoint.behave("status", code=401)
    ok, detail = sender.probe()
    assert not ok
    assert "HTTP 401: the endpoint does not accept the token" in detail


def test_the_probe_is_authenticated_and_stores_nothing(
    endpoint: LoopbackEndpoint, sender: HttpSender
) -> None:
    assert sender.probe() == (True, "answered HTTP 204 to the no-store probe (token accepted)")
    (probe,) = endpoint.probes
    assert (probe.method, probe.body) == ("POST", b"")
    assert probe.headers["authorization"] == f"Bearer {TOKEN}"
    assert probe.headers[PROBE_HEADER.lower()] == "check"
    assert "idempotency-key" not in probe.headers
    assert endpoint.received == []
    assert endpoint.unique == {}


@pytest.mark.parametrize(
    ("behaviour", "ok", "said"),
    [
        (
            {"mode": "status", "code": 401},
            False,
            "HTTP 401: the endpoint does not accept the token from token file",
        ),
        (
            {"mode": "status", "code": 403},
            False,
            "HTTP 403: the endpoint refuses this client: the token from token file",
        ),
        ({"mode": "login_portal"}, False, "is not a receipt (text/html; charset=utf-8, 'Sign in"),
        ({"mode": "fail"}, False, "HTTP 500 to the no-store probe: the endpoint fails now"),
        ({"mode": "status", "code": 404}, False, "nothing at this URL takes packages"),
        # an endpoint that does not know the probe takes the token, then refuses the body
        ({"mode": "status", "code": 422}, True, "does not know the probe"),
    ],
    ids=["401", "403", "login-portal", "500", "404", "422"],
)
def test_the_probe_fails_unless_the_endpoint_takes_the_token(
    endpoint: LoopbackEndpoint,
    tmp_path: Path,
    behaviour: dict[str, object],
    ok: bool,
    said: str,
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    endpoint.behave(**behaviour)  # type: ignore[arg-type]
    http = HttpSender(http_settings(endpoint.url, token_file=token_file), TOKEN)
    try:
        result = http.probe()
    finally:
        http.close()
    assert result[0] is ok, result
    assert said in result[1]
    assert endpoint.received == []


def test_a_probe_without_a_token_says_one_is_wanted(endpoint: LoopbackEndpoint) -> None:
    endpoint.token = TOKEN
    http = HttpSender(http_settings(endpoint.url), None)
    try:
        ok, detail = http.probe()
    finally:
        http.close()
    assert not ok
    assert "none is configured: set endpoint.token_file or endpoint.token_env" in detail


def test_a_token_rotated_in_its_file_is_read_again_on_401(
    endpoint: LoopbackEndpoint, tmp_path: Path
) -> None:
    old, new, newer = "tok-old-5b7c9d1e", "tok-new-2a4c6e8f", "tok-newer-0f1e2d3c"
    token_file = tmp_path / "token"
    token_file.write_text(old)
    token_file.chmod(0o600)
    http = build_sender(http_settings(endpoint.url, token_file=token_file))
    assert isinstance(http, HttpSender)
    try:
        endpoint.token = new
        token_file.write_text(new + "\n")
        with capture_logs() as rotated:
            first = http.send("a", b"{}")
        endpoint.token = newer  # not yet in the file: the 401 stays
        with capture_logs() as unchanged:
            second = http.send("b", b"{}")
        token_file.unlink()  # mid-rotation: the token read before is kept
        with capture_logs() as missing:
            third = http.send("c", b"{}")
    finally:
        http.close()
    assert first.outcome == "confirmed", first
    assert [r.headers["authorization"] for r in endpoint.requests_for("a")] == [
        f"Bearer {old}",
        f"Bearer {new}",
    ]
    (reloaded,) = rotated
    assert (reloaded["event"], reloaded["path"]) == ("token_reloaded", str(token_file))
    assert (second.outcome, second.http_status) == ("retry", 401)
    assert f"does not accept the token from token file {token_file} (read again" in second.detail
    assert unchanged == []
    assert [r.headers["authorization"] for r in endpoint.requests_for("b")] == [f"Bearer {new}"]
    assert (third.outcome, third.http_status) == ("retry", 401)
    assert [e["event"] for e in missing] == ["token_reload_failed"]
    assert "does not exist" in missing[0]["error"]
    for token in (old, new, newer):
        assert token not in repr(rotated + unchanged + missing + [first, second, third])


def test_environment_proxies_are_ignored(
    endpoint: LoopbackEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    with RawListener() as proxy:
        proxy_url = f"http://127.0.0.1:{proxy.port}"
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            monkeypatch.setenv(name, proxy_url)
        # a SOCKS proxy would need an extra package: once, constructing the client failed
        monkeypatch.setenv("ALL_PROXY", "socks5://127.0.0.1:1080")
        receipt = send_once(http_settings(endpoint.url), TOKEN, "a", b"{}")
        seen = proxy.received
    assert receipt.outcome == "confirmed"
    assert seen == b"", "the token went to a proxy from the environment"
    assert endpoint.received[0].headers["authorization"] == f"Bearer {TOKEN}"


def test_sender_set_up_failures_are_config_errors() -> None:
    with pytest.raises(DeliveryConfigError, match="cannot set up the HTTP client"):
        build_sender(http_settings("https://localhost/x", proxy="http://[::1"))
    with pytest.raises(DeliveryConfigError, match=r"endpoint\.proxy .* not an http"):
        build_sender(http_settings("https://localhost/x", proxy="socks5://127.0.0.1:1080"))
    with pytest.raises(DeliveryConfigError, match="plain http"):
        build_sender(http_settings("http://127.0.0.1:9/x", proxy="http://127.0.0.1:3128"))
    with pytest.raises(DeliveryConfigError, match="user name or password") as info:
        build_sender(http_settings("http://ingest:pa55@127.0.0.1:9/x"))
    assert "pa55" not in str(info.value)


def test_a_dripping_answer_is_cut_off_at_the_timeout(endpoint: LoopbackEndpoint) -> None:
    # about 100 bytes, one every 0.3 s: half a minute without the limit on the whole exchange
    endpoint.behave("drip", interval=0.3)
    receipt = send_once(http_settings(endpoint.url, timeout_seconds=1.0), None, "a", b"{}")
    assert receipt.outcome == "retry"
    assert "timed out after 1s" in receipt.detail
    assert "whole exchange" in receipt.detail
    assert endpoint.streamed < 60, "the answer should have been cut off early"


@pytest.mark.parametrize("require_receipt", [False, True])
def test_a_huge_answer_is_not_read_whole(endpoint: LoopbackEndpoint, require_receipt: bool) -> None:
    endpoint.behave("huge", size=2**30)
    settings = http_settings(endpoint.url, timeout_seconds=20.0, require_receipt=require_receipt)
    receipt = send_once(settings, None, "a", b"{}")
    assert receipt.outcome == ("retry" if require_receipt else "confirmed")
    assert receipt.http_status == 200
    # read 64 KiB, then the connection is dropped: what the socket buffers took, no more
    assert endpoint.streamed < 2**25


# --------------------------------------------------------------------------- TLS


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_endpoint(tls_ca: trustme.CA) -> Iterator[LoopbackEndpoint]:
    with tls_server(tls_ca, "localhost", "127.0.0.1") as server:
        yield server


def test_tls_with_ca_bundle_confirms(
    tls_endpoint: LoopbackEndpoint, tls_ca: trustme.CA, tmp_path: Path
) -> None:
    bundle = write_pem(tls_ca, tmp_path / "ca.pem")
    assert (
        send_once(http_settings(tls_endpoint.url, ca_bundle=bundle), TOKEN, "a", b"{}").outcome
        == "confirmed"
    )
    assert set(tls_endpoint.unique) == {"a"}


def test_tls_with_an_unknown_ca_says_verification_failed(tls_endpoint: LoopbackEndpoint) -> None:
    receipt = send_once(http_settings(tls_endpoint.url), TOKEN, "a", b"{}")
    assert receipt.outcome == "retry"
    assert "certificate verification failed" in receipt.detail
    assert tls_endpoint.received == []


def test_tls_with_a_certificate_for_another_host_says_so(
    tls_ca: trustme.CA, tmp_path: Path
) -> None:
    bundle = write_pem(tls_ca, tmp_path / "ca.pem")
    with tls_server(tls_ca, "ingest.example.org") as server:
        receipt = send_once(http_settings(server.url, ca_bundle=bundle), TOKEN, "a", b"{}")
        assert server.received == []
    assert receipt.outcome == "retry"
    assert "not issued for localhost" in receipt.detail
    assert "nothing was sent" in receipt.detail


def test_sslkeylogfile_is_never_written(
    tls_endpoint: LoopbackEndpoint,
    tls_ca: trustme.CA,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = tmp_path / "keys.log"
    monkeypatch.setenv("SSLKEYLOGFILE", str(keys))
    bundle = write_pem(tls_ca, tmp_path / "ca.pem")
    receipt = send_once(http_settings(tls_endpoint.url, ca_bundle=bundle), TOKEN, "a", b"{}")
    assert receipt.outcome == "confirmed"
    assert not keys.exists(), "TLS session keys were written where SSLKEYLOGFILE pointed"


def test_https_through_a_configured_proxy_is_tunnelled_end_to_end(
    tls_endpoint: LoopbackEndpoint, tls_ca: trustme.CA, tmp_path: Path
) -> None:
    bundle = write_pem(tls_ca, tmp_path / "ca.pem")
    body = b'{"package_id":"via-proxy"}'
    with ConnectProxy() as proxy:
        proxy_url = proxy.url.replace("http://", "http://scope:pr0xy-pa55@")
        settings = http_settings(tls_endpoint.url, ca_bundle=bundle, proxy=proxy_url)
        with capture_logs() as logs:
            sender = build_sender(settings)
            try:
                receipt = sender.send("via-proxy", body)
                tls_endpoint.stop()
                failed = sender.send("via-proxy", body)
            finally:
                sender.close()
        heads, tunnelled = proxy.heads, proxy.tunnelled
    assert receipt.outcome == "confirmed"
    assert set(tls_endpoint.unique) == {"via-proxy"}
    assert heads[0].startswith(f"CONNECT localhost:{tls_endpoint.port} ")
    assert "proxy-authorization: basic" in heads[0].lower()
    # the proxy carried only TLS: no header, token or package in clear
    assert tunnelled[0] == 0x16
    for clear in (TOKEN.encode(), b"Idempotency-Key", b"via-proxy", b"POST "):
        assert clear not in tunnelled
    assert failed.outcome == "retry"
    texts = repr(logs) + failed.detail + receipt.detail
    assert "pr0xy-pa55" not in texts


@pytest.fixture
def mtls_endpoint(tls_ca: trustme.CA) -> Iterator[tuple[LoopbackEndpoint, trustme.CA]]:
    """An https endpoint that accepts only client certificates from its own client CA."""
    client_ca = trustme.CA()
    with tls_server(tls_ca, "localhost", client_ca=client_ca) as server:
        yield server, client_ca


def test_mutual_tls(
    mtls_endpoint: tuple[LoopbackEndpoint, trustme.CA], tls_ca: trustme.CA, tmp_path: Path
) -> None:
    server, client_ca = mtls_endpoint
    bundle = write_pem(tls_ca, tmp_path / "ca.pem")
    trusted = client_identity(client_ca, tmp_path, "trusted")
    stranger = client_identity(trustme.CA(), tmp_path, "stranger")
    outcomes = {}
    for label, identity in (("none", None), ("trusted", trusted), ("stranger", stranger)):
        settings = http_settings(
            server.url,
            ca_bundle=bundle,
            client_cert=identity and identity.cert,
            client_key=identity and identity.key,
        )
        http = HttpSender(settings, TOKEN)
        try:
            outcomes[label] = http.send(label, b"{}")
            if label == "trusted":
                assert http.probe() == (
                    True,
                    "answered HTTP 204 to the no-store probe (token accepted, TLS verified, "
                    "client certificate presented)",
                )
        finally:
            http.close()
    assert outcomes["trusted"].outcome == "confirmed"
    assert outcomes["none"].outcome == "retry"
    assert "requires a client certificate" in outcomes["none"].detail
    assert "endpoint.client_cert" in outcomes["none"].detail
    assert outcomes["stranger"].outcome == "retry"
    assert f"refused the client certificate {stranger.cert}" in outcomes["stranger"].detail
    assert set(server.unique) == {"trusted"}
    assert [r.headers["idempotency-key"] for r in server.received] == ["trusted"]


def test_client_certificate_problems_name_the_file(tls_ca: trustme.CA, tmp_path: Path) -> None:
    ours = client_identity(tls_ca, tmp_path, "ours")
    other = client_identity(trustme.CA(), tmp_path, "other")
    url = "https://localhost:9/ingest"
    with pytest.raises(DeliveryConfigError, match=r"client_cert .*missing\.crt does not exist"):
        HttpSender(http_settings(url, client_cert=tmp_path / "missing.crt"), None)
    with pytest.raises(DeliveryConfigError, match="KEY_VALUES_MISMATCH"):
        HttpSender(http_settings(url, client_cert=ours.cert, client_key=other.key), None)
    with pytest.raises(DeliveryConfigError, match="client_cert is not"):
        HttpSender(http_settings(url, client_key=ours.key), None)
    key = serialization.load_pem_private_key(ours.key.read_bytes(), None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pass phrase"),
        )
    )
    encrypted.chmod(0o600)
    # never a pass phrase prompt on the terminal: a clear error instead
    with pytest.raises(DeliveryConfigError, match="unencrypted") as info:
        HttpSender(http_settings(url, client_cert=ours.cert, client_key=encrypted), None)
    assert "BEGIN" not in str(info.value)
    combined = tmp_path / "combined.pem"
    combined.write_bytes(ours.cert.read_bytes() + ours.key.read_bytes())
    combined.chmod(0o600)
    HttpSender(http_settings(url, client_cert=combined), None).close()


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_client_key_readable_by_others_warns(tls_ca: trustme.CA, tmp_path: Path) -> None:
    identity = client_identity(tls_ca, tmp_path)
    identity.key.chmod(0o640)
    with capture_logs() as logs:
        settings = http_settings(
            "https://localhost:9/x", client_cert=identity.cert, client_key=identity.key
        )
        HttpSender(settings, None).close()
    (event,) = logs
    assert event["event"] == "client_key_permissions"
    assert event["path"] == str(identity.key)
    assert "chmod 600" in event["hint"]


def test_https_to_a_plain_http_server_sends_nothing_in_clear(tmp_path: Path) -> None:
    with RawListener() as listener:
        receipt = send_once(
            http_settings(f"https://localhost:{listener.port}/ingest"),
            TOKEN,
            "pkg-in-clear",
            b'{"package_id":"pkg-in-clear"}',
        )
    assert receipt.outcome == "retry"
    assert "does not answer in TLS" in receipt.detail
    assert listener.received, "the client should have tried a TLS handshake"
    assert listener.received[0] == 0x16, "the first byte must open a TLS handshake record"
    for secret in (b"pkg-in-clear", TOKEN.encode(), b"Idempotency-Key", b"POST"):
        assert secret not in listener.received


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


def test_on_answer_hears_each_confirmation_and_refusal_once_recorded(
    endpoint: LoopbackEndpoint, outbox: Outbox, sender: HttpSender, clock: FakeClock
) -> None:
    heard: list[tuple[str, str, str | None]] = []

    def on_answer(receipt: Receipt) -> None:
        # the outbox recorded it first: the status shown never runs ahead of the disk
        heard.append((receipt.package_id, receipt.outcome, outbox.state_of(receipt.package_id)))

    worker = Deliverer(outbox, sender, max_backoff=60.0, clock=clock, on_answer=on_answer)
    outbox.spool([package("good")])
    worker.step()
    endpoint.behave("fail")
    outbox.spool([package("later")])
    worker.step()  # a failed attempt is no answer
    clock.advance(120)
    endpoint.behave("reject")
    worker.step()

    assert heard == [("good", "confirmed", "delivered"), ("later", "rejected", "rejected")]


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


def test_token_errors_name_the_config_section(tmp_path: Path) -> None:
    settings = EndpointSettings(type="http", token_file=tmp_path / "missing")
    with pytest.raises(DeliveryConfigError) as endpoint_error:
        read_token(settings)
    with pytest.raises(DeliveryConfigError) as status_error:
        read_token(settings, key="status_server")
    assert (endpoint_error.value.key, status_error.value.key) == ("endpoint", "status_server")
    assert str(status_error.value) == f"token file {tmp_path / 'missing'} does not exist"


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
    assert max(exponential / 2, floor) <= delay <= max(exponential, floor)


def test_backoff_grows_then_caps() -> None:
    rng = random.Random(1)  # noqa: S311 - seeded jitter
    first = [backoff_delay(1, cap=300, retry_after=None, rng=rng) for _ in range(200)]
    late = [backoff_delay(30, cap=300, retry_after=None, rng=rng) for _ in range(200)]
    assert max(first) <= 1.0
    assert 150 < max(late) <= 300


def test_parse_retry_after_forms() -> None:
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
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
    worker.step()
    clock.advance(119.0)
    worker.step()
    assert len(endpoint.received) == 1
    clock.advance(1.0)
    worker.step()
    assert outbox.state_of("a") == "delivered"
    assert len(endpoint.received) == 2


def test_a_package_the_endpoint_keeps_failing_does_not_block_others(
    endpoint: LoopbackEndpoint, sender: HttpSender, outbox: Outbox, clock: FakeClock
) -> None:
    endpoint.on_receive = lambda r: "fail" if r.headers["idempotency-key"] == "poison" else None
    outbox.spool([package("poison"), package("b"), package("c")])
    worker = deliverer(outbox, sender, clock)
    for _ in range(10):
        worker.step()
        clock.advance(1.0)
    assert outbox.state_of("b") == outbox.state_of("c") == "delivered"
    assert outbox.pending() == ["poison"]
    # its own backoff grows, so it is tried less and less often
    assert 2 <= len(endpoint.requests_for("poison")) <= 5


def test_retry_after_pauses_the_whole_endpoint(
    endpoint: LoopbackEndpoint, sender: HttpSender, outbox: Outbox, clock: FakeClock
) -> None:
    outbox.spool([package("a"), package("b")])
    worker = deliverer(outbox, sender, clock)
    endpoint.fail_next(1, "retry_after", seconds=30)
    worker.step()
    outbox.spool([package("c")])
    clock.advance(29.0)
    assert 0.0 < worker.step() <= 1.0
    assert len(endpoint.received) == 1, "nothing may be sent while the endpoint asked to wait"
    clock.advance(1.0)
    worker.step()
    assert outbox.pending() == ["a"] or outbox.pending() == []
    clock.advance(60.0)
    worker.step()
    assert outbox.pending() == []
    assert set(endpoint.unique) == {"a", "b", "c"}


def test_no_retry_storm_however_many_packages_wait(
    endpoint: LoopbackEndpoint, sender: HttpSender, outbox: Outbox, clock: FakeClock
) -> None:
    outbox.spool([package(f"p{i}") for i in range(50)])
    worker = Deliverer(outbox, sender, max_backoff=8.0, clock=clock, rng=random.Random(3))  # noqa: S311 - seeded jitter
    endpoint.behave("fail")
    for _ in range(120):  # two minutes of a failing endpoint, stepped every half second
        worker.step()
        clock.advance(0.5)
    failing = len(endpoint.received)
    was_failing = worker.endpoint_failing
    assert 3 <= failing <= max_attempts_within(60.0, 8.0) < 50
    endpoint.behave("ok")
    for _ in range(40):
        worker.step()
        clock.advance(0.5)
    assert outbox.pending() == []
    assert (was_failing, worker.endpoint_failing) == (True, False)
    assert len(endpoint.unique) == 50
    assert len(endpoint.received) - failing <= 51  # once healthy: one request each (+1 probe)


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


def test_an_endpoint_wide_refusal_keeps_every_package_and_is_said_once(
    endpoint: LoopbackEndpoint, sender: HttpSender, outbox: Outbox, clock: FakeClock
) -> None:
    outbox.spool([package(f"p{i}") for i in range(10)])
    worker = deliverer(outbox, sender, clock)
    endpoint.behave("status", code=401, text="token expired")
    with capture_logs() as logs:
        for _ in range(60):
            worker.step()
            clock.advance(1.0)
        refused = len(endpoint.received)
        assert outbox.rejected() == []
        assert len(outbox.pending()) == 10
        endpoint.behave("status", code=308, location="https://new.example.org/in")
        for _ in range(60):
            worker.step()
            clock.advance(1.0)
        endpoint.behave("ok")
        for _ in range(120):
            worker.step()
            clock.advance(1.0)
    # backed off like any failing endpoint: not the whole queue at full speed
    assert refused <= max_attempts_within(60.0, 60.0) < 10
    errors = [e for e in logs if e["event"] == "endpoint_refuses_packages"]
    assert [e["http_status"] for e in errors] == [401, 308]
    assert "does not accept the token" in errors[0]["detail"]
    assert "redirects to https://new.example.org/in" in errors[1]["detail"]
    assert [e["event"] for e in logs].count("endpoint_accepts_again") == 1
    assert outbox.pending() == []
    assert len(endpoint.unique) == 10


def test_a_web_page_at_the_url_delivers_nothing_and_is_said_once(
    endpoint: LoopbackEndpoint, sender: HttpSender, outbox: Outbox, clock: FakeClock
) -> None:
    outbox.spool([package(f"p{i}") for i in range(5)])
    worker = deliverer(outbox, sender, clock)
    endpoint.behave("login_portal")
    with capture_logs() as logs:
        for _ in range(60):
            worker.step()
            clock.advance(1.0)
        assert len(outbox.pending()) == 5, "a sign-in page must not empty the outbox"
        endpoint.behave("ok")
        for _ in range(120):
            worker.step()
            clock.advance(1.0)
    (error,) = [e for e in logs if e["event"] == "endpoint_refuses_packages"]
    assert error["http_status"] == 200
    assert f"{endpoint.url} is not a receipt (text/html" in error["detail"]
    assert "'Sign in - Example University SSO'" in error["detail"]
    assert [e["event"] for e in logs].count("endpoint_accepts_again") == 1
    assert outbox.pending() == []
    assert len(endpoint.unique) == 5


def test_an_unreadable_pending_package_is_counted_said_once_and_retried(
    endpoint: LoopbackEndpoint, sender: HttpSender, outbox: Outbox, clock: FakeClock
) -> None:
    outbox.spool([package("a"), package("b")])
    spooled = outbox.root / "pending" / "a.json"
    body = spooled.read_bytes()
    spooled.unlink()
    spooled.mkdir()  # a folder where the package file should be: it cannot be read
    worker = deliverer(outbox, sender, clock)
    with capture_logs() as logs:
        for _ in range(30):
            worker.step()
            clock.advance(1.0)
    assert outbox.state_of("b") == "delivered"
    assert outbox.pending() == ["a"]
    assert outbox.attempts("a") >= 2, "it is tried again, on its own backoff"
    assert [e["package_id"] for e in logs if e["event"] == "package_unreadable"] == ["a"]
    (problem,) = outbox.summary().problems
    assert problem.package_id == "a"
    assert problem.last_error is not None
    assert "cannot read the spooled package" in problem.last_error
    assert not worker.endpoint_failing, "the endpoint is not to blame"
    spooled.rmdir()
    spooled.write_bytes(body)
    clock.advance(120.0)
    worker.step()
    assert outbox.state_of("a") == "delivered"


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
    # an endpoint that echoes the Authorization header back in its error texts
    endpoint.behave("reject", text=f"bad auth header: Bearer {TOKEN}")
    modes = {"ok": "ok", "fail": "fail", "lie": "lie"}
    endpoint.on_receive = lambda r: modes.get(r.headers["idempotency-key"])
    with capture_logs() as logs:
        worker = deliverer(outbox, sender, clock)
        while {"ok", "fail", "lie", "echo"} - {
            r.headers["idempotency-key"] for r in endpoint.received
        }:
            worker.step()
            clock.advance(1.0)  # each failure pauses the endpoint a little
        endpoint.stop()
        clock.advance(120.0)
        worker.step()
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


#: a token with the characters encoders treat specially (``/`` is ``\/`` in PHP's JSON)
SLASHED_TOKEN = "Zq7/3f9a+8c1e/very=secret_x"


def token_pieces(encoding: str, token: str) -> set[str]:
    """Encoded pieces of ``token`` any of which in a text shows part of it: every run of
    four of its characters, encoded; for base64, every 6-character run of the encoding of
    ``Bearer <token>`` past what ``Bearer `` alone decides."""
    encode = ECHO_ENCODINGS[encoding]
    if not encoding.startswith("base64"):
        return {encode(token[i : i + 4]) for i in range(len(token) - 3)}
    whole = encode(f"Bearer {token}")
    prefix = encode("Bearer ")
    shared = next(
        (i for i, (a, b) in enumerate(zip(whole, prefix, strict=False)) if a != b), len(prefix)
    )
    return {whole[i : i + 6] for i in range(shared, len(whole) - 5)}


@pytest.mark.parametrize("encoding", sorted(ECHO_ENCODINGS))
@pytest.mark.parametrize("code", [403, 400, 500])
def test_an_echoed_token_is_masked_in_every_encoding(
    endpoint: LoopbackEndpoint, code: int, encoding: str
) -> None:
    endpoint.behave("echo", code=code, encoding=encoding)
    http = HttpSender(http_settings(endpoint.url), SLASHED_TOKEN)
    try:
        receipt = http.send("a", b"{}")
    finally:
        http.close()
    assert receipt.http_status == code
    assert "refused Authorization: " in receipt.detail
    assert "[redacted]" in receipt.detail
    shown = receipt.detail.replace("[redacted]", "")
    leaked = [piece for piece in token_pieces(encoding, SLASHED_TOKEN) if piece in shown]
    assert not leaked, (receipt.detail, leaked)


@pytest.mark.parametrize(("code", "cap"), [(400, RESPONSE_TEXT_CAP), (403, AUTH_TEXT_CAP)])
@pytest.mark.parametrize("encoding", ["raw", "json_php", "percent"])
def test_an_echo_straddling_the_cut_shows_no_token_prefix(
    endpoint: LoopbackEndpoint, code: int, cap: int, encoding: str
) -> None:
    # the answer is cut at ``cap`` characters: put the first characters of the token before
    # the cut, the rest after it
    before = len("refused Authorization: ") + len(ECHO_ENCODINGS[encoding]("Bearer "))
    json_head = len('{"error": "forbidden", "detail": "') if encoding.startswith("json") else 0
    endpoint.behave("echo", code=code, encoding=encoding, pad=cap - json_head - before - 5)
    http = HttpSender(http_settings(endpoint.url), SLASHED_TOKEN)
    try:
        receipt = http.send("a", b"{}")
    finally:
        http.close()
    assert receipt.http_status == code
    assert "xxxxxxxxxxrefused Authorization: " in receipt.detail
    assert SLASHED_TOKEN[:3] not in receipt.detail
    assert ECHO_ENCODINGS[encoding](SLASHED_TOKEN)[:3] not in receipt.detail
    assert receipt.detail.endswith("[reda"), "masked whole, then cut"


def test_an_auth_refusal_keeps_only_a_short_excerpt(
    endpoint: LoopbackEndpoint, sender: HttpSender
) -> None:
    endpoint.behave("status", code=403, text="denied " + "y" * 5000)
    receipt = sender.send("a", b"{}")
    assert receipt.detail.endswith("denied " + "y" * (AUTH_TEXT_CAP - len("denied ")))
    endpoint.behave("status", code=500, text="broken " + "y" * 5000)
    receipt = sender.send("a", b"{}")
    assert receipt.detail.endswith("broken " + "y" * (RESPONSE_TEXT_CAP - len("broken ")))


def test_a_receipt_echoing_the_token_shows_no_prefix(
    endpoint: LoopbackEndpoint, sender: HttpSender
) -> None:
    endpoint.behave("lie")  # names "not-<the key sent>"
    # the token starts 3 characters before the 100-character cut of the echoed package_id
    receipt = sender.send("a" * 93 + TOKEN, b"{}")
    assert "endpoint confirmed a different package_id 'not-aaa" in receipt.detail
    assert f"{'a' * 93}[re'" in receipt.detail, "masked whole, then cut"
    assert TOKEN[:3] not in receipt.detail


def test_credentials_in_the_url_query_are_refused_and_query_values_never_shown() -> None:
    with pytest.raises(DeliveryConfigError, match=r"credential in its query \(sig, code\)") as info:
        HttpSender(http_settings("https://h.example.org/in?sv=2024&sig=c2VjcmV0&code=abc"), None)
    assert "c2VjcmV0" not in str(info.value)
    assert "abc" not in str(info.value)
    assert (
        safe_url("https://u:p@h.example.org/in?project=b104&k=s3cr3t&flag#frag")
        == "https://h.example.org/in?project=[redacted]&k=[redacted]&flag"
    )


# --------------------------------------------------------------------------- RO-Crate format


def corpus_package(corpus: Path) -> Package:
    from acqharvest.commands import preview
    from acqharvest.config import embedded_settings
    from acqharvest.deidentify import Deidentifier
    from acqharvest.model import DeidentifySettings

    source = corpus / "ome-tiff" / "single-file" / "multi-channel.ome.tif"
    [body], errors = preview(
        [source], embedded_settings(), Deidentifier(DeidentifySettings(), b"k" * 32)
    )
    assert errors == []
    return Package(body["package_id"], "key", body)


def test_ro_crate_format_posts_the_crate_and_keeps_the_package_spooled(
    corpus: Path, endpoint: LoopbackEndpoint, outbox: Outbox, clock: FakeClock
) -> None:
    package = corpus_package(corpus)
    outbox.spool([package])
    spooled = outbox.body(package.package_id)
    sender = build_sender(http_settings(endpoint.url, format="ro-crate"))
    assert isinstance(sender, CrateSender)
    try:
        deliverer(outbox, sender, clock).step()
    finally:
        sender.close()

    [request] = endpoint.received
    assert request.headers["content-type"] == (
        'application/ld+json; profile="https://w3id.org/ro/crate/1.1"'
    )
    assert request.headers["idempotency-key"] == package.package_id
    assert request.body == crate_bytes(json.loads(spooled))
    assert request.json["@graph"][1]["identifier"].endswith(package.package_id)
    # the endpoint's receipt echoed the crate's sha256, which confirmed it
    assert outbox.state_of(package.package_id) == "delivered"


def test_ro_crate_receipt_is_checked_against_the_crate_sent(
    corpus: Path, endpoint: LoopbackEndpoint
) -> None:
    package = corpus_package(corpus)
    body = json.dumps(package.body).encode()
    sender = build_sender(http_settings(endpoint.url, format="ro-crate"))
    try:
        endpoint.behave("lie_digest")
        lied = sender.send(package.package_id, body)
        endpoint.behave("ok")
        confirmed = sender.send(package.package_id, body)
    finally:
        sender.close()
    assert lied.outcome == "retry"
    assert body_digest(crate_bytes(package.body)) in lied.detail
    assert confirmed.outcome == "confirmed"
    # a resend sends the very same bytes: the crate is a function of the package
    assert endpoint.received[0].body == endpoint.received[1].body


def test_ro_crate_format_writes_the_crate_into_a_directory(corpus: Path, tmp_path: Path) -> None:
    package = corpus_package(corpus)
    drop = tmp_path / "drop"
    sender = build_sender(EndpointSettings(type="directory", path=drop, format="ro-crate"))
    receipt = sender.send(package.package_id, json.dumps(package.body).encode())
    assert receipt.outcome == "confirmed"
    assert sorted(path.name for path in drop.iterdir()) == [
        f"{package.package_id}.ro-crate-metadata.json"
    ]
    written = (drop / f"{package.package_id}.ro-crate-metadata.json").read_bytes()
    assert written == crate_bytes(package.body)
    ok, detail = sender.probe()
    assert ok
    assert "RO-Crates" in detail


def test_a_package_that_cannot_be_rendered_is_rejected_not_lost(tmp_path: Path) -> None:
    sender = build_sender(EndpointSettings(type="directory", path=tmp_path, format="ro-crate"))
    receipt = sender.send("a", b'{"not": "a package"}')
    assert receipt.outcome == "rejected"
    assert "cannot render the package as an RO-Crate: not a package" in receipt.detail
    assert list(tmp_path.iterdir()) == []
