"""Telling the service manager how the daemon is doing: systemd's notify protocol.

Under a ``Type=notify`` unit systemd passes ``NOTIFY_SOCKET``; the daemon then says
``READY=1`` once it watches its folders (``systemctl start`` returns then, and units
ordered after it start), ``WATCHDOG=1`` from the harvest loop at half the unit's
``WatchdogSec=`` (so a harvest loop that stops turning gets the service restarted, not
left running and harvesting nothing), ``STATUS=`` lines, and ``STOPPING=1``.
Without ``NOTIFY_SOCKET`` (launchd, Windows, a terminal) every call does nothing.

Written here rather than taken from ``systemd-watchdog``: that package times its pings on
the wall clock, so a clock set back by NTP silences the watchdog until the service is
killed, and it has no ``STOPPING``. The protocol is one datagram per message.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger(__name__)

#: None on Windows, where Python has no Unix datagram sockets (nor systemd)
_UNIX: int | None = getattr(socket, "AF_UNIX", None)


class ServiceNotifier:
    """Notifications to the socket named in ``NOTIFY_SOCKET``, if any."""

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        self._name = environ.get("NOTIFY_SOCKET", "")
        # "@name" is a socket in the abstract namespace
        self._address = "\0" + self._name[1:] if self._name.startswith("@") else self._name
        #: seconds between watchdog pings (half the manager's timeout), None: not asked for
        self.watchdog_interval = _watchdog_interval(environ)
        self._next_ping = 0.0
        self._failed = False

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={status}")

    def stopping(self) -> None:
        self._send("STOPPING=1\nSTATUS=stopping")

    def alive(self) -> None:
        """Called by every turn of the harvest loop; pings when half the timeout passed."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now >= self._next_ping:
            self._next_ping = now + self.watchdog_interval
            self._send("WATCHDOG=1")

    def _send(self, message: str) -> None:
        if not self._address or _UNIX is None:
            return
        try:
            with socket.socket(_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)  # a manager not reading must not stall the loop
                sock.sendto(message.encode(), self._address)
        except OSError as error:
            # Said once: the service manager going away must not flood the log.
            if not self._failed:
                log.warning("service_notify_failed", socket=self._name, error=str(error))
            self._failed = True
        else:
            self._failed = False


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Half of ``WATCHDOG_USEC`` when it is meant for this process (sd_watchdog_enabled)."""
    usec, pid = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid is not None and pid != str(os.getpid()):
        return None
    return int(usec) / 2e6
