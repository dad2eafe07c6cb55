"""Table E.1-1 of DICOM PS3.15, the Basic Application Level Confidentiality Profile, as data.

``confidentiality_profile.tsv`` holds every attribute of the table with its Basic Profile
action and the action each profile option gives it, and names the edition it was
transcribed from (``# Edition:``); ``deidentify`` applies it. Read once, at import.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

from pydicom.datadict import keyword_for_tag

PROFILE = "DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile"
_TABLE = "confidentiality_profile.tsv"


@dataclass(frozen=True, slots=True)
class ProfileRule:
    """One line of Table E.1-1."""

    tag: str
    name: str
    #: the Basic Profile action as the table writes it, e.g. ``X/Z/D`` or ``U``.
    action: str
    #: profile option -> its action for this attribute (``K``, ``C`` or ``X``).
    options: Mapping[str, str]


def _repeater_keywords(mask: str) -> list[str]:
    """Keywords of the repeating-group attributes a ``50xxxxxx``-style tag stands for."""
    from pydicom._dicom_dict import RepeatersDictionary

    def matches(entry: str) -> bool:
        return all(m in ("x", e) for m, e in zip(mask.lower(), entry.lower(), strict=True))

    return [str(v[4]) for k, v in RepeatersDictionary.items() if matches(k) and v[4]]


def _load_profile() -> dict[str, ProfileRule]:
    """Keyword -> rule for every attribute of the table."""
    text = resources.files("acqharvest").joinpath(_TABLE).read_text(encoding="utf-8")
    rules: dict[str, ProfileRule] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        tag, action, options, name = line.split("\t")
        rule = ProfileRule(tag, name, action, dict(item.split("=") for item in options.split()))
        keywords = _repeater_keywords(tag) if "x" in tag else [keyword_for_tag(int(tag, 16))]
        for keyword in keywords:
            rules[keyword] = rule
    return rules


def _edition() -> str:
    """The edition of PS3.15 the table was transcribed from, as its ``# Edition:`` line says."""
    text = resources.files("acqharvest").joinpath(_TABLE).read_text(encoding="utf-8")
    for line in text.splitlines():
        if line.startswith("# Edition:"):
            return f"DICOM PS3.15 Table E.1-1, edition {line.split(':', 1)[1].strip()}"
    raise ValueError(f"{_TABLE} names no edition (a '# Edition:' line)")


#: Keyword -> Table E.1-1 rule.
BASIC_PROFILE: Mapping[str, ProfileRule] = _load_profile()
#: recorded as ``provenance.deidentification.profile_edition``.
PROFILE_EDITION = _edition()
