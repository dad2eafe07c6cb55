"""The shape of the source tree.

The package maps ``agent/`` to ``acqharvest``: every source file must be in the installed tree.

The strict editable install (CI's, and the one import-linter reads) holds only the packages
``pyproject.toml`` lists; a folder missing there would be left out of the import contracts
without a word. And no source module grows past about 500 lines unnoticed.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LIMIT = 500
SETUPTOOLS = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
    "setuptools"
]


def _packages_on_disk() -> set[str]:
    """Every folder with an ``__init__.py`` below the mapped source folders, as a package name."""
    packages = set()
    for package, folder in SETUPTOOLS["package-dir"].items():
        for init in (REPO / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(REPO / folder).parts
            packages.add(".".join((package, *parts)))
    return packages


def test_every_source_package_is_listed_for_the_installed_tree() -> None:
    # compared with pyproject itself, not with an import graph: a default editable install
    # (the README's) finds every folder through its path finder, the strict one only the
    # listed packages, and the contracts read the strict one
    on_disk = _packages_on_disk()
    assert {"acqharvest", "acqharvest.adapters", "acqharvest.adapters.dicom"} <= on_disk
    assert sorted(on_disk - set(SETUPTOOLS["packages"])) == [], (
        "add them to [tool.setuptools] packages"
    )


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


#: modules allowed over the limit, each with the reason the architecture page gives.
LONG_MODULES = {
    "agent/runtime.py": "the daemon's wiring: the event queue, the scan feed, the files in "
    "progress, the delivery thread and the start/stop order need the running daemon; what "
    "could be tested without one moved to pool, decisions, enrich, statedir and commands",
    "agent/settings.py": "every setting declared once, with its type, default, bounds and "
    "description: a declaration table, not logic",
    "agent/outbox.py": "one class, the durable spool; its docstring is the on-disk format and "
    "invariants contract, and its public methods hold the spool's lock: no seam outside the class",
    "agent/adapter_api.py": "the public adapter API, one module vendors read whole; a contract, "
    "docstring-dense by design",
}


def _line_counts() -> dict[str, int]:
    return {
        path.relative_to(REPO).as_posix(): len(path.read_bytes().splitlines())
        for tree in ("agent", "adapters")
        for path in sorted((REPO / tree).rglob("*.py"))
    }


def test_no_source_module_is_over_the_limit_unless_listed_with_a_reason() -> None:
    counts = _line_counts()
    assert "agent/watch.py" in counts, "the source tree was not found"
    over = {name: lines for name, lines in counts.items() if lines > LIMIT}
    unlisted = {name: lines for name, lines in over.items() if name not in LONG_MODULES}
    assert not unlisted, (
        f"over {LIMIT} lines: {unlisted}; split along the module's own sections, or list it "
        "in LONG_MODULES with the reason the architecture page gives"
    )


def test_every_listed_long_module_exists_is_still_long_and_has_a_reason() -> None:
    counts = _line_counts()
    stale = [name for name in LONG_MODULES if counts.get(name, 0) <= LIMIT]
    assert not stale, f"no longer over {LIMIT} lines (or gone): drop from LONG_MODULES: {stale}"
    assert all(reason.strip() for reason in LONG_MODULES.values())
