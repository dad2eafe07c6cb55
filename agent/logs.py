"""structlog setup: JSON lines for files and services, readable console output on a TTY.

A redaction processor runs last before rendering: it drops keys that name secrets and
masks any registered secret value wherever it appears, so a token can never reach a log.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import threading
from collections.abc import MutableMapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TextIO

import structlog

_SECRET_KEYS = frozenset({"authorization", "token", "password", "secret", "api_key"})
_secrets: set[str] = set()
_secrets_lock = threading.Lock()
MASK = "[redacted]"
LOG_FILE_BYTES = 10 * 1024 * 1024
LOG_FILE_BACKUPS = 5
#: the name our handlers carry, so a second ``configure`` replaces them and nothing else.
_HANDLER_NAME = "acqharvest"


def register_secret(value: str) -> None:
    """Mask ``value`` in every log event from now on."""
    if value:
        with _secrets_lock:
            _secrets.add(value)


def mask(text: str) -> str:
    """``text`` with every registered secret masked (for messages that bypass the log)."""
    masked: str = _mask(text)
    return masked


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        for secret in _secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {key: _mask(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mask(item) for item in value]
    return value


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: drop secret-named keys and mask registered secret values."""
    for key in [key for key in event if key.lower() in _SECRET_KEYS]:
        event[key] = MASK
    if _secrets:
        for key, value in event.items():
            event[key] = _mask(value)
    return event


_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.format_exc_info,
    redact,
]


#: records from stdlib loggers (third-party libraries) also say which library logged them.
_FOREIGN: list[Any] = [structlog.stdlib.add_logger_name, *_SHARED]


def configure(
    level: str = "info",
    fmt: str = "auto",
    log_file: Path | None = None,
    *,
    stream: TextIO | None = None,
) -> None:
    """Route structlog through stdlib logging to the console and, if given, a JSON file."""
    stream = stream or sys.stderr
    console_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    console_renderer: Any = (
        structlog.processors.JSONRenderer()
        if console_json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    handlers: list[logging.Handler] = []
    console = logging.StreamHandler(stream)
    console.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                console_renderer,
            ],
            foreign_pre_chain=_FOREIGN,
        )
    )
    handlers.append(console)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        # Rotated, so a daemon left alone for years never fills the state disk.
        file_handler = ReopeningFileHandler(
            log_file, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_BACKUPS, encoding="utf-8"
        )
        file_handler.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                processors=[
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.JSONRenderer(),
                ],
                foreign_pre_chain=_FOREIGN,
            )
        )
        handlers.append(file_handler)
    for handler in handlers:
        handler.set_name(_HANDLER_NAME)
    ours = logging.getLogger("acqharvest")
    for old in ours.handlers:
        old.close()
    ours.handlers = handlers
    ours.setLevel(level.upper())
    ours.propagate = False
    _route_libraries(handlers, level)
    structlog.configure(
        processors=[
            # first, so a debug event below the level costs one check, not the whole chain
            structlog.stdlib.filter_by_level,
            *_SHARED,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


class ReopeningFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log file that is opened again when the file at its path is not its own.

    The default log lives in the state dir: when that folder is deleted (and recreated by
    the daemon), or the file is moved away, records would otherwise go to the deleted
    file until a restart. Like ``WatchedFileHandler``, it compares the path's device and
    inode with the open file's before each record, and keeps the rotation.
    """

    def __init__(self, filename: Path, **kwargs: Any) -> None:
        super().__init__(filename, **kwargs)
        self._identity = self._open_identity()

    def _open_identity(self) -> tuple[int, int] | None:
        if self.stream is None:
            return None
        st = os.fstat(self.stream.fileno())
        return st.st_dev, st.st_ino

    def emit(self, record: logging.LogRecord) -> None:
        try:
            st = os.stat(self.baseFilename)
            current: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except OSError:
            current = None
        if (current is None or current != self._identity) and not self._reopen():
            return  # the folder cannot be written now; the console still has the record
        super().emit(record)

    def _reopen(self) -> bool:
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        try:
            os.makedirs(os.path.dirname(self.baseFilename), exist_ok=True)
            self.stream = self._open()
        except OSError:
            self._identity = None
            return False
        self._identity = self._open_identity()
        return True

    def doRollover(self) -> None:
        super().doRollover()
        self._identity = self._open_identity()


def _route_libraries(handlers: list[logging.Handler], level: str) -> None:
    """Give the stdlib root logger our handlers, at warning level or above.

    Libraries such as tifffile and pydicom log through ``logging.getLogger(__name__)``;
    with no handler on the root their warnings would reach stderr as bare text through
    ``logging.lastResort``. Through these handlers they become the same structured lines
    as ours (``logger`` names the library). Handlers other code put on the root stay.
    """
    threshold = max(logging.WARNING, logging.getLevelName(level.upper()))
    for handler in handlers:
        handler.addFilter(_LibraryThreshold(threshold))
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if h.get_name() != _HANDLER_NAME]
    root.handlers.extend(handlers)
    root.setLevel(min(root.level or logging.WARNING, threshold))


class _LibraryThreshold(logging.Filter):
    """Let a library's record through only at ``threshold`` or above.

    A library may set its own logger's level (pydicom does), which the root's level does
    not override; this filter on our handlers does. Our own records were gated already.
    """

    def __init__(self, threshold: int) -> None:
        super().__init__()
        self.threshold = threshold

    def filter(self, record: logging.LogRecord) -> bool:
        ours = record.name == "acqharvest" or record.name.startswith("acqharvest.")
        if ours:
            return True
        if _quotes_values(record.name) and record.levelno < logging.ERROR:
            return False
        return record.levelno >= self.threshold


#: libraries whose warnings quote the values they read from a file, which may identify a
#: patient. pydicom logs every invalid element with its value and also issues the same
#: message as a Python warning, which the DICOM adapter reports with the value left out.
_VALUE_QUOTING_LIBRARIES = ("pydicom",)


def _quotes_values(logger: str) -> bool:
    return any(logger == name or logger.startswith(name + ".") for name in _VALUE_QUOTING_LIBRARIES)


def reading(path: Path) -> AbstractContextManager[None]:
    """While it lasts, every log record of this thread names ``path``, a library's too.

    tifffile logs what it finds wrong in a file with no file name (``<tifffile.TiffPages
    @8> invalid circular reference``); inside this context such a line carries the path.
    An event that names a path of its own keeps it.
    """
    return structlog.contextvars.bound_contextvars(path=str(path))


def get_logger(name: str = "acqharvest") -> Any:
    """A structlog logger under the ``acqharvest`` stdlib logger tree."""
    return structlog.get_logger(name)
