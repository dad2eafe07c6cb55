"""The shape of the source tree.

The package maps ``agent/`` to ``acqharvest``: every source file must be in the installed tree.

The strict editable install (CI's, and the one import-linter reads) holds only the packages
``pyproject.toml`` lists; a folder missing there would be left out of the import contracts
without a word. And no source module grows past about 500 lines unnoticed.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parent.parent
LIMIT = 500
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
