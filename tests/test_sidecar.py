"""Sidecars: finding them above an acquisition, reading XLSX, CSV and YAML, and refusing
malformed or hostile ones with the place named."""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import struct
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import openpyxl
import pytest

from acqharvest import sidecar, workers
from acqharvest.config import ConfigError, parse_settings
from acqharvest.model import (
    Acquisition,
    Deidentified,
    Extraction,
    FileSettled,
    ProbedFile,
    Sidecar,
    WatchSettings,
)
from acqharvest.package import build_package
from acqharvest.readonly import FileReader
from acqharvest.settings import DEFAULT_SIDECAR_NAMES
from acqharvest.sidecar import MAX_BYTES, MAX_ROWS, SidecarError, parse
from acqharvest.watch import matches

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[1] / "config" / "package.schema.json").read_text()
)
NAMES = DEFAULT_SIDECAR_NAMES


def workbook(*rows: tuple[object, ...], title: str = "Sheet1") -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = title
    for row in rows:
        sheet.append(list(row))
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def read_file(path: Path, root: Path) -> Sidecar:
    found = sidecar.read(path, root, FileReader())
    assert found is not None
    return found


# ----------------------------------------------------------------------------- formats


def test_csv_rows_are_keys_and_values_with_header_blank_rows_and_notes_skipped() -> None:
    text = "\ufeffKey,Value\nStudy,Calcium imaging\n\n Sample ID ,HeLa-17,grown on glass\n"
    assert parse("acquisition.csv", text.encode()) == {
        "study": "Calcium imaging",
        "sample_id": "HeLa-17",
    }


def test_csv_from_a_european_excel_is_separated_by_semicolons() -> None:
    text = "Organism;Mus musculus\nPreparation;fixed, 4% PFA\n"
    assert parse("acquisition.csv", text.encode()) == {
        "organism": "Mus musculus",
        "preparation": "fixed, 4% PFA",
    }


def test_keys_become_lower_snake_case_in_any_script() -> None:
    assert sidecar.normalized_key("  Organism (NCBI taxon) ") == "organism_ncbi_taxon"
    assert sidecar.normalized_key("Präparation") == "präparation"
    assert sidecar.normalized_key("sample-id") == "sample_id"


def test_xlsx_first_sheet_values_are_text_as_a_microscopist_sees_them() -> None:
    data = workbook(
        ("key", "value"),
        ("Study", "Calcium imaging"),
        ("Passage", 17),
        ("Dilution", 0.25),
        (None, None),
        ("Fixed on", datetime.datetime(2026, 11, 3)),  # noqa: DTZ001 - a spreadsheet date
        ("Imaged at", datetime.datetime(2026, 11, 4, 9, 30)),  # noqa: DTZ001
        ("Live", False),
        ("Project", "P-104", "a note in a third column"),
    )
    assert parse("acquisition.xlsx", data) == {
        "study": "Calcium imaging",
        "passage": "17",
        "dilution": "0.25",
        "fixed_on": "2026-11-03",
        "imaged_at": "2026-11-04T09:30:00",
        "live": "false",
        "project": "P-104",
    }


def test_yaml_scalars_are_taken_as_written() -> None:
    data = b"study: Calcium imaging\nprotocol_version: 1.10\nconsent: no\nnotes:\nday: 2026-11-03\n"
    assert parse("acquisition.yaml", data) == {
        "study": "Calcium imaging",
        "protocol_version": "1.10",
        "consent": "no",
        "notes": "",
        "day": "2026-11-03",
    }


def test_empty_sidecars_hold_no_values() -> None:
    assert parse("acquisition.yaml", b"# nothing yet\n") == {}
    assert parse("acquisition.csv", b"") == {}
    assert parse("acquisition.xlsx", workbook()) == {}


# ----------------------------------------------------------------------------- malformed


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        pytest.param(
            "acquisition.xlsx",
            workbook(("study", "S"), ("sample", "A"), ("organism", "M"), (None, "orphan")),
            "sheet Sheet1 cell B4: a value with no key beside it",
            id="xlsx-value-without-key",
        ),
        pytest.param(
            "acquisition.xlsx",
            workbook(("study", "S"), ("ratio", "#DIV/0!"), title="Facts"),
            "sheet Facts cell B2: holds the spreadsheet error #DIV/0!, not a value",
            id="xlsx-error-cell",
        ),
        pytest.param(
            "acquisition.xlsx",
            workbook(("study", "S"), ("duration", datetime.timedelta(hours=2))),
            "sheet Sheet1 cell B2: a timedelta value cannot be written as text",
            id="xlsx-value-not-text",
        ),
        pytest.param(
            "acquisition.xlsx",
            workbook(("Sample", "A"), ("sample", "B")),
            "sheet Sheet1 cell A2: the key 'sample' is given twice (also sheet Sheet1 cell A1)",
            id="xlsx-key-twice",
        ),
        pytest.param(
            "acquisition.xlsx",
            b"PK\x03\x04 but not a zip at all",
            "not an XLSX workbook",
            id="xlsx-not-a-zip",
        ),
        pytest.param(
            "acquisition.csv",
            b"study,S\n---,x\n",
            "cell A2: the key '---' has no letter or digit",
            id="csv-key-without-letters",
        ),
        pytest.param(
            "acquisition.csv",
            b"study,S\nsample,caf\xe9\n",
            "line 2: byte 0xE9 is not UTF-8 text; save the file as 'CSV UTF-8'",
            id="csv-not-utf8",
        ),
        pytest.param(
            "acquisition.csv",
            b'study,"unterminated\n',
            "row 1: unexpected end of data",
            id="csv-broken-quote",
        ),
        pytest.param(
            "acquisition.yaml",
            b"study: S\nsample: [a, b]\n",
            "line 2 column 9: the value of 'sample' is a list, not text",
            id="yaml-value-is-a-list",
        ),
        pytest.param(
            "acquisition.yaml",
            b"- study\n- sample\n",
            "line 1: the file must be a mapping of keys to values",
            id="yaml-not-a-mapping",
        ),
        pytest.param(
            "acquisition.yaml",
            b"study: S\n  sample: x: y\n",
            "line 2 column 9: not valid YAML",
            id="yaml-bad-syntax",
        ),
    ],
)
def test_a_malformed_sidecar_names_the_place_and_the_problem(
    name: str, data: bytes, message: str
) -> None:
    with pytest.raises(SidecarError) as raised:
        parse(name, data)
    assert message in str(raised.value)


def test_a_sidecar_over_the_size_cap_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "acquisition.csv"
    path.write_bytes(b"study," + b"x" * MAX_BYTES + b"\n")
    found = read_file(path, tmp_path)
    assert found.error is not None
    assert f"more than the {MAX_BYTES} a sidecar may hold" in found.error
    assert found.sha256 is None
    assert found.values == {}


def test_a_sidecar_that_is_a_symbolic_link_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.csv"
    outside.write_text("study,secret\n")
    root = tmp_path / "root"
    root.mkdir()
    (root / "acquisition.csv").symlink_to(outside)
    found = read_file(root / "acquisition.csv", root)
    assert found.error == "refused, not read: it is a symbolic link, never followed"
    assert found.values == {}


def test_a_sidecar_deleted_after_it_was_found_is_no_sidecar(tmp_path: Path) -> None:
    assert sidecar.read(tmp_path / "acquisition.csv", tmp_path, FileReader()) is None
    assert sidecar.Cache().read_all([tmp_path / "acquisition.csv"], tmp_path) == []


# ----------------------------------------------------------------------------- hostile


def _zip_bomb_workbook() -> bytes:
    """A real workbook plus one part of 256 MiB of zeros: a few hundred KiB on disk."""
    buffer = io.BytesIO(workbook(("study", "S")))
    with (
        zipfile.ZipFile(buffer, "a", compression=zipfile.ZIP_DEFLATED) as archive,
        archive.open("xl/media/zeros.bin", "w", force_zip64=True) as part,
    ):
        chunk = bytes(1 << 20)
        for _ in range(256):
            part.write(chunk)
    return buffer.getvalue()


@pytest.mark.timeout(120)
def test_a_zip_bomb_is_refused_by_the_sizes_its_directory_declares() -> None:
    data = _zip_bomb_workbook()
    assert len(data) < MAX_BYTES  # small enough to be read at all
    with pytest.raises(SidecarError, match="unpack to 268"):
        parse("acquisition.xlsx", data)


def _lying_workbook() -> bytes:
    """A workbook whose sheet inflates to 64 MiB while its ZIP entries declare 1 KiB."""
    rows = "".join(
        f'<row r="{n}"><c r="A{n}" t="inlineStr"><is><t>{"k" * 200}{n}</t></is></c></row>'
        for n in range(1, 2)
    )
    filler = " " * (64 << 20)
    sheet = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        f"<sheetData>{rows}{filler}</sheetData></worksheet>"
    ).encode()
    source = zipfile.ZipFile(io.BytesIO(workbook(("study", "S"))))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for info in source.infolist():
            content = sheet if info.filename == "xl/worksheets/sheet1.xml" else source.read(info)
            archive.writestr(info.filename, content)
    data = bytearray(buffer.getvalue())
    # declare 1024 bytes for the sheet, in its local header and in the central directory
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = archive.getinfo("xl/worksheets/sheet1.xml")
    struct.pack_into("<I", data, info.header_offset + 22, 1024)
    central = bytes(data).rfind(b"PK\x01\x02", 0, len(data))
    while central != -1:
        name_length = struct.unpack_from("<H", data, central + 28)[0]
        if bytes(data[central + 46 : central + 46 + name_length]) == info.filename.encode():
            struct.pack_into("<I", data, central + 24, 1024)
            break
        central = bytes(data).rfind(b"PK\x01\x02", 0, central)
    return bytes(data)


@pytest.mark.timeout(120)
def test_a_workbook_whose_directory_lies_about_sizes_is_never_inflated_beyond_them() -> None:
    data = _lying_workbook()
    assert len(data) < MAX_BYTES
    # zipfile stops inflating at the declared size, and the checksum then tells the lie
    with pytest.raises(SidecarError, match="Bad CRC-32 for file 'xl/worksheets/sheet1"):
        parse("acquisition.xlsx", data)


@pytest.mark.timeout(120)
def test_a_sheet_reaching_a_millionth_row_stops_at_the_row_cap() -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet["A1"] = "study"
    sheet["B1"] = "S"
    sheet.cell(row=1_000_000, column=1, value="far away")
    buffer = io.BytesIO()
    book.save(buffer)
    with pytest.raises(SidecarError, match=f"more than the {MAX_ROWS} rows"):
        parse("acquisition.xlsx", buffer.getvalue())


def test_a_yaml_alias_bomb_is_refused_without_being_expanded() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    lines += [
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]" for i in range(8)
    ]
    with pytest.raises(SidecarError, match="line 1 column 4: the value of 'a' is a list"):
        parse("acquisition.yaml", "\n".join(lines).encode())


# ----------------------------------------------------------------------------- finding


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    """root/alice/neuro/cells.tif with a sidecar at three levels."""
    root = tmp_path / "instrument"
    folder = root / "alice" / "neuro"
    folder.mkdir(parents=True)
    (folder / "cells.tif").write_bytes(b"II*\x00 not really a tiff")
    (root / "acquisition.xlsx").write_bytes(
        workbook(("study", "Facility study"), ("organism", "Homo sapiens"), ("sample", "root"))
    )
    (root / "alice" / "acquisition.csv").write_text("organism,Mus musculus\nproject,P-104\n")
    (folder / "acquisition.yaml").write_text("sample: mouse-17\n")
    return root, folder / "cells.tif"


def test_sidecars_are_found_from_the_watch_root_down_to_the_acquisition(tmp_path: Path) -> None:
    root, primary = _tree(tmp_path)
    (primary.parent / "acquisition.csv").mkdir()  # a folder with a sidecar name: not one
    assert sidecar.find(primary, root, NAMES) == [
        root / "acquisition.xlsx",
        root / "alice" / "acquisition.csv",
        primary.parent / "acquisition.yaml",
    ]


def test_in_one_folder_the_name_listed_first_wins(tmp_path: Path) -> None:
    root = tmp_path
    (root / "acquisition.csv").write_text("sample,from csv\n")
    (root / "acquisition.yaml").write_text("sample: from yaml\n")
    found = sidecar.find(root / "a.tif", root, ("acquisition.yaml", "acquisition.csv"))
    assert found == [root / "acquisition.csv", root / "acquisition.yaml"]  # applied in order


def _acquisition(primary: Path, root: Path) -> Acquisition:
    st = primary.stat()
    settled = FileSettled(primary, root, st.st_size, st.st_mtime_ns, f"{st.st_dev}:{st.st_ino}:0")
    member = ProbedFile(settled, "a" * 64, None, f"file:{primary}")
    return Acquisition(f"file:{primary}", None, root, (member,))


def _package(extraction: Extraction) -> dict[str, Any]:
    clean = Deidentified({}, {}, None, (), 0)
    instrument = {"id": "urn:x", "id_type": "URN"}
    package = build_package(
        extraction, clean, instrument=instrument, acquisition_fields={}, previous=None, host="h"
    )
    body = dict(package.body)
    jsonschema.validate(body, SCHEMA)
    return body


def test_the_nearest_sidecar_wins_key_by_key_across_three_levels(tmp_path: Path) -> None:
    root, primary = _tree(tmp_path)
    extraction = workers.extract_acquisition(_acquisition(primary, root), sidecar_names=NAMES)
    assert isinstance(extraction, Extraction)
    body = _package(extraction)

    assert body["acquisition"]["annotations"] == {
        "study": "Facility study",  # only the root says it
        "organism": "Mus musculus",  # alice's folder overrides the root
        "project": "P-104",
        "sample": "mouse-17",  # the acquisition's own folder overrides both
    }
    files = body["files"]
    assert isinstance(files, list)
    assert [(f["path"], f.get("role")) for f in files] == [
        ("alice/neuro/cells.tif", None),
        ("acquisition.xlsx", "sidecar"),
        ("alice/acquisition.csv", "sidecar"),
        ("alice/neuro/acquisition.yaml", "sidecar"),
    ]
    yaml_entry = files[-1]
    yaml_bytes = (primary.parent / "acquisition.yaml").read_bytes()
    assert yaml_entry["size"] == len(yaml_bytes)
    assert yaml_entry["sha256"] == hashlib.sha256(yaml_bytes).hexdigest()
    assert body["provenance"]["sidecars"] == [
        {"path": "acquisition.xlsx", "applied": True},
        {"path": "alice/acquisition.csv", "applied": True},
        {"path": "alice/neuro/acquisition.yaml", "applied": True},
    ]


def test_a_malformed_sidecar_leaves_its_values_out_and_the_package_says_why(
    tmp_path: Path,
) -> None:
    root, primary = _tree(tmp_path)
    (root / "alice" / "acquisition.csv").write_text("organism,Mus musculus\n,P-104\n")
    extraction = workers.extract_acquisition(_acquisition(primary, root), sidecar_names=NAMES)
    assert isinstance(extraction, Extraction)
    body = _package(extraction)

    assert body["acquisition"]["annotations"] == {
        "study": "Facility study",
        "organism": "Homo sapiens",  # the malformed csv did not override it
        "sample": "mouse-17",
    }
    assert "alice/acquisition.csv" not in [f["path"] for f in body["files"]]
    error = "cell B2: a value with no key beside it"
    provenance = body["provenance"]
    assert provenance["sidecars"][1] == {
        "path": "alice/acquisition.csv",
        "applied": False,
        "error": error,
    }
    assert f"sidecar alice/acquisition.csv not applied: {error}" in provenance["warnings"]


def test_no_sidecar_names_reads_none(tmp_path: Path) -> None:
    root, primary = _tree(tmp_path)
    extraction = workers.extract_acquisition(_acquisition(primary, root), sidecar_names=())
    assert isinstance(extraction, Extraction)
    body = _package(extraction)
    assert "annotations" not in body["acquisition"]
    assert "sidecars" not in body["provenance"]


# ----------------------------------------------------------------------------- config, watch


def test_a_sidecar_is_never_harvested_as_an_acquisition(tmp_path: Path) -> None:
    folder = sidecar.excluding_sidecars(WatchSettings(path=tmp_path), NAMES)
    assert not matches("alice/acquisition.xlsx", folder.include, folder.exclude)
    assert not matches("acquisition.csv", folder.include, folder.exclude)
    assert matches("alice/cells.tif", folder.include, folder.exclude)
    assert matches("alice/acquisition.tif", folder.include, folder.exclude)


@pytest.mark.parametrize(
    ("names", "problem"),
    [
        ('["samples/acquisition.csv"]', "must be a plain file name"),
        ('["*.csv"]', "must be a plain file name"),
        ('["acquisition.txt"]', "must end in one of .xlsx, .csv, .yaml, .yml"),
    ],
)
def test_sidecar_names_must_be_plain_names_of_a_known_format(
    tmp_path: Path, names: str, problem: str
) -> None:
    text = (
        f"instrument: {{id: urn:x}}\nwatch: [{{path: {tmp_path / 'w'}}}]\n"
        f"endpoint: {{type: directory, path: {tmp_path / 'out'}}}\n"
        f"state_dir: {tmp_path / 'state'}\nsidecar_names: {names}\n"
    )
    with pytest.raises(ConfigError) as raised:
        parse_settings(text, source="acqharvest.yaml", base_dir=tmp_path)
    assert "sidecar_names" in str(raised.value)
    assert problem in str(raised.value)


def test_sidecar_names_default_and_may_be_emptied(tmp_path: Path) -> None:
    text = (
        f"instrument: {{id: urn:x}}\nwatch: [{{path: {tmp_path / 'w'}}}]\n"
        f"endpoint: {{type: directory, path: {tmp_path / 'out'}}}\n"
        f"state_dir: {tmp_path / 'state'}\n"
    )
    settings = parse_settings(text, source="acqharvest.yaml", base_dir=tmp_path)
    assert settings.sidecar_names == ("acquisition.xlsx", "acquisition.csv", "acquisition.yaml")
    settings = parse_settings(text + "sidecar_names: []\n", source="a.yaml", base_dir=tmp_path)
    assert settings.sidecar_names == ()


def test_a_worker_reads_a_sidecar_again_only_when_it_changed(tmp_path: Path) -> None:
    path = tmp_path / "acquisition.csv"
    path.write_text("sample,mouse-17\n")
    cache = sidecar.Cache()
    [first] = cache.read_all([path], tmp_path)
    [again] = cache.read_all([path], tmp_path)
    assert again is first  # kept, not parsed again

    # rewritten in place to the same size, its mtime put back: the ctime tells
    st = path.stat()
    path.write_text("sample,mouse-18\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    [changed] = cache.read_all([path], tmp_path)
    assert changed.values == {"sample": "mouse-18"}
    assert changed.sha256 != first.sha256
