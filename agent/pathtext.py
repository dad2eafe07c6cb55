"""File names that are not valid UTF-8, carried losslessly wherever a path becomes text.

An instrument PC writing Latin-1 or CP1252 names to a share (``caf\\xe9.dcm``) gives file
names whose bytes are not UTF-8. Python holds such a name as a ``str`` with the undecodable
bytes as lone surrogates (``surrogateescape``: byte ``0xE9`` is ``'\\udce9'``), which
SQLite, UTF-8 output and strict JSON consumers refuse. This module is the one place that
turns such text into forms they accept and back, without losing a byte:

- **Percent form** (``escape``/``unescape``), for packages, logs, status and messages: a
  text whose name bytes are valid UTF-8 is left exactly as it is; otherwise each byte that
  is not part of valid UTF-8, and each ``%``, is written ``%XX`` (two uppercase hex
  digits), so ``caf\\xe9.tif`` becomes ``caf%E9.tif``. Whoever shows it must also say that
  it is escaped (the package's ``path_encoding: "percent"``, the log's ``escaped`` key):
  percent-decoding an escaped text gives back the name's exact bytes.
- **Registry values** (``to_sql``/``from_sql``): valid text is stored as TEXT, exactly as
  before; a name that is not is stored as a BLOB of its bytes. TEXT and BLOB never compare
  equal in SQLite, so neither can be taken for the other, and registries written before
  keep matching.

The bytes are those ``os.fsencode`` gives: the name as the file system holds it on POSIX
(on Windows, where names are UTF-16, an unpaired surrogate's WTF-8 bytes).
"""

from __future__ import annotations

import os
import re

#: what the package and the log call the percent form
PERCENT = "percent"
_ESCAPED_BYTE = re.compile(r"%([0-9A-F]{2})")


def is_text(text: str) -> bool:
    """True when ``text`` encodes as UTF-8: a name every consumer takes as it is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def escape(text: str) -> str:
    """``text`` itself when valid, else its percent form (see the module docstring)."""
    if is_text(text):
        return text
    out = []
    for char in _bytes(text).decode("utf-8", "surrogateescape"):
        if "\udc80" <= char <= "\udcff":
            out.append(f"%{ord(char) - 0xDC00:02X}")
        elif char == "%":
            out.append("%25")
        else:
            out.append(char)
    return "".join(out)


def unescape(escaped: str) -> str:
    """The name a percent form (``escape`` of a text that was not valid) stands for."""
    parts = _ESCAPED_BYTE.split(escaped)
    # split() alternates literal text and the captured hex digits of an escape
    raw = b"".join(
        bytes([int(part, 16)]) if index % 2 else part.encode("utf-8")
        for index, part in enumerate(parts)
    )
    return os.fsdecode(raw)


def to_sql(text: str) -> str | bytes:
    """The value a path or key is stored under in SQLite: TEXT when valid, else a BLOB."""
    return text if is_text(text) else _bytes(text)


def _bytes(text: str) -> bytes:
    """The bytes of a name held as text; never raises.

    A lone surrogate that no file name on this system gives (text an adapter made up) is
    written as its UTF-8-style bytes rather than refused.
    """
    try:
        return os.fsencode(text)
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def from_sql(value: str | bytes) -> str:
    """The text ``to_sql`` stored."""
    return value if isinstance(value, str) else os.fsdecode(value)
