"""The pytest plugin acqharvest registers (entry point ``pytest11: acqharvest``).

Installing acqharvest is enough for a vendor repository to get it; it only adds options:

``--acqharvest-regenerate`` (or ``ACQHARVEST_REGENERATE=1``)
    write every ``<case>.expected.json`` from what the adapter extracts now, instead of
    comparing against it. Each golden written is reported as a skip and the run ends
    failed ("regenerated N golden(s)..."), so a flag left set in CI never passes silently.
    Review the diff, then run again without the flag.
``--acqharvest-corpus PATH`` (or ``ACQHARVEST_CORPUS``)
    where corpus-relative sample paths resolve, for adapters whose ``info.samples`` name
    corpus files (the built-in ones do); used by the cross-claim checks.

It also ends every run by listing the conformance classes that waived a check
(``header_lies_waiver``) with their reasons, so an opt-out is never silent.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

REGENERATE_ENV = "ACQHARVEST_REGENERATE"
CORPUS_ENV = "ACQHARVEST_CORPUS"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("acqharvest", "acqharvest adapter conformance")
    group.addoption(
        "--acqharvest-regenerate",
        action="store_true",
        dest="acqharvest_regenerate",
        default=False,
        help="write golden <case>.expected.json files instead of comparing against them",
    )
    group.addoption(
        "--acqharvest-corpus",
        dest="acqharvest_corpus",
        default=None,
        metavar="PATH",
        help="folder that corpus-relative adapter samples resolve against",
    )


def regenerating(config: pytest.Config) -> bool:
    """True when goldens are to be written rather than compared."""
    if os.environ.get(REGENERATE_ENV, "") not in ("", "0"):
        return True
    return bool(config.getoption("acqharvest_regenerate", default=False))


def corpus_root(config: pytest.Config) -> Path | None:
    """The corpus folder given by option or environment, if any."""
    given = config.getoption("acqharvest_corpus", default=None) or os.environ.get(CORPUS_ENV)
    return Path(given) if given else None


_REGENERATED = pytest.StashKey[list[Path]]()
_WAIVERS = pytest.StashKey[dict[str, str]]()


def record_regenerated(config: pytest.Config, path: Path) -> None:
    """Note a golden written in this run (reported, and failing the run, at its end)."""
    config.stash.setdefault(_REGENERATED, []).append(path)


def record_waiver(config: pytest.Config, owner: str, reason: str) -> None:
    """Note a check a conformance class opted out of, to be listed at the end of the run."""
    config.stash.setdefault(_WAIVERS, {})[owner] = reason


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if session.config.stash.get(_REGENERATED, []) and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    for owner, reason in sorted(config.stash.get(_WAIVERS, {}).items()):
        terminalreporter.write_line(
            f"acqharvest: {owner} waives the header-lie checks: {reason}", yellow=True
        )
    written = config.stash.get(_REGENERATED, [])
    if written:
        terminalreporter.write_line(
            f"acqharvest: regenerated {len(written)} golden(s); review the diff and re-run "
            f"without --acqharvest-regenerate (or {REGENERATE_ENV}) to check them",
            yellow=True,
        )
