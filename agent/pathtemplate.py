"""The ``path_template`` language: folder-naming conventions such as ``{operator}/{project}/**``.

Declared here, below both its users: the settings check a template when the config is
loaded (``template_problem``), and ``identity`` reads fields from a path with it.
"""

from __future__ import annotations

import re
from functools import lru_cache

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: keys of the package's ``acquisition`` block the harvester fills: no field may take them
RESERVED = ("format", "complete", "started", "annotations")


@lru_cache(maxsize=64)
def template_pattern(template: str) -> re.Pattern[str]:
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


def template_problem(template: str) -> str | None:
    """Why a ``path_template`` cannot work, or None when it can."""
    names = template_names(template)
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        return f"each field may appear once; repeated: {', '.join(repeated)}"
    if not names:
        return "names no field; write fields in braces, e.g. {operator}/{project}/**"
    if taken := [name for name in names if name in RESERVED]:
        return f"{', '.join(taken)}: the package's acquisition block has such keys already"
    try:
        template_pattern(template)
    except re.error as error:
        return f"is not a usable pattern: {error}"
    return None


def template_names(template: str) -> tuple[str, ...]:
    """The field names a template defines, in order (for config validation and docs)."""
    return tuple(_PLACEHOLDER.findall(template))
