"""``acqharvest doctor`` and ``acqharvest check``: what the daemon needs, tried one check at a
time, each with a verdict and what to do about it.

``diagnose`` yields one ``Finding`` per check: a stable check name, a verdict (``ok``,
``warn`` or ``fail``), a one-line detail and a hint. ``check`` runs the basic checks (the
config, the folders readable, the state dir writable, the adapters, the endpoint's no-store
probe) and prints them as it always did; ``doctor`` adds the rest: how each folder can be
watched (natively, or only by polling and scans on a network share), the inotify watch
budget against the folder tree, free space in the state dir, and this PC's clock against
the endpoint's ``Date``. A warning never fails the command: the daemon works, but
something deserves a look.

Nothing is written: the endpoint gets the authenticated, no-store probe the HTTP contract
defines (never a package), and the folders are only listed.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Literal

from acqharvest.commands import endpoint_label
from acqharvest.deliver import CrateSender, DeliveryConfigError, HttpSender, build_sender
from acqharvest.durable import writable_folder
from acqharvest.identity import identifier_type, is_persistent
from acqharvest.model import Settings, WatchSettings
from acqharvest.people import PeopleError, read_people
from acqharvest.registry import load_registry
from acqharvest.watch import network_filesystem, watch_limit

Verdict = Literal["ok", "warn", "fail"]

#: share of the inotify watch limit above which the budget is a warning
BUDGET_WARN_SHARE = 0.8
#: longest the folder count for the watch budget may walk; beyond it the count is a floor
BUDGET_WALK_SECONDS = 20.0
#: free space in the state dir below which packages can no longer be spooled safely
SPACE_FAIL_BYTES = 16 * 2**20
#: free space below which doctor warns: a long endpoint outage fills the outbox
SPACE_WARN_BYTES = 2**30
SPACE_WARN_SHARE = 0.05
#: difference between this PC's clock and the endpoint's above which doctor warns
CLOCK_WARN_SECONDS = 300.0

_SYSCTL_HINT = (
    "raise the limit: echo fs.inotify.max_user_watches=524288 | sudo tee "
    "/etc/sysctl.d/60-acqharvest.conf && sudo sysctl --system, then restart the service"
)


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's verdict; the field names are the keys of ``doctor --json``."""

    #: what was checked, a stable name: config, instrument_id, watch_folder, watch_mode,
    #: watch_adapters, inotify_budget, state_dir, state_dir_space, adapters, adapter_load,
    #: adapter_reader, people, endpoint_config, endpoint, clock
    check: str
    status: Verdict
    detail: str
    #: what to do; empty when there is nothing to do
    hint: str = ""


def config_failures(messages: Iterable[str]) -> list[Finding]:
    """The findings of a config that did not load: one per problem, naming key and line."""
    return [
        Finding(
            "config",
            "fail",
            message,
            "fix the key on the line named; `acqharvest config schema` describes every key",
        )
        for message in messages
    ]


def diagnose(settings: Settings, *, thorough: bool = True) -> Iterator[Finding]:
    """Every check, in order; ``thorough=False`` is ``acqharvest check``'s basic set."""
    yield Finding("config", "ok", f"config {settings.source} is valid")
    yield from _instrument_id(settings)
    for folder in settings.watch:
        yield from _watch_folder(folder, settings.rescan_seconds, thorough=thorough)
    if thorough:
        limit = watch_limit()
        if limit is not None:  # Linux: elsewhere native watching has no such budget
            yield inotify_budget(settings.watch, limit)
    ok, detail = writable_folder(settings.state_dir)
    yield Finding(
        "state_dir",
        "ok" if ok else "fail",
        f"state dir {settings.state_dir}: {detail}",
        "" if ok else "give the service account write access, or set state_dir elsewhere",
    )
    if thorough:
        yield state_dir_space(settings.state_dir)
    yield from _adapters(settings)
    if settings.people is not None:
        yield _people(settings.people)
    yield from _endpoint(settings, thorough=thorough)


def _instrument_id(settings: Settings) -> Iterator[Finding]:
    """A warning where the instrument's identity falls short of PIDINST (the config is valid)."""
    identifier = settings.instrument.id
    if is_persistent(identifier):
        return
    kind = "a plain URL" if identifier_type(identifier) == "URL" else "a local name"
    yield Finding(
        "instrument_id",
        "warn",
        f"instrument.id {identifier!r} is {kind}, not a persistent identifier",
        "register the instrument (a PIDINST handle or a DataCite DOI) and use that id, so "
        "packages stay findable when names and web sites change (changing the id sends every "
        "acquisition again under new package ids)",
    )


def _people(path: Path) -> Finding:
    try:
        people = read_people(path)
    except PeopleError as error:
        return Finding("people", "fail", f"people: {error}", "fix the row and column named")
    return Finding("people", "ok", f"people file {path}: {len(people.by_username)} people")


def _watch_folder(folder: WatchSettings, rescan: float, *, thorough: bool) -> Iterator[Finding]:
    try:
        with os.scandir(folder.path) as entries:
            next(entries, None)
    except OSError as error:
        hint = (
            "create the folder or correct its path"
            if isinstance(error, FileNotFoundError)
            else "give the service account read access (the daemon never writes there)"
        )
        yield Finding(
            "watch_folder", "fail", f"watch folder {folder.path}: {error.strerror or error}", hint
        )
        return
    yield Finding("watch_folder", "ok", f"watch folder {folder.path} is readable")
    if thorough:
        yield _watch_mode(folder, rescan)


def _watch_mode(folder: WatchSettings, rescan: float) -> Finding:
    if folder.mode == "polling":
        return Finding("watch_mode", "ok", f"watch folder {folder.path}: polled (mode: polling)")
    share = network_filesystem(folder.path)
    if share is None:
        return Finding(
            "watch_mode",
            "ok",
            f"watch folder {folder.path}: watched natively (mode: {folder.mode})",
        )
    return Finding(
        "watch_mode",
        "warn",
        f"watch folder {folder.path} is on a network file system ({share}): native events "
        f"miss files other hosts write there; the reconciliation scan finds them within "
        f"{rescan:g} s",
        "set this folder's mode: polling to find them sooner, or lower rescan_seconds",
    )


def inotify_budget(folders: Sequence[WatchSettings], limit: int) -> Finding:
    """The inotify watches native watching needs (one per folder in each tree) against
    ``limit`` (``fs.inotify.max_user_watches``), which every program of the user shares."""
    native = [folder for folder in folders if folder.mode != "polling"]
    deadline = time.monotonic() + BUDGET_WALK_SECONDS
    needed, complete = 0, True
    for folder in native:
        count, done = count_folders(folder.path, folder.recursive, limit + 1 - needed, deadline)
        needed += count
        complete = complete and done
    amount = f"{needed}" if complete else f"at least {needed}"
    detail = (
        f"{amount} folders to watch natively, {needed / limit:.0%} of the inotify watch "
        f"limit {limit} (fs.inotify.max_user_watches)"
    )
    if needed > limit:
        return Finding(
            "inotify_budget",
            "warn",
            f"{detail}: folders in mode auto are then covered by reconciliation scans only",
            _SYSCTL_HINT,
        )
    if needed > BUDGET_WARN_SHARE * limit:
        return Finding(
            "inotify_budget",
            "warn",
            f"{detail}: little is left for new folders and other programs",
            _SYSCTL_HINT,
        )
    return Finding("inotify_budget", "ok", detail)


def count_folders(root: Path, recursive: bool, cap: int, deadline: float) -> tuple[int, bool]:
    """(folders in the tree at ``root``, whether the count is complete): stops at ``cap``
    folders or at ``deadline`` (``time.monotonic``); links to folders are not followed,
    as the native observer does not follow them."""
    if not recursive:
        return 1, True
    count, stack = 0, [root]
    while stack:
        if count >= cap or time.monotonic() > deadline:
            return count, False
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                count += 1
                stack.extend(
                    Path(entry.path) for entry in entries if entry.is_dir(follow_symlinks=False)
                )
        except OSError:
            continue  # unreadable: the observer cannot watch below it either
    return count, True


def state_dir_space(folder: Path) -> Finding:
    """Free space where the state dir is (or would be created)."""
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    try:
        usage = shutil.disk_usage(existing)
    except OSError as error:
        return Finding("state_dir_space", "fail", f"state dir {folder}: {error}")
    share = usage.free / usage.total if usage.total else 0.0
    detail = f"state dir {folder}: {_size(usage.free)} free ({share:.0%} of {_size(usage.total)})"
    hint = "free space on that disk, or move state_dir to a larger one"
    if usage.free < SPACE_FAIL_BYTES:
        return Finding("state_dir_space", "fail", f"{detail}: packages cannot be spooled", hint)
    if usage.free < SPACE_WARN_BYTES or share < SPACE_WARN_SHARE:
        return Finding(
            "state_dir_space",
            "warn",
            f"{detail}: an endpoint outage could fill it with waiting packages",
            hint,
        )
    return Finding("state_dir_space", "ok", detail)


def _size(count: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


def _adapters(settings: Settings) -> Iterator[Finding]:
    registry = load_registry()
    yield Finding(
        "adapters",
        "ok" if registry.adapters else "fail",
        "adapters loaded: " + (", ".join(registry.adapters) or "none"),
        "" if registry.adapters else "reinstall acqharvest: its built-in adapters are missing",
    )
    for load_error in registry.errors:
        yield Finding(
            "adapter_load",
            "fail",
            f"adapter {load_error.name} failed to load: {load_error.error}",
            f"update or uninstall {load_error.distribution or 'the package providing it'}",
        )
    for name in registry.missing:
        # not a failure: the files are still packaged, with checksums only
        yield Finding(
            "adapter_reader", "warn", str(registry.unavailable(name)), registry.install_line(name)
        )
    for index, folder in enumerate(settings.watch):
        unknown = [name for name in folder.adapters if name not in registry.adapters]
        if unknown:
            yield Finding(
                "watch_adapters",
                "fail",
                f"watch[{index}].adapters names adapters that are not installed: "
                f"{', '.join(unknown)} (installed: {', '.join(registry.adapters) or 'none'})",
                "correct the names, or install the adapters",
            )


def _endpoint(settings: Settings, *, thorough: bool) -> Iterator[Finding]:
    try:
        sender = build_sender(settings.endpoint)
    except DeliveryConfigError as error:
        yield Finding(
            "endpoint_config", "fail", f"endpoint: {error}", "correct the endpoint section"
        )
        return
    try:
        ok, detail = sender.probe()
        yield Finding(
            "endpoint",
            "ok" if ok else "fail",
            f"endpoint {endpoint_label(settings)}: {detail}",
            "" if ok else "fix what the detail names; the probe stores nothing, so run again",
        )
        # no answer, no clock to compare: the endpoint's failure says why
        http = sender.endpoint if isinstance(sender, CrateSender) else sender
        if thorough and isinstance(http, HttpSender) and http.last_answer_date:
            yield clock_skew(*http.last_answer_date)
    finally:
        sender.close()


def clock_skew(header: str | None, local: float) -> Finding:
    """This PC's clock (``local``, when the answer came) against the endpoint's ``Date``."""
    try:
        remote = parsedate_to_datetime(header).timestamp() if header else None
    except (TypeError, ValueError):
        remote = None
    if remote is None:
        return Finding(
            "clock",
            "warn",
            "clock: unknown, the endpoint's answer has "
            + ("no Date header" if header is None else f"an unreadable Date header {header!r}"),
            "compare this PC's clock with a time server (timedatectl; w32tm /query /status)",
        )
    skew = local - remote
    # the Date header has whole seconds: a second of difference is no difference
    detail = (
        f"clock: this PC is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} the endpoint"
    )
    if abs(skew) > CLOCK_WARN_SECONDS:
        return Finding(
            "clock",
            "warn",
            f"{detail}: package timestamps and TLS certificate checks use this clock",
            "set the clock right, and keep it so with NTP (systemd-timesyncd, chrony, w32time)",
        )
    return Finding("clock", "ok", detail)
