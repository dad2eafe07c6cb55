"""XML from instrument files, parsed with every expansion trick refused.

OME-XML, OME companion files, Leica SCN and JEOL SightX headers are XML written by
whatever produced the file. The parser here refuses document type declarations outright
(so no internal entities, no billion laughs, no external entities or DTD fetches), caps
nesting depth and input size, and builds an ordinary ``ElementTree`` so callers read it
with the standard API. Element tags come out as ``namespace}local`` (or just ``local``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
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


def parse(text: str | bytes) -> ET.Element:
    """The root element of ``text``; :class:`XmlRefused` or :class:`XmlBroken` otherwise."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    if len(data) > MAX_BYTES:
        raise XmlRefused(f"XML is {len(data)} bytes, over the {MAX_BYTES}-byte limit")
    builder = ET.TreeBuilder()
    depth = 0

    def start(tag: str, attributes: dict[str, str]) -> None:
        nonlocal depth
        depth += 1
        if depth > MAX_DEPTH:
            raise XmlRefused(f"XML is nested deeper than {MAX_DEPTH} levels")
        builder.start(tag, attributes)

    def end(tag: str) -> None:
        nonlocal depth
        depth -= 1
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
    try:
        parser.Parse(data, True)
    # ValueError and LookupError: a declared encoding expat cannot read (UTF-7) or that
    # Python does not know
    except (ExpatError, ValueError, LookupError) as exc:
        raise XmlBroken(f"XML does not parse: {exc}") from exc
    return builder.close()


def local(tag: str) -> str:
    """A tag without its namespace."""
    return tag.rsplit("}", 1)[-1]
