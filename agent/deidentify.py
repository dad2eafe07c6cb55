"""Patient-data policy, applied by the agent to every extraction (adapters never decide it).

A subset of the DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile with
the Retain Device Identity option. Removed: attributes that name, number or locate a
person, an institution, a visit or a specimen; every person-name (PN) attribute whatever
its keyword; for DICOM data, every date and time (DA/DT/TM) unless ``retain_dates``,
free-text descriptions unless ``retain_descriptions`` and patient characteristics unless
``retain_patient_characteristics``. UIDs are replaced by a keyed hash (same input, same
replacement, per installation) unless ``retain_uids``, so series stay linkable without
revealing the original UID. The package records what was done. File and folder names
are not changed.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword

from acqharvest.model import Deidentified, DeidentifySettings

PROFILE = "DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile (subset)"

#: Attributes that name, number or locate a person, an institution or a visit.
IDENTIFYING = frozenset(
    {
        "AccessionNumber",
        "AdmissionID",
        "AdmittingDiagnosesDescription",
        "AdditionalPatientHistory",
        "Allergies",
        "BranchOfService",
        "ConsultingPhysicianName",
        "ContentCreatorName",
        "CountryOfResidence",
        "CurrentPatientLocation",
        "CurveData",
        "DataSetTrailingPadding",
        "DerivationDescription",
        "ClinicalTrialSubjectID",
        "ClinicalTrialSubjectReadingID",
        "ContainerIdentifier",
        "ImageComments",
        "InstitutionAddress",
        "InstitutionCodeSequence",
        "InstitutionName",
        "InstitutionalDepartmentName",
        "IssuerOfAdmissionID",
        "IssuerOfPatientID",
        "IssuerOfPatientIDQualifiersSequence",
        "MedicalAlerts",
        "MedicalRecordLocator",
        "MilitaryRank",
        "NameOfPhysiciansReadingStudy",
        "NamesOfIntendedRecipientsOfResults",
        "Occupation",
        "OperatorIdentificationSequence",
        "OperatorsName",
        "OtherPatientIDs",
        "OtherPatientIDsSequence",
        "OtherPatientNames",
        "PatientAddress",
        "PatientBirthDate",
        "PatientBirthName",
        "PatientBirthTime",
        "PatientComments",
        "PatientID",
        "PatientInsurancePlanCodeSequence",
        "PatientMotherBirthName",
        "PatientName",
        "PatientReligiousPreference",
        "PatientState",
        "PatientTelephoneNumbers",
        "PatientTelecomInformation",
        "PatientTransportArrangements",
        "PerformedProcedureStepID",
        "PerformingPhysicianIdentificationSequence",
        "PerformingPhysicianName",
        "PersonAddress",
        "PersonName",
        "PersonTelephoneNumbers",
        "PhysiciansOfRecord",
        "PhysiciansOfRecordIdentificationSequence",
        "PhysiciansReadingStudyIdentificationSequence",
        "ReferencedPatientSequence",
        "ReferringPhysicianAddress",
        "ReferringPhysicianIdentificationSequence",
        "ReferringPhysicianName",
        "ReferringPhysicianTelephoneNumbers",
        "RegionOfResidence",
        "RequestAttributesSequence",
        "RequestedProcedureID",
        "RequestingPhysician",
        "RequestingService",
        "ResponsibleOrganization",
        "ResponsiblePerson",
        "ScheduledPerformingPhysicianName",
        "ScheduledProcedureStepID",
        "ServiceEpisodeID",
        "SpecialNeeds",
        "SpecimenIdentifier",
        "StudyID",
        "TextComments",
        "VerifyingObserverName",
        "VerifyingObserverSequence",
    }
)

#: Patient characteristics, kept only with ``retain_patient_characteristics``.
CHARACTERISTICS = frozenset(
    {
        "EthnicGroup",
        "PatientAge",
        "PatientSex",
        "PatientSexNeutered",
        "PatientSize",
        "PatientWeight",
        "PregnancyStatus",
        "SmokingStatus",
    }
)

#: Free text that helps find data but may hold a name or case number (Clean Descriptors
#: is the profile option that would keep them cleaned; here they go unless retained).
DESCRIPTIONS = frozenset(
    {
        "AcquisitionComments",
        "PerformedProcedureStepDescription",
        "PerformedProtocolCodeSequence",
        "ProcedureCodeSequence",
        "ProtocolName",
        "ReasonForStudy",
        "RequestedProcedureCodeSequence",
        "RequestedProcedureDescription",
        "ScheduledProcedureStepDescription",
        "ScheduledProtocolCodeSequence",
        "SeriesDescription",
        "ServiceEpisodeDescription",
        "StudyComments",
        "StudyDescription",
        "TextValue",
        "VisitComments",
    }
)

#: Normalized fields that carry DICOM dates, UIDs or descriptions.
_NORMALIZED_DATES = frozenset({"acquired"})
_NORMALIZED_UIDS = frozenset({"study_uid", "series_uid"})
_NORMALIZED_DESCRIPTIONS = frozenset({"series_description", "protocol_name"})
_DATE_VRS = frozenset({"DA", "DT", "TM"})
_UID_ROOT = "2.25."  # UUID-derived UID root (PS3.5 B.2): needs no registered org root.


@functools.lru_cache(maxsize=4096)
def _dictionary_vr(keyword: str) -> str | None:
    """The VR the DICOM dictionary gives a keyword, None for names it does not know."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        return None
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None


def _is_date_keyword(keyword: str) -> bool:
    return keyword.endswith(("Date", "Time", "DateTime")) and not keyword.endswith(
        (
            "ExposureTime",
            "RepetitionTime",
            "EchoTime",
            "InversionTime",
            "FrameTime",
            "TriggerTime",
        )
    )


class Deidentifier:
    """Applies the configured policy; keyed by a per-installation secret for UID mapping."""

    def __init__(self, settings: DeidentifySettings, secret: bytes) -> None:
        self._settings = settings
        self._secret = secret
        options = ["retain_device_identity"]
        if settings.retain_uids:
            options.append("retain_uids")
        if settings.retain_dates:
            options.append("retain_dates")
        if settings.retain_patient_characteristics:
            options.append("retain_patient_characteristics")
        if settings.retain_descriptions:
            options.append("retain_descriptions")
        self._options = tuple(options)

    def replace_uid(self, uid: str) -> str:
        digest = hmac.new(self._secret, uid.encode(), hashlib.sha256).digest()
        return _UID_ROOT + str(int.from_bytes(digest[:16], "big"))

    def apply(
        self, fmt: str, metadata: Mapping[str, Any], original: Mapping[str, Any]
    ) -> Deidentified:
        if not self._settings.enabled:
            return Deidentified(metadata, original, None, (), 0)
        counter = [0]
        dicom = fmt.upper().startswith("DICOM")
        clean_meta = self._clean_normalized(metadata, dicom, counter)
        clean_original = self._clean(original, dicom, counter)
        return Deidentified(clean_meta, clean_original, PROFILE, self._options, counter[0])

    def _clean_normalized(
        self, metadata: Mapping[str, Any], dicom: bool, counter: list[int]
    ) -> dict[str, Any]:
        cleaned: dict[str, Any] = {}
        for key, value in metadata.items():
            if dicom and key in _NORMALIZED_DATES and not self._settings.retain_dates:
                counter[0] += 1
                continue
            if dicom and key in _NORMALIZED_UIDS and not self._settings.retain_uids:
                cleaned[key] = self.replace_uid(str(value))
                continue
            if dicom and key == "operator":
                counter[0] += 1
                continue
            if dicom and key in _NORMALIZED_DESCRIPTIONS and not self._settings.retain_descriptions:
                counter[0] += 1
                continue
            cleaned[key] = value
        return cleaned

    def _clean(self, value: Any, dicom: bool, counter: list[int]) -> Any:
        if isinstance(value, Mapping):
            cleaned: dict[str, Any] = {}
            for key, item in value.items():
                action = self._action(str(key), dicom)
                if action == "remove":
                    counter[0] += 1
                elif action == "uid":
                    cleaned[key] = self._replace_uids(item)
                else:
                    cleaned[key] = self._clean(item, dicom, counter)
            return cleaned
        if isinstance(value, list):
            return [self._clean(item, dicom, counter) for item in value]
        return value

    def _replace_uids(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self._replace_uids(item) for item in value]
        return self.replace_uid(str(value)) if value not in (None, "") else value

    def _action(self, keyword: str, dicom: bool) -> str:
        settings = self._settings
        if keyword in IDENTIFYING:
            return "remove"
        if keyword in CHARACTERISTICS and not settings.retain_patient_characteristics:
            return "remove"
        if not dicom:
            return "keep"
        vr = _dictionary_vr(keyword)
        if vr == "PN":
            return "remove"  # a person's name, whatever the attribute is called
        if keyword in DESCRIPTIONS and not settings.retain_descriptions:
            return "remove"
        if keyword.endswith("UID") and not settings.retain_uids:
            # Class and syntax UIDs name a standard, not a patient; keep them readable.
            if keyword.endswith(("ClassUID", "TransferSyntaxUID", "ImplementationClassUID")):
                return "keep"
            return "uid"
        is_date = vr in _DATE_VRS if vr is not None else _is_date_keyword(keyword)
        if is_date and not settings.retain_dates:
            return "remove"
        return "keep"
