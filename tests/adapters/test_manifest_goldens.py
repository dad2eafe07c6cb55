"""The corpus MANIFEST.tsv notes agree with the checked-in goldens of the built-in adapters.

The part of each note after `` | `` lists what the file holds (modality, manufacturer,
frames, pixel spacing, OME-XML presence, vendor tags...). Every claim is parsed and checked
against the golden of the case whose primary file it is; a claim this test cannot parse
fails it, so a new kind of note is never silently ignored.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from acqharvest.adapters.dicom import transfer_syntax_name
from acqharvest.testing import Case, load_cases
from tests.conftest import CORPUS, REPO

TIFF_FLAVOURS = {
    "ome": "OME-TIFF",
    "imagej": "ImageJ",
    "lsm": "LSM",
    "svs": "SVS",
    "ndpi": "NDPI",
    "fei": "FEI",
    "sem": "Zeiss SEM",
    "tvips": "TVIPS",
    "streak": "streak",
}


def _manifest() -> dict[str, str]:
    rows = (CORPUS / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()[1:]
    notes = {}
    for row in rows:
        cells = row.split("\t")
        if cells[0].startswith(("dicom/", "ome-tiff/", "tiff-vendor/")):
            notes[cells[0]] = cells[6].split(" | ", 1)[1]
    return notes


def _cases() -> dict[str, Case]:
    """Corpus path of every file of every case -> its case."""
    return {
        rel: case
        for name in ("dicom", "tiff")
        for case in load_cases(REPO / "adapters" / name / "cases")
        for rel in case.files
    }


MANIFEST = _manifest() if (CORPUS / "MANIFEST.tsv").is_file() else {}
CASES = _cases()


def _golden(case: Case) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(case.expected_path.read_text(encoding="utf-8"))
    return loaded


def test_every_manifest_file_is_a_case() -> None:
    assert len(MANIFEST) == 62
    assert set(MANIFEST) <= set(CASES)


@pytest.mark.parametrize("rel", sorted(r for r in MANIFEST if r in CASES))
def test_manifest_note_agrees_with_golden(rel: str) -> None:
    case = CASES[rel]
    golden = _golden(case)
    assert "error" not in golden, f"{rel}: the adapter refuses a good file: {golden}"
    problems = _note_problems(rel, case, golden)
    assert not problems, f"{rel}:\n  " + "\n  ".join(problems)


def _note_problems(rel: str, case: Case, golden: dict[str, Any]) -> list[str]:
    """Every claim of ``rel``'s note that ``golden`` contradicts, or that this test cannot read."""
    claims = [c.strip() for c in MANIFEST[rel].split(";")]
    in_a_set = len(case.files) > 1 and rel.startswith("ome-tiff/")
    problems = []
    for claim in claims:
        if in_a_set:
            problem = _set_file_claim(claim, rel, case, golden, claims)
        elif rel.startswith("dicom/"):
            problem = _dicom_claim(claim, golden, claims)
        else:
            problem = _tiff_claim(claim, golden, claims)
        if problem:
            problems.append(f"{claim!r}: {problem}")
    return problems


def _set_file_claim(
    claim: str, rel: str, case: Case, golden: dict[str, Any], claims: list[str]
) -> str | None:
    """A note on one file of a multi-file OME-TIFF set, checked against the set's golden.

    Facts about the file itself (its page count, that it is BinaryOnly or the metadata
    file) are checked through the set's ``ome_files`` listing and plane count; facts every
    file shares (flavour, geometry, software) as for a single file.
    """
    files = golden["original_metadata"]["preview"]["ome_files"]
    name = rel.rsplit("/", 1)[1]
    if re.fullmatch(r"pages=\d+", claim):
        pages = [_pages(MANIFEST[other]) for other in case.files]
        return _expect(golden["metadata"]["image"]["frames"], sum(p for p in pages if p))
    if claim == "BinaryOnly":
        binary_only = name in files["referenced"] and files["metadata_file"] != name
        return None if binary_only else f"{name} is not a BinaryOnly member: {files}"
    if claim == "MetadataFile":
        listed = {other.rsplit("/", 1)[1] for other in case.files}
        return None if files["metadata_file"] in listed else f"{files} names no file of the case"
    if claim == "OME-XML companion":
        return _expect((golden["format"], files["metadata_file"]), ("OME-TIFF", name))
    return _tiff_claim(claim, golden, claims)


def _pages(note: str) -> int | None:
    found = re.search(r"pages=(\d+)", note)
    return int(found.group(1)) if found else None


def _get(golden: dict[str, Any], dotted: str) -> Any:
    value: Any = golden
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _expect(actual: Any, expected: Any) -> str | None:
    return None if actual == expected else f"golden has {actual!r}, note says {expected!r}"


def _dicom_claim(claim: str, golden: dict[str, Any], claims: list[str]) -> str | None:
    """One claim of a DICOM note: modality; SOP class; TS; maker; preamble; frames; size;
    pixel spacing; StudyDate (the SOP class and the maker are known by position)."""
    meta = golden["metadata"]
    preview = golden["original_metadata"]["preview"]
    instrument = meta.get("instrument_reported", {})
    if claim is claims[1]:
        return None if claim == "-" else _expect(meta.get("sop_class"), claim)
    if claim is claims[3]:
        if claim == "manufacturer n/a":
            return _expect(instrument.get("manufacturer"), None)
        if "/" in claim:
            found = (instrument.get("manufacturer"), instrument.get("model"))
            return _expect(found, tuple(claim.split("/", 1)))
        return None if claim in instrument.values() else f"no manufacturer/model {claim!r}"
    if claim.startswith("DICOM "):
        modality = claim.removeprefix("DICOM ")
        return _expect(meta.get("modality"), None if modality == "?" else modality)
    if claim.startswith("TS="):
        syntax = claim.removeprefix("TS=")
        if syntax.startswith("no file meta group"):
            return None if meta["transfer_syntax"].startswith("inferred: ") else "not inferred"
        if re.fullmatch(r"[\d.]+", syntax):  # a UID: the golden holds its name
            return _expect(meta["transfer_syntax"], transfer_syntax_name(syntax))
        return _expect(meta["transfer_syntax"], syntax)
    if claim.startswith("preamble="):
        # the golden holds no bytes, but the adapter reads a file meta group only after the
        # preamble and its DICM (reader._peek_file_meta): the group's keys show the preamble
        has_meta = "FileMetaInformationGroupLength" in preview
        if has_meta == (claim == "preamble=yes"):
            return None
        return f"the golden {'has' if has_meta else 'lacks'} a file meta group"
    if claim.startswith("frames="):
        return _expect(_get(meta, "image.frames") or 1, int(claim.removeprefix("frames=")))
    if claim == "pixel spacing=yes":
        return None if "pixel_size_um" in meta else "no pixel_size_um"
    if claim == "pixel spacing=no":  # no top-level PixelSpacing; functional groups may have it
        return _expect(preview.get("PixelSpacing"), None)
    if claim.startswith("StudyDate="):
        date = claim.removeprefix("StudyDate=")
        return _expect(preview.get("StudyDate") or None, None if date == "-" else date)
    if match := re.fullmatch(r"(\d+|-)x(\d+|-)", claim):
        rows, columns = (None if g == "-" else int(g) for g in match.groups())
        # Rows x Columns of a stored frame; image.size_* may be a mosaic tile or the slide
        return _expect((preview.get("Rows"), preview.get("Columns")), (rows, columns))
    return "claim not understood by this test; teach it"


def _tiff_claim(claim: str, golden: dict[str, Any], claims: list[str]) -> str | None:
    meta = golden["metadata"]
    preview = golden["original_metadata"]["preview"]
    for pattern, check in _TIFF_CHECKS:
        if match := re.fullmatch(pattern, claim):
            return check(match, meta, preview, golden, claims)
    return "claim not understood by this test; teach it"


Check = Callable[
    [re.Match[str], dict[str, Any], dict[str, Any], dict[str, Any], list[str]], "str | None"
]


def _flavour(m: re.Match[str], meta: Any, preview: Any, golden: Any, _: Any) -> str | None:
    flavour, fmt = m.group(1), golden["format"]
    if flavour == "plain":
        return None if fmt.startswith("TIFF") else f"format {fmt!r} for a plain TIFF"
    return None if TIFF_FLAVOURS[flavour] in fmt else f"format {fmt!r} is not {flavour}"


def _page0(m: re.Match[str], meta: Any, preview: Any, golden: Any, _: Any) -> str | None:
    height, width, samples, dtype = m.groups()
    image = meta["image"]
    actual = (image["size_y"], image["size_x"], image["pixel_type"])
    problem = _expect(actual, (int(height), int(width), dtype))
    if problem is None and samples:
        return _expect(image.get("size_c", image.get("samples_per_pixel")), int(samples))
    return problem


#: micrometres per resolution unit.
_UM_PER = {"CENTIMETER": 1e4, "INCH": 25400.0}


def _resolution(
    m: re.Match[str], meta: Any, preview: Any, golden: Any, claims: list[str]
) -> str | None:
    """The tag where the preview shows the page's tags, and always what the adapter does with
    it: a centimetre resolution is the pixel size unless the flavour has its own; an inch
    resolution (print DPI) and one under a vendor's own size never are."""
    numerator, denominator, unit = int(m.group(1)), int(m.group(2)), m.group(3)
    tags = preview.get("tags")
    # a page with many tags is previewed as "<N keys>", and a set whose primary is its
    # companion .ome has none: then the pixel size is all there is to check
    if isinstance(tags, dict):
        shown = (tags.get("XResolution"), tags.get("ResolutionUnit"))
        if problem := _expect(shown, ([numerator, denominator], unit)):
            return problem
    if unit not in _UM_PER or numerator == 0:
        return None if isinstance(tags, dict) else f"the golden shows nothing of it (tags {tags!r})"
    derived = pytest.approx(_UM_PER[unit] * denominator / numerator, rel=1e-6)
    size = _get(meta, "pixel_size_um.x")
    vendor_size = any(
        c.startswith(("TIFF flavour=ome", "TIFF flavour=fei", "TIFF flavour=sem")) for c in claims
    )
    if unit == "CENTIMETER" and not vendor_size:
        return _expect(size, derived)
    stated = [
        float(s.group(1)) for c in claims if (s := re.fullmatch(r"PhysicalSizeX=([\d.]+)", c))
    ]
    if size is not None and size == derived and size not in stated:
        return f"pixel_size_um.x {size} is XResolution's, which is not a pixel size here"
    return None


#: the parts of an OME Instrument a note lists, and the golden key each fills.
_INSTRUMENT_PARTS = {"Detector": "detector", "Objective": "objective"}


def _instrument(m: re.Match[str], meta: Any, preview: Any, golden: Any, claims: Any) -> str | None:
    """``Instrument``: the golden holds exactly the parts of it the note lists after it."""
    named = sorted(key for part, key in _INSTRUMENT_PARTS.items() if part in claims)
    if not named:
        return f"the note lists no part of the Instrument ({', '.join(_INSTRUMENT_PARTS)})"
    return _expect(sorted(key for key in _INSTRUMENT_PARTS.values() if key in meta), named)


def _sections(m: re.Match[str], meta: Any, preview: Any, golden: Any, _: Any) -> str | None:
    present = set(preview.get("fei_metadata") or {})
    missing = set(m.group(1).split(",")) - present
    return f"fei_metadata lacks {sorted(missing)}" if missing else None


def _imagej(m: re.Match[str], meta: Any, preview: Any, golden: Any, _: Any) -> str | None:
    stored = preview.get("imagej_metadata") or {}
    pairs = dict(item.split("=", 1) for item in m.group(1).split(","))
    wrong = {k: stored.get(k) for k, v in pairs.items() if str(stored.get(k)).lower() != v.lower()}
    return f"imagej_metadata differs: {wrong}" if wrong else None


def _always(predicate: Callable[[Any, Any, Any], bool], message: str) -> Check:
    return lambda m, meta, preview, golden, _: None if predicate(meta, preview, golden) else message


_TIFF_CHECKS: list[tuple[str, Check]] = [
    (r"TIFF flavour=(\w+)", _flavour),
    (r"pages=(\d+)", lambda m, meta, *_: _expect(meta["image"]["frames"], int(m.group(1)))),
    (r"page0 (\d+)x(\d+)(?:x(\d+))? (\w+)", _page0),
    (
        r"OME-XML present",
        _always(lambda meta, p, g: g["format"] == "OME-TIFF" and "ome_xml" in p, "no OME-XML"),
    ),
    (
        r"PhysicalSizeX=([\d.]+)",
        lambda m, meta, *_: _expect(_get(meta, "pixel_size_um.x"), float(m.group(1))),
    ),
    # with OME-XML the adapter never takes XResolution (adapters/tiff fields), and no other
    # source in these files has a size: an x here could only have come from the OME-XML
    (r"PhysicalSizeX=absent", lambda m, meta, *_: _expect(_get(meta, "pixel_size_um.x"), None)),
    (r"Instrument", _instrument),
    (r"Detector", _always(lambda meta, p, g: "model" in meta.get("detector", {}), "no detector")),
    (
        r"Software=(.+)",
        lambda m, meta, *_: _expect(_get(meta, "instrument_reported.software"), m.group(1)),
    ),
    (r"XResolution=(\d+)/(\d+) per (\w+)", _resolution),
    (
        r"BinaryOnly",
        _always(
            lambda meta, p, g: any("BinaryOnly" in w for w in g["warnings"]), "no BinaryOnly note"
        ),
    ),
    (
        r"MetadataFile",
        _always(
            lambda meta, p, g: any(".ome" in w for w in g["warnings"]), "metadata file not named"
        ),
    ),
    (r"AcquisitionDate", _always(lambda meta, p, g: "acquired" in meta, "no acquisition date")),
    (
        r"Aperio MPP=([\d.]+)",
        lambda m, meta, *_: _expect(
            meta.get("pixel_size_um"), {"x": float(m.group(1)), "y": float(m.group(1))}
        ),
    ),
    (
        r"LSM VoxelSizeX=([\de.+-]+)",
        lambda m, meta, *_: _expect(
            _get(meta, "pixel_size_um.x"), pytest.approx(float(m.group(1)) * 1e6, rel=1e-6)
        ),
    ),
    (r"FEI sections: (\S+)", _sections),
    (
        r"CZ_SEM keys=(\d+)",
        lambda m, meta, p, *_: _expect(p.get("sem_metadata"), f"<{m.group(1)} keys>"),
    ),
    (r"ImageJ md: (\S+)", _imagej),
    (
        r"NDPI tags \(magnification, offsets\)",
        _always(
            lambda meta, p, g: (
                "ndpi_metadata" in p and "magnification" in meta.get("objective", {})
            ),
            "no NDPI magnification",
        ),
    ),
]


ACQUISITION = "ome-tiff/acquisition/170918_tn_neutrophil_migration_wave.ome.tif"


@pytest.mark.parametrize(
    ("rel", "change", "claim"),
    [
        (
            "ome-tiff/bfconvert/res.ome.tiff",
            lambda g: g["metadata"].update(pixel_size_um={"x": 0.5, "y": 0.5}),
            "PhysicalSizeX=absent",
        ),
        (ACQUISITION, lambda g: g["metadata"].update(objective={"model": "x"}), "Instrument"),
        (ACQUISITION, lambda g: g["metadata"].pop("detector"), "Instrument"),
        (
            "dicom/ct/CT_JPEG70.dcm",
            lambda g: g["original_metadata"]["preview"].pop("FileMetaInformationGroupLength"),
            "preamble=yes",
        ),
        (
            "dicom/no-preamble/OT_Implicit_Little_Headless.dcm",
            lambda g: g["original_metadata"]["preview"].update(FileMetaInformationGroupLength=200),
            "preamble=NO",
        ),
        (  # its tags are previewed as "<45 keys>": the pixel size still shows the resolution
            "tiff-vendor/hamamatsu-ndpi/test3-DAPI-2-(387).ndpi",
            lambda g: g["metadata"]["pixel_size_um"].update(x=0.25),
            "XResolution=43826/1 per CENTIMETER",
        ),
        (  # the set's golden has no tags at all (its primary is the companion .ome)
            "ome-tiff/multifile-companion/multifile-Z1.ome.tiff",
            lambda g: g["metadata"].update(pixel_size_um={"x": 1.0, "y": 1.0}),
            "XResolution=10000000/1000 per CENTIMETER",
        ),
        (
            "tiff-vendor/fei-sem/FEI-Helios-Ebeam-16bits.tif",
            lambda g: g["metadata"]["pixel_size_um"].update(x=25400 / 64),
            "XResolution=64/1 per INCH",
        ),
        (
            "ome-tiff/bfconvert/res.ome.tiff",
            lambda g: g["original_metadata"]["preview"].update(tags="<20 keys>"),
            "XResolution=0/1000 per CENTIMETER",
        ),
    ],
    ids=[
        "pixel size with none in the OME",
        "an objective the note does not list",
        "no detector",
        "no file meta after a preamble",
        "file meta without a preamble",
        "collapsed tags, other pixel size",
        "no tags, XResolution's pixel size under OME",
        "inch DPI as pixel size",
        "collapsed tags, no pixel size to check",
    ],
)
def test_a_golden_that_contradicts_a_note_fails_it(
    rel: str, change: Callable[[dict[str, Any]], object], claim: str
) -> None:
    case = CASES[rel]
    golden = _golden(case)
    assert _note_problems(rel, case, golden) == []
    altered = copy.deepcopy(golden)
    change(altered)
    problems = _note_problems(rel, case, altered)
    assert [p for p in problems if p.startswith(f"{claim!r}: ")], problems
