"""Who and where: the PIDINST-style instrument block and fields taken from folder conventions.

Owns nothing of the file contents; it turns configuration and relative paths into the
``instrument`` and ``acquisition`` fields of a package.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from acqharvest.model import InstrumentSettings

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def identifier_type(identifier: str) -> str:
    """PIDINST ``identifierType`` guessed from the shape of the configured id."""
    lowered = identifier.lower()
    if lowered.startswith(("https://doi.org/", "http://doi.org/", "doi:")) or re.match(
        r"^10\.\d{4,9}/", identifier
    ):
        return "DOI"
    if lowered.startswith(("https://hdl.handle.net/", "http://hdl.handle.net/", "hdl:")):
        return "Handle"
    if lowered.startswith(("http://", "https://")):
        return "URL"
    if lowered.startswith("urn:"):
        return "URN"
    return "local"


def instrument_block(instrument: InstrumentSettings) -> dict[str, Any]:
    """The package's ``instrument`` object: configured identity, empty values left out."""
    block: dict[str, Any] = {
        "id": instrument.id,
        "id_type": identifier_type(instrument.id),
    }
    for key in ("name", "manufacturer", "model", "serial_number", "type", "owner"):
        value = getattr(instrument, key)
        if value:
            block[key] = value
    return block


@lru_cache(maxsize=64)
def _template_pattern(template: str) -> re.Pattern[str]:
    parts: list[str] = []
    for segment in template.strip("/").split("/"):
        if segment == "**":
            parts.append("(?:.*)")
            continue
        pieces: list[str] = []
        position = 0
        for match in _PLACEHOLDER.finditer(segment):
            pieces.append(_glob_to_regex(segment[position : match.start()]))
            pieces.append(f"(?P<{match.group(1)}>[^/]+?)")
            position = match.end()
        pieces.append(_glob_to_regex(segment[position:]))
        parts.append("".join(pieces))
    # "**" may stand for no folder at all, at the end ("a/**") and at the start ("**/a").
    pattern = "/".join(parts).replace("/(?:.*)", "(?:/.*)?")
    if pattern.startswith("(?:.*)/"):
        pattern = "(?:.*/)?" + pattern[len("(?:.*)/") :]
    return re.compile(pattern)


def _glob_to_regex(text: str) -> str:
    return "".join("[^/]*" if char == "*" else re.escape(char) for char in text)


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
    match = _template_pattern(template).fullmatch(folder)
    if match is None:
        return {}
    return {name: value for name, value in match.groupdict().items() if value}


def template_problem(template: str) -> str | None:
    """Why a ``path_template`` cannot work, or None when it can."""
    names = template_names(template)
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        return f"each field may appear once; repeated: {', '.join(repeated)}"
    if not names:
        return "names no field; write fields in braces, e.g. {operator}/{project}/**"
    try:
        _template_pattern(template)
    except re.error as error:
        return f"is not a usable pattern: {error}"
    return None


def template_names(template: str) -> tuple[str, ...]:
    """The field names a template defines, in order (for config validation and docs)."""
    return tuple(_PLACEHOLDER.findall(template))
