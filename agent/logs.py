"""structlog setup: JSON lines for files and services, readable console output on a TTY.

A redaction processor runs last before rendering: it drops keys that name secrets and
masks any registered secret value wherever it appears, raw or in the encodings a server
may echo it in (JSON escapes, percent-encoding, HTML entities, base64), so a token can
never reach a log.
"""

from __future__ import annotations

import base64
import functools
import html.entities
import logging
import logging.handlers
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, MutableMapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TextIO

import structlog

from acqharvest.pathtext import escape

_SECRET_KEYS = frozenset({"authorization", "token", "password", "secret", "api_key"})
MASK = "[redacted]"
#: the defaults of ``log.max_bytes`` and ``log.backups`` (``settings.LogSettings``)
LOG_FILE_BYTES = 10 * 1024 * 1024
LOG_FILE_BACKUPS = 5
#: seconds a failed rotation waits before the next try; the file grows meanwhile
ROTATION_RETRY_SECONDS = 60.0
#: the name our handlers carry, so a second ``configure`` replaces them and nothing else.
_HANDLER_NAME = "acqharvest"
#: a base64 run shorter than this is too common in ordinary text to be masked as a secret
_MIN_BASE64_RUN = 8


def _entity_names() -> dict[str, list[str]]:
    """The HTML5 entity names of each character (``/``: ``sol;``; ``&``: ``amp``, ``AMP;``...)."""
    names: dict[str, list[str]] = {}
    for name, value in html.entities.html5.items():
        if len(value) == 1:
            names.setdefault(value, []).append(name)
    return names


_ENTITY_NAMES = _entity_names()


def _hex(code: str) -> str:
    """A regex matching hex digits in either case."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in code)


def _char_pattern(char: str) -> str:
    """A regex matching ``char`` raw or escaped the ways a server may echo it: a JSON or
    JavaScript escape (``\\/``, ``\\u002f``), percent-encoding, an HTML entity (numeric or
    named), in upper or lower case hex."""
    code = ord(char)
    forms = [re.escape(char)]
    if not char.isalnum():
        forms.append(r"\\" + re.escape(char))
    if code < 0x10000:
        forms.append(r"\\u" + _hex(f"{code:04x}"))
    forms.append("".join("%" + _hex(f"{byte:02x}") for byte in char.encode()))
    forms.append(f"&#0*{code};")
    forms.append("&#[xX]0*" + _hex(f"{code:x}") + ";")
    forms.extend(re.escape("&" + name) for name in _ENTITY_NAMES.get(char, ()))
    return "(?:" + "|".join(forms) + ")"


def _base64_runs(secret: str) -> list[str]:
    """The part of the base64 (and base64url) text of any data holding ``secret`` that
    only the secret decides, for each of its three alignments: that covers the secret
    encoded alone, as ``Bearer <secret>`` or inside a whole header line."""
    runs: list[str] = []
    data = secret.encode()
    for shift, skip in ((0, 0), (1, 2), (2, 3)):
        encoded = base64.b64encode(b"\0" * shift + data).decode().rstrip("=")
        # the last character also holds bits of whatever byte follows the secret
        end = len(encoded) - (1 if (shift + len(data)) % 3 else 0)
        run = encoded[skip:end]
        if len(run) >= _MIN_BASE64_RUN:
            runs += [run, run.translate(str.maketrans("+/", "-_"))]
    return runs


@functools.lru_cache(maxsize=64)
def secret_pattern(secret: str) -> re.Pattern[str]:
    """A regex matching ``secret`` raw, escaped or base64-encoded (compiled once a secret:
    a long token takes a good part of a second)."""
    literals = {secret, *_base64_runs(secret)}
    # longest first: the raw secret before a base64 run it might contain
    ordered = sorted(literals, key=len, reverse=True)
    return re.compile("|".join("".join(map(_char_pattern, literal)) for literal in ordered))


class Masker:
    """Replaces secrets in text, in their raw and encoded forms, with ``MASK``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        #: longest secret first, so one that contains another is masked whole; replaced
        #: (never changed) on ``add``, so a thread masking meanwhile sees a whole tuple
        self._patterns: tuple[re.Pattern[str], ...] = ()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        if not secret:
            return
        with self._lock:
            self._secrets.add(secret)
            ordered = sorted(self._secrets, key=len, reverse=True)
            self._patterns = tuple(secret_pattern(each) for each in ordered)

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def __call__(self, text: str) -> str:
        for pattern in self._patterns:
            text = pattern.sub(MASK, text)
        return text


_registered = Masker()


def register_secret(value: str) -> None:
    """Mask ``value`` (and its encoded forms) in every log event from now on."""
    _registered.add(value)


def mask(text: str) -> str:
    """``text`` with every registered secret masked (for messages that bypass the log)."""
    return _registered(text)


def _mask(value: Any) -> Any:
    return _map_text(value, _registered)


def _map_text(value: Any, function: Callable[[str], str]) -> Any:
    """``value`` with ``function`` applied to every text in it, in dicts, lists and tuples."""
    if isinstance(value, str):
        return function(value)
    if isinstance(value, dict):
        return {key: _map_text(item, function) for key, item in value.items()}
    if isinstance(value, list):
        return [_map_text(item, function) for item in value]
    if isinstance(value, tuple):
        return tuple(_map_text(item, function) for item in value)
    return value


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: drop secret-named keys and mask registered secret values."""
    for key in [key for key in event if key.lower() in _SECRET_KEYS]:
        event[key] = MASK
    if _registered:
        for key, value in event.items():
            event[key] = _mask(value)
    return event


def escape_names(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: text that is not valid UTF-8 (a file name written by an old
    instrument PC) in the percent form of ``pathtext``, listed under ``escaped``.

    Such a name is held as text with lone surrogates, which JSON readers other than
    Python's refuse or replace and a UTF-8 console cannot print; percent-decoding the
    listed values gives the name's exact bytes.
    """
    escaped = []
    for key, value in event.items():
        text = _map_text(value, escape)
        # valid text and other scalars come back as they were (a NaN is not equal to itself)
        if text is not value and text != value:
            event[key] = text
            escaped.append(key)
    if escaped:
        event["escaped"] = escaped
    return event


_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.format_exc_info,
    escape_names,
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
    max_bytes: int = LOG_FILE_BYTES,
    backups: int = LOG_FILE_BACKUPS,
) -> None:
    """Route structlog through stdlib logging to the console and, if given, a JSON file.

    The console is JSON unless ``fmt`` says ``console``, or says ``auto`` and ``stream`` is
    a terminal; the file is always JSON lines, rotated at ``max_bytes`` with ``backups``
    older files kept (``acqharvest.log.1`` the newest).
    """
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
            log_file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
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

    A rotation that fails (on Windows a log file another program holds open, a log viewer
    or a backup agent, cannot be renamed) loses no record and does not block: the file is
    opened again for appending, and the next rotation is tried ``ROTATION_RETRY_SECONDS``
    later, not at every record.
    """

    def __init__(self, filename: Path, **kwargs: Any) -> None:
        #: ``time.monotonic()`` before which no rotation is tried (after one failed)
        self._rotation_blocked_until = 0.0
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

    def shouldRollover(self, record: logging.LogRecord) -> int:
        if time.monotonic() < self._rotation_blocked_until:
            return False
        return super().shouldRollover(record)

    def doRollover(self) -> None:
        try:
            super().doRollover()
        except OSError as error:
            self._rotation_blocked_until = time.monotonic() + ROTATION_RETRY_SECONDS
            if self.stream is None:
                self.stream = self._open()  # the same file, appended to
            sys.stderr.write(
                f"acqharvest: cannot rotate the log file {self.baseFilename} ({error}); "
                f"it grows until the rotation works, tried again in "
                f"{ROTATION_RETRY_SECONDS:.0f} s\n"
            )
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
