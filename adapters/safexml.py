"""XML from instrument files, parsed with every expansion trick refused; shared by adapters.

OME-XML, OME companion files, Leica SCN and JEOL SightX headers, CZI metadata segments,
LIF/LOF headers, imzML and OME-Zarr's OME-XML are XML written by whatever produced the
file. The parser here refuses document type declarations outright (so no internal
entities, no billion laughs, no external entities or DTD fetches), caps nesting depth and
input size, and builds an ordinary ``ElementTree`` so callers read it
with the standard API. Element tags come out as ``namespace}local`` (or just ``local``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from pyexpat import ExpatError, ParserCreate
from typing import Any

#: deeper nesting is refused; OME-XML is at most about ten levels deep.
MAX_DEPTH = 64
#: larger documents are not parsed; the biggest real OME-XML seen is a few MiB.
MAX_BYTES = 16 * 1024 * 1024


class XmlRefused(Exception):
    """The XML is hostile (DTD, entities, absurd nesting) or too large to parse."""


class XmlBroken(Exception):
    """The XML is not well-formed."""


class _Stop(Exception):
    """The element ``parse_until`` stops at has started."""


def parse(text: str | bytes) -> ET.Element:
    """The root element of ``text``; :class:`XmlRefused` or :class:`XmlBroken` otherwise."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    if len(data) > MAX_BYTES:
        raise XmlRefused(f"XML is {len(data)} bytes, over the {MAX_BYTES}-byte limit")
    builder = ET.TreeBuilder()
    parser, _ = _parser(builder, None)
    try:
        parser.Parse(data, True)
    # ValueError and LookupError: a declared encoding expat cannot read (UTF-7) or that
    # Python does not know
    except (ExpatError, ValueError, LookupError) as exc:
        raise XmlBroken(f"XML does not parse: {exc}") from exc
    return builder.close()


def parse_until(read: Callable[[int], bytes], stop: str, chunk: int = 64 * 1024) -> ET.Element:
    """The document read from ``read`` up to the start of the first ``stop`` element.

    That element is kept with its attributes but no content, and the elements still open
    are closed there: a header before a long body (an imzML's spectra) is read without
    the body. The whole document is read when ``stop`` never starts; at most
    ``MAX_BYTES`` either way.
    """
    builder = ET.TreeBuilder()
    parser, open_tags = _parser(builder, stop)
    taken = 0
    try:
        while data := read(chunk):
            taken += len(data)
            if taken > MAX_BYTES:
                raise XmlRefused(f"XML header over the {MAX_BYTES}-byte limit")
            parser.Parse(data, False)
        parser.Parse(b"", True)
    except _Stop:
        for tag in reversed(open_tags):
            builder.end(tag)
    except (ExpatError, ValueError, LookupError) as exc:
        raise XmlBroken(f"XML does not parse: {exc}") from exc
    return builder.close()


def _parser(builder: ET.TreeBuilder, stop: str | None) -> tuple[Any, list[str]]:
    """An expat parser feeding ``builder``, hostile constructs refused; its open elements.

    With ``stop``, the start of an element of that local name raises ``_Stop`` once the
    element is built.
    """
    open_tags: list[str] = []

    def start(tag: str, attributes: dict[str, str]) -> None:
        open_tags.append(tag)
        if len(open_tags) > MAX_DEPTH:
            raise XmlRefused(f"XML is nested deeper than {MAX_DEPTH} levels")
        builder.start(tag, attributes)
        if stop is not None and local(tag) == stop:
            raise _Stop

    def end(tag: str) -> None:
        open_tags.pop()
        builder.end(tag)

    def refuse_doctype(*_: object) -> Any:
        raise XmlRefused("XML has a document type declaration (entities are refused)")

    parser = ParserCreate(namespace_separator="}")
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    parser.StartDoctypeDeclHandler = refuse_doctype
    parser.EntityDeclHandler = refuse_doctype
    parser.ExternalEntityRefHandler = refuse_doctype
    return parser, open_tags


def local(tag: str) -> str:
    """A tag without its namespace."""
    return tag.rsplit("}", 1)[-1]


def child(element: ET.Element | None, name: str) -> ET.Element | None:
    """The first child of ``element`` whose local name is ``name`` (any namespace), if any."""
    if element is None:
        return None
    return next((c for c in element if local(c.tag) == name), None)


def text(value: str | None) -> str | None:
    """An element's text stripped, or None when there is none."""
    return value.strip() if value and value.strip() else None


def number(value: str | None) -> float | None:
    """An element's text as a finite number, or None (absent, not a number, NaN or infinite)."""
    try:
        found = float(value) if value is not None else None
    except ValueError:
        return None
    if found is None or found != found or abs(found) == float("inf"):
        return None
    return found
