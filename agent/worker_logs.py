"""Worker processes' log lines, carried to the daemon's own logging.

Only the daemon writes the log file (its rotation stays safe with one writer), so a
worker's warnings (an adapter that failed to claim, a reader that is missing, a format
library's complaint naming the file) used to reach only the worker's stderr: the journal
under systemd, and nowhere under a Windows service, which has no console.

A worker now writes each JSON log line as one UDP datagram to a loopback port the daemon
binds (``DatagramLines``), and a thread of the daemon logs it again through the daemon's
handlers (``WorkerLogs``): the log file, the console, the Windows event log. A datagram
takes no lock: a worker killed in the middle of a line (its time budget ran out) cannot
block the others, as the lock of a shared ``multiprocessing.Queue`` would. A line longer
than a datagram carries is cut, and then logged as the text it is.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import socket
import threading
from typing import Any

from acqharvest import logs

#: the longest line one datagram carries (loopback takes up to 65,507 bytes)
DATAGRAM_BYTES = 60_000
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_LOOPBACK = "127.0.0.1"


class DatagramLines(io.TextIOBase):
    """A text stream (a worker's log stream) sending each line as one datagram."""

    def __init__(self, port: int) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._address = (_LOOPBACK, port)
        self._pending = ""

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        self._socket.close()
        super().close()

    def write(self, text: str) -> int:
        *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            if line:
                data = line.encode("utf-8", "replace")[:DATAGRAM_BYTES]
                # the daemon is gone or stopping: nobody is left to tell
                with contextlib.suppress(OSError):
                    self._socket.sendto(data, self._address)
        return len(text)


class WorkerLogs:
    """The daemon's end: a loopback port and a thread logging what arrives there."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind((_LOOPBACK, 0))
        # a burst of warnings from every worker at once waits here, not dropped
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        # the stop is noticed within this; what is already queued is logged first
        self._socket.settimeout(0.2)
        self.port: int = self._socket.getsockname()[1]
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="worker-logs", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Log what the workers sent before they stopped, then close the port."""
        self._stopping.set()
        self._thread.join(timeout=5)
        self._socket.close()

    def _receive(self) -> None:
        log = logs.get_logger("acqharvest.worker")
        while True:
            try:
                data = self._socket.recv(65_536)
            except TimeoutError:
                if self._stopping.is_set():
                    return
                continue
            except ConnectionResetError:
                continue  # Windows reports an ICMP error of an earlier datagram here
            except OSError:
                return  # closed
            level, event, fields = _parsed(data.decode("utf-8", "replace"))
            log.log(level, event, **fields)


def _parsed(line: str) -> tuple[int, str, dict[str, Any]]:
    """A worker's JSON log line as (level, event, fields); any other text as itself."""
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("event"), str):
        return logging.WARNING, "worker_output", {"text": line}
    event = record.pop("event")
    level = _LEVELS.get(str(record.pop("level", "warning")), logging.WARNING)
    record.pop("timestamp", None)  # stamped again on arrival, a moment later
    return level, event, {"source": "worker", **record}
