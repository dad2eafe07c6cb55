"""Patient-data policy, applied by the agent to every extraction (adapters never decide it).

The DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile, read as data
from ``confidentiality_profile.tsv`` (Table E.1-1: every attribute, its action and the
action each profile option gives it), with the Retain Device Identity option on by
default. Config options map onto the profile's options: ``retain_uids`` (Retain UIDs),
``retain_device_identity`` (Retain Device Identity), ``dates`` (Retain Longitudinal
Temporal Information with Full or Modified Dates), ``retain_patient_characteristics``
(Retain Patient Characteristics) and ``retain_descriptions`` (Clean Descriptors, Clean
Structured Content and Clean Graphics). Institution Identity and Safe Private are never
retained.

A package is JSON, not a DICOM object, so there are no Type 1/2 attributes to keep
present: D (dummy), Z (zero length), X (remove) and their combinations all remove the
attribute; U replaces a UID by a keyed hash (same input, same replacement, per
installation) so series stay linkable; U* on a sequence keeps it and replaces the UIDs
inside. An option's K keeps the value; its C (clean) keeps it too, because free text
cannot be cleaned reliably by a program: setting the option is the site's statement that
those values carry no identity (the dates option's C is the shift). Beyond the table, for
DICOM data: private attributes and every person-name (PN) attribute are removed, every
date or time (DA/DT/TM) attribute follows ``dates`` like the table's dated rows, and every
other UID that is not a registered DICOM UID (SOP classes, transfer syntaxes) is replaced.

``dates`` (``remove | shift | keep``; the older ``retain_dates: true`` reads as ``keep``):
``shift``, the default, is the Retain Longitudinal Temporal Information with Modified
Dates option: the table's dated rows (its C) and the dates beyond it move back by the
patient's keyed offset in whole days, ``acquired`` and the acquisition's start with them
(``deidentify_options`` says why whole days, why backwards). The birth date has no such
code in the table: it is removed. For other formats only the table's removals apply, to keys
that are DICOM keywords; their dates are kept, except the values their adapter names as
``Identifier``s (a slide scanner's case number, barcode, scan date): each follows the rule
of the DICOM attribute it names, as in a DICOM file (a vendor's date is removed under
``shift``, its format being the vendor's), its key is removed and its text is taken out of
every other text of the package (a free-text description that repeats it). An identifier
naming no DICOM attribute is removed. ``operator`` pseudonymizes or removes the operator's
name in other formats' headers.

Beyond the attributes: a DICOM header's burned-in annotation is judged (``burned_in``:
flagged with a warning, or held in the outbox), and a file or folder name holding what the
profile removed of the patient (``paths: redact``) is listed as the keyed pseudonym
``Deidentified.path_redactions`` gives it. The package records the profile, the options in
force and how many attributes were removed; for data with a patient (DICOM, or named
identifiers) also the table's edition, the CID 7050 method codes and what happened to the
dates and the pixels (``Deidentified.record``). Every text value removed or replaced is
listed in ``Deidentified.redactions`` with its stand-in, so the package stage can take it
out of the warnings too, should an adapter have quoted it there.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydicom._uid_dict import UID_dictionary
from pydicom.datadict import dictionary_VR, keyword_dict, tag_for_keyword

from acqharvest import deidentify_options as options
from acqharvest.adapter_api import Identifier
from acqharvest.deidentify_table import BASIC_PROFILE as BASIC_PROFILE
from acqharvest.deidentify_table import PROFILE as PROFILE
from acqharvest.deidentify_table import PROFILE_EDITION, ProfileRule
from acqharvest.model import Deidentified, DeidentifySettings
from acqharvest.redaction import redact_tree

Action = Literal["keep", "remove", "uid", "shift"]


#: Which setting retains each profile option (institution identity is never retained).
_OPTION_SETTINGS = {
    "uids": "retain_uids",
    "device": "retain_device_identity",
    "dates": "retain_dates",
    "patient": "retain_patient_characteristics",
    "descriptors": "retain_descriptions",
    "structured": "retain_descriptions",
    "graphics": "retain_descriptions",
}

#: Attributes the table does not name that identify just as well, with the option that
#: retains them (None: always removed).
_BEYOND_TABLE: Mapping[str, str | None] = {
    "IssuerOfAccessionNumberSequence": None,  # X in later editions of the table
    "IssuerOfPatientIDQualifiersSequence": None,
    # Coded procedures whose CodeMeaning repeats the study description word for word.
    "PerformedProtocolCodeSequence": "descriptors",
    "ProcedureCodeSequence": "descriptors",
    "RequestedProcedureCodeSequence": "descriptors",
    "ScheduledProtocolCodeSequence": "descriptors",
    "TextValue": "descriptors",  # SR free text, wherever the content tree puts it
}

#: Normalized fields read from a DICOM attribute follow that attribute's rule.
_NORMALIZED_SOURCES: Mapping[str, str] = {
    "acquired": "AcquisitionDateTime",
    "operator": "OperatorsName",
    "study_uid": "StudyInstanceUID",
    "series_uid": "SeriesInstanceUID",
    "series_description": "SeriesDescription",
    "protocol_name": "ProtocolName",
    "instrument_reported.serial_number": "DeviceSerialNumber",
    "instrument_reported.station_name": "StationName",
    "detector.model": "DetectorManufacturerModelName",
}

_DATE_VRS = frozenset({"DA", "DT", "TM"})
#: what stands in warnings for a value the policy removed.
REDACTED = "<removed>"
_UID_ROOT = "2.25."  # UUID-derived UID root (PS3.5 B.2): needs no registered org root.
#: ``dataset_json`` names a repeated keyword ``Keyword_GGGG``; private tags look like
#: ``(0019,100A)``.
_SUFFIXED = re.compile(r"^(?P<keyword>[A-Za-z0-9]+)_[0-9A-Fa-f]{4}$")
_PRIVATE_TAG = re.compile(r"^\(?[0-9A-Fa-f]{3}[13579BDFbdf],?\s*[0-9A-Fa-f]{4}\)?$")


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


def _texts(value: Any) -> list[str]:
    """Every text a removed or replaced value holds, nested ones too, as a warning may quote it.

    Numbers are left out: they recur by chance in any message.
    """
    if isinstance(value, Mapping):
        return [text for item in value.values() for text in _texts(item)]
    if isinstance(value, list):
        return [text for item in value for text in _texts(item)]
    if not isinstance(value, str) or not value.strip():
        return []
    text = value.strip()
    quoted = repr(text)[1:-1]  # how a message quoting it with !r spells a newline or quote
    return [text] if quoted == text else [text, quoted]


def _registered(uid: str) -> bool:
    """True for a UID the DICOM standard registers (SOP classes, transfer syntaxes...).

    A dictionary lookup: building a ``UID`` would validate it and log an invalid one.
    """
    return uid in UID_dictionary


@dataclass(slots=True)
class _Run:
    """What one ``apply`` collects as it goes, and the patient's date shift."""

    #: the patient's date offset in days (0 unless dates are shifted).
    days: int = 0
    removed: int = 0
    redactions: dict[str, str] = field(default_factory=dict)


class Deidentifier:
    """Applies the configured policy; keyed by a per-installation secret for UID mapping,
    date offsets and pseudonyms."""

    def __init__(self, settings: DeidentifySettings, secret: bytes) -> None:
        self._settings = settings
        self._secret = secret
        self._dates = settings.date_policy
        retained = {
            name
            for name in (
                "retain_device_identity",
                "retain_uids",
                "retain_patient_characteristics",
                "retain_descriptions",
            )
            if getattr(settings, name)
        }
        if self._dates == "keep":
            retained.add("retain_dates")
        self._options = tuple(
            name
            for name in (
                "retain_device_identity",
                "retain_uids",
                "retain_dates",
                "retain_patient_characteristics",
                "retain_descriptions",
            )
            if name in retained
        ) + (("shift_dates",) if self._dates == "shift" else ())
        self._retained = frozenset(
            option for option, name in _OPTION_SETTINGS.items() if name in self._options
        )
        self._actions: dict[tuple[str, bool], Action] = {}

    def replace_uid(self, uid: str) -> str:
        digest = hmac.new(self._secret, uid.encode(), hashlib.sha256).digest()
        return _UID_ROOT + str(int.from_bytes(digest[:16], "big"))

    def apply(
        self,
        fmt: str,
        metadata: Mapping[str, Any],
        original: Mapping[str, Any],
        identifiers: Iterable[Identifier] = (),
        *,
        started: str | None = None,
        paths: Iterable[str] = (),
    ) -> Deidentified:
        """The extraction's metadata under the policy; ``started`` is the acquisition's
        start and ``paths`` the root-relative names and path_template values the package
        will show (see ``Deidentified``)."""
        if not self._settings.enabled:
            return Deidentified(metadata, original, None, (), 0, started=started)
        identifiers = tuple(identifiers)
        dicom = fmt.upper().startswith("DICOM")
        run = _Run()
        if dicom and self._dates == "shift":
            run.days = options.date_offset_days(self._secret, options.patient_key(original))
        clean_meta = self._clean_normalized(metadata, "", dicom, run)
        clean_original = self._clean(original, dicom, run)
        trees = {"metadata": clean_meta, "original_metadata": clean_original}
        named = self._named(identifiers, trees, run)
        if not dicom and self._settings.operator != "keep":
            named.update(self._operators(metadata, original, trees, run))
        tokens = options.path_tokens(original) if dicom else set()
        tokens.update(self._identifier_tokens(identifiers))
        path_map = self._path_map(paths, tokens)
        # Only what adapters name is taken out of other text: a DICOM value removed from
        # one attribute stays in another the policy keeps (device identity).
        clean_meta = redact_tree(trees["metadata"], {**named, **path_map})
        clean_original = redact_tree(trees["original_metadata"], {**named, **path_map})
        run.redactions.update(named)
        burned = options.burned_in(original) if dicom else None
        return Deidentified(
            clean_meta,
            clean_original,
            PROFILE,
            self._options,
            run.removed,
            run.redactions,
            started=self._started(started, clean_meta, dicom, run),
            record=self._record(burned, len(path_map)) if dicom or identifiers else {},
            path_redactions=path_map,
            burned_in_risk=burned.risk if burned else None,
            held=bool(burned and burned.risk and self._settings.burned_in == "hold"),
        )

    def _started(
        self, started: str | None, metadata: Mapping[str, Any], dicom: bool, run: _Run
    ) -> str | None:
        """The acquisition start the package may show: none when the policy removed
        ``acquired``, shifted with the patient's dates."""
        if started is None or "acquired" not in metadata:
            return None
        return options.shifted_rfc3339(started, run.days) if dicom and run.days else started

    def _record(self, burned: options.BurnedIn | None, paths_redacted: int) -> dict[str, Any]:
        """The package's record of the method, for data with a patient (see module doc)."""
        dates = {"remove": "removed", "shift": "shifted", "keep": "kept"}[self._dates]
        in_force = [*self._options, f"dates={self._dates}"]
        return {
            "profile_edition": PROFILE_EDITION,
            "method_codes": options.method_codes(in_force),
            "patient_identity_removed": True,
            "dates": dates,
            "burned_in_annotation": burned.verdict if burned else "unknown",
            "pixel_data_cleaned": False,
            "paths_redacted": paths_redacted,
        }

    def _operators(
        self,
        metadata: Mapping[str, Any],
        original: Mapping[str, Any],
        trees: dict[str, Any],
        run: _Run,
    ) -> dict[str, str]:
        """Operator names of a non-DICOM header, pseudonymized or removed: the stand-in of
        each, to take it out of every text."""
        texts = options.operator_texts(metadata, original)
        if not texts:
            return {}
        pseudonymize = self._settings.operator == "pseudonymize"
        stand_ins = {
            text: "operator-" + options.keyed_hex(self._secret, "operator", text)
            if pseudonymize
            else REDACTED
            for text in texts
        }
        operator = trees["metadata"].get("operator")
        if isinstance(operator, str):
            run.removed += 1
            replaced = stand_ins.get(operator.strip(), REDACTED) if pseudonymize else None
            trees["metadata"] = _at_path(trees["metadata"], ["operator"], replaced)
        return stand_ins

    def _identifier_tokens(self, identifiers: Iterable[Identifier]) -> set[str]:
        """What adapters named as identifying and the policy takes out (a case number, a
        barcode; not a scanner's serial number it keeps), lower-cased, for file and folder
        names; dates are left out (a scan date names no one)."""
        tokens = set()
        for identifier in identifiers:
            keyword = _keyword(identifier.attribute)
            value = identifier.value.strip()
            if len(value) < options.MIN_TOKEN or _dictionary_vr(keyword or "") in _DATE_VRS:
                continue
            if (self.action(keyword) if keyword else "remove") != "keep":
                tokens.add(value.lower())
        return tokens

    def _path_map(self, paths: Iterable[str], tokens: set[str]) -> dict[str, str]:
        """File and folder name -> its pseudonym, for each name that holds a token."""
        if self._settings.paths != "redact" or not tokens:
            return {}
        return {
            component: options.redacted_component(self._secret, component, tokens)
            for path in paths
            for component in path.split("/")
            if options.names_a_token(component, tokens)
        }

    def action(self, keyword: str, dicom: bool = True) -> Action:
        """What the policy does to an attribute (a DICOM keyword, or any metadata key)."""
        cached = self._actions.get((keyword, dicom))
        if cached is None:
            cached = self._actions[(keyword, dicom)] = self._decide(keyword, dicom)
        return cached

    def _clean_normalized(
        self,
        metadata: Mapping[str, Any],
        prefix: str,
        dicom: bool,
        run: _Run,
    ) -> dict[str, Any]:
        cleaned: dict[str, Any] = {}
        for key, value in metadata.items():
            source = _NORMALIZED_SOURCES.get(prefix + key) if dicom else None
            action = self.action(source) if source else "keep"
            if action == "keep" and isinstance(value, Mapping) and dicom:
                cleaned[key] = self._clean_normalized(value, f"{key}.", dicom, run)
            elif action == "keep":
                cleaned[key] = value
            else:
                self._act(cleaned, key, value, action, run)
        return cleaned

    def _clean(self, value: Any, dicom: bool, run: _Run) -> Any:
        if isinstance(value, Mapping):
            cleaned: dict[str, Any] = {}
            for key, item in value.items():
                action = self.action(str(key), dicom)
                if action == "keep":
                    cleaned[key] = self._clean(item, dicom, run)
                else:
                    self._act(cleaned, key, item, action, run)
            return cleaned
        if isinstance(value, list):
            return [self._clean(item, dicom, run) for item in value]
        return value

    def _act(
        self,
        cleaned: dict[str, Any],
        key: str,
        value: Any,
        action: Action,
        run: _Run,
    ) -> None:
        """Remove ``value``, shift its dates or replace its UIDs; note each text it held
        for the warnings."""
        if action == "shift":
            moved = self._shifted(key, value, run.days)
            if moved is not None:
                cleaned[key] = moved
                for text, stand_in in zip(_texts(value), _texts(moved), strict=False):
                    if text != stand_in:
                        run.redactions[text] = stand_in
                return
            action = "remove"  # a date that cannot be read cannot be shifted
        if action == "remove":
            run.removed += 1
            for text in _texts(value):
                run.redactions.setdefault(text, REDACTED)
            return
        cleaned[key] = self._replace_uids(value)
        for text in _texts(value):
            if not _registered(text):
                run.redactions[text] = self.replace_uid(text)

    @staticmethod
    def _shifted(key: str, value: Any, days: int) -> Any:
        """A DICOM date value moved by ``days``; ``acquired`` (RFC 3339) too."""
        if key == "acquired":
            return options.shifted_rfc3339(value, days) if isinstance(value, str) else None
        suffixed = _SUFFIXED.match(key)
        return options.shifted(
            value, _dictionary_vr(suffixed.group("keyword") if suffixed else key), days
        )

    def _named(
        self, identifiers: Iterable[Identifier], trees: dict[str, Any], run: _Run
    ) -> dict[str, str]:
        """Apply each identifier's attribute rule at its path (in ``trees``, copied on
        write); the texts it removed or replaced, with their stand-ins."""
        named: dict[str, str] = {}
        for identifier in identifiers:
            keyword = _keyword(identifier.attribute)
            action = self.action(keyword) if keyword else "remove"
            if action == "keep":
                continue
            run.removed += 1
            # a vendor's date is not DICOM's: it is removed, not shifted
            stand_in = REDACTED if action != "uid" else self.replace_uid(identifier.value)
            for text in _texts(identifier.value):
                named.setdefault(text, stand_in)
            root, *keys = identifier.path or ("",)
            if root in trees and keys:
                trees[root] = _at_path(trees[root], keys, None if action != "uid" else stand_in)
        return named

    def _replace_uids(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self._replace_uids(item) for item in value]
        if value in (None, "") or _registered(str(value)):
            return value  # a UID the standard registers names a kind of thing, not a person
        return self.replace_uid(str(value))

    def _decide(self, key: str, dicom: bool) -> Action:
        suffixed = _SUFFIXED.match(key)
        keyword = suffixed.group("keyword") if suffixed else key
        rule = BASIC_PROFILE.get(keyword)
        if rule is not None:
            return self._by_rule(rule, dicom)
        if keyword in _BEYOND_TABLE:
            option = _BEYOND_TABLE[keyword]
            return "keep" if option in self._retained else "remove"
        if not dicom:
            return "keep"
        if _PRIVATE_TAG.match(keyword):
            return "remove"  # the profile removes private attributes; Safe Private is off
        vr = _dictionary_vr(keyword)
        if vr == "PN":
            return "remove"  # a person's name, whatever the attribute is called
        if vr in _DATE_VRS and "dates" not in self._retained:
            return "shift" if self._dates == "shift" else "remove"
        if vr == "UI" and "uids" not in self._retained:
            # Class UIDs name a kind of object or an implementation, not a patient.
            return "keep" if keyword.endswith(("ClassUID", "TransferSyntaxUID")) else "uid"
        return "keep"

    def _by_rule(self, rule: ProfileRule, dicom: bool) -> Action:
        for option, code in rule.options.items():
            if option in self._retained:
                return "remove" if code == "X" else "keep"
        if not dicom:
            # Outside DICOM only the removals apply, and a format's own dates are its own.
            return "keep" if "U" in rule.action or "dates" in rule.options else "remove"
        if "dates" in rule.options and self._dates == "shift":
            return "shift"  # the option's C: "modified dates"
        if rule.action == "U":
            return "uid"
        if "U*" in rule.action:
            return "keep"  # the sequence stays; the UIDs in its items are replaced
        return "remove"


@functools.cache
def _keywords() -> dict[str, str]:
    """Lowercase DICOM keyword -> the keyword, for identifiers that spell it in capitals."""
    return {keyword.lower(): keyword for keyword in (*keyword_dict, *BASIC_PROFILE)}


def _keyword(attribute: str) -> str | None:
    return _keywords().get(attribute.lower())


def _at_path(tree: Any, keys: list[str], value: Any) -> Any:
    """``tree`` with the value at ``keys`` replaced by ``value`` (None: removed).

    Copies only the mappings along the path: the extraction's own are never changed.
    """
    if not isinstance(tree, Mapping) or keys[0] not in tree:
        return tree
    copy = dict(tree)
    if len(keys) > 1:
        copy[keys[0]] = _at_path(tree[keys[0]], keys[1:], value)
    elif value is None:
        del copy[keys[0]]
    else:
        copy[keys[0]] = value
    return copy
