"""Who and where: the PIDINST instrument block, the identity check, folder-template fields.

Turns configuration and relative paths into the ``instrument`` and ``acquisition`` fields
of a package, and compares the configured instrument with the one a file says it was
written by (``identity_check``), so a cloned acquisition PC or a config copied to the
wrong instrument shows up instead of posting under the wrong identity. Reads no file.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any, Literal

from acqharvest.model import InstrumentSettings
from acqharvest.pathtemplate import template_names as template_names
from acqharvest.pathtemplate import template_pattern
from acqharvest.pathtemplate import template_problem as template_problem


def identifier_type(identifier: str) -> str:
    """PIDINST ``identifierType`` guessed from the shape of the configured id."""
    lowered = identifier.lower()
    if lowered.startswith(("https://doi.org/", "http://doi.org/", "doi:")) or re.match(
        r"^10\.\d{4,9}/", identifier
    ):
        return "DOI"
    if lowered.startswith(("https://hdl.handle.net/", "http://hdl.handle.net/", "hdl:")):
        return "Handle"
    # a bare Handle, prefix/suffix: 21.T11998/0000-001A-3905-F (PIDINST's own ePIC ids)
    if re.match(r"^\d+(\.[A-Za-z0-9]+)+/\S+$", identifier):
        return "Handle"
    if lowered.startswith("ark:"):
        return "ARK"
    if lowered.startswith(("http://", "https://")):
        return "URL"
    if lowered.startswith("urn:"):
        return "URN"
    return "local"


def is_persistent(identifier: str) -> bool:
    """Whether the id is a persistent identifier (DOI, Handle, ARK, URN), not a local name or a
    plain URL, which PIDINST does not count: nothing keeps a URL resolving."""
    return identifier_type(identifier) not in ("local", "URL")


def instrument_block(instrument: InstrumentSettings) -> dict[str, Any]:
    """The package's ``instrument`` object: configured identity, empty values left out."""
    block: dict[str, Any] = {
        "id": instrument.id,
        "id_type": identifier_type(instrument.id),
    }
    for key, value in asdict(instrument).items():
        if key != "id" and value not in (None, "", (), []):
            block[key] = _plain(value)
    return block


def _plain(value: Any) -> Any:
    """A settings value as JSON: dates in ISO form, sub-sections without their empty keys."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items() if item not in (None, "")}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


#: what a file's ``metadata.instrument_reported`` is compared on, against the config.
CHECKED_FIELDS = ("serial_number", "model")


def identity_check(instrument: Mapping[str, Any], metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The configured instrument (an ``instrument_block``) against what a file reports.

    ``result`` is ``mismatch`` when a field both name differs (each listed in
    ``mismatches`` with both values), ``match`` when at least one was compared and all
    agree, ``unknown`` when there was nothing to compare. ``compared`` names the fields
    that were. The metadata is the package's, after de-identification: a serial number the
    policy removed is not compared, so the check never puts back what the policy took out.
    """
    reported = metadata.get("instrument_reported")
    reported = reported if isinstance(reported, Mapping) else {}
    compared: list[str] = []
    mismatches: list[dict[str, str]] = []
    for field in CHECKED_FIELDS:
        configured = _configured(instrument, field)
        said = reported.get(field)
        if not configured or not isinstance(said, str) or not _comparable(field, said):
            continue
        compared.append(field)
        if _comparable(field, said) not in {_comparable(field, value) for value in configured}:
            mismatches.append(
                {"field": field, "configured": ", ".join(configured), "reported": said}
            )
    result: Literal["match", "mismatch", "unknown"] = (
        "mismatch" if mismatches else "match" if compared else "unknown"
    )
    check: dict[str, Any] = {"result": result}
    if compared:
        check["compared"] = compared
    if mismatches:
        check["mismatches"] = mismatches
    return check


def _configured(instrument: Mapping[str, Any], field: str) -> list[str]:
    """The configured values of ``field``: an instrument may carry several serial numbers
    (``serial_number`` and the SerialNumber alternate identifiers: stand, scan head), and a
    file naming any of them is the instrument."""
    values = [instrument[field]] if instrument.get(field) else []
    if field == "serial_number":
        values += [
            alternate["identifier"]
            for alternate in instrument.get("alternate_identifiers", ())
            if alternate.get("identifier_type") == "SerialNumber"
        ]
    return [str(value) for value in values]


def _comparable(field: str, value: str) -> str:
    """``value`` as it is compared: what differs only in spelling is the same.

    Compatibility-normalized and case-folded, with everything but letters and digits
    dropped: vendors and admins write one model as "LSM 980", "LSM-980" or "lsm980", and
    a header may quote it ('Helios NanoLab" 660'). An all-digit serial number also loses
    its leading zeros: spreadsheets, YAML and some headers store serials as numbers
    ("0000287" becomes 287), while no maker numbers two instruments apart by zeros alone.
    """
    folded = unicodedata.normalize("NFKC", value).casefold()
    kept = "".join(char for char in folded if char.isalnum())
    if field == "serial_number" and kept.isdigit():
        kept = kept.lstrip("0") or "0"
    return kept


def path_fields(template: str | None, relative_path: str) -> dict[str, str]:
    """Fields named in ``template`` (e.g. ``{operator}/{project}/**``) taken from a path.

    ``relative_path`` is the file's path below the watch root with ``/`` separators. The
    template describes the *folders* the file sits in, never the file name: a ``{name}``
    matches within one folder level, ``*`` any text within one level and ``**`` any
    number of further levels. A path that does not fit the template gives no fields.
    """
    if not template:
        return {}
    folder = relative_path.rpartition("/")[0]
    match = template_pattern(template).fullmatch(folder)
    if match is None:
        return {}
    return {name: value for name, value in match.groupdict().items() if value}
