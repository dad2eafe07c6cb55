"""The Windows service host (Windows only; needs pywin32, ``acqharvest[windows]``).

The service manager starts ``python.exe -m acqharvest.winservice --config FILE`` (written
by ``acqharvest service install``, see ``service_windows``). A service starts in System32
with no console, so every path comes from the config, which is named by its absolute
path, and what would go to the console goes to the Windows event log instead: the start,
the stop, every warning and error log line (``service_windows.event_log_level``) and any
error printed before logging is set up. The log file has everything, as under systemd.

Stop and shutdown set the same event ``acqharvest run`` sets on SIGTERM: the daemon stops
cleanly (the outbox is on disk, nothing in flight is lost). A daemon that fails ends the
process without reporting a stop, so the service manager applies its recovery actions.
Kept thin: the logic is in ``service_windows`` and the daemon in ``cli.run_daemon``,
both tested on every platform.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import threading
from pathlib import Path
from typing import TextIO, cast

import servicemanager
import win32service
import win32serviceutil

from acqharvest.cli import run_daemon
from acqharvest.service_plan import SERVICE_NAME
from acqharvest.service_windows import event_log_level

#: how long the service manager is told a stop may take (the daemon's own stop budget)
_STOP_HINT_MS = 30_000


class _EventLog(io.TextIOBase):
    """A text stream whose lines go to the event log, each at its level (or not at all)."""

    def __init__(self) -> None:
        self._pending = ""
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        with self._lock:
            *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            level = event_log_level(line)
            if level == "error":
                servicemanager.LogErrorMsg(line)
            elif level == "warning":
                servicemanager.LogWarningMsg(line)
        return len(text)


class AcqharvestService(win32serviceutil.ServiceFramework):
    _svc_name_ = SERVICE_NAME
    _svc_display_name_ = SERVICE_NAME
    #: the config, set by ``main`` from the service's command line before it is hosted
    config = Path()

    def __init__(self, args: list[str]) -> None:
        super().__init__(args)
        self._stop = threading.Event()

    def SvcStop(self) -> None:
        self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING, waitHint=_STOP_HINT_MS)
        self._stop.set()

    def SvcShutdown(self) -> None:
        self.SvcStop()

    def SvcDoRun(self) -> None:
        events = _EventLog()
        servicemanager.LogInfoMsg(f"{SERVICE_NAME}: starting with {self.config}")
        # no console: what the daemon prints (a config error) reaches the event log
        with contextlib.redirect_stdout(events), contextlib.redirect_stderr(events):
            status = run_daemon(self.config, self._stop, log_stream=cast(TextIO, events))
        if status != 0:
            servicemanager.LogErrorMsg(f"{SERVICE_NAME}: stopped with exit status {status}")
            os._exit(status)  # not a stop: the service manager's recovery restarts it
        servicemanager.LogInfoMsg(f"{SERVICE_NAME}: stopped")


def main() -> None:
    parser = argparse.ArgumentParser(prog="acqharvest.winservice")
    parser.add_argument("--config", type=Path, required=True)
    AcqharvestService.config = parser.parse_args().config
    servicemanager.Initialize(SERVICE_NAME, servicemanager.__file__)
    servicemanager.PrepareToHostSingle(AcqharvestService)
    servicemanager.StartServiceCtrlDispatcher()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    main()
