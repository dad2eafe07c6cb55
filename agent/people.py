"""Who acquired: the people file (CSV or XLSX) and the package's ``people`` entry.

A facility keeps its users in a spreadsheet or exports them from its booking system: one
row per person, with the ``username`` they go by in folder names (the ``{operator}`` of a
``path_template``) or in the instrument software, their full ``name``, ``orcid`` iD,
``email`` and ``group``. Header names are matched without regard to case, other columns
are ignored, and an empty row is skipped.

ORCID asks that iDs be collected from their holders through its sign-in, never typed in
by someone else; the people file is where a system that did so (a booking system, a
user database with ORCID login) hands them over. Each iD is still checked here (its ISO
7064 11,2 check character), so a mistyped one is refused with its row, not published.

``read_people`` reads a file once; ``PeopleFile`` keeps the last good reading and reads
the file again when its size or modification time changes, so an admin's edit applies
to the next acquisition without a restart, and a broken edit keeps the previous reading
(logged once). ``Attribution`` is pure: it turns an operator's username into the
package's ``people``, ``facility`` and ``license`` fields.

The daemon never writes the file.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acqharvest import logs
from acqharvest.model import FacilitySettings, Settings

log = logs.get_logger("acqharvest.people")

#: the columns the file must have, and those it may have.
REQUIRED_COLUMNS = ("username", "name")
OPTIONAL_COLUMNS = ("orcid", "email", "group")
ORCID_URI = "https://orcid.org/"
_ORCID = re.compile(
    r"^(?:(?:https?://)?(?:www\.)?orcid\.org/)?(\d{4})-?(\d{4})-?(\d{4})-?(\d{3}[\dX])$", re.I
)
#: CSV delimiters a spreadsheet program writes, depending on the locale.
_DELIMITERS = ",;\t"


class PeopleError(Exception):
    """The people file is unusable; the message names the file, and the row and column."""


@dataclass(frozen=True, slots=True)
class Person:
    """One row of the people file."""

    username: str
    name: str
    #: the ``https://orcid.org/...`` URI
    orcid: str | None = None
    email: str | None = None
    group: str | None = None


@dataclass(frozen=True, slots=True)
class PeopleTable:
    """The people of one reading of the file, by case-folded username."""

    source: Path
    by_username: Mapping[str, Person] = field(default_factory=dict)

    def find(self, username: str) -> Person | None:
        """The person whose username is ``username``, whatever its case."""
        return self.by_username.get(username.strip().casefold())


def orcid_uri(text: str) -> str:
    """An ORCID iD, bare (``0000-0002-1825-0097``) or as its URI, as the URI.

    Raises ``ValueError`` naming what is wrong: the shape, or the check character
    (ISO 7064 MOD 11-2 over the first 15 digits, as ORCID computes it).
    """
    found = _ORCID.match(text.strip())
    if found is None:
        raise ValueError(f"{text!r} is not an ORCID iD (like 0000-0002-1825-0097)")
    groups = [group.upper() for group in found.groups()]
    digits = "".join(groups)
    total = 0
    for digit in digits[:-1]:
        total = (total + int(digit)) * 2
    remainder = (12 - total % 11) % 11
    expected = "X" if remainder == 10 else str(remainder)
    if digits[-1] != expected:
        raise ValueError(f"{text!r} is not an ORCID iD: its check character is wrong")
    return ORCID_URI + "-".join(groups)


def read_people(path: Path) -> PeopleTable:
    """Read a people file (``.csv`` or ``.xlsx``); ``PeopleError`` names what is wrong."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            rows = _csv_rows(path)
        elif suffix in (".xlsx", ".xlsm"):
            rows = _xlsx_rows(path)
        else:
            raise PeopleError(f"{path}: a people file is .csv or .xlsx, not {suffix or 'none'}")
        return PeopleTable(path, _people(path, rows))
    except OSError as error:
        raise PeopleError(
            f"{path}: cannot read the people file: {error.strerror or error}"
        ) from error


def _csv_rows(path: Path) -> list[list[str]]:
    # utf-8-sig: spreadsheet programs on Windows start their CSV with a byte-order mark
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise PeopleError(
            f"{path}: not UTF-8 text ({error.reason}); save it as CSV UTF-8"
        ) from error
    header = text.partition("\n")[0]
    # a comma, or the semicolon of a spreadsheet in a locale whose decimal mark is a comma
    delimiter = max(_DELIMITERS, key=header.count)
    # a row is a record, as the spreadsheet numbers it, even when a cell holds a line break
    return list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))


def _xlsx_rows(path: Path) -> list[list[str]]:
    """The first sheet's cells as text; formulas as the values the spreadsheet last saved."""
    import openpyxl  # only for XLSX files: a CSV-only site never loads it

    try:
        # read_only: rows are parsed as they are read, and the file is opened for reading
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
        try:
            rows = book.worksheets[0].iter_rows(values_only=True)
            return [[_cell_text(value) for value in row] for row in rows]
        finally:
            book.close()
    except OSError:
        raise
    except Exception as error:  # zip, XML and openpyxl errors of a bad file alike
        raise PeopleError(f"{path}: not a readable XLSX workbook: {error}") from error


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a username typed as a number
    return str(value)


def _people(path: Path, rows: Sequence[Sequence[str]]) -> dict[str, Person]:
    numbered = [(number, row) for number, row in enumerate(rows, start=1) if any(_strip(row))]
    if not numbered:
        raise PeopleError(f"{path}: the people file is empty (it needs a header row)")
    header_row, header = numbered[0]
    columns = {name.strip().casefold(): index for index, name in enumerate(header) if name}
    for name in REQUIRED_COLUMNS:
        if name not in columns:
            raise PeopleError(
                f"{path}: row {header_row}: the header lacks the column {name!r} "
                f"(found: {', '.join(repr(n) for n in header if n.strip()) or 'none'})"
            )
    people: dict[str, Person] = {}
    first_row: dict[str, int] = {}
    for number, row in numbered[1:]:
        cells = {
            name: _cell(row, columns[name])
            for name in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)
            if name in columns
        }
        for name in REQUIRED_COLUMNS:
            if not cells[name]:
                raise PeopleError(f"{path}: row {number}, column {name!r}: empty")
        orcid = cells.get("orcid")
        if orcid:
            try:
                orcid = orcid_uri(orcid)
            except ValueError as error:
                raise PeopleError(f"{path}: row {number}, column 'orcid': {error}") from error
        key = cells["username"].casefold()
        if key in first_row:
            raise PeopleError(
                f"{path}: row {number}, column 'username': {cells['username']!r} is on row "
                f"{first_row[key]} too (usernames are compared without regard to case)"
            )
        first_row[key] = number
        people[key] = Person(
            cells["username"],
            cells["name"],
            orcid or None,
            cells.get("email") or None,
            cells.get("group") or None,
        )
    return people


def _strip(row: Iterable[str]) -> Iterator[str]:
    return (cell.strip() for cell in row)


def _cell(row: Sequence[str], index: int) -> str:
    return row[index].strip() if index < len(row) else ""


class PeopleFile:
    """The people file, read again when it changes; its last good reading is kept.

    The first reading happens here and raises ``PeopleError``: a daemon does not start
    on a broken file. A later edit that breaks it (or the file going away) is logged
    once per version (``people_file_invalid``), and the previous reading stays in use
    until the file is fixed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        #: (size, mtime_ns) of the version last looked at, good or bad; None: unreadable
        self._seen: tuple[int, int] | None = _version(path)
        self.table = read_people(path)

    def current(self) -> PeopleTable:
        """The people now; the file is read again when its size or mtime changed."""
        try:
            version: tuple[int, int] | None = _version(self.path)
        except OSError as error:
            version, problem = None, f"{self.path}: cannot read: {error.strerror or error}"
        if version == self._seen:
            return self.table
        self._seen = version
        try:
            if version is None:
                raise PeopleError(problem)
            self.table = read_people(self.path)
        except PeopleError as error:
            log.error(
                "people_file_invalid",
                path=str(self.path),
                reason=str(error),
                action="the previous reading stays in use",
            )
        else:
            log.info("people_file_read", path=str(self.path), people=len(self.table.by_username))
        return self.table


def _version(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


@dataclass(frozen=True, slots=True)
class Attribution:
    """Who, where and under which terms: the package's ``people``, ``facility``, ``license``."""

    people: PeopleTable | None = None
    facility: FacilitySettings | None = None
    license: str | None = None
    #: e-mail addresses go into packages only when the config says so (see ``fields``)
    include_email: bool = False

    @classmethod
    def of(cls, settings: Settings, people: PeopleTable | None) -> Attribution:
        return cls(people, settings.facility, settings.license, settings.people_include_email)

    def unknown(self, operator: str | None) -> bool:
        """True for an operator a people file is configured for but does not list."""
        if self.people is None or not operator:
            return False
        return self.people.find(operator) is None

    def fields(self, operator: str | None) -> dict[str, Any]:
        """Top-level package fields; ``people`` only when the operator is in the file.

        The e-mail is left out unless ``include_email``: a package is copied to
        repositories and catalogues, often public, where an address only invites spam
        and outlives the person's time at the facility, while the ORCID iD identifies
        them and lets them say themselves how to be reached.
        """
        found: dict[str, Any] = {}
        person = self.people.find(operator) if self.people is not None and operator else None
        if person is not None:
            entry: dict[str, Any] = {"role": "operator", "name": person.name}
            if person.orcid:
                entry["orcid"] = person.orcid
            if person.email and self.include_email:
                entry["email"] = person.email
            affiliation = person.group or (self.facility.name if self.facility else None)
            if affiliation:
                entry["affiliation"] = affiliation
            found["people"] = [entry]
        if self.facility is not None:
            found["facility"] = {"name": self.facility.name}
            if self.facility.ror:
                found["facility"]["ror"] = self.facility.ror
        if self.license:
            found["license"] = self.license
        return found
