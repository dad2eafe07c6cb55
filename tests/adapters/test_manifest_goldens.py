"""The corpus MANIFEST.tsv notes agree with the checked-in goldens of the built-in adapters.

The part of each note after `` | `` (the whole note when it has none) lists what the file
holds (modality, manufacturer, frames, pixel spacing, OME-XML presence, vendor tags, NIfTI
shape and zooms, NGFF axes, imzML cvParams...). Every claim is parsed and checked against
the golden of the case the file belongs to; a claim this test cannot parse fails it, so a
new kind of note is never silently ignored. Rows with no note state nothing to check.
"""

from __future__ import annotations

import ast
import copy
import gzip
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


#: corpus folder -> the adapter whose cases hold its files
FOLDERS = {
    "dicom/": "dicom",
    "ome-tiff/": "tiff",
    "tiff-vendor/": "tiff",
    "czi/": "czi",
    "nd2/": "nd2",
    "lif/": "lif",
    "ome-zarr/": "zarr",
    "nifti/": "nifti",
    "imzml/": "imzml",
}


def _manifest() -> dict[str, str]:
    rows = (CORPUS / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()[1:]
    notes = {}
    for row in rows:
        cells = row.split("\t")
        note = cells[6].split(" | ", 1)[-1].strip()
        if cells[0].startswith(tuple(FOLDERS)) and note:
            notes[cells[0]] = note
    return notes


def _cases() -> dict[str, Case]:
    """Corpus path of every file of every case -> its case."""
    return {
        rel: case
        for name in sorted(set(FOLDERS.values()))
        for case in load_cases(REPO / "adapters" / name / "cases")
        for rel in case.files
    }


MANIFEST = _manifest() if (CORPUS / "MANIFEST.tsv").is_file() else {}
CASES = _cases()


def _golden(case: Case) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(case.expected_path.read_text(encoding="utf-8"))
    return loaded


def test_every_manifest_file_is_a_case() -> None:
    assert len(MANIFEST) == 81
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
        elif rel.startswith("nifti/") and claim.startswith("descrip="):
            problem = _nifti_descrip(claim, rel, golden)
        elif rel.startswith("imzml/") and rel.endswith(".ibd"):
            problem = _ibd_claim(claim, rel, case, golden)
        elif table := _TABLES.get(rel.split("/", 1)[0]):
            problem = _claim(table, claim, golden, claims)
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
    return _claim(_TIFF_CHECKS, claim, golden, claims)


def _claim(
    table: list[tuple[str, Check]], claim: str, golden: dict[str, Any], claims: list[str]
) -> str | None:
    meta = golden["metadata"]
    preview = golden["original_metadata"]["preview"]
    for pattern, check in table:
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


def _present(value: Any, yes_no: str) -> str | None:
    """A ``=yes``/``=no`` claim: the golden holds ``value`` exactly when the note says yes."""
    if (value not in (None, {}, [])) == (yes_no == "yes"):
        return None
    return f"the golden {'lacks' if yes_no == 'yes' else 'has'} it ({value!r})"


_CZI_CHECKS: list[tuple[str, Check]] = [
    # the file header's fields are read from the segment the magic opens
    (
        r"CZI magic=ZISRAWFILE",
        _always(lambda meta, p, g: g["format"] == "Zeiss CZI" and "file_header" in p, "no header"),
    ),
    (r"XML metadata=(yes|no)", lambda m, meta, p, *_: _present(p.get("information"), m[1])),
    (
        r"Scaling/Distance=(yes|no)",
        lambda m, meta, *_: _present(_get(meta, "pixel_size_um.x"), m[1]),
    ),
    # the microscope: its model or an objective, from the XML's Instrument
    (
        r"instrument=(yes|no)",
        lambda m, meta, *_: _present(
            meta.get("objective") or _get(meta, "instrument_reported.model"), m[1]
        ),
    ),
]


def _nd2_version(preview: dict[str, Any]) -> int:
    return int(str(preview.get("version", "0")).split(".")[0])


_ND2_CHECKS: list[tuple[str, Check]] = [
    (r"ND2 magic=dacebe0a", _always(lambda meta, p, g: g["format"] == "Nikon ND2", "not ND2")),
    # files of version 2 and 3 end in a chunk map (version 1 is JPEG 2000 without one); the
    # adapter refuses a file whose chunk map is missing or damaged
    (r"chunk map=yes", _always(lambda meta, p, g: _nd2_version(p) >= 2, "a version 1 file")),
    (r"calibration=(yes|no)", lambda m, meta, *_: _present(_get(meta, "pixel_size_um.x"), m[1])),
]

_LIF_CHECKS: list[tuple[str, Check]] = [
    (r"LIF magic=70000000", _always(lambda meta, p, g: g["format"] == "Leica LIF", "not LIF")),
    # the root's Version and the series are read from that XML and nothing else
    (
        r"XML \(UTF-16\) header",
        _always(lambda meta, p, g: "version" in p and bool(meta.get("series")), "no XML read"),
    ),
    # the objective comes from the setting definition, the modality from the hardware setting
    (
        r"Leica ATLConfocalSettings=(yes|no)",
        lambda m, meta, *_: _present(
            meta.get("objective") if meta.get("modality") == "Confocal" else None, m[1]
        ),
    ),
]

#: NIfTI xyzt_units: the spatial unit's code and micrometres, the time unit's code
_NIFTI_SPACE = {"unknown": (0, None), "meter": (1, 1e6), "mm": (2, 1e3), "micron": (3, 1.0)}
_NIFTI_TIME = {"unknown": 0, "sec": 8, "msec": 16, "usec": 24}
_NIFTI_FORMATS = {"Nifti1Header": "NIfTI-1", "Nifti2Header": "NIfTI-2"}


def _nifti_units(claims: list[str]) -> tuple[str, str]:
    found = next(c for c in claims if c.startswith("units="))
    space, time = ast.literal_eval(found.removeprefix("units="))
    return str(space), str(time)


def _nifti_shape(m: re.Match[str], meta: Any, preview: Any, golden: Any, _: Any) -> str | None:
    shape = ast.literal_eval(m[1])
    image = meta["image"]
    found = tuple(image.get(k) for k in ("size_x", "size_y", "size_z", "size_t")[: len(shape)])
    return _expect((preview["dim"][0], found), (len(shape), tuple(shape)))


def _nifti_zooms(
    m: re.Match[str], meta: Any, preview: Any, golden: Any, claims: list[str]
) -> str | None:
    """pixdim as stored, and the voxel size in micrometres when the spatial unit is known."""
    zooms = ast.literal_eval(m[1])
    stored = preview["pixdim"][1 : 1 + len(zooms)]
    if problem := _expect(stored, pytest.approx(list(zooms), rel=1e-6)):
        return problem
    per_um = _NIFTI_SPACE[_nifti_units(claims)[0]][1]
    size = meta.get("pixel_size_um")
    if per_um is None:
        return _expect(size, None)
    return _expect(
        size,
        pytest.approx({a: z * per_um for a, z in zip("xyz"[: len(zooms)], zooms[:3], strict=True)}),
    )


def _nifti_units_check(m: re.Match[str], meta: Any, preview: Any, *_: Any) -> str | None:
    space, time = ast.literal_eval(m[1])
    return _expect(preview["xyzt_units"], _NIFTI_SPACE[space][0] | _NIFTI_TIME[time])


def _nifti_descrip(claim: str, rel: str, golden: dict[str, Any]) -> str | None:
    """descrip: the adapter reads it as a C string, up to its first NUL; the note shows what
    nibabel shows, past that NUL. So the golden's is the note's, or the start of it that the
    header itself ends with a NUL."""
    stated = ast.literal_eval(claim.removeprefix("descrip="))
    found = golden["metadata"].get("description", "")
    if problem := _expect(golden["original_metadata"]["preview"]["descrip"], found):
        return problem
    raw = (CORPUS / rel).read_bytes()
    header = gzip.decompress(raw)[:540] if rel.endswith(".gz") else raw[:540]
    ends_at_nul = found and found.encode("latin-1") + b"\0" in header
    if found == stated or (ends_at_nul and stated.startswith(found)):
        return None
    return f"golden has {found!r}, note says {stated!r}"


_NIFTI_CHECKS: list[tuple[str, Check]] = [
    (
        r"(Nifti[12]Header)",
        lambda m, meta, p, g, _: _expect(g["format"], _NIFTI_FORMATS[m[1]]),
    ),
    (r"shape=(\([\d, ]+\))", _nifti_shape),
    (r"zooms=(\([\d., ]+\))", _nifti_zooms),
    (r"units=(\(.+\))", _nifti_units_check),
]


def _zarr_axes(m: re.Match[str], meta: Any, preview: Any, *_: Any) -> str | None:
    """The axes: one per level 0 dimension, and each spatial one in micrometres gives the
    pixel size its scale says."""
    axes = [a.split(":") for a in ast.literal_eval(m[1])]
    level0 = preview["level0"]
    shown = (preview["axes"], len(level0["shape"]), len(level0["scale"]))
    if problem := _expect(shown, (f"<{len(axes)} items>", len(axes), len(axes))):
        return problem
    expected = {
        name: pytest.approx(scale, rel=1e-6)
        for (name, unit), scale in zip(axes, level0["scale"], strict=True)
        if name in "xyz" and unit == "micrometer"
    }
    return _expect(meta.get("pixel_size_um"), expected)


_ZARR_CHECKS: list[tuple[str, Check]] = [
    # the layout's number (3) is not kept by the adapter: only the layout it names
    (
        r"bioformats2raw\.layout=\d+",
        lambda m, meta, p, *_: _expect(p.get("layout"), "bioformats2raw"),
    ),
    (
        r"OME-NGFF multiscales version=([\d.]+)",
        lambda m, meta, p, *_: _expect(p.get("ngff_version"), m[1]),
    ),
    (r"axes=(\[.*\])", _zarr_axes),
    (r"datasets=(\d+)", lambda m, meta, p, *_: _expect(len(p.get("datasets", [])), int(m[1]))),
    # OME/.zattrs lists the series: the adapter counts them
    (r"zarr attrs: series", lambda m, meta, *_: _present(_get(meta, "image.series"), "yes")),
    (
        r"OME-XML \(bioformats2raw OME/METADATA\.ome\.xml\)",
        _always(lambda meta, p, g: "<OME " in p.get("ome_xml", ""), "no OME-XML"),
    ),
]


def _cv_param(name: str, meta: Any, preview: Any) -> str | None:
    """One cvParam the note says the imzML holds, and the field the adapter made of it."""
    content, settings = preview.get("file_content", []), preview.get("scan_settings", {})
    if name == "max count of pixels x":
        return _expect(settings.get(name), str(_get(meta, "image.size_x")))
    if name == "continuous":
        return _expect((name in content, _get(meta, "msi.storage")), (True, name))
    if name == "universally unique identifier":
        uuid = preview.get("uuid", "")
        return None if name in content and re.fullmatch(r"[0-9a-f]{32}", uuid) else "no UUID"
    if name == "ibd SHA-1":
        return _expect((name in content, preview.get("ibd_checksum")), (True, "sha1 verified"))
    return f"cvParam {name!r} not understood by this test; teach it"


def _cv_params(m: re.Match[str], meta: Any, preview: Any, *_: Any) -> str | None:
    problems = [p for name in m[1].split(", ") if (p := _cv_param(name, meta, preview))]
    return "; ".join(problems) or None


_TABLES: dict[str, list[tuple[str, Check]]] = {
    "czi": _CZI_CHECKS,
    "nd2": _ND2_CHECKS,
    "lif": _LIF_CHECKS,
    "nifti": _NIFTI_CHECKS,
    "ome-zarr": _ZARR_CHECKS,
    "imzml": [(r"imzML cvParams: (.+)", _cv_params)],
}


def _ibd_claim(claim: str, rel: str, case: Case, golden: dict[str, Any]) -> str | None:
    """The .ibd's note: the imzML it belongs to, and the UUID its first 16 bytes hold."""
    found = re.fullmatch(r"binary spectra for (\S+) \(first 16 bytes = UUID\)", claim)
    if found is None:
        return "claim not understood by this test; teach it"
    primary = case.files[0].rsplit("/", 1)[-1]
    uuid = golden["original_metadata"]["preview"].get("uuid")
    head = (CORPUS / rel).read_bytes()[:16].hex()
    return _expect((primary, uuid), (found[1], head))


ACQUISITION = "ome-tiff/acquisition/170918_tn_neutrophil_migration_wave.ome.tif"


def _set(dotted: str, value: Any) -> Callable[[dict[str, Any]], object]:
    """A change to a golden: ``dotted`` (from the golden's top) set to ``value``."""
    parent, _, last = dotted.rpartition(".")
    return lambda g: (_get(g, parent) if parent else g).update({last: value})


def _pop(dotted: str) -> Callable[[dict[str, Any]], object]:
    parent, _, last = dotted.rpartition(".")
    return lambda g: _get(g, parent).pop(last)


def _both(*changes: Callable[[dict[str, Any]], object]) -> Callable[[dict[str, Any]], object]:
    return lambda g: [change(g) for change in changes]


ZARR = "ome-zarr/xyz_8bit__mitotic_plate_calibrated.ome.zarr/"
AXES = "axes=['t:second', 'c:', 'z:micrometer', 'y:micrometer', 'x:micrometer']"
PREVIEW = "original_metadata.preview"
#: (id, corpus file, change to its golden, the claim of its note that must then fail)
NEW_FORMATS: list[tuple[str, str, Callable[[dict[str, Any]], object], str]] = [
    (
        "czi header unread",
        "czi/testTinyCzi.czi",
        _pop(f"{PREVIEW}.file_header"),
        "CZI magic=ZISRAWFILE",
    ),
    ("czi XML unread", "czi/testTinyCzi.czi", _pop(f"{PREVIEW}.information"), "XML metadata=yes"),
    (
        "czi no scaling",
        "czi/testCziZStack4.czi",
        _pop("metadata.pixel_size_um"),
        "Scaling/Distance=yes",
    ),
    (
        "czi instrument in none",
        "czi/testCziYX0Tiny.czi",
        _set("metadata.objective", {"na": 1}),
        "instrument=no",
    ),
    ("nd2 other format", "nd2/cluster.nd2", _set("format", "TIFF"), "ND2 magic=dacebe0a"),
    ("nd2 version 1", "nd2/cluster.nd2", _set(f"{PREVIEW}.version", "1.0"), "chunk map=yes"),
    ("nd2 no calibration", "nd2/cluster.nd2", _pop("metadata.pixel_size_um"), "calibration=yes"),
    ("lif as lof", "lif/xz-example.lif", _set("format", "Leica LOF"), "LIF magic=70000000"),
    ("lif no series", "lif/xz-example.lif", _pop("metadata.series"), "XML (UTF-16) header"),
    (
        "lif camera",
        "lif/xz-example.lif",
        _set("metadata.modality", "Camera"),
        "Leica ATLConfocalSettings=yes",
    ),
    ("nifti 1 for 2", "nifti/example_nifti2.nii.gz", _set("format", "NIfTI-1"), "Nifti2Header"),
    (
        "nifti no time",
        "nifti/functional.nii",
        _pop("metadata.image.size_t"),
        "shape=(17, 21, 3, 20)",
    ),
    (
        "nifti mm as um",
        "nifti/functional.nii",
        _set("metadata.pixel_size_um.z", 8.0),
        "zooms=(4.0, 4.0, 8.0, 2.0)",
    ),
    (
        "nifti size of no unit",
        "nifti/standard.nii.gz",
        _set("metadata.pixel_size_um", {"x": 1.0}),
        "zooms=(1.0, 3.0, 2.0)",
    ),
    (
        "nifti units",
        "nifti/anatomical.nii",
        _set(f"{PREVIEW}.xyzt_units", 2),
        "units=('mm', 'sec')",
    ),
    (
        "nifti descrip cut where the header has no NUL",
        "nifti/example4d.nii.gz",
        _both(_set("metadata.description", "FSL"), _set(f"{PREVIEW}.descrip", "FSL")),
        "descrip='FSL3.3  v2.25 NIfTI-1 Single file format'",
    ),
    (
        "zarr layout",
        f"{ZARR}.zattrs",
        _set(f"{PREVIEW}.layout", "image"),
        "bioformats2raw.layout=3",
    ),
    (
        "zarr version",
        f"{ZARR}0/.zattrs",
        _set(f"{PREVIEW}.ngff_version", "0.5"),
        "OME-NGFF multiscales version=0.4",
    ),
    ("zarr z size", f"{ZARR}0/.zattrs", _set("metadata.pixel_size_um.z", 1.0), AXES),
    ("zarr datasets", f"{ZARR}0/.zattrs", _set(f"{PREVIEW}.datasets", ["0"]), "datasets=2"),
    ("zarr series", f"{ZARR}OME/.zattrs", _pop("metadata.image.series"), "zarr attrs: series"),
    (
        "zarr OME-XML",
        f"{ZARR}OME/METADATA.ome.xml",
        _pop(f"{PREVIEW}.ome_xml"),
        "OME-XML (bioformats2raw OME/METADATA.ome.xml)",
    ),
    (
        "imzml ibd unchecked",
        "imzml/Example_Continuous.imzML",
        _set(f"{PREVIEW}.ibd_checksum", "not checked"),
        "imzML cvParams: max count of pixels x, continuous, universally unique identifier, "
        "ibd SHA-1",
    ),
    (
        "ibd other uuid",
        "imzml/Example_Continuous.ibd",
        _set(f"{PREVIEW}.uuid", "0" * 32),
        "binary spectra for Example_Continuous.imzML (first 16 bytes = UUID)",
    ),
]
NEW_FORMAT_IDS = [name for name, *_ in NEW_FORMATS]
NEW_FORMAT_CHANGES = [(rel, change, claim) for _, rel, change, claim in NEW_FORMATS]


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
        *NEW_FORMAT_CHANGES,
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
        *NEW_FORMAT_IDS,
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
