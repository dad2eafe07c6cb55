"""The people file (real CSV and XLSX files) and the package's people, facility and license."""

from __future__ import annotations

import os
from pathlib import Path

import openpyxl
import pytest
from structlog.testing import capture_logs

from acqharvest.people import (
    Attribution,
    PeopleError,
    PeopleFile,
    PeopleTable,
    Person,
    orcid_uri,
    read_people,
)
from acqharvest.settings import FacilitySettings

#: ORCID's own documented example iDs (Josiah Carberry; one ending in the X check character)
CARBERRY = "0000-0002-1825-0097"
ENDS_IN_X = "0000-0002-1694-233X"


def write_xlsx(path: Path, rows: list[list[object]]) -> Path:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    book.save(path)
    return path


@pytest.mark.parametrize(
    ("text", "uri"),
    [
        (CARBERRY, f"https://orcid.org/{CARBERRY}"),
        (f"https://orcid.org/{CARBERRY}", f"https://orcid.org/{CARBERRY}"),
        (f"http://orcid.org/{CARBERRY}", f"https://orcid.org/{CARBERRY}"),
        (f" orcid.org/{CARBERRY} ", f"https://orcid.org/{CARBERRY}"),
        ("0000000218250097", f"https://orcid.org/{CARBERRY}"),
        ("0000-0002-1694-233x", f"https://orcid.org/{ENDS_IN_X}"),
    ],
)
def test_an_orcid_id_becomes_its_uri(text: str, uri: str) -> None:
    assert orcid_uri(text) == uri


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("0000-0002-1825-0098", "check character is wrong"),  # one digit off
        ("0000-0002-1825-009X", "check character is wrong"),
        ("0000-0002-1852-0097", "check character is wrong"),  # two digits swapped
        ("0000-0002-1825", "is not an ORCID iD"),
        ("https://example.org/0000-0002-1825-0097", "is not an ORCID iD"),
        ("alice", "is not an ORCID iD"),
    ],
)
def test_a_bad_orcid_id_is_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        orcid_uri(text)


def test_a_csv_people_file_is_read_by_case_insensitive_headers(tmp_path: Path) -> None:
    people = tmp_path / "people.csv"
    # as a spreadsheet program saves it: byte-order mark, CRLF, a blank row, extra columns
    people.write_bytes(
        (
            "\ufeffUserName,Full name,Name,ORCID,E-Mail,Email,Group,Room\r\n"
            f"alice,x,Alice Liddell,{CARBERRY},,alice@example.org,Neurobiology,B.104\r\n"
            ",,,,,,,\r\n"
            f"BOB,y,Bob Ross,https://orcid.org/{ENDS_IN_X},,,,\r\n"
        ).encode()
    )

    table = read_people(people)

    assert table.find("ALICE") == Person(
        "alice",
        "Alice Liddell",
        f"https://orcid.org/{CARBERRY}",
        "alice@example.org",
        "Neurobiology",
    )
    assert table.find(" bob ") == Person("BOB", "Bob Ross", f"https://orcid.org/{ENDS_IN_X}")
    assert table.find("carol") is None


def test_a_semicolon_csv_from_a_comma_decimal_locale_is_read(tmp_path: Path) -> None:
    people = tmp_path / "people.csv"
    people.write_text("username;name;group\nmüller;Jörg Müller;AG Lichtmikroskopie\n")
    assert read_people(people).find("MÜLLER") == Person(
        "müller", "Jörg Müller", group="AG Lichtmikroskopie"
    )


def test_an_xlsx_people_file_is_read_from_its_first_sheet_and_left_untouched(
    tmp_path: Path,
) -> None:
    people = write_xlsx(
        tmp_path / "people.xlsx",
        [
            ["Username", "Name", "ORCID", "Email", "Group", "Notes"],
            ["alice", "Alice Liddell", f"https://orcid.org/{CARBERRY}", "a@example.org", None],
            [None, None, None, None, None, None],
            [4711, "Operator by number", None, None, "Core"],  # a username typed as a number
        ],
    )
    before = people.read_bytes(), os.stat(people).st_mtime_ns

    table = read_people(people)

    assert table.find("alice") == Person(
        "alice", "Alice Liddell", f"https://orcid.org/{CARBERRY}", "a@example.org"
    )
    assert table.find("4711") == Person("4711", "Operator by number", group="Core")
    assert (people.read_bytes(), os.stat(people).st_mtime_ns) == before


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_a_missing_required_column_names_the_file_and_the_column(
    tmp_path: Path, suffix: str
) -> None:
    rows: list[list[object]] = [["username", "orcid"], ["alice", CARBERRY]]
    people = tmp_path / f"people{suffix}"
    if suffix == ".csv":
        people.write_text("\n".join(",".join(map(str, row)) for row in rows))
    else:
        write_xlsx(people, rows)
    with pytest.raises(PeopleError) as caught:
        read_people(people)
    assert str(caught.value).startswith(f"{people}: row 1: the header lacks the column 'name'")


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_a_bad_orcid_names_the_file_row_and_column(tmp_path: Path, suffix: str) -> None:
    rows: list[list[object]] = [
        ["username", "name", "orcid"],
        ["alice", "Alice", CARBERRY],
        ["bob", "Bob", "0000-0002-1825-0098"],
    ]
    people = tmp_path / f"people{suffix}"
    if suffix == ".csv":
        people.write_text("\n".join(",".join(map(str, row)) for row in rows))
    else:
        write_xlsx(people, rows)
    with pytest.raises(PeopleError) as caught:
        read_people(people)
    assert str(caught.value) == (
        f"{people}: row 3, column 'orcid': '0000-0002-1825-0098' is not an ORCID iD: "
        "its check character is wrong"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "username,name\nalice,Alice\nAlice,Alice L.\n",
            "row 3, column 'username': 'Alice' is on row 2",
        ),
        ("username,name\n,Alice\n", "row 2, column 'username': empty"),
        ("username,name\nalice,\n", "row 2, column 'name': empty"),
        ("\n\n", "the people file is empty"),
    ],
)
def test_rows_that_cannot_be_told_apart_or_named_are_refused(
    tmp_path: Path, content: str, message: str
) -> None:
    people = tmp_path / "people.csv"
    people.write_text(content)
    with pytest.raises(PeopleError, match=message):
        read_people(people)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("people.xlsx", b"username,name\n", "not a readable XLSX workbook"),
        ("people.csv", b"username,name\n\xff\xfe,x\n", "not UTF-8 text"),
        ("people.ods", b"", "a people file is .csv or .xlsx, not .ods"),
    ],
)
def test_a_file_of_another_kind_is_refused_with_its_name(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    people = tmp_path / name
    people.write_bytes(content)
    with pytest.raises(PeopleError, match=message) as caught:
        read_people(people)
    assert str(caught.value).startswith(str(people))


def test_a_missing_file_is_refused_with_its_name(tmp_path: Path) -> None:
    with pytest.raises(PeopleError, match="cannot read the people file"):
        read_people(tmp_path / "people.csv")


def test_an_edited_people_file_applies_without_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_text("username,name\nalice,Alice\n")
    people = PeopleFile(path)
    assert people.current().find("bob") is None

    path.write_text("username,name\nalice,Alice\nbob,Bob Ross\n")
    with capture_logs() as logs:
        table = people.current()
    assert table.find("bob") == Person("bob", "Bob Ross")
    assert [entry["event"] for entry in logs] == ["people_file_read"]


def test_a_broken_edit_keeps_the_last_good_reading_and_is_logged_once(tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_text("username,name\nalice,Alice\n")
    people = PeopleFile(path)

    path.write_text("username,name,orcid\nalice,Alice,0000-0002-1825-0098\n")
    with capture_logs() as logs:
        first, again = people.current(), people.current()
    assert first.find("alice") == again.find("alice") == Person("alice", "Alice")
    (logged,) = logs
    assert logged["event"] == "people_file_invalid"
    assert "row 2, column 'orcid'" in logged["reason"]

    path.unlink()
    with capture_logs() as logs:
        assert people.current().find("alice") == Person("alice", "Alice")
        people.current()
    assert [entry["event"] for entry in logs] == ["people_file_invalid"]
    assert "cannot read" in logs[0]["reason"]

    path.write_text("username,name\nalice,Alice Liddell\n")
    assert people.current().find("alice") == Person("alice", "Alice Liddell")


def test_a_broken_file_at_start_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_text("user,name\n")
    with pytest.raises(PeopleError, match="lacks the column 'username'"):
        PeopleFile(path)


TABLE = PeopleTable(
    Path("people.csv"),
    {
        "alice": Person(
            "alice", "Alice Liddell", f"https://orcid.org/{CARBERRY}", "a@example.org", "Neuro"
        ),
        "bob": Person("bob", "Bob Ross"),
    },
)
FACILITY = FacilitySettings("Example Imaging Facility", "https://ror.org/05abcde12")


def test_the_operator_becomes_the_packages_person_without_email_by_default() -> None:
    fields = Attribution(TABLE, FACILITY, "CC-BY-4.0").fields("Alice")
    assert fields == {
        "people": [
            {
                "role": "operator",
                "name": "Alice Liddell",
                "orcid": f"https://orcid.org/{CARBERRY}",
                "affiliation": "Neuro",
            }
        ],
        "facility": {"name": "Example Imaging Facility", "ror": "https://ror.org/05abcde12"},
        "license": "CC-BY-4.0",
    }


def test_email_goes_into_packages_only_when_the_config_says_so() -> None:
    (person,) = Attribution(TABLE, include_email=True).fields("alice")["people"]
    assert person["email"] == "a@example.org"


def test_a_person_without_a_group_is_affiliated_with_the_facility() -> None:
    (person,) = Attribution(TABLE, FACILITY).fields("bob")["people"]
    assert person == {
        "role": "operator",
        "name": "Bob Ross",
        "affiliation": "Example Imaging Facility",
    }
    (alone,) = Attribution(TABLE).fields("bob")["people"]
    assert alone == {"role": "operator", "name": "Bob Ross"}


@pytest.mark.parametrize("operator", ["carol", None])
def test_an_operator_not_in_the_file_gives_no_people(operator: str | None) -> None:
    assert Attribution(TABLE, FACILITY).fields(operator) == {
        "facility": {"name": "Example Imaging Facility", "ror": "https://ror.org/05abcde12"}
    }
    assert Attribution().fields(operator) == {}


def test_only_an_operator_a_configured_file_does_not_list_is_unknown() -> None:
    assert Attribution(TABLE).unknown("carol")
    assert not Attribution(TABLE).unknown("Alice")  # names are matched as the file's are
    assert not Attribution(TABLE).unknown(None)  # no operator: nobody to look up
    assert not Attribution().unknown("carol")  # no people file: nothing to miss


def test_a_cell_with_a_line_break_keeps_rows_numbered_as_the_spreadsheet_does(
    tmp_path: Path,
) -> None:
    people = tmp_path / "people.csv"
    people.write_text(
        'username,name,group,orcid\nalice,Alice,"Neuro\nbiology",\nbob,Bob,,0000-0002-1825-009\n'
    )
    with pytest.raises(PeopleError, match=r"row 3, column 'orcid'"):
        read_people(people)
    people.write_text('username,name,group\nalice,Alice,"Neuro\nbiology"\nbob,Bob,\n')
    table = read_people(people)
    assert table.find("alice") == Person("alice", "Alice", group="Neuro\nbiology")
    assert table.find("bob") == Person("bob", "Bob")
