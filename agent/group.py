"""Which settled files form one acquisition: a pure state machine from ProbedFile to Acquisition.

Owns group release rules (quiet window for collecting groups, or as soon as the number of
files the header announced is there; expected companions; timeout). Expected names are
root-relative and normalized here (``sub/../set.ome`` is ``set.ome``); one that climbs out of
the root can never arrive. A group of members with no primary that does not collect
(``BinaryOnly`` OME-TIFFs whose metadata file is not here) is never complete: at its
timeout it is released incomplete, so its files are still packaged and nothing is lost,
unless its acquisition was packaged before: a late file then gives a new package at once.
A tree group (a directory acquisition such as a ``.zarr`` store, see ``Claim.tree``)
collects, waits for its primary as well, and is held while the caller's ``busy`` says a
file under its folder is still on the way (settling, being probed, not yet scanned).
An expected name already packaged under the same key and root (members released at their
timeout before their metadata file arrived) is not missing: the caller's ``harvested``
says which names those are, and the caller lists those files with the acquisition.
No threads, sleeps or I/O: the caller passes ``now`` and the lookups. Not thread-safe: one
owner drives it.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from acqharvest.model import Acquisition, ProbedFile

log = structlog.get_logger(__name__)

#: groups are per watch root, so one acquisition's relative paths share one root.
_GroupId = tuple[Path, str]
#: (root, group key) -> root-relative names of the files already packaged under that key.
Harvested = Callable[[Path, str], Collection[str]]
#: whether a file under this folder is still on its way to the grouper (see Grouper)
Busy = Callable[[Path], bool]


def _none_harvested(root: Path, key: str) -> Collection[str]:
    return ()


def _never_busy(folder: Path) -> bool:
    return False


def missing_names(root: Path, members: Iterable[ProbedFile]) -> set[str]:
    """Names the members expect, root-relative and normalized, that none of them is.

    A name that climbs out of the root can never arrive, so it stays missing.
    """
    members = list(members)
    expected = {posixpath.normpath(name) for m in members for name in m.expects}
    if not expected:
        return expected
    return expected - {m.settled.path.relative_to(root).as_posix() for m in members}


@dataclass(slots=True)
class _Group:
    root: Path
    key: str
    created: float
    last_added: float
    members: dict[Path, ProbedFile] = field(default_factory=dict)
    #: names packaged earlier under this key, as of the last ``Grouper.ready`` that asked
    harvested: frozenset[str] = frozenset()
    #: complete but for files under its tree still on the way, at the last ``ready``
    held: bool = False

    def tree(self) -> Path | None:
        return next((m.tree for m in self.members.values() if m.tree is not None), None)

    def collects(self) -> bool:
        return any(m.collects or m.tree is not None for m in self.members.values())

    def counted_out(self) -> bool:
        """True when the header's expected number of distinct files are all here."""
        expected = [m.expected_instances for m in self.members.values() if m.expected_instances]
        # Members that disagree: trust the largest count, never release early on the smallest.
        return bool(expected) and len(self.members) >= max(expected)

    def waits_for_quiet(self) -> bool:
        return self.collects() and not self.counted_out()

    def needs_primary(self) -> bool:
        """True unless the group has no distinguished primary (a plain collecting group,
        such as a DICOM series)."""
        return not self.collects() or self.tree() is not None

    def headless(self) -> bool:
        """True for members waiting for their primary (OME-TIFF ``BinaryOnly`` files, an
        ``.ibd`` before its imzML, chunks before their store's metadata).

        Not once the acquisition was packaged before: the file is a late one, and its
        package lists the files packaged earlier (the primary among them).
        """
        return (
            self.needs_primary()
            and not self.harvested
            and all(m.role != "primary" for m in self.members.values())
        )

    def missing(self) -> set[str]:
        """Expected root-relative names neither here nor packaged earlier under this key."""
        return missing_names(self.root, self.members.values()) - self.harvested


class Grouper:
    """Collects probed files by group key and releases them as acquisitions."""

    def __init__(
        self,
        quiet_seconds: Callable[[Path], float],
        timeout_seconds: Callable[[Path], float],
        harvested: Harvested = _none_harvested,
        busy: Busy = _never_busy,
    ) -> None:
        """``harvested`` is asked only about groups that miss expected names or their
        primary, ``busy`` only about tree groups otherwise complete, at ``ready``."""
        self._quiet_seconds = quiet_seconds
        self._timeout_seconds = timeout_seconds
        self._harvested = harvested
        self._busy = busy
        self._groups: dict[_GroupId, _Group] = {}
        self._group_of: dict[Path, _GroupId] = {}

    @property
    def pending(self) -> int:
        return len(self._groups)

    def add(self, probed: ProbedFile, now: float) -> None:
        """Add a file to its group; a path added again replaces its earlier member."""
        path = probed.settled.path
        gid = (probed.settled.root, probed.group_key)
        if self._group_of.get(path, gid) != gid:
            # Rewritten so that it now claims another group.
            self.remove(path)
        group = self._groups.get(gid)
        if group is None:
            group = self._groups[gid] = _Group(gid[0], gid[1], created=now, last_added=now)
        group.members[path] = probed
        group.last_added = now
        group.held = False
        self._group_of[path] = gid

    def holds(self, path: Path) -> bool:
        """Whether ``path`` is a member of a pending group."""
        return path in self._group_of

    def remove(self, path: Path) -> None:
        """Drop a file (deleted or renamed away); a group left empty is dropped too."""
        gid = self._group_of.pop(path, None)
        if gid is None:
            return
        group = self._groups[gid]
        del group.members[path]
        if not group.members:
            del self._groups[gid]

    def ready(self, now: float) -> list[Acquisition]:
        """Release every group that is complete, or incomplete past its timeout."""
        released: list[Acquisition] = []
        for gid, group in list(self._groups.items()):
            missing = missing_names(group.root, group.members.values())
            primaryless = all(m.role != "primary" for m in group.members.values())
            if missing or (primaryless and group.needs_primary()):
                # Asked again each time: members released earlier may have been packaged
                # only since (their extraction was under way when this group formed).
                group.harvested = frozenset(self._harvested(group.root, group.key))
                missing -= group.harvested
            quiet = not group.waits_for_quiet() or now - group.last_added >= self._quiet(group)
            tree = group.tree()
            group.held = False
            if quiet and not missing and not group.headless():
                # A tree is whole only once no file under it is still on its way.
                group.held = tree is not None and self._busy(tree)
            if quiet and not missing and not group.headless() and not group.held:
                complete = True
            elif now - group.created >= self._timeout_seconds(group.root):
                complete = False
                log.warning(
                    "acquisition_incomplete",
                    key=group.key,
                    root=str(group.root),
                    missing=sorted(missing),
                    members=len(group.members),
                    primary_missing=group.headless(),
                    files_on_the_way=group.held,
                )
            else:
                continue
            log.debug("acquisition_grouped", key=group.key, members=len(group.members))
            del self._groups[gid]
            for path in group.members:
                del self._group_of[path]
            released.append(_acquisition(group, complete=complete))
        return released

    def next_due(self, now: float) -> float | None:
        """Seconds until the earliest group may be released without another ``add``."""
        if not self._groups:
            return None
        due = min(self._due(group, now) for group in self._groups.values())
        return max(0.0, due - now)

    def _quiet(self, group: _Group) -> float:
        return self._quiet_seconds(group.root)

    def _due(self, group: _Group, now: float) -> float:
        timeout = group.created + self._timeout_seconds(group.root)
        if group.missing() or group.headless() or group.held:
            # Only an add (which the caller follows with ready), the timeout, or (held) a
            # later ready once its files are in can release it.
            return timeout
        if group.waits_for_quiet():
            return min(timeout, group.last_added + self._quiet(group))
        return now


def _acquisition(group: _Group, *, complete: bool) -> Acquisition:
    members = tuple(
        sorted(group.members.values(), key=lambda m: (m.role != "primary", m.settled.path))
    )
    return Acquisition(
        key=group.key,
        # members[0] is the primary when there is one (the same rule as Acquisition.primary).
        adapter=members[0].adapter,
        root=group.root,
        members=members,
        complete=complete,
    )
