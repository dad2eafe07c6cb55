"""An adapter README's field table must be exactly its declared fields, with their sources."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from acqharvest.adapter_api import FieldSpec


def assert_readme_table(fields: Sequence[FieldSpec], readme_path: Path) -> None:
    readme = readme_path.read_text(encoding="utf-8")
    rows = [f"| `{spec.key}` | {spec.source} | {spec.unit or ''} |" for spec in fields]
    table = "\n".join(["| field | source | unit |", "| --- | --- | --- |", *rows])
    assert f"{table}\n\n" in readme, f"regenerate {readme_path.name}'s field table:\n{table}"
    section = readme.split("\n## Fields\n", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([\w.]+)` \|", section, re.M)
    assert sorted(documented) == sorted(spec.key for spec in fields)
