"""Taking removed values out of free text (warnings, vendor descriptions, metadata trees)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any


def redact(texts: Iterable[str], redactions: Mapping[str, str]) -> list[str]:
    """``texts`` with every whole occurrence of a redacted value replaced by its stand-in.

    Whole means not inside a longer word or number (``1.2.3`` stays in ``1.2.3.4``);
    values of one character are left alone, as they occur everywhere by chance.
    """
    texts = list(texts)
    values = sorted((v for v in redactions if len(v) > 1), key=len, reverse=True)
    if not texts or not values:
        return texts
    pattern = re.compile(
        r"(?<![\w.])(?:" + "|".join(re.escape(v) for v in values) + r")(?![\w]|\.\w)"
    )
    return [pattern.sub(lambda match: redactions[match.group(0)], text) for text in texts]


def redact_tree(tree: Any, redactions: Mapping[str, str]) -> Any:
    """``tree`` (JSON-like) with every whole occurrence of a redacted text replaced in its
    strings; a new tree, the given one unchanged."""
    if not redactions:
        return tree
    return _refilled(tree, iter(redact(_strings(tree), redactions)))


def _strings(tree: Any) -> Iterator[str]:
    if isinstance(tree, Mapping):
        for item in tree.values():
            yield from _strings(item)
    elif isinstance(tree, list):
        for item in tree:
            yield from _strings(item)
    elif isinstance(tree, str):
        yield tree


def _refilled(tree: Any, texts: Iterator[str]) -> Any:
    """``tree`` with its strings taken from ``texts``, in the order ``_strings`` gives them."""
    if isinstance(tree, Mapping):
        return {key: _refilled(item, texts) for key, item in tree.items()}
    if isinstance(tree, list):
        return [_refilled(item, texts) for item in tree]
    return next(texts) if isinstance(tree, str) else tree
