"""The de-identification stage's parts beyond the attribute table (``deidentify`` applies them).

- **Modified dates** (PS3.15 Retain Longitudinal Temporal Information with Modified Dates
  Option): every date of one patient moves back by the same whole number of days, keyed
  by the installation secret and the patient (``date_offset_days``), so the intervals
  between a patient's studies stay and nobody without the key learns the true dates.
  Whole days, so a time of day (TM) stays valid and unchanged, and a date and its time in
  two attributes never disagree about midnight. Backwards, so a shifted date is never in
  the future, where receivers would flag it. Up to ten years, so the year is not given
  away either.
- **Burned-in annotation** (``burned_in``): no pixels are read, let alone cleaned; what
  the header says about text in the pixels, and whether the modality or SOP class is one
  known to burn it in, decide whether a package is flagged.
- **Path redaction** (``path_tokens``, ``redacted_component``): a file or folder named
  after a patient (a PACS export's ``DOE^JOHN_12345/``) gets a keyed pseudonym.
- **Operator names** of non-DICOM headers (``operator_texts``).
- **The method record** (``method_codes``): CID 7050 codes, from pydicom's copy of PS3.16.

Pure functions; nothing here reads a file or keeps state.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Literal

from pydicom.sr.codedict import codes

#: the widest shift back, in days (about ten years).
MAX_SHIFT_DAYS = 3650

BurnedInVerdict = Literal["YES", "NO", "unknown"]

#: modalities whose images usually carry text in the pixels (PS3.3 C.7.3.1.1.1 terms):
#: ultrasound, secondary capture, other, X-ray angiography, endoscopy.
BURNS_IN_TEXT = frozenset({"US", "SC", "OT", "XA", "ES"})
#: the Secondary Capture Image Storage SOP classes (PS3.4 B.5), single and multi-frame.
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"

#: attributes whose values name the patient or the case, looked for in file and folder names.
PATIENT_NAMES = ("PatientName", "OtherPatientNames", "PatientBirthName")
PATIENT_IDS = ("PatientID", "OtherPatientIDs", "AccessionNumber")
#: tokens shorter than this are not looked for in names: initials, "Jr" or two digits occur
#: in any folder by chance (``T1``, ``01``), and alone they identify nobody.
MIN_TOKEN = 3

#: keys of non-DICOM headers that hold a person's name or address (OME Experimenter,
#: Micro-Manager, FEI, Zeiss SEM, JEOL, LSM).
OPERATOR_KEYS = frozenset(
    {"UserName", "User", "Operator", "FirstName", "LastName", "MiddleName", "Email"}
    | {"Experimenter", "sv_user_name"}
)
_OME_EXPERIMENTER = re.compile(r"<(?:\w+:)?Experimenter\b[^>]*>")
_OME_PERSON = re.compile(r'\b(?:UserName|FirstName|LastName|MiddleName|Email)="([^"]+)"')

_DA = re.compile(r"^(\d{4})(\.?)(\d{2})\.?(\d{2})$")  # 20240102, ACR-NEMA 2024.01.02
_DT = re.compile(r"^(\d{4})(\d{2})(\d{2})(.*)$")
_RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(.*)$")


def keyed_hex(secret: bytes, purpose: str, text: str, length: int = 12) -> str:
    """A short keyed digest of ``text``: stable per installation, meaningless without it."""
    message = purpose.encode() + b"\0" + text.encode("utf-8", "surrogateescape")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:length]


# --------------------------------------------------------------------------- dates


def patient_key(original: Mapping[str, Any]) -> str:
    """What identifies the patient a DICOM header belongs to, for the date offset.

    The Patient ID; without one the name and birth date; without those the study (its
    series then keep their intervals), else nothing (one offset for the installation).
    """
    patient_id = _text(original.get("PatientID"))
    if patient_id:
        return "id:" + patient_id
    name, birth = _text(original.get("PatientName")), _text(original.get("PatientBirthDate"))
    if name or birth:
        return f"name:{name}\0{birth}"
    study = _text(original.get("StudyInstanceUID"))
    return "study:" + study if study else ""


def date_offset_days(secret: bytes, key: str) -> int:
    """The patient's shift: a whole number of days in [-MAX_SHIFT_DAYS, -1]."""
    digest = hmac.new(secret, b"date shift\0" + key.encode(), hashlib.sha256).digest()
    return -(1 + int.from_bytes(digest[:8], "big") % MAX_SHIFT_DAYS)


def shifted(value: Any, vr: str | None, days: int) -> Any:
    """``value`` (a DICOM DA, DT or TM value, or a list of them) moved by ``days``.

    None when a date cannot be read (the caller removes it). A time of day is unchanged.
    """
    if isinstance(value, list):
        items = [shifted(item, vr, days) for item in value]
        return None if any(item is None for item in items) else items
    if value is None or vr == "TM" or (isinstance(value, str) and not value.strip()):
        return value
    text = str(value).strip()
    if vr == "DA":
        match = _DA.match(text)
        if match is None:
            return None
        year, dot, month, day = match.groups()
        moved = _moved(year, month, day, days)
        if moved is None:
            return None
        return moved.strftime("%Y.%m.%d" if dot else "%Y%m%d")
    match = _DT.match(text)
    if match is None:
        return None
    year, month, day, rest = match.groups()
    moved = _moved(year, month, day, days)
    return None if moved is None else moved.strftime("%Y%m%d") + rest


def shifted_rfc3339(text: str, days: int) -> str | None:
    """An RFC 3339 date or date-time (``acquired``) moved by ``days``; None if unreadable."""
    match = _RFC3339.match(text)
    if match is None:
        return None
    year, month, day, rest = match.groups()
    moved = _moved(year, month, day, days)
    return None if moved is None else moved.isoformat() + rest


def _moved(year: str, month: str, day: str, days: int) -> date | None:
    try:
        return date(int(year), int(month), int(day)) + timedelta(days=days)
    except (ValueError, OverflowError):
        return None


# --------------------------------------------------------------------------- burned-in


@dataclass(frozen=True, slots=True)
class BurnedIn:
    """What a DICOM header says about text in its pixels."""

    verdict: BurnedInVerdict
    #: why the package is flagged (warned or held), None when it is not.
    risk: str | None


def burned_in(original: Mapping[str, Any]) -> BurnedIn:
    """YES when BurnedInAnnotation or RecognizableVisualFeatures says so; NO when
    BurnedInAnnotation says NO; else unknown. Flagged when YES, or when unknown for a
    modality or SOP class known to burn in text (the device's explicit NO is trusted)."""
    annotation = _text(original.get("BurnedInAnnotation")).upper()
    features = _text(original.get("RecognizableVisualFeatures")).upper()
    if annotation == "YES" or features == "YES":
        named = "BurnedInAnnotation" if annotation == "YES" else "RecognizableVisualFeatures"
        return BurnedIn("YES", f"{named} is YES")
    if annotation == "NO":
        return BurnedIn("NO", None)
    modality = _text(original.get("Modality")).upper()
    sop_class = _text(original.get("SOPClassUID") or original.get("MediaStorageSOPClassUID"))
    if modality in BURNS_IN_TEXT:
        return BurnedIn("unknown", f"BurnedInAnnotation absent and modality {modality}")
    # the class itself or one below it (.7.1 to .7.4): not the VL classes, .77.x
    if sop_class == _SECONDARY_CAPTURE or sop_class.startswith(_SECONDARY_CAPTURE + "."):
        return BurnedIn("unknown", "BurnedInAnnotation absent in a secondary capture")
    return BurnedIn("unknown", None)


# --------------------------------------------------------------------------- paths


def path_tokens(original: Mapping[str, Any]) -> set[str]:
    """Lower-cased texts of a DICOM header that must not name a file or folder: the parts
    of the patient's names, the IDs, the accession number and the birth date as people
    write it (19700101, 1970-01-01, 01.01.1970)."""
    tokens: set[str] = set()
    for keyword in PATIENT_NAMES:
        for name in _all_texts(original.get(keyword)):
            tokens.update(re.split(r"[\^=\s,]+", name))
    for keyword in PATIENT_IDS:
        tokens.update(_all_texts(original.get(keyword)))
    for item in original.get("OtherPatientIDsSequence") or ():
        if isinstance(item, Mapping):
            tokens.update(_all_texts(item.get("PatientID")))
    for birth in _all_texts(original.get("PatientBirthDate")):
        tokens.update(birth_date_spellings(birth))
    return {token.lower() for token in tokens if len(token) >= MIN_TOKEN}


def birth_date_spellings(text: str) -> set[str]:
    match = _DA.match(text.strip())
    if match is None:
        return {text}
    year, _, month, day = match.groups()
    return {f"{year}{month}{day}", f"{year}-{month}-{day}", f"{day}.{month}.{year}"}


def names_a_token(component: str, tokens: Iterable[str]) -> bool:
    """Whether a file or folder name holds a token, in any case (``doe`` in ``DOE^J_1``)."""
    lowered = component.lower()
    return any(token in lowered for token in tokens)


def redacted_component(secret: bytes, component: str, tokens: Iterable[str]) -> str:
    """The keyed pseudonym that stands for a name: ``redacted-<12 hex>``, with the name's
    extension kept when it holds no token (``.dcm`` still says what the file is)."""
    stem, dot, extension = component.rpartition(".")
    keep = bool(dot and stem and re.fullmatch(r"[A-Za-z0-9]{1,8}", extension))
    keep = keep and not names_a_token(extension, tokens)
    pseudonym = "redacted-" + keyed_hex(secret, "path", component)
    return pseudonym + ("." + extension if keep else "")


# --------------------------------------------------------------------------- operators


def operator_texts(metadata: Mapping[str, Any], original: Mapping[str, Any]) -> set[str]:
    """The operator names of a non-DICOM extraction: ``metadata.operator``, the values of
    known user keys anywhere in the original metadata, and the person attributes of OME-XML
    Experimenter elements inside its texts."""
    texts = set(_all_texts(metadata.get("operator")))
    for key, value in _walk(original):
        if key in OPERATOR_KEYS:
            texts.update(_all_texts(value))
        if isinstance(value, str) and "Experimenter" in value:
            for element in _OME_EXPERIMENTER.findall(value):
                texts.update(_OME_PERSON.findall(element))
    return {text for text in texts if len(text) > 1}


def _walk(tree: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(tree, Mapping):
        for child_key, child in tree.items():
            yield from _walk(child, str(child_key))
    elif isinstance(tree, list):
        for child in tree:
            yield from _walk(child, key)
    else:
        yield key, tree


# --------------------------------------------------------------------------- method record

#: setting -> the CID 7050 codes (keywords of pydicom's DCM dictionary) it puts in force.
#: ``retain_descriptions`` keeps the C values verbatim: the site's statement that they hold
#: no identity (see ``deidentify``), so the three Clean options it stands for are claimed.
OPTION_CODES: Mapping[str, tuple[str, ...]] = {
    "retain_descriptions": (
        "CleanGraphicsOption",
        "CleanStructuredContentOption",
        "CleanDescriptorsOption",
    ),
    "dates=keep": ("RetainLongitudinalTemporalInformationFullDatesOption",),
    "dates=shift": ("RetainLongitudinalTemporalInformationModifiedDatesOption",),
    "retain_patient_characteristics": ("RetainPatientCharacteristicsOption",),
    "retain_device_identity": ("RetainDeviceIdentityOption",),
    "retain_uids": ("RetainUidsOption",),
}


def method_codes(options: Iterable[str]) -> list[dict[str, str]]:
    """The De-identification Method Code Sequence of the options in force, as JSON: the
    Basic Profile (113100) first, then one item per option, by code. Clean Pixel Data
    (113101) is never claimed: no pixel is read."""
    keywords = ["BasicApplicationConfidentialityProfile"]
    for option in options:
        keywords.extend(OPTION_CODES.get(option, ()))
    items = [getattr(codes.DCM, keyword) for keyword in dict.fromkeys(keywords)]
    items.sort(key=lambda code: code.value)
    return [
        {"code": code.value, "scheme": code.scheme_designator, "meaning": code.meaning}
        for code in items
    ]


# --------------------------------------------------------------------------- helpers


def _text(value: Any) -> str:
    if isinstance(value, list):
        value = "\\".join(str(item) for item in value)
    return "" if value is None else str(value).strip()


def _all_texts(value: Any) -> list[str]:
    if isinstance(value, list):
        return [text for item in value for text in _all_texts(item)]
    if isinstance(value, Mapping):
        return [text for item in value.values() for text in _all_texts(item)]
    text = _text(value)
    return [text] if text else []
