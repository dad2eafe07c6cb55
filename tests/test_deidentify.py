"""The patient-data policy, on the shapes adapters produce and on every corpus DICOM file."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.uid import UID

from acqharvest.adapter_api import Identifier
from acqharvest.commands import preview
from acqharvest.config import embedded_settings
from acqharvest.deidentify import BASIC_PROFILE, PROFILE, Deidentifier
from acqharvest.model import (
    Acquisition,
    Deidentified,
    DeidentifySettings,
    Extraction,
    FileSettled,
    ProbedFile,
)
from acqharvest.package import build_package
from tests import slides

UID_SHAPE = re.compile(r"^\d+(\.\d+)+$")
CORPUS_DICOM = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "dicom"

ORIGINAL = {
    "PatientName": "DOE^JANE",
    "PatientID": "MRN-0042",
    "PatientAge": "042Y",
    "StudyDate": "20240102",
    "AcquisitionTime": "101500",
    "ExposureTime": 40,
    "SeriesInstanceUID": "1.2.3.4",
    "SOPClassUID": "1.2.840.10008.5.1.4.1.1.4",
    "Manufacturer": "SIEMENS",
    "DeviceSerialNumber": "12345",
    "RequestAttributesSequence": [{"RequestedProcedureID": "RQ1"}],
    "ReferencedSeriesSequence": [{"SeriesInstanceUID": "1.2.3.4", "PatientName": "X"}],
    "ReviewerName": "SMITH^ANNA",
    "DateOfLastCalibration": "19961202",
    "StudyDescription": "DR DARBOIS",
    "ContainerIdentifier": "S19-1_A_1_1",
    "ContentSequence": [{"TextValue": "biopsy of J. Doe", "ValueType": "TEXT"}],
}
METADATA = {
    "modality": "MR",
    "acquired": "2024-01-02T10:15:00",
    "series_uid": "1.2.3.4",
    "series_description": "t1_mprage DOE",
}


def test_dicom_identifiers_dates_and_characteristics_go_device_identity_stays() -> None:
    removing = DeidentifySettings(dates="remove")
    result = Deidentifier(removing, b"k" * 32).apply("DICOM", METADATA, ORIGINAL)
    original = dict(result.original_metadata)
    for gone in ("PatientName", "PatientID", "PatientAge", "StudyDate", "AcquisitionTime"):
        assert gone not in original
    assert "RequestAttributesSequence" not in original
    assert original["ExposureTime"] == 40  # a duration, not a date
    assert original["Manufacturer"] == "SIEMENS"
    assert original["DeviceSerialNumber"] == "12345"
    assert original["SOPClassUID"] == "1.2.840.10008.5.1.4.1.1.4"
    assert original["SeriesInstanceUID"].startswith("2.25.")
    nested = original["ReferencedSeriesSequence"][0]
    assert nested == {"SeriesInstanceUID": original["SeriesInstanceUID"]}
    for gone in (
        "ReviewerName",
        "DateOfLastCalibration",
        "StudyDescription",
        "ContainerIdentifier",
    ):
        assert gone not in original
    assert "ContentSequence" not in original  # D in the profile: structured content goes
    assert "acquired" not in result.metadata
    assert "series_description" not in result.metadata
    assert result.metadata["series_uid"] == original["SeriesInstanceUID"]
    assert result.profile == PROFILE
    assert result.removed >= 7


def test_uid_replacement_is_stable_per_installation_and_differs_between_them() -> None:
    one = Deidentifier(DeidentifySettings(), b"a" * 32)
    again = Deidentifier(DeidentifySettings(), b"a" * 32)
    other = Deidentifier(DeidentifySettings(), b"b" * 32)
    assert one.replace_uid("1.2.3") == again.replace_uid("1.2.3")
    assert one.replace_uid("1.2.3") != other.replace_uid("1.2.3")
    assert len(one.replace_uid("1.2.3")) <= 64  # a valid UID length


def test_options_retain_what_they_name() -> None:
    settings = DeidentifySettings(
        retain_uids=True,
        retain_dates=True,
        retain_patient_characteristics=True,
        retain_descriptions=True,
    )
    result = Deidentifier(settings, b"k" * 32).apply("DICOM", METADATA, ORIGINAL)
    assert result.original_metadata["StudyDate"] == "20240102"
    assert result.original_metadata["PatientAge"] == "042Y"
    assert result.original_metadata["SeriesInstanceUID"] == "1.2.3.4"
    assert result.original_metadata["StudyDescription"] == "DR DARBOIS"
    assert result.metadata["series_description"] == "t1_mprage DOE"
    assert "PatientName" not in result.original_metadata
    assert "ReviewerName" not in result.original_metadata  # names go, whatever the options
    assert set(result.options) >= {
        "retain_uids",
        "retain_dates",
        "retain_patient_characteristics",
        "retain_descriptions",
    }


def test_non_dicom_dates_stay_and_disabled_policy_changes_nothing() -> None:
    tiff = {"DateTime": "2024:01:02 10:15:00", "Software": "ZEN"}
    result = Deidentifier(DeidentifySettings(), b"k" * 32).apply("OME-TIFF", {}, tiff)
    assert result.original_metadata == tiff
    off = Deidentifier(DeidentifySettings(enabled=False), b"k" * 32)
    untouched = off.apply("DICOM", METADATA, ORIGINAL)
    assert untouched.original_metadata == ORIGINAL
    assert untouched.profile is None


def test_the_profile_table_is_complete_and_read_as_the_standard_writes_it() -> None:
    assert len(BASIC_PROFILE) > 450
    name = BASIC_PROFILE["PatientName"]
    assert (name.tag, name.action, dict(name.options)) == ("00100010", "Z", {})
    assert BASIC_PROFILE["StudyDate"].options == {"dates": "K"}
    assert BASIC_PROFILE["DeviceSerialNumber"].options == {"device": "K"}
    assert BASIC_PROFILE["ReferencedImageSequence"].action == "X/Z/U*"
    assert BASIC_PROFILE["OverlayData"].tag == "60xx3000"  # repeating groups
    assert BASIC_PROFILE["CurveDimensions"].name == "Curve Data"


def test_actions_follow_the_table_and_its_options() -> None:
    default = Deidentifier(DeidentifySettings(), b"k" * 32)
    assert default.action("PatientName") == "remove"  # Z
    assert default.action("ContainerIdentifier") == "remove"  # D
    assert default.action("SOPInstanceUID") == "uid"  # U
    assert default.action("ReferencedImageSequence") == "keep"  # U*: its UIDs are replaced
    assert default.action("StationName") == "keep"  # Retain Device Identity, on by default
    assert default.action("InstitutionName") == "remove"  # Institution Identity: never kept
    assert default.action("OverlayComments_6002") == "remove"  # a second overlay group
    assert default.action("(0019,100A)") == "remove"  # private
    assert default.action("ReviewDate") == "shift"  # not in the table; a DA all the same
    assert default.action("StudyDate") == "shift"  # Modified Dates, the default
    assert default.action("PatientBirthDate") == "remove"  # Z: no dates option, never shifted
    assert default.action("FrameOfReferenceUID") == "uid"
    assert default.action("SOPClassUID") == "keep"
    assert default.action("ExposureTime") == "keep"

    no_device = Deidentifier(DeidentifySettings(retain_device_identity=False), b"k" * 32)
    assert no_device.action("StationName") == "remove"
    result = no_device.apply(
        "DICOM",
        {"instrument_reported": {"serial_number": "12345", "model": "Avanto"}},
        {"DeviceSerialNumber": "12345", "Manufacturer": "SIEMENS"},
    )
    assert result.metadata == {"instrument_reported": {"model": "Avanto"}}
    assert result.original_metadata == {"Manufacturer": "SIEMENS"}
    assert "retain_device_identity" not in result.options
    assert result.removed == 2

    referenced = default.apply(
        "DICOM",
        {},
        {
            "ReferencedImageSequence": [
                {
                    "ReferencedSOPClassUID": "1.2.840.10008.5.1.4.1.1.4",
                    "ReferencedSOPInstanceUID": "1.2.3",
                }
            ],
            "CodingSchemeUID": "2.16.840.1.113883.6.96",
        },
    ).original_metadata
    assert referenced["ReferencedImageSequence"] == [
        {
            "ReferencedSOPClassUID": "1.2.840.10008.5.1.4.1.1.4",
            "ReferencedSOPInstanceUID": default.replace_uid("1.2.3"),
        }
    ]


# --------------------------------------------------------------------------- corpus sweep

#: Value representations whose values are text a person could be found by. Numbers are
#: left out (a weight of 70 is not findable, and numbers recur everywhere by chance), and
#: so are code strings (CS): their values come from the standard's enumerations. Those are
#: proved removed attribute by attribute instead (``_profile_leaks``, below).
_TEXT_VRS = frozenset(
    {"AE", "AS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
Kind = str  # "removed": the policy must drop it; "kept": retained by an option or public


def _values(
    elements: Iterator[DataElement], policy: Deidentifier, removed_whole: bool
) -> Iterator[tuple[Kind, str, bool]]:
    """(kind, value, private) for every text value, nested sequence items included.

    ``removed_whole`` is True within a sequence the policy removes: all of it goes.
    """
    for element in elements:
        if element.tag.is_private_creator:
            continue  # the creator names the vendor, as Manufacturer does
        private = element.tag.is_private
        action = "remove" if private else policy.action(element.keyword)
        # shifted dates keep their time of day (TM): only a DA or DT value must change
        shifted_time = action == "shift" and element.VR == "TM"
        governed = (
            removed_whole
            or private
            or (element.keyword in BASIC_PROFILE and action != "keep" and not shifted_time)
        )
        if element.VR == "SQ":
            for item in element.value or ():
                yield from _values(iter(item), policy, removed_whole or action == "remove")
            continue
        if element.VR not in (*_TEXT_VRS, "CS") or isinstance(element.value, bytes):
            continue
        if governed and element.VR == "CS":
            continue  # an enumerated term, kept only to excuse its private copies below
        for text in (
            str(v).strip() for v in (element.value if element.VM > 1 else [element.value])
        ):
            if len(text) >= 4 and not (element.VR == "UI" and UID(text).name != text):
                yield ("removed" if governed else "kept", text, private)


def _must_not_survive(path: Path, policy: Deidentifier) -> set[str]:
    """Values of Basic Profile attributes the default policy removes, from the raw file.

    A value that a kept attribute holds too (StationName equal to InstitutionName, a
    private copy of BodyPartExamined) is not a leak when it appears; a public profile value
    is excused only by an attribute an option retains (device identity), never by a public
    attribute the table misses: that is the leak this test is for.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # old corpus files break VR length rules
        dataset = pydicom.dcmread(path, force=True)
        found = [*_values(iter(dataset.file_meta), policy, False)]
        found += _values(iter(dataset), policy, False)
    retained = {
        value
        for kind, value, private in found
        if kind == "kept" and not private and _retained_by_option(dataset, value, policy)
    }
    public_kept = {value for kind, value, private in found if kind == "kept" and not private}
    return {
        value
        for kind, value, private in found
        if kind == "removed" and value not in retained and not (private and value in public_kept)
    }


def _retained_by_option(dataset: pydicom.Dataset, value: str, policy: Deidentifier) -> bool:
    return any(
        element.keyword in BASIC_PROFILE
        and policy.action(element.keyword) == "keep"
        and value in str(element.value)
        for element in dataset.iterall()
    )


def _leaks(values: set[str], package: dict[str, Any]) -> list[str]:
    # File and folder names lose only the patient's names, IDs and birth date (``paths``,
    # tested on their own below); the method record is the standard's fixed vocabulary.
    shown = {k: v for k, v in package.items() if k != "files"}
    shown["provenance"] = {k: v for k, v in shown["provenance"].items() if k != "deidentification"}
    text = json.dumps(shown, ensure_ascii=False)
    # A short value (a 4-digit time, "0001") is matched as a whole JSON string only: as a
    # substring it occurs by chance in checksums and in the keyed-hash UIDs.
    return sorted(
        value
        for value in values
        if json.dumps(value, ensure_ascii=False) in text or (len(value) >= 6 and value in text)
    )


@pytest.mark.parametrize(
    "path",
    sorted(p.relative_to(CORPUS_DICOM).as_posix() for p in CORPUS_DICOM.rglob("*.dcm")),
)
def test_no_basic_profile_value_of_a_corpus_file_reaches_its_package(
    corpus: Path, path: str
) -> None:
    source = corpus / "dicom" / path
    policy = Deidentifier(DeidentifySettings(), b"s" * 32)
    values = _must_not_survive(source, policy)
    [package], errors = preview([source], embedded_settings(), policy)
    assert errors == []
    assert _leaks(values, package) == []
    # every attribute the table removes or replaces, of any VR and length (PatientSex "M")
    assert _profile_leaks(source, package) == []
    if any(not UID_SHAPE.match(value) for value in values):  # UIDs are replaced, not removed
        assert package["provenance"]["deidentification"]["removed"] > 0


def test_values_pydicom_quotes_in_its_warnings_never_reach_the_package(
    corpus: Path, tmp_path: Path
) -> None:
    """Invalid values make pydicom warn, quoting them; neither the quote nor the value stays."""
    dataset = pydicom.dcmread(next(iter(sorted((corpus / "dicom" / "mg").glob("*.dcm")))))
    source = tmp_path / "invalid.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset.StudyInstanceUID = "1.2.840.0999.12345"  # a leading zero: invalid for VR UI
        dataset.add_new(0x00100030, "DA", "1980-07-14")  # PatientBirthDate, not DICOM's form
        dataset.add_new(0x00100010, "PN", "Doe^John\nSmith")
        dataset.add_new(0x00101030, "LO", "72 kg")
        before = pydicom.config.settings.writing_validation_mode
        pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
        try:
            dataset.save_as(source, enforce_file_format=True)
        finally:
            pydicom.config.settings.writing_validation_mode = before
    policy = Deidentifier(DeidentifySettings(), b"s" * 32)
    values = _must_not_survive(source, policy)
    assert "1.2.840.0999.12345" in values
    [package], errors = preview([source], embedded_settings(), policy)
    assert errors == []
    assert _leaks(values, package) == []
    assert any(
        "StudyInstanceUID" in warning and "VR UI" in warning
        for warning in package["provenance"]["warnings"]
    ), package["provenance"]["warnings"]


def test_removed_and_replaced_values_are_scrubbed_from_warnings(tmp_path: Path) -> None:
    """Defence in depth: a vendor adapter that quotes a value in a warning loses it there."""
    policy = Deidentifier(DeidentifySettings(), b"k" * 32)
    warning = "odd name 'DOE^JANE', uid 1.2.3.4, id MRN-0042; study 1.2.3.45 is another"
    extraction = _extraction(tmp_path, (warning,))
    clean = policy.apply("DICOM", METADATA, ORIGINAL)
    [scrubbed] = _package_warnings(extraction, clean)
    assert "DOE^JANE" not in scrubbed
    assert "MRN-0042" not in scrubbed
    assert f"uid {policy.replace_uid('1.2.3.4')}," in scrubbed
    assert "<removed>" in scrubbed
    assert "study 1.2.3.45 is another" in scrubbed  # only whole values are replaced
    off = Deidentifier(DeidentifySettings(enabled=False), b"k" * 32)
    assert _package_warnings(extraction, off.apply("DICOM", METADATA, ORIGINAL)) == [warning]


def _extraction(tmp_path: Path, warnings_: tuple[str, ...]) -> Extraction:
    path = tmp_path / "a.dcm"
    path.write_bytes(b"x")
    settled = FileSettled(path, tmp_path, 1, 0, "1:1")
    member = ProbedFile(settled, "0" * 64, "dicom", "dicom:x")
    acquisition = Acquisition("dicom:x", "dicom", tmp_path, (member,))
    return Extraction(acquisition, "dicom", "1", "DICOM", METADATA, ORIGINAL, None, warnings_)


def _package_warnings(extraction: Extraction, clean: Deidentified) -> list[str]:
    package = build_package(
        extraction, clean, instrument={"id": "i"}, acquisition_fields={}, previous=None
    )
    return list(package.body["provenance"]["warnings"])


def test_normalized_fields_follow_the_attribute_the_dicom_adapter_reads() -> None:
    from acqharvest.adapters.dicom import DicomAdapter
    from acqharvest.deidentify import _NORMALIZED_SOURCES

    sources = {spec.key: spec.source for spec in DicomAdapter.info.fields}
    for key, keyword in _NORMALIZED_SOURCES.items():
        assert keyword in sources[key], (
            f"{key}: policy follows {keyword}, adapter reads {sources[key]}"
        )
    no_device = Deidentifier(DeidentifySettings(retain_device_identity=False), b"k" * 32)
    kept = no_device.apply("DICOM", {"detector": {"model": "Pixium 4600"}}, {}).metadata
    assert kept == {"detector": {"model": "Pixium 4600"}}  # a model name, not a device's identity


# --------------------------------------------------------------------------- profile sweep

#: The options the default policy retains, as Table E.1-1 names them; the first test below
#: pins this to the defaults of ``DeidentifySettings``.
_DEFAULT_RETAINED = frozenset({"device"})
#: Attributes every sweep must have checked in the corpus, whatever the table file says:
#: if a row stopped removing one of these, the table-driven oracle would stop asking.
_PINNED = frozenset({"PatientName", "PatientSex", "PatientAge", "PatientWeight", "PatientSize"})


def _profile_outcomes() -> list[tuple[str, str]]:
    """(tag mask, "remove" | "replace" | "shift") for every row the default options do
    not keep.

    Read straight from the table file with the standard's meaning of its codes, not
    through ``deidentify``: the oracle must not share the code it checks. Under the
    default options an option's K/C keeps and its X removes; the default Modified Dates
    option shifts the rows with a dates code (their DA and DT values change, a TM stays);
    otherwise U replaces, a ``.../U*`` sequence is kept (its UIDs are replaced inside) and
    D, Z and X remove.
    """
    text = resources.files("acqharvest").joinpath("confidentiality_profile.tsv").read_text()
    outcomes = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        mask, action, options, _ = line.split("\t")
        codes = dict(item.split("=") for item in options.split())
        retained = [code for option, code in codes.items() if option in _DEFAULT_RETAINED]
        if retained:
            outcome = "remove" if retained[0] == "X" else "keep"
        elif "dates" in codes:
            outcome = "shift"
        elif action == "U":
            outcome = "replace"
        elif "U*" in action:
            outcome = "keep"
        else:
            outcome = "remove"
        if outcome != "keep":
            outcomes.append((mask.upper(), outcome))
    return outcomes


_OUTCOMES = _profile_outcomes()


def _outcome(tag: int) -> str | None:
    text = f"{tag:08X}"
    for mask, outcome in _OUTCOMES:
        if all(m in ("X", t) for m, t in zip(mask, text, strict=True)):
            return outcome
    return None


def _leaf(value: Any) -> Any:
    """A comparable form of one DICOM or JSON value: numbers as floats, text stripped."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    return text or None


def _dicom_leaves(element: DataElement) -> set[Any]:
    if element.VR == "SQ" or isinstance(element.value, bytes):
        return set()
    values = element.value if element.VM > 1 else [element.value]
    return {leaf for leaf in map(_leaf, values) if leaf is not None}


def _walk_json(item: Any, keys: set[str], leaves: set[Any]) -> None:
    if isinstance(item, dict):
        keys.update(item)
        for child in item.values():
            _walk_json(child, keys, leaves)
    elif isinstance(item, list):
        for child in item:
            _walk_json(child, keys, leaves)
    elif (leaf := _leaf(item)) is not None:
        leaves.add(leaf)


def _elements(source: Path) -> list[DataElement]:
    """Every element of the file (file meta and nested items included) up to the pixels."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # old corpus files break VR length rules
        dataset = pydicom.dcmread(source, force=True, stop_before_pixels=True)
        return [*dataset.file_meta.iterall(), *dataset.iterall()]


def _governed(elements: list[DataElement]) -> list[tuple[DataElement, str]]:
    return [
        (element, outcome)
        for element in elements
        if element.keyword and (outcome := _outcome(int(element.tag))) is not None
    ]


def _profile_leaks(source: Path, package: dict[str, Any]) -> list[str]:
    """Leaks of the attributes of ``source`` the profile takes out.

    A removed attribute leaks when its keyword (``Keyword`` or ``Keyword_GGGG``) is a key
    anywhere in the package's metadata or original_metadata, or when one of its values is
    a value there, unless an attribute the policy keeps holds that value too (a PatientSex
    of "O" beside a kept "O" elsewhere is not a leak). A replaced UID leaks when its
    original value is a value there.
    """
    elements = _elements(source)
    kept: set[Any] = set()
    for element in elements:
        if element.keyword and _outcome(int(element.tag)) is None:
            kept |= _dicom_leaves(element)
    keys: set[str] = set()
    leaves: set[Any] = set()
    for part in ("metadata", "original_metadata"):
        _walk_json(package[part], keys, leaves)
    leaks: list[str] = []
    for element, outcome in _governed(elements):
        keyword = element.keyword
        if outcome == "shift" and element.VR not in ("DA", "DT"):
            continue  # a time of day stays; a sequence's dates are checked item by item
        if outcome == "remove":
            named = sorted(k for k in keys if re.fullmatch(rf"{keyword}(_[0-9A-Fa-f]{{4}})?", k))
            leaks.extend(f"{keyword}: key {name} kept" for name in named)
        excused = kept if outcome == "remove" else set()
        leaks.extend(
            f"{keyword}: value {value!r} kept"
            for value in sorted(_dicom_leaves(element) & leaves - excused, key=repr)
        )
    return sorted(set(leaks))


def test_the_profile_oracle_reads_the_defaults_and_removes_patient_characteristics() -> None:
    defaults = DeidentifySettings()
    retained = {
        name for name in dir(defaults) if name.startswith("retain_") and getattr(defaults, name)
    }
    assert retained == {"retain_device_identity"}  # what _DEFAULT_RETAINED stands for
    assert defaults.date_policy == "shift"  # the oracle's "shift" rows
    assert _outcome(tag_for_keyword("StudyDate") or 0) == "shift"
    for keyword in _PINNED:
        assert _outcome(tag_for_keyword(keyword) or 0) == "remove", keyword
    assert _outcome(tag_for_keyword("StudyInstanceUID") or 0) == "replace"
    assert _outcome(tag_for_keyword("DeviceSerialNumber") or 0) is None  # device=K
    assert _outcome(0x60023000) == "remove"  # OverlayData of a second overlay group


def test_the_profile_sweep_catches_kept_patient_characteristics(corpus: Path) -> None:
    """The oracle is not vacuous: a policy keeping patient characteristics is caught."""
    source = corpus / "dicom/ct-enhanced/eCT_Supplemental.dcm"  # M, 75 kg, 1.6 m, 052Y
    keeping = Deidentifier(DeidentifySettings(retain_patient_characteristics=True), b"s" * 32)
    [package], _ = preview([source], embedded_settings(), keeping)
    leaks = _profile_leaks(source, package)
    for keyword, value in (
        ("PatientSex", "'M'"),
        ("PatientWeight", "75.0"),
        ("PatientSize", "1.6"),
    ):
        assert f"{keyword}: key {keyword} kept" in leaks
        assert f"{keyword}: value {value} kept" in leaks


def test_the_corpus_holds_every_pinned_attribute() -> None:
    """The sweep is not vacuous for the attributes it was written for."""
    checked = {
        element.keyword
        for path in CORPUS_DICOM.rglob("*.dcm")
        for element, _ in _governed(_elements(path))
        if not (element.VR != "SQ" and _dicom_leaves(element) == set())
    }
    assert checked >= _PINNED


# --------------------------------------------------------------------------- header exports

#: patient names in the character sets PACS exports use beyond Latin-1 (PS3.5 annex H-J
#: examples), each with the layout its header is written in.
_MULTI_BYTE_NAMES = [
    ("\\ISO 2022 IR 87", "Yamada^Tarou=山田^太郎=やまだ^たろう", "1.2.840.10008.1.2.1", True),
    ("ISO_IR 192", "Wang^XiaoDong=王^小東", "1.2.840.10008.1.2", True),
    ("GB18030", "Wang^XiaoDong=王^小东", "1.2.840.10008.1.2.2", False),
    ("\\ISO 2022 IR 149", "Hong^Gildong=洪^吉洞=홍^길동", "1.2.840.10008.1.2.1", False),
]


def _header_export(source: Path, target: Path, charset: str, name: str, syntax: str) -> None:
    """``source``'s header alone (no Pixel Data), re-encoded with a multi-byte patient name."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # old corpus files break VR length rules
        dataset = pydicom.dcmread(source, force=True, stop_before_pixels=True)
        dataset.SpecificCharacterSet = charset
        dataset.PatientName = name
        dataset.OperatorsName = name  # a name the normalized metadata reports
        dataset.file_meta.TransferSyntaxUID = UID(syntax)
        pydicom.dcmwrite(
            target,
            dataset,
            implicit_vr=syntax == "1.2.840.10008.1.2",
            little_endian=syntax != "1.2.840.10008.1.2.2",
            enforce_file_format=True,
        )


@pytest.mark.parametrize(("charset", "name", "syntax", "preamble"), _MULTI_BYTE_NAMES)
def test_a_header_without_pixels_is_packaged_incomplete_without_its_patient(
    corpus: Path, tmp_path: Path, charset: str, name: str, syntax: str, preamble: bool
) -> None:
    source = tmp_path / "header.dcm"
    _header_export(
        corpus / "dicom/mr-siemens/MR-SIEMENS-DICOM-WithOverlays.dcm", source, charset, name, syntax
    )
    if not preamble:  # the same dataset as old exports write it: no preamble, no DICM
        source.write_bytes(source.read_bytes()[132:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert str(pydicom.dcmread(source, force=True).PatientName) == name  # encoded as said
    policy = Deidentifier(DeidentifySettings(), b"s" * 32)
    values = _must_not_survive(source, policy)
    assert name in values
    [package], errors = preview([source], embedded_settings(), policy)
    assert errors == []
    assert package["acquisition"]["complete"] is False
    assert any(
        w.startswith("acquisition incomplete: image header but no pixel data")
        for w in package["provenance"]["warnings"]
    )
    assert package["metadata"]["image"]["size_x"] == 484  # the header's metadata is kept
    assert _leaks(values, package) == []
    assert _profile_leaks(source, package) == []
    text = json.dumps(package, ensure_ascii=False)
    for component in re.split("[=^]", name):
        assert not component or component not in text, component


# --------------------------------------------------------------------------- whole-slide TIFF


def _package(source: Path, settings: DeidentifySettings) -> dict[str, Any]:
    [package], errors = preview([source], embedded_settings(), Deidentifier(settings, b"s" * 32))
    assert errors == []
    return package


@pytest.mark.parametrize("vendor", ["aperio", "hamamatsu", "leica", "philips", "ventana"])
def test_a_slide_scanners_case_numbers_barcodes_and_dates_follow_the_profile(
    tmp_path: Path, vendor: str
) -> None:
    """Each planted value is treated as the DICOM attribute that holds it would be."""
    slide = getattr(slides, vendor)(tmp_path)
    default = _package(slide.path, DeidentifySettings())
    assert _leaks({*slide.identity, *slide.dates, *slide.labels, *slide.never}, default) == []
    assert _leaks(set(slide.device), default) == sorted(slide.device)  # device identity kept
    assert "acquired" not in default["metadata"]
    assert "started" not in default["acquisition"]

    dated = _package(slide.path, DeidentifySettings(retain_dates=True))
    assert _leaks(set(slide.dates), dated) == sorted(slide.dates)
    assert ("acquired" in dated["metadata"]) is slide.acquired
    assert _leaks({*slide.identity, *slide.labels, *slide.never}, dated) == []

    every_option = DeidentifySettings(
        retain_uids=True,
        retain_dates=True,
        retain_patient_characteristics=True,
        retain_descriptions=True,
        retain_device_identity=False,
    )
    opposite = _package(slide.path, every_option)
    assert _leaks(set(slide.labels), opposite) == sorted(slide.labels)
    assert _leaks({*slide.identity, *slide.device, *slide.never}, opposite) == []


def test_the_corpus_slides_lose_their_case_number_user_and_scan_date(corpus: Path) -> None:
    svs = corpus / "tiff-vendor/aperio-svs/CMU-1-Small-Region.svs"
    user = "b414003d-95c6-48b0-9369-8010ed517ba7"
    package = _package(svs, DeidentifySettings())
    assert _leaks({"CMU-1", "12/29/09", "09:59:15", user}, package) == []
    assert (
        "Filename = <removed>|Date = <removed>"
        in package["original_metadata"]["tags"]["ImageDescription"]
    )
    assert package["metadata"]["instrument_reported"]["serial_number"] == "CPAPERIOCS"
    assert package["provenance"]["deidentification"]["removed"] >= 5
    dated = _package(svs, DeidentifySettings(retain_dates=True))
    assert dated["acquisition"]["started"] == "2009-12-29T09:59:15"
    assert dated["original_metadata"]["svs_metadata"]["Date"] == "12/29/09"
    assert _leaks({"CMU-1", user}, dated) == []

    ndpi = _package(
        corpus / "tiff-vendor/hamamatsu-ndpi/test3-DAPI-2-(387).ndpi", DeidentifySettings()
    )
    assert _leaks({"2017:02:07 13:06:43", "2017-02-07T13:06:43"}, ndpi) == []


def test_identifiers_follow_their_attribute_and_an_unknown_one_is_removed() -> None:
    metadata = {"instrument_reported": {"serial_number": "SN-1"}}
    original = {"vendor": {"Case": "C-1", "Specimen": "1.2.3.4", "Odd": "Q-9"}, "text": "C-1 Q-9"}
    identifiers = (
        Identifier("containeridentifier", "C-1", ("original_metadata", "vendor", "Case")),
        Identifier("SpecimenUID", "1.2.3.4", ("original_metadata", "vendor", "Specimen")),
        Identifier("NoSuchAttribute", "Q-9", ("original_metadata", "vendor", "Odd")),
        Identifier(
            "DeviceSerialNumber", "SN-1", ("metadata", "instrument_reported", "serial_number")
        ),
    )
    policy = Deidentifier(DeidentifySettings(), b"k" * 32)
    result = policy.apply("TIFF", metadata, original, identifiers)
    replaced = policy.replace_uid("1.2.3.4")
    assert result.original_metadata == {
        "vendor": {"Specimen": replaced},
        "text": "<removed> <removed>",
    }
    assert result.metadata == metadata  # device identity is retained by default
    assert result.removed == 3
    assert result.redactions["1.2.3.4"] == replaced
    assert original["vendor"] == {"Case": "C-1", "Specimen": "1.2.3.4", "Odd": "Q-9"}  # untouched


# --------------------------------------------------------------------------- modified dates

PATIENT = {
    "PatientName": "Quistorp^Heinrike",
    "PatientID": "MRN-4711",
    "PatientBirthDate": "19700101",
    "AccessionNumber": "ACC778899",
    "StudyDate": "20240102",
    "SeriesDate": "2024.01.02",  # as ACR-NEMA files write it
    "AcquisitionDateTime": "20240102101500.5+0100",
    "AcquisitionTime": "101500",
    "ReviewDate": "20240105",  # not in the table: shifted all the same
    "Modality": "MR",
}


def _shift_of(result: Deidentified, original: str = "2024-01-02") -> int:
    from datetime import date

    assert result.started is not None
    return (date.fromisoformat(result.started[:10]) - date.fromisoformat(original)).days


def test_dates_of_one_patient_move_back_by_one_keyed_number_of_days() -> None:
    policy = Deidentifier(DeidentifySettings(), b"k" * 32)
    metadata = {"acquired": "2024-01-02T10:15:00.5+01:00"}
    first = policy.apply("DICOM", metadata, PATIENT, started="2024-01-02T10:15:00.5+01:00")
    days = _shift_of(first)
    assert -3650 <= days <= -1
    assert first.metadata["acquired"] == first.started
    assert first.started is not None
    assert first.started.endswith("T10:15:00.5+01:00")
    original = first.original_metadata
    shifted = _shift_of(Deidentified({}, {}, None, (), 0, started=_iso(original["StudyDate"])))
    assert shifted == days
    assert original["SeriesDate"].count(".") == 2  # the dotted form stays dotted
    assert original["AcquisitionDateTime"].endswith("101500.5+0100")  # time and offset stay
    assert original["AcquisitionTime"] == "101500"  # whole days: a time of day is unchanged
    assert original["ReviewDate"] != "20240105"
    assert "PatientBirthDate" not in original  # Z in the table: removed, never shifted
    assert first.redactions["20240102"] == original["StudyDate"]  # warnings get the shift

    # a later study of the same patient: the same offset, so the interval stays
    later = {**PATIENT, "StudyDate": "20240301"}
    again = policy.apply("DICOM", {}, later).original_metadata["StudyDate"]
    assert _days_between(original["StudyDate"], again) == 59
    # another patient: another offset (and another installation: another one again)
    other = policy.apply(
        "DICOM", metadata, {**PATIENT, "PatientID": "MRN-4712"}, started=metadata["acquired"]
    )
    assert _shift_of(other) != days
    elsewhere = Deidentifier(DeidentifySettings(), b"j" * 32)
    assert (
        _shift_of(elsewhere.apply("DICOM", metadata, PATIENT, started=metadata["acquired"])) != days
    )


def _iso(dicom_date: str) -> str:
    return f"{dicom_date[:4]}-{dicom_date[4:6]}-{dicom_date[6:8]}"


def _days_between(one: str, other: str) -> int:
    from datetime import date

    return (date.fromisoformat(_iso(other)) - date.fromisoformat(_iso(one))).days


def test_without_a_patient_id_the_name_and_birth_date_key_the_shift() -> None:
    from acqharvest.deidentify_options import date_offset_days, patient_key

    no_id = {k: v for k, v in PATIENT.items() if k != "PatientID"}
    assert patient_key(no_id) == "name:Quistorp^Heinrike\x0019700101"
    assert patient_key(PATIENT) == "id:MRN-4711"
    assert patient_key({"StudyInstanceUID": "1.2.3"}) == "study:1.2.3"
    assert patient_key({}) == ""
    offsets = {date_offset_days(b"k" * 32, f"id:{n}") for n in range(200)}
    assert min(offsets) >= -3650
    assert max(offsets) <= -1
    assert len(offsets) > 150


def test_an_unreadable_date_is_removed_and_remove_and_keep_do_what_they_say() -> None:
    policy = Deidentifier(DeidentifySettings(), b"k" * 32)
    result = policy.apply("DICOM", {}, {**PATIENT, "StudyDate": "2024", "ContentDate": "19991399"})
    assert "StudyDate" not in result.original_metadata
    assert "ContentDate" not in result.original_metadata
    metadata = {"acquired": "2024-01-02T10:15:00"}
    removed = Deidentifier(DeidentifySettings(dates="remove"), b"k" * 32).apply(
        "DICOM", metadata, PATIENT, started=metadata["acquired"]
    )
    assert removed.started is None
    assert "StudyDate" not in removed.original_metadata
    assert removed.record["dates"] == "removed"
    for kept_settings in (DeidentifySettings(dates="keep"), DeidentifySettings(retain_dates=True)):
        kept = Deidentifier(kept_settings, b"k" * 32).apply(
            "DICOM", metadata, PATIENT, started=metadata["acquired"]
        )
        assert kept.started == "2024-01-02T10:15:00"
        assert kept.original_metadata["StudyDate"] == "20240102"
        assert kept.record["dates"] == "kept"
        assert "retain_dates" in kept.options


# --------------------------------------------------------------------------- method record


def _codes(result: Deidentified) -> list[str]:
    return [item["code"] for item in result.record["method_codes"]]


def test_the_record_names_the_edition_and_the_cid_7050_codes_in_force() -> None:
    default = Deidentifier(DeidentifySettings(), b"k" * 32).apply("DICOM", {}, PATIENT)
    assert _codes(default) == ["113100", "113107", "113109"]
    assert default.record["method_codes"][0] == {
        "code": "113100",
        "scheme": "DCM",
        "meaning": "Basic Application Confidentiality Profile",
    }
    assert default.record["profile_edition"].startswith("DICOM PS3.15 Table E.1-1, edition ")
    assert default.record["patient_identity_removed"] is True
    assert default.record["pixel_data_cleaned"] is False
    assert default.record["dates"] == "shifted"
    everything = DeidentifySettings(
        retain_uids=True,
        retain_patient_characteristics=True,
        retain_descriptions=True,
        retain_device_identity=False,
        dates="keep",
    )
    result = Deidentifier(everything, b"k" * 32).apply("DICOM", {}, PATIENT)
    assert _codes(result) == ["113100", "113103", "113104", "113105", "113106", "113108", "113110"]
    assert "113101" not in _codes(result)  # Clean Pixel Data: never claimed
    # data without a patient (a microscope's TIFF, no identifiers) gets no such record
    assert Deidentifier(DeidentifySettings(), b"k" * 32).apply("TIFF", {}, {}).record == {}
    named = (Identifier("ContainerIdentifier", "S-1", ("original_metadata", "case")),)
    slide = Deidentifier(DeidentifySettings(), b"k" * 32).apply("TIFF", {}, {"case": "S-1"}, named)
    assert slide.record["burned_in_annotation"] == "unknown"


# --------------------------------------------------------------------------- burned-in


@pytest.mark.parametrize(
    ("header", "verdict", "flagged"),
    [
        ({"Modality": "CT", "BurnedInAnnotation": "YES"}, "YES", True),
        ({"Modality": "CT", "RecognizableVisualFeatures": "YES"}, "YES", True),
        ({"Modality": "US", "BurnedInAnnotation": "NO"}, "NO", False),  # the device says so
        ({"Modality": "US"}, "unknown", True),
        ({"Modality": "XA"}, "unknown", True),
        ({"Modality": "OT", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.7"}, "unknown", True),
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.7.4"}, "unknown", True),
        ({"Modality": "CT"}, "unknown", False),
        # a whole-slide image (VL, .77.1.6) only shares the secondary capture's prefix
        ({"Modality": "SM", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.77.1.6"}, "unknown", False),
    ],
)
def test_burned_in_annotation_is_read_from_the_header_and_the_modality(
    header: dict[str, str], verdict: str, flagged: bool
) -> None:
    warn = Deidentifier(DeidentifySettings(), b"k" * 32).apply("DICOM", {}, header)
    assert warn.record["burned_in_annotation"] == verdict
    assert (warn.burned_in_risk is not None) is flagged
    assert warn.held is False
    hold = Deidentifier(DeidentifySettings(burned_in="hold"), b"k" * 32).apply("DICOM", {}, header)
    assert hold.held is flagged


def test_a_flagged_package_says_so_in_its_warnings_and_a_held_one_is_marked(tmp_path: Path) -> None:
    extraction = _extraction(tmp_path, ())
    policy = Deidentifier(DeidentifySettings(burned_in="hold"), b"k" * 32)
    clean = policy.apply("DICOM", METADATA, {**ORIGINAL, "Modality": "US"})
    package = build_package(
        extraction, clean, instrument={"id": "i"}, acquisition_fields={}, previous=None
    )
    assert package.held is True
    assert package.burned_in_risk == "BurnedInAnnotation absent and modality US"
    assert package.body["provenance"]["warnings"] == [
        "burned-in annotation: BurnedInAnnotation absent and modality US"
    ]
    assert package.body["provenance"]["deidentification"]["burned_in_annotation"] == "unknown"


# --------------------------------------------------------------------------- paths


def test_path_tokens_are_name_parts_ids_and_birth_date_spellings() -> None:
    from acqharvest.deidentify_options import path_tokens

    tokens = path_tokens({**PATIENT, "OtherPatientNames": "Q^H=Kuistorp", "PatientID": "ab"})
    assert tokens == {
        "quistorp",
        "heinrike",
        "kuistorp",
        "acc778899",
        "19700101",
        "1970-01-01",
        "01.01.1970",
    }  # "Q", "H" and the ID "ab" are too short to look for


def test_names_holding_the_patient_are_replaced_by_keyed_pseudonyms(tmp_path: Path) -> None:
    policy = Deidentifier(DeidentifySettings(), b"k" * 32)
    paths = [
        "QUISTORP^Heinrike_MRN-4711/t1/IM0001.dcm",
        "export-1970-01-01/heinrike.dcm",
        "acc778899/ImageNotes.txt",
        "plain/Qui.dcm",  # shorter than any token: not a hit
    ]
    result = policy.apply("DICOM", {}, PATIENT, paths=[*paths, "QUISTORP^Heinrike_MRN-4711"])
    mapped = result.path_redactions
    assert set(mapped) == {
        "QUISTORP^Heinrike_MRN-4711",
        "export-1970-01-01",
        "heinrike.dcm",
        "acc778899",
    }
    assert mapped["heinrike.dcm"].endswith(".dcm")
    assert mapped["heinrike.dcm"].startswith("redacted-")
    again = Deidentifier(DeidentifySettings(), b"k" * 32).apply("DICOM", {}, PATIENT, paths=paths)
    assert again.path_redactions == {k: v for k, v in mapped.items()}  # stable per installation
    other = Deidentifier(DeidentifySettings(), b"j" * 32).apply("DICOM", {}, PATIENT, paths=paths)
    assert other.path_redactions["acc778899"] != mapped["acc778899"]
    keep = Deidentifier(DeidentifySettings(paths="keep"), b"k" * 32)
    assert keep.apply("DICOM", {}, PATIENT, paths=paths).path_redactions == {}
    assert result.record["paths_redacted"] == 4
    # what an adapter names counts when the policy takes it out: a case number, not a
    # scanner's serial number (device identity is kept)
    named = (
        Identifier("DeviceSerialNumber", "Philips-SN", ("original_metadata", "serial")),
        Identifier("ContainerIdentifier", "CASE-77", ("original_metadata", "case")),
    )
    slide = policy.apply("TIFF", {}, {}, named, paths=["Philips-SN/CASE-77.tiff"])
    assert set(slide.path_redactions) == {"CASE-77.tiff"}


def test_a_package_shows_no_patient_in_paths_fields_or_warnings(tmp_path: Path) -> None:
    folder = tmp_path / "Quistorp^Heinrike_MRN-4711"
    folder.mkdir()
    path = folder / "a.dcm"
    path.write_bytes(b"x")
    member = ProbedFile(FileSettled(path, tmp_path, 1, 0, "1:1"), "0" * 64, "dicom", "dicom:x")
    acquisition = Acquisition("dicom:x", "dicom", tmp_path, (member,))
    warning = f"{path.relative_to(tmp_path)}: odd header"
    extraction = Extraction(acquisition, "dicom", "1", "DICOM", {}, PATIENT, None, (warning,))
    from acqharvest.enrich import enrich

    policy = Deidentifier(DeidentifySettings(), b"k" * 32)
    package = enrich(
        extraction, policy, instrument={"id": "i"}, path_template="{operator}/**", previous=None
    )
    text = json.dumps(package.body).lower()
    for trace in ("quistorp", "heinrike", "mrn-4711", "acc778899", "19700101"):
        assert trace not in text, trace
    pseudonym = package.body["acquisition"]["operator"]
    assert package.body["files"][0]["path"] == f"{pseudonym}/a.dcm"
    assert package.body["provenance"]["warnings"] == [f"{pseudonym}/a.dcm: odd header"]
    # the id digests the real paths: the same with names kept
    kept = enrich(
        extraction,
        Deidentifier(DeidentifySettings(paths="keep"), b"k" * 32),
        instrument={"id": "i"},
        path_template=None,
        previous=None,
    )
    assert kept.package_id == package.package_id
    assert kept.body["files"][0]["path"] == "Quistorp^Heinrike_MRN-4711/a.dcm"


# --------------------------------------------------------------------------- operators

OME_XML = (
    '<OME><Experimenter ID="Experimenter:0" UserName="hmueller" FirstName="Hanna" '
    'LastName="Mueller" Email="h.mueller@example.org"/><Image Name="cells"/></OME>'
)


def test_operator_names_of_other_formats_are_kept_pseudonymized_or_removed() -> None:
    metadata = {"operator": "hmueller", "modality": "confocal"}
    original = {"ome_xml": OME_XML, "fei": {"User": {"User": "hmueller", "Date": "x"}}}
    kept = Deidentifier(DeidentifySettings(), b"k" * 32).apply("OME-TIFF", metadata, original)
    assert kept.metadata == metadata
    assert kept.original_metadata == original

    removing = Deidentifier(DeidentifySettings(operator="remove"), b"k" * 32)
    removed = removing.apply("OME-TIFF", metadata, original)
    assert removed.metadata == {"modality": "confocal"}
    text = json.dumps(removed.original_metadata)
    for name in ("hmueller", "Hanna", "Mueller", "h.mueller@example.org"):
        assert name not in text, name
    assert 'Image Name=\\"cells\\"' in text  # the rest of the XML stays

    pseudonymizing = Deidentifier(DeidentifySettings(operator="pseudonymize"), b"k" * 32)
    one = pseudonymizing.apply("OME-TIFF", metadata, original)
    assert one.metadata["operator"].startswith("operator-")
    assert one.original_metadata["fei"]["User"]["User"] == one.metadata["operator"]
    two = pseudonymizing.apply("OME-TIFF", metadata, original)
    assert two.metadata["operator"] == one.metadata["operator"]  # stable: still countable
    assert "hmueller" not in json.dumps(one.original_metadata)
    # DICOM operator names are person names (PN): removed whatever this says
    dicom = pseudonymizing.apply("DICOM", {"operator": "X^Y"}, {"OperatorsName": "X^Y"})
    assert "operator" not in dicom.metadata
    assert "OperatorsName" not in dicom.original_metadata
