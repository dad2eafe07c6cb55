"""Taking removed values out of free text (warnings, vendor descriptions)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping


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
