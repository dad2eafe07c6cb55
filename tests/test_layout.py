"""The package maps ``agent/`` to ``acqharvest``: every source file must be in the installed tree.

The strict editable install (CI's, and the one import-linter reads) holds only the packages
``pyproject.toml`` lists; a folder missing there would be left out of the import contracts
without a word.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parent.parent
SETUPTOOLS = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
    "setuptools"
]


def _modules_on_disk() -> set[str]:
    modules = set()
    for package, folder in SETUPTOOLS["package-dir"].items():
        for file in (REPO / folder).rglob("*.py"):
            parts = file.relative_to(REPO / folder).with_suffix("").parts
            if not (file.parent / "__init__.py").exists():
                continue  # data or case folders, not packages
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules.add(".".join((package, *parts)))
    return modules


def test_every_source_module_is_in_the_installed_package() -> None:
    installed = grimp.build_graph("acqharvest").modules
    on_disk = _modules_on_disk()
    assert len(on_disk) > 50
    assert sorted(on_disk - installed) == [], "add their packages to [tool.setuptools] packages"


def test_every_listed_package_is_a_folder() -> None:
    missing = [
        name
        for name in SETUPTOOLS["packages"]
        if not any(
            (REPO / folder / name.removeprefix(package).lstrip(".").replace(".", "/")).is_dir()
            for package, folder in SETUPTOOLS["package-dir"].items()
            if name == package or name.startswith(package + ".")
        )
    ]
    assert missing == []
