"""Staying out of the acquisition's way: a lower process priority and a cap on checksum reads.

The acquisition software shares the PC's cores and disks with the daemon, and a camera
streaming to disk drops frames when it waits. The daemon therefore runs at a lower CPU and
I/O priority than the software (``priority: low``, the default), in the daemon process and
in every worker process, and may cap the rate at which checksums read files
(``checksum_max_mb_per_s``). The third rule, holding a finished file back while a file in
the same folder is still being written (``defer_while_writing``), belongs to the settle
stage, which alone knows what is still being written.

Priorities go through ``psutil`` (one API for Linux, macOS and Windows):

- Linux: nice 10, and the lowest level (7) of the best-effort I/O class. Not the idle class:
  under a disk that the acquisition keeps busy, idle I/O may wait without bound, and a
  checksum that reads nothing for the time budget is taken for a dead share.
- macOS and other POSIX systems: nice 10 (I/O priority is not settable there through psutil).
- Windows: the below-normal priority class and very low I/O priority (what the system's
  background mode sets for I/O), set in each process: Windows does not pass I/O priority on
  to child processes.

A priority is only ever lowered, never raised back: an unprivileged process cannot.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import psutil

#: the nice value of a lowered process: below every interactive program, above the idle class
NICE = 10
#: the lowest level of Linux's best-effort I/O class (0 is highest)
BEST_EFFORT_LOWEST = 7


def lower_priority() -> list[str]:
    """Lower this process's CPU and I/O priority; what was changed, for the log.

    Raises ``OSError`` (``psutil.Error`` included) when the system refuses.
    """
    process = psutil.Process()
    if sys.platform == "win32":
        process.nice(psutil.BELOW_NORMAL_PRIORITY_CLASS)
        process.ionice(psutil.IOPRIO_VERYLOW)
        return ["cpu: below normal", "io: very low"]
    else:  # a branch, not code after a return: mypy --platform win32 checks this module
        changed = []
        if process.nice() < NICE:
            process.nice(NICE)
        changed.append(f"cpu: nice {process.nice()}")
        if sys.platform.startswith("linux"):
            process.ionice(psutil.IOPRIO_CLASS_BE, value=BEST_EFFORT_LOWEST)
            changed.append(f"io: best effort {BEST_EFFORT_LOWEST}")
        return changed


class ReadRate:
    """Paces reads to at most ``bytes_per_second`` on average, sleeping when ahead.

    Each read (reported once done) books its share of time after the previous one's, and
    the reader sleeps until the booking is due: a reader slower than the cap never sleeps,
    and a pause (the next file) saves no burst beyond the one read it is due anyway.
    """

    def __init__(
        self,
        bytes_per_second: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if bytes_per_second <= 0:
            raise ValueError(f"a read rate must be positive, not {bytes_per_second}")
        self.bytes_per_second = bytes_per_second
        self._clock = clock
        self._sleep = sleep
        self._free_at = 0.0

    def consumed(self, count: int) -> None:
        """``count`` bytes were read: wait until the average rate allows the next read."""
        now = self._clock()
        self._free_at = max(self._free_at + count / self.bytes_per_second, now)
        if self._free_at > now:
            self._sleep(self._free_at - now)
