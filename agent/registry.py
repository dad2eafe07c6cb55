"""Adapter discovery and claim arbitration.

Loads every ``acqharvest.adapters`` entry point in isolation (a broken third-party adapter
never stops the others), validates its ``info``, and decides which adapter claims a file.

Isolation catches every ``BaseException`` a vendor's import, constructor or ``claim`` raises,
``SystemExit`` from a ``sys.exit()`` at import and SDK errors derived from BaseException
included, except ``KeyboardInterrupt``: a real Ctrl-C arrives as that same exception
wherever the interpreter happens to be, here included, and must stop start-up as the
operator asked. A vendor module that raises KeyboardInterrupt itself is indistinguishable
from that, and stops the program. ``os._exit`` and crashes in native code cannot be caught
in-process at all.

An adapter whose ``info.requires`` names a module that cannot be found (looked up with
``importlib.util.find_spec``, never imported) is loaded but *unavailable*: it still claims
its files from their magic bytes, so they are grouped and packaged with checksums, but its
``extract`` is never called; the package, ``acqharvest adapters`` and ``status`` name the
line that installs the reader (``pip install 'acqharvest[<extra>]'``).

Each entry point is imported and constructed in a thread of its own, for at most
``ACQHARVEST_ADAPTER_LOAD_SECONDS`` (60 s): a vendor import that never returns (a licence
server that does not answer) becomes a load error instead of a worker process that never
starts, which no per-file time budget would notice. The hung thread cannot be stopped and
is left behind. Vendor modules must therefore import outside the main thread (installing
signal handlers at import, for one, fails there: a load error too).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import threading
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

import structlog

from acqharvest.adapter_api import (
    Adapter,
    AdapterInfo,
    Claim,
    FieldSpec,
    FileProbe,
    FormatSpec,
    Reader,
    Stability,
    digests_problem,
    media_types_problem,
)

GROUP = "acqharvest.adapters"
#: comma-separated adapter names to load (debugging); the empty string loads none.
ENV_LOAD = "ACQHARVEST_LOAD_ADAPTERS"
#: seconds one entry point may take to import and construct its adapter
ENV_LOAD_SECONDS = "ACQHARVEST_ADAPTER_LOAD_SECONDS"
DEFAULT_LOAD_SECONDS = 60.0

_log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class LoadError:
    """An entry point that could not be loaded or whose adapter is invalid."""

    name: str
    distribution: str
    error: str


@dataclass(slots=True)
class Registry:
    """The loaded adapters (sorted by name) and the entry points that failed to load."""

    adapters: dict[str, Adapter] = field(default_factory=dict)
    errors: list[LoadError] = field(default_factory=list)
    #: adapter name -> distribution that provides it ("" when unknown).
    distributions: dict[str, str] = field(default_factory=dict)
    #: adapter name -> the modules of its ``requires`` that are not installed: such an
    #: adapter claims files but does not extract them (see :meth:`unavailable`).
    missing: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def unavailable(self, name: str) -> str | None:
        """Why adapter ``name`` cannot read its files here, with the fix; None when it can."""
        modules = self.missing.get(name)
        if not modules:
            return None
        return (
            f"adapter {name} is unavailable: its reader ({', '.join(modules)}) is not "
            f"installed, so its files are packaged with checksums only; install it with: "
            f"{self.install_line(name)}"
        )

    def install_line(self, name: str) -> str:
        """The ``pip install`` line of adapter ``name``'s optional reader."""
        return install_line(self.adapters[name].info, self.distributions.get(name, ""))

    def listing(self) -> list[dict[str, str]]:
        """Rows for the ``acqharvest adapters`` table, loaded adapters first."""
        rows = [
            {
                "name": name,
                "version": adapter.info.version,
                "stability": adapter.info.stability,
                "distribution": self.distributions.get(name, ""),
                "formats": ", ".join(spec.name for spec in adapter.info.formats),
                "status": (
                    f"unavailable: {self.install_line(name)}" if name in self.missing else "loaded"
                ),
            }
            for name, adapter in self.adapters.items()
        ]
        rows.extend(
            {
                "name": error.name,
                "version": "",
                "stability": "",
                "distribution": error.distribution,
                "formats": "",
                "status": f"error: {error.error}",
            }
            for error in self.errors
        )
        return rows

    def digests_for(self, path: Path, allowed: Collection[str] = ()) -> tuple[str, ...]:
        """The extra digests of ``path`` that the adapters allowed for it ask for, sorted.

        Asked before the claim (the file is hashed first, in one pass), so by suffix: every
        adapter's ``info.digests`` counts, whichever then claims the file.
        """
        return tuple(
            sorted(
                {
                    name
                    for adapter_name, adapter in self.adapters.items()
                    if not allowed or adapter_name in allowed
                    for name in adapter.info.digests_for(path)
                }
            )
        )

    def claim(
        self, probe: FileProbe, reader: Reader, allowed: Collection[str] = ()
    ) -> tuple[str, Claim] | None:
        """The winning ``(adapter name, claim)`` for a file, or None when nobody claims it.

        Highest confidence wins; ties go to the adapter first in registry order. An
        adapter whose ``claim`` raises is logged and treated as not claiming.
        """
        best: tuple[str, Claim] | None = None
        for name, adapter in self.adapters.items():
            if allowed and name not in allowed:
                continue
            try:
                claim: object = adapter.claim(probe, reader)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - vendor code may raise anything; others still get asked
                _log.warning(
                    "adapter_claim_failed", adapter=name, path=str(probe.path), error=_describe(exc)
                )
                continue
            if claim is None:
                continue
            if not isinstance(claim, Claim) or not isinstance(claim.group_key, str):
                _log.warning(
                    "adapter_claim_invalid",
                    adapter=name,
                    path=str(probe.path),
                    returned=type(claim).__name__,
                )
                continue
            if best is None or claim.confidence > best[1].confidence:
                best = (name, claim)
        return best


def load_registry(
    enabled: Collection[str] | None = None,
    entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
) -> Registry:
    """Load the adapters named in ``enabled`` (all when None), each in isolation.

    ``entry_points`` replaces discovery (for tests); by default every entry point in the
    ``acqharvest.adapters`` group is considered. ``ACQHARVEST_LOAD_ADAPTERS`` further
    limits which are loaded.
    """
    if entry_points is None:
        entry_points = importlib.metadata.entry_points(group=GROUP)
    wanted = _env_limit()
    seconds = _load_seconds()
    loaded: dict[str, Adapter] = {}
    distributions: dict[str, str] = {}
    missing: dict[str, tuple[str, ...]] = {}
    errors: list[LoadError] = []
    for ep in sorted(entry_points, key=lambda e: e.name):
        if enabled is not None and ep.name not in enabled:
            continue
        if wanted is not None and ep.name not in wanted:
            continue
        distribution = ep.dist.name if ep.dist is not None else ""
        if ep.name in loaded:
            errors.append(
                LoadError(ep.name, distribution, f"duplicate adapter name {ep.name!r}; ignored")
            )
            continue
        try:
            adapter = _load_in_time(ep, seconds)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - a broken adapter must not stop the others loading
            message = _describe(exc)
            _log.error(
                "adapter_load_failed", adapter=ep.name, distribution=distribution, error=message
            )
            errors.append(LoadError(ep.name, distribution, message))
            continue
        if adapter.info.stability != "stable":
            _log.info("adapter_not_stable", adapter=ep.name, stability=adapter.info.stability)
        loaded[ep.name] = adapter
        distributions[ep.name] = distribution
        if absent := missing_modules(adapter.info.requires):
            missing[ep.name] = absent
    return Registry(adapters=loaded, errors=errors, distributions=distributions, missing=missing)


def missing_modules(modules: Iterable[str]) -> tuple[str, ...]:
    """The top-level ``modules`` that cannot be found, without importing any of them.

    Importing an optional reader (numpy and friends behind it) at start-up would cost
    every worker its memory and time whether or not it ever meets the format.
    """
    absent = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a dotted name whose parent is missing, or ""
            found = False
        if not found:
            absent.append(module)
    return tuple(absent)


def install_line(info: AdapterInfo, distribution: str = "") -> str:
    """The command that installs an adapter's optional reader, as the admin types it.

    The extra is the adapter's distribution's (acqharvest's for the built-ins); without
    one, the modules are named as pip knows them at best.
    """
    if info.extra:
        return f"pip install '{distribution or 'acqharvest'}[{info.extra}]'"
    return "pip install " + " ".join(info.requires)


def _describe(exc: BaseException) -> str:
    # SystemExit(None), from a bare sys.exit(), would otherwise read "SystemExit: None".
    detail = "" if isinstance(exc, SystemExit) and exc.code is None else f": {exc}"
    return f"{type(exc).__name__}{detail}"


def _env_limit() -> set[str] | None:
    raw = os.environ.get(ENV_LOAD)
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


def _load_seconds() -> float:
    raw = os.environ.get(ENV_LOAD_SECONDS, "")
    try:
        seconds = float(raw) if raw.strip() else DEFAULT_LOAD_SECONDS
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        _log.warning(
            "adapter_load_seconds_invalid",
            variable=ENV_LOAD_SECONDS,
            value=raw,
            used=DEFAULT_LOAD_SECONDS,
        )
        return DEFAULT_LOAD_SECONDS
    return seconds


def _load_in_time(ep: importlib.metadata.EntryPoint, seconds: float) -> Adapter:
    """``_load_one`` in a thread of its own; a TimeoutError when it is not done in time."""
    outcome: list[Adapter | BaseException] = []

    def load() -> None:
        try:
            outcome.append(_load_one(ep))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, which decides
            outcome.append(exc)

    thread = threading.Thread(target=load, name=f"load-adapter-{ep.name}", daemon=True)
    thread.start()
    thread.join(seconds)
    if not outcome:
        raise TimeoutError(
            f"import or construction still running after {seconds:g} s "
            f"({ENV_LOAD_SECONDS}); left behind"
        )
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def _load_one(ep: importlib.metadata.EntryPoint) -> Adapter:
    factory = ep.load()
    adapter = factory()
    info = getattr(adapter, "info", None)
    if not isinstance(info, AdapterInfo):
        raise TypeError(f"info is {type(info).__name__}, not AdapterInfo")
    if info.name != ep.name:
        raise ValueError(f"info.name {info.name!r} differs from the entry-point name")
    if info.stability not in get_args(Stability):
        raise ValueError(f"stability {info.stability!r} is not one of {get_args(Stability)}")
    if not all(isinstance(spec, FormatSpec) for spec in info.formats):
        raise TypeError("info.formats must hold FormatSpec objects")
    if not all(isinstance(spec, FieldSpec) for spec in info.fields):
        raise TypeError("info.fields must hold FieldSpec objects")
    requires: object = info.requires  # a vendor may pass "czifile" for ("czifile",)
    if not isinstance(requires, tuple) or not all(isinstance(m, str) for m in requires):
        raise TypeError("info.requires must be a tuple of module names")
    if problem := digests_problem(info) or media_types_problem(info):
        raise ValueError(problem)
    if not isinstance(adapter, Adapter):
        raise TypeError("adapter lacks callable claim/extract methods")
    return adapter
