"""systemd notifications, received on a real Unix datagram socket."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from acqharvest.service import ServiceNotifier

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="Unix sockets")


@pytest.fixture
def manager() -> Iterator[tuple[socket.socket, str]]:
    """A socket standing in for systemd's, in the abstract namespace; its NOTIFY_SOCKET."""
    name = f"acqharvest-test-{secrets.token_hex(6)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    yield sock, "@" + name
    sock.close()


def received(sock: socket.socket) -> list[str]:
    """Every message waiting on the socket."""
    messages = []
    sock.settimeout(0.2)
    try:
        while True:
            messages.append(sock.recv(4096).decode())
    except TimeoutError:
        return messages


def test_ready_and_stopping_reach_the_manager(manager):
    sock, address = manager
    notifier = ServiceNotifier({"NOTIFY_SOCKET": address})
    notifier.ready("watching 2 folders")
    notifier.stopping()
    assert received(sock) == ["READY=1\nSTATUS=watching 2 folders", "STOPPING=1\nSTATUS=stopping"]


def test_a_socket_path_works_too():
    folder = Path(tempfile.mkdtemp(prefix="acqh-"))  # short: sun_path holds about 100 bytes
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(str(folder / "notify"))
            ServiceNotifier({"NOTIFY_SOCKET": str(folder / "notify")}).ready("up")
            assert received(sock) == ["READY=1\nSTATUS=up"]
    finally:
        shutil.rmtree(folder)


def test_watchdog_pings_at_half_the_timeout_and_not_more_often(manager):
    sock, address = manager
    notifier = ServiceNotifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "60000000"})
    assert notifier.watchdog_interval == 30.0
    for _ in range(100):
        notifier.alive()
    assert received(sock) == ["WATCHDOG=1"]


@pytest.mark.parametrize(
    ("environ", "interval"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}, 2.0),
        ({"WATCHDOG_USEC": "4000000"}, 2.0),
    ],
)
def test_the_watchdog_is_armed_only_when_meant_for_this_process(manager, environ, interval):
    sock, address = manager
    notifier = ServiceNotifier({"NOTIFY_SOCKET": address, **environ})
    assert notifier.watchdog_interval == interval
    notifier.alive()
    assert received(sock) == ([] if interval is None else ["WATCHDOG=1"])


def test_without_a_notify_socket_nothing_is_sent_or_logged(manager):
    sock, _ = manager
    with capture_logs() as logged:
        notifier = ServiceNotifier({"WATCHDOG_USEC": "2000000"})
        notifier.ready("up")
        notifier.alive()
        notifier.stopping()
    assert received(sock) == []
    assert logged == []


def test_a_vanished_manager_is_logged_once_and_never_raises():
    notifier = ServiceNotifier({"NOTIFY_SOCKET": f"@acqharvest-nobody-{secrets.token_hex(6)}"})
    with capture_logs() as logged:
        notifier.ready("up")
        notifier.stopping()
    failures = [e for e in logged if e["event"] == "service_notify_failed"]
    assert len(failures) == 1
    assert "refused" in failures[0]["error"].lower()
