"""Who and where: the PIDINST-style instrument block and fields taken from folder conventions.

Owns nothing of the file contents; it turns configuration and relative paths into the
``instrument`` and ``acquisition`` fields of a package.
"""

from __future__ import annotations

import re
from typing import Any

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
