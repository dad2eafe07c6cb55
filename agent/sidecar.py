"""Sidecars: the facts a microscopist writes beside the data (study, sample, organism...).

A sidecar is a small key/value file named one of ``sidecar_names`` (by default
``acquisition.xlsx``, ``acquisition.csv``, ``acquisition.yaml``) in an acquisition's
folder or in any folder above it, up to the watch folder. Every one found applies; the
nearer one wins key by key, and in one folder a name listed earlier in ``sidecar_names``
wins over one listed later. ``find`` returns them in the order they are applied (the
watch folder's first), and the package stage merges their values in that order.

Reading happens in the worker that extracts the acquisition, the one place the files of a
package are read, under the worker's time and memory budgets; the runtime never parses a
file. Each sidecar is read whole, once, through ``readonly.FileReader`` (no link followed,
no FIFO opened, nothing locked), and the bytes parsed are the bytes hashed, so the sha256
the package lists says exactly which version applied. A worker keeps what it read
(``Cache``) while the file's ``lstat`` shows the same version. A sidecar's own change packages
nothing: the watch stage never harvests a file with a sidecar name (``excluding_sidecars``),
so an edited sidecar applies to the acquisitions packaged after it changed.

Formats, by name ending (``settings.SIDECAR_SUFFIXES``):

- ``.xlsx``: the first sheet (``openpyxl``, read-only, cached formula results);
- ``.csv``: UTF-8 (a byte-order mark is fine), separated by comma, semicolon (as Excel
  saves it in many European locales) or tab: whichever of them comes first on the first
  row;
- ``.yaml`` / ``.yml``: one mapping of keys to plain values.

Spreadsheet and CSV rows are key (first column) and value (second); later columns are
notes and are ignored, blank rows too, and a first row reading ``key``, ``value`` is a
header. Keys are normalized to lower snake case (``Sample ID`` -> ``sample_id``); values are
text as written (YAML scalars are taken as written too: ``1.10`` stays ``1.10``, ``no``
stays ``no``), numbers as they are stored, dates as ISO 8601. An empty value is the empty
text, and overrides a value from farther up.

Bounds: a sidecar over ``MAX_BYTES`` is refused unread; a workbook whose parts unpack to
more than ``MAX_UNPACKED`` bytes (a ZIP bomb) is refused before ``openpyxl`` sees it, and
no more than ``MAX_ROWS`` rows are read. A malformed sidecar is a ``Sidecar`` with an
``error`` naming the place (``sheet Sheet1 cell B4: ...``, in a CSV file ``cell A4:
...``, in YAML ``line 3 column 7: ...``): the package goes out without its values, marked.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import os
import re
import stat
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime, time
from pathlib import Path

import yaml

from acqharvest.model import Sidecar, WatchSettings
from acqharvest.readonly import FileReader, NotSettledFile

#: largest sidecar read, in bytes: key/value facts fit in a few KiB
MAX_BYTES = 1 << 20
#: largest total of a workbook's parts once unpacked, as its ZIP directory declares them
#: (the ``zipfile`` module never inflates a part beyond its declared size)
MAX_UNPACKED = 8 << 20
#: most rows read of a spreadsheet or CSV, blank ones included
MAX_ROWS = 10_000

#: runs of what is neither a letter nor a digit, in any script
_SEPARATORS = re.compile(r"[\W_]+")
_CSV_DELIMITERS = (",", ";", "\t")
#: libyaml's parser when PyYAML was built with it: the same nodes, faster
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class SidecarError(ValueError):
    """A sidecar that cannot be applied; the message names the place in the file."""


def excluding_sidecars(folder: WatchSettings, names: Sequence[str]) -> WatchSettings:
    """``folder`` with the sidecar names among its exclude patterns: a sidecar is read for
    the acquisitions below it, never harvested as one (names hold no pattern characters:
    ``settings`` refuses them)."""
    if not names:
        return folder
    return dataclasses.replace(folder, exclude=(*folder.exclude, *names))


def find(primary: Path, root: Path, names: Sequence[str]) -> list[Path]:
    """The sidecars of the acquisition whose primary file is ``primary``, in the order they
    apply: from the watch folder ``root`` down to the primary's folder, and in each folder
    the names in reverse ``names`` order (the first listed is applied last, so it wins).

    A folder that does not resolve inside ``root`` is not looked into. Anything with a
    sidecar name that is not a folder is returned: the reader refuses a link or a FIFO.
    """
    folders: list[Path] = []
    folder = primary.parent
    while folder.is_relative_to(root):
        folders.append(folder)
        if folder == root:
            break
        folder = folder.parent
    real_root = os.path.realpath(root)
    found: list[Path] = []
    for folder in reversed(folders):
        real = os.path.realpath(folder)
        if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
            continue
        for name in reversed(names):
            candidate = folder / name
            try:
                if not stat.S_ISDIR(os.lstat(candidate).st_mode):
                    found.append(candidate)
            except OSError:
                continue  # none there (or the folder cannot be looked into)
    return found


class Cache:
    """Sidecars read before, so that a workbook above ten thousand acquisitions is parsed
    once, not ten thousand times (``openpyxl`` takes some 15 ms for a small one).

    A sidecar whose ``lstat`` still shows the version read (size, mtime, device, inode and
    ctime: the registry's rule for an unchanged file) is taken from here; any change reads
    it again. One that could not be read at all is never kept (its cause may pass).
    Holds at most ``size`` sidecars, the least recently used going first.
    """

    def __init__(self, size: int = 64) -> None:
        self._size = size
        self._kept: dict[Path, tuple[tuple[int, ...], Sidecar]] = {}

    def read_all(self, paths: Iterable[Path], root: Path) -> list[Sidecar]:
        """``read`` of each path still there, in order, unless it is kept unchanged."""
        reader = FileReader()
        return [found for path in paths if (found := self._read(path, root, reader))]

    def _read(self, path: Path, root: Path, reader: FileReader) -> Sidecar | None:
        try:
            st = os.lstat(path)
        except OSError:
            return read(path, root, reader)  # which names the problem, or finds it gone
        version = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        kept = self._kept.pop(path, None)
        if kept is not None and kept[0] == version and kept[1].root == root:
            self._kept[path] = kept  # now the most recently used
            return kept[1]
        found = read(path, root, reader)
        if found is not None and (found.size, found.mtime_ns) == (st.st_size, st.st_mtime_ns):
            self._kept[path] = (version, found)
            while len(self._kept) > self._size:
                del self._kept[next(iter(self._kept))]
        return found


def read(path: Path, root: Path, reader: FileReader) -> Sidecar | None:
    """One sidecar, read whole and parsed; never raises (a problem is its ``error``).

    None when it is gone (deleted since it was found): there is no sidecar then.
    """
    try:
        with reader.open(path) as handle:
            before = os.fstat(handle.fileno())
            if before.st_size > MAX_BYTES:
                raise SidecarError(
                    f"it is {before.st_size} bytes, more than the {MAX_BYTES} a sidecar may "
                    "hold; keep only key/value rows in it"
                )
            data = handle.read(MAX_BYTES + 1)
            after = os.fstat(handle.fileno())
    except SidecarError as error:
        return Sidecar(path, root, error=str(error))
    except FileNotFoundError:
        return None
    except NotSettledFile as error:  # a link or a FIFO; its path is the package's own
        return Sidecar(path, root, error=str(error).removeprefix(f"{path}: "))
    except OSError as error:
        return Sidecar(path, root, error=f"cannot read it: {error.strerror or error}")
    moved = (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns)
    if moved or len(data) != after.st_size:
        # half an edit: the next acquisition reads the sidecar again
        return Sidecar(path, root, error="it changed while it was read")
    sidecar = Sidecar(
        path,
        root,
        size=len(data),
        mtime_ns=after.st_mtime_ns,
        sha256=hashlib.sha256(data).hexdigest(),
    )
    try:
        values = parse(path.name, data)
    except SidecarError as error:
        return dataclasses.replace(sidecar, error=str(error))
    return dataclasses.replace(sidecar, values=values)


def parse(name: str, data: bytes) -> dict[str, str]:
    """The normalized key/value pairs of a sidecar named ``name`` holding ``data``."""
    suffix = os.path.splitext(name)[1].lower()
    if suffix == ".xlsx":
        return _pairs(_xlsx_rows(data))
    if suffix == ".csv":
        return _pairs(_csv_rows(data))
    if suffix in (".yaml", ".yml"):
        return _yaml_pairs(data)
    raise SidecarError(f"{name!r} is not a sidecar format (.xlsx, .csv, .yaml)")


def normalized_key(text: str) -> str:
    """Lower snake case: ``Sample ID`` -> ``sample_id``; letters of any script are kept."""
    return _SEPARATORS.sub("_", text.strip().casefold()).strip("_")


# ----------------------------------------------------------------------------- rows

#: (place of the key, key text or None, place of the value, value text or None)
_Row = tuple[str, str | None, str, str | None]


def _pairs(rows: Iterable[_Row], *, header: bool = True) -> dict[str, str]:
    """Key/value pairs of spreadsheet-like rows: blank rows skipped, keys normalized and
    unique; with ``header``, a first row ``key``, ``value`` is skipped as a header."""
    pairs: dict[str, str] = {}
    places: dict[str, str] = {}
    first = header
    for key_place, key_text, value_place, value_text in rows:
        key_text = (key_text or "").strip()
        value_text = (value_text or "").strip()
        if not key_text and not value_text:
            continue
        if first and normalized_key(key_text) == "key" and normalized_key(value_text) == "value":
            first = False
            continue
        first = False
        if not key_text:
            raise SidecarError(f"{value_place}: a value with no key beside it")
        key = normalized_key(key_text)
        if not key:
            raise SidecarError(f"{key_place}: the key {key_text!r} has no letter or digit")
        if key in places:
            raise SidecarError(f"{key_place}: the key {key!r} is given twice (also {places[key]})")
        places[key] = key_place
        pairs[key] = value_text
    return pairs


def _csv_rows(data: bytes) -> Iterator[_Row]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise SidecarError(
            f"line {line}: byte 0x{data[error.start]:02X} is not UTF-8 text; save the file "
            "as 'CSV UTF-8'"
        ) from None
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    found = [(first_line.find(d), d) for d in _CSV_DELIMITERS if d in first_line]
    delimiter = min(found)[1] if found else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    number = 0
    try:
        for number, row in enumerate(reader, start=1):
            if number > MAX_ROWS:
                raise SidecarError(
                    f"row {number}: more than the {MAX_ROWS} rows a sidecar may hold"
                )
            cells = [*row, None, None]
            yield f"cell A{number}", cells[0], f"cell B{number}", cells[1]
    except csv.Error as error:
        raise SidecarError(f"row {number + 1}: {error}") from None


def _xlsx_rows(data: bytes) -> Iterator[_Row]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, ValueError, OSError) as error:
        raise SidecarError(f"not an XLSX workbook: {error}") from None
    if unpacked > MAX_UNPACKED:
        raise SidecarError(
            f"its parts unpack to {unpacked} bytes, more than the {MAX_UNPACKED} a sidecar "
            "workbook may (a ZIP bomb, or not a key/value sheet)"
        )
    import openpyxl  # only where a workbook is read: the import takes a while

    try:
        with warnings.catch_warnings():
            # openpyxl warns about styles and extensions it skips; nothing of it is read
            warnings.simplefilter("ignore")
            book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as error:  # noqa: BLE001 - a malformed workbook may raise anything
        raise SidecarError(
            f"not a readable XLSX workbook: {type(error).__name__}: {error}"
        ) from None
    try:
        if not book.worksheets:
            return
        sheet = book.worksheets[0]
        where = f"sheet {sheet.title}"
        try:
            rows = sheet.iter_rows(min_row=1, max_row=MAX_ROWS + 1, max_col=2)
            for number, row in enumerate(rows, start=1):
                if number > MAX_ROWS:
                    raise SidecarError(
                        f"{where} row {number}: more than the {MAX_ROWS} rows a sidecar may hold"
                    )
                cells = [*row, None, None]
                key_place, value_place = f"{where} cell A{number}", f"{where} cell B{number}"
                yield (
                    key_place,
                    _cell_text(cells[0], key_place),
                    value_place,
                    _cell_text(cells[1], value_place),
                )
        except SidecarError:
            raise
        except Exception as error:  # noqa: BLE001 - as above, while the sheet is parsed
            raise SidecarError(
                f"{where}: cannot be read: {type(error).__name__}: {error}"
            ) from None
    finally:
        book.close()


def _cell_text(cell: object, place: str) -> str | None:
    """A cell's value as text; None for an empty cell."""
    value = getattr(cell, "value", None)
    if value is None:
        return None
    if getattr(cell, "data_type", None) == "e":
        raise SidecarError(f"{place}: holds the spreadsheet error {value}, not a value")
    return _text(value, place)


def _text(value: object, place: str) -> str:
    """A scalar as text: booleans as ``true``/``false``, dates as ISO 8601 (a spreadsheet
    date at midnight as the date alone), numbers as stored."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time() else value.isoformat()
    if isinstance(value, (date, time)):
        return value.isoformat()
    raise SidecarError(f"{place}: a {type(value).__name__} value cannot be written as text")


# ----------------------------------------------------------------------------- YAML


def _yaml_pairs(data: bytes) -> dict[str, str]:
    """The mapping of a YAML sidecar, scalars taken as written (``1.10``, ``no``, a date).

    Composed, never constructed: the node tree keeps every line number, and an alias
    bomb is never expanded (collections are refused before anything is built).
    """
    try:
        node = yaml.compose(data, Loader=_YAML_LOADER)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        place = "" if mark is None else f"line {mark.line + 1} column {mark.column + 1}: "
        raise SidecarError(f"{place}not valid YAML: {error.problem}") from None
    except yaml.YAMLError as error:
        raise SidecarError(f"not valid YAML: {error}") from None
    if node is None:
        return {}
    if not isinstance(node, yaml.MappingNode):
        raise SidecarError(
            f"line {node.start_mark.line + 1}: the file must be a mapping of keys to values "
            "(key: value lines)"
        )

    def scalar(item: yaml.Node, what: str) -> str:
        place = f"line {item.start_mark.line + 1} column {item.start_mark.column + 1}"
        if not isinstance(item, yaml.ScalarNode):
            kind = "a list" if isinstance(item, yaml.SequenceNode) else "a mapping"
            raise SidecarError(f"{place}: the {what} is {kind}, not text")
        if item.tag == "tag:yaml.org,2002:null" and item.style is None:
            return ""  # "key:" or "key: ~" with nothing written
        if item.tag == "tag:yaml.org,2002:binary":
            raise SidecarError(f"{place}: the {what} is binary data, not text")
        return str(item.value)

    rows = (
        (
            f"line {key.start_mark.line + 1}",
            scalar(key, "key"),
            f"line {value.start_mark.line + 1}",
            scalar(
                value, f"value of {key.value!r}" if isinstance(key, yaml.ScalarNode) else "value"
            ),
        )
        for key, value in node.value
    )
    return _pairs(rows, header=False)
