"""The status server for real: its settings, a server on loopback asked with httpx, the
Prometheus text parsed by prometheus-client's own parser, the page's escaping.

The daemon wired to it (files harvested, delivered, the page in a browser) is in
``tests/integration/test_statusserver.py``.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from acqharvest.config import ConfigError, parse_settings
from acqharvest.deliver import DeliveryConfigError
from acqharvest.model import Settings
from acqharvest.status import PackageState
from acqharvest.statusserver import StatusServer, render_page, status_server
from tests.test_metrics import samples_of
from tests.test_status import SINK, board_of, snapshot_of

TOKEN = "status-token-for-tests-only"
HOSTILE = "<script>window.pwned=1</script>"


def _config(tmp_path: Path, status: str) -> str:
    return (
        "instrument: {id: urn:test:1}\n"
        f"watch: [{{path: {tmp_path / 'watch'}}}]\n"
        f"endpoint: {{type: directory, path: {tmp_path / 'out'}}}\n"
        f"state_dir: {tmp_path / 'state'}\n"
        f"status_server:\n{status}"
    )


def _load(tmp_path: Path, status: str) -> Settings:
    return parse_settings(_config(tmp_path, status), source="acqharvest.yaml", base_dir=tmp_path)


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("listen", "address"),
    [
        ("127.0.0.1:9847", ("127.0.0.1", 9847)),
        ("127.0.0.2:0", ("127.0.0.2", 0)),
        ("[::1]:9847", ("::1", 9847)),
        ("localhost:9847", ("localhost", 9847)),
    ],
)
def test_loopback_addresses_are_accepted(tmp_path: Path, listen: str, address: object) -> None:
    settings = _load(tmp_path, f"  listen: '{listen}'\n")

    assert settings.status_server is not None
    assert settings.status_server.address == address
    assert settings.status_server.allow_remote is False


def test_the_status_server_is_off_unless_configured(tmp_path: Path) -> None:
    text = _config(tmp_path, "").replace("status_server:\n", "")
    assert parse_settings(text, source="x.yaml", base_dir=tmp_path).status_server is None


@pytest.mark.parametrize(
    ("status", "message"),
    [
        pytest.param(
            "  listen: '0.0.0.0:9847'\n",
            "acqharvest.yaml:6: status_server.listen: 0.0.0.0 is not a loopback address; the "
            "status server listens on 127.0.0.1 or [::1] unless status_server.allow_remote is "
            "true and a token is set",
            id="all-interfaces",
        ),
        pytest.param(
            "  listen: '[::]:9847'\n",
            "acqharvest.yaml:6: status_server.listen: :: is not a loopback address",
            id="ipv6-all-interfaces",
        ),
        pytest.param(
            "  allow_remote: true\n  listen: '192.0.2.7:9847'\n",
            "acqharvest.yaml:7: status_server.listen: 192.0.2.7 is not a loopback address: "
            "status_server.allow_remote needs status_server.token_file or "
            "status_server.token_env",
            id="remote-without-token",
        ),
        pytest.param(
            "  listen: '127.0.0.1'\n",
            "status_server.listen: must be host:port, for example 127.0.0.1:9847 or [::1]:9847",
            id="no-port",
        ),
        pytest.param(
            "  listen: '::1:9847'\n",
            "status_server.listen: must be host:port",
            id="ipv6-without-brackets",
        ),
        pytest.param(
            "  listen: '127.0.0.1:99999'\n", "status_server.listen: must be host:port", id="port"
        ),
        pytest.param(
            "  listen: 'status.example.org:9847'\n",
            "status_server.listen: the host must be an IP address or localhost, not "
            "'status.example.org'",
            id="host-name",
        ),
        pytest.param(
            "  listen: '127.0.0.1:9847'\n  token_file: t\n  token_env: T\n",
            "status_server.token_env: token_file and token_env are mutually exclusive",
            id="two-token-sources",
        ),
        pytest.param(
            "  listen: '127.0.0.1:9847'\n  allow_remote: yes\n  port: 1\n",
            "status_server.port: unknown key",
            id="unknown-key",
        ),
    ],
)
def test_bad_status_server_settings_name_the_key(tmp_path: Path, status: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        _load(tmp_path, status)
    assert message in str(raised.value)


def test_a_remote_address_needs_allow_remote_and_a_token(tmp_path: Path) -> None:
    settings = _load(tmp_path, "  allow_remote: true\n  token_env: STATUS\n  listen: 0.0.0.0:0\n")

    assert settings.status_server is not None
    assert settings.status_server.address == ("0.0.0.0", 0)  # noqa: S104 - what is tested


def test_a_token_file_inside_a_watched_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        _load(tmp_path, f"  listen: 127.0.0.1:0\n  token_file: {tmp_path / 'watch' / 't'}\n")
    assert "status_server.token_file" in str(raised.value)
    assert "the secret would be harvested" in str(raised.value)


def test_a_missing_token_file_is_a_config_error_of_the_status_server(tmp_path: Path) -> None:
    settings = _load(tmp_path, f"  listen: 127.0.0.1:0\n  token_file: {tmp_path / 'nope'}\n")
    board = board_of(tmp_path)

    with pytest.raises(DeliveryConfigError) as raised:
        status_server(settings.status_server, lambda: snapshot_of(board), board.metrics)
    assert raised.value.key == "status_server"
    assert str(tmp_path / "nope") in str(raised.value)


# --------------------------------------------------------------------------- a real server


class _Served:
    """A board behind a started server; ``state_dir`` and ``packages`` feed its snapshots."""

    def __init__(self, tmp_path: Path, **server: object) -> None:
        self.root = tmp_path / "watch"
        self.board = board_of(tmp_path)
        self.state_dir: tuple[str, ...] = ()
        self.packages: dict[str, PackageState] = {}
        self.outbox = {"pending": 0, "delivered": 0, "rejected": 0, "corrupt": 0}
        self.server = StatusServer(
            server.pop("address", ("127.0.0.1", 0)),  # type: ignore[arg-type]
            lambda: snapshot_of(self.board, self.outbox, self.packages, self.state_dir),
            self.board.metrics,
            **server,  # type: ignore[arg-type]
        )
        self.server.start()

    def get(self, path: str, **kw: object) -> httpx.Response:
        return httpx.get(self.server.url + path, timeout=10, **kw)  # type: ignore[arg-type]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[_Served]:
    status = _Served(tmp_path)
    try:
        yield status
    finally:
        status.server.stop()


def test_healthz_is_200_while_watched_and_503_when_a_watcher_is_dead(served: _Served) -> None:
    healthy = served.get("/healthz")
    assert healthy.status_code == 200
    assert healthy.headers["content-type"] == "application/json"
    body = healthy.json()
    assert body["healthy"] is True
    assert body["watchers"] == {str(served.root): {"alive": True, "problem": None}}
    assert body["outbox"] == {"pending": 0, "delivered": 0, "rejected": 0, "corrupt": 0}
    assert body["last_delivery"] is None

    served.board.watch_health({served.root: "observer thread died"})
    dead = served.get("/healthz")

    assert dead.status_code == 503
    assert dead.json()["healthy"] is False
    assert dead.json()["problems"] == [f"{served.root} is not watched: observer thread died"]
    assert (
        dead.json()["last_error"][str(served.root)]["error"] == "not watched: observer thread died"
    )

    served.board.watch_health({}, restarted=[served.root])
    assert served.get("/healthz").status_code == 200


def test_healthz_is_503_while_the_state_dir_is_unhealthy(served: _Served) -> None:
    served.state_dir = ("state dir /var/lib/acqharvest: only 4096 bytes free",)

    answer = served.get("/healthz")

    assert answer.status_code == 503
    assert answer.json()["state_dir"] == {"healthy": False, "problems": list(served.state_dir)}


def test_last_delivery_and_errors_per_folder(served: _Served) -> None:
    served.board.file_failed(served.root, served.root / "a.dcm", "not a DICOM file")
    served.board.delivered("p-1")

    body = served.get("/healthz").json()

    assert body["last_error"][str(served.root)]["error"] == "a.dcm: not a DICOM file"
    delivered = time.mktime(time.strptime(body["last_delivery"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert abs(delivered - time.mktime(time.gmtime())) < 120


def test_a_token_is_required_on_every_path_when_set(tmp_path: Path) -> None:
    served = _Served(tmp_path, token=TOKEN)
    try:
        for path in ("/", "/healthz", "/metrics", "/nothing"):
            missing = served.get(path)
            wrong = served.get(path, headers={"Authorization": f"Bearer {TOKEN}x"})
            assert (missing.status_code, wrong.status_code) == (401, 401), path
            assert missing.headers["www-authenticate"].startswith("Bearer")
            assert TOKEN not in missing.text + wrong.text
        good = served.get("/healthz", headers={"Authorization": f"Bearer {TOKEN}"})
        assert good.status_code == 200
    finally:
        served.server.stop()


def test_a_page_that_rebinds_a_name_to_loopback_is_refused(served: _Served) -> None:
    # DNS rebinding: a web page's own name, now pointing at 127.0.0.1, reads our answers
    refused = served.get("/healthz", headers={"Host": "attacker.example:8080"})
    assert refused.status_code == 403
    for host in ("localhost", "127.0.0.1:1234", "[::1]:1234"):
        assert served.get("/healthz", headers={"Host": host}).status_code == 200, host


def test_ipv6_loopback(tmp_path: Path) -> None:
    served = _Served(tmp_path, address=("::1", 0))
    try:
        assert served.server.url.startswith("http://[::1]:")
        assert served.get("/healthz").status_code == 200
    finally:
        served.server.stop()


def test_unknown_paths_are_404(served: _Served) -> None:
    assert served.get("/status.php").status_code == 404


def test_an_address_in_use_is_logged_and_serve_returns_false(
    tmp_path: Path, log_events: object
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        board = board_of(tmp_path)
        server = StatusServer(("127.0.0.1", port), lambda: snapshot_of(board), board.metrics)

        assert server.serve() is False
    (event,) = [e for e in log_events() if e["event"] == "status_server_failed"]  # type: ignore[operator]
    assert event["key"] == "status_server.listen"
    assert event["address"] == f"127.0.0.1:{port}"


# --------------------------------------------------------------------------- metrics


def test_metrics_count_what_the_board_was_told(tmp_path: Path) -> None:
    served = _Served(tmp_path)
    root, board = served.root, served.board
    try:
        for name in ("a.tif", "b.tif", "c.dcm"):
            board.file_seen(root, root / name)
        board.file_settled(root, root / "a.tif")
        board.file_settled(root, root / "b.tif")
        board.built(2)
        board.packaged(root, root / "a.tif", [root / "a.tif"], "p-a")
        board.packaged(root, root / "b.tif", [root / "b.tif"], "p-b")
        board.acquisition_failed("dicom", root, root / "c.dcm", [root / "c.dcm"], "bad tag")
        board.acquisition_failed(None, root, root / "d.bin", [root / "d.bin"], "unreadable")
        board.delivered("p-a")
        board.rejected("p-b", "HTTP 422: schema")
        board.watch_health({}, restarted=[root])
        served.outbox = {"pending": 1, "delivered": 1, "rejected": 1, "corrupt": 0, "held": 2}

        answer = served.get("/metrics")
    finally:
        served.server.stop()

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=")
    samples = samples_of(answer.text)
    folder = (("folder", str(root)),)
    sink = (("sink", SINK),)
    assert samples["acqharvest_files_seen_total", folder] == 3
    assert samples["acqharvest_files_settled_total", folder] == 2
    assert samples["acqharvest_packages_built_total", sink] == 2
    assert samples["acqharvest_packages_delivered_total", sink] == 1
    assert samples["acqharvest_packages_rejected_total", sink] == 1
    assert samples["acqharvest_adapter_failures_total", (("adapter", "dicom"),)] == 1
    assert samples["acqharvest_adapter_failures_total", (("adapter", "none"),)] == 1
    assert samples["acqharvest_watch_restarts_total", folder] == 1
    # one delivery of a package spooled by this daemon: one latency, small and positive
    assert samples["acqharvest_delivery_latency_seconds_count", sink] == 1
    assert 0 < samples["acqharvest_delivery_latency_seconds_sum", sink] < 60
    assert samples["acqharvest_outbox_packages", (("state", "held"),)] == 2
    assert samples["acqharvest_outbox_packages", (("state", "pending"),)] == 1
    assert samples["acqharvest_outbox_oldest_pending_age_seconds", ()] == 0
    assert samples["acqharvest_watch_up", folder] == 1


# --------------------------------------------------------------------------- the page


def test_the_page_escapes_file_names_and_forbids_scripts(served: _Served) -> None:
    root = served.root
    served.board.file_seen(root, root / f"{HOSTILE}.tif")
    served.board.file_failed(root, root / '"><img src=x onerror=alert(1)>.dcm', "<b>bad</b>")
    served.board.file_seen(root, root / "caf\udce9.tif")  # a Latin-1 name from an old PC
    latin = root / "na\udcefve.tif"
    served.board.file_failed(root, latin, f"{latin}: cannot read: permission denied")

    answer = served.get("/")

    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src" not in answer.headers["content-security-policy"]
    assert answer.headers["content-security-policy"].startswith("default-src 'none'")
    page = answer.text
    assert "<script" not in page
    assert "<img" not in page
    assert "<b>" not in page
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;.tif" in page
    assert "&lt;b&gt;bad&lt;/b&gt;" in page
    assert "caf%E9.tif" in page
    assert "na%EFve.tif: cannot read: permission denied" in page
    assert 'http-equiv="refresh"' in page


def test_the_page_says_what_is_wrong(tmp_path: Path) -> None:
    board, root = board_of(tmp_path), tmp_path / "watch"
    board.watch_health({root: "the folder was replaced or remounted"})

    page = render_page(snapshot_of(board))

    assert '<header class="bad"' in page
    assert "NOT WATCHED: the folder was replaced or remounted" in page
    assert "No acquisitions since acqharvest started." in page
