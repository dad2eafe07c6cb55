"""The patient-data policy, on the shapes adapters produce."""

from __future__ import annotations

from acqharvest.deidentify import PROFILE, Deidentifier
from acqharvest.model import DeidentifySettings

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
    result = Deidentifier(DeidentifySettings(), b"k" * 32).apply("DICOM", METADATA, ORIGINAL)
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
    assert original["ContentSequence"] == [{"ValueType": "TEXT"}]
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
