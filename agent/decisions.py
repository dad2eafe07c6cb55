"""What becomes of an acquisition around its extraction: decisions, not actions.

The harvest loop (``runtime.Daemon``) reads the world (the registry, the files as they
are now) and acts (records, logs, regroups, spools); the choices in between are here,
as functions of what it read, so each can be tested with plain values:

- ``with_earlier_members``, before extraction: a group that grows after it was packaged
  (a late DICOM instance, an OME-TIFF companion arriving after its members timed out)
  lists the unchanged files packaged earlier under its key too, and is not complete
  when an expected file packaged earlier changed or went since.
- ``after_extraction``, once a worker returns: ``SettleAgain`` when a member changed
  since it settled (the extraction read a version that no longer exists: a failure may
  only mean the writer was not done), else ``Fail`` for a failure, else ``Build``.
- ``failed``: which members a failure fails for good. Only the version of the file the
  failure names; the others still in progress are grouped again at once, so the failed
  file, once rewritten, rejoins them instead of being packaged apart. A failure naming
  none of the members is the acquisition's own: every member fails.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from acqharvest import logs
from acqharvest.group import missing_names
from acqharvest.model import (
    Acquisition,
    Extraction,
    ExtractionFailure,
    FileRefused,
    FileSeen,
    FileSettled,
    ProbedFile,
)
from acqharvest.state import HarvestedFile

log = logs.get_logger("acqharvest.decisions")


@dataclass(frozen=True, slots=True)
class SettleAgain:
    """Members changed (or refused) since they settled: neither package nor fail."""

    #: the members that changed, by path
    changed: tuple[Path, ...]


@dataclass(frozen=True, slots=True)
class Fail:
    """Record ``failed`` as failed for good; group ``regroup`` again at once."""

    failure: ExtractionFailure
    failed: tuple[ProbedFile, ...]
    regroup: tuple[ProbedFile, ...]


@dataclass(frozen=True, slots=True)
class Build:
    """Package the extraction."""

    extraction: Extraction


Decision = SettleAgain | Fail | Build


def after_extraction(
    outcome: Extraction | ExtractionFailure,
    now: Sequence[FileSeen | FileRefused | None],
    in_progress: Container[Path],
) -> Decision:
    """What to do with a worker's outcome, given its members as they are ``now``.

    ``now`` holds each member examined again, in member order (None: deleted since, which
    is no change: what was read was complete by the settle rules). A member refused now
    (its folder became a link leading out of the watch folder) counts as changed.
    """
    members = outcome.acquisition.members
    changed = tuple(
        member.settled.path
        for member, seen in zip(members, now, strict=True)
        if isinstance(seen, FileRefused)
        or (
            seen is not None
            and (seen.size, seen.mtime_ns, seen.file_id)
            != (member.settled.size, member.settled.mtime_ns, member.settled.file_id)
        )
    )
    if changed:
        return SettleAgain(changed)
    if isinstance(outcome, ExtractionFailure):
        return failed(outcome, in_progress)
    return Build(outcome)


def failed(failure: ExtractionFailure, in_progress: Container[Path]) -> Fail:
    """Which members ``failure`` fails for good, and which are grouped again at once.

    Earlier members merged in from the registry (no longer in progress) are neither: the
    next package of the key lists them again.
    """
    members = failure.acquisition.members
    named = any(member.settled.path == failure.path for member in members)
    return Fail(
        failure,
        failed=tuple(m for m in members if not named or m.settled.path == failure.path),
        regroup=tuple(
            m
            for m in members
            if named and m.settled.path != failure.path and m.settled.path in in_progress
        ),
    )


def with_earlier_members(
    acquisition: Acquisition,
    earlier: Iterable[HarvestedFile],
    current: Callable[[Path, Path], FileSeen | None],
) -> Acquisition:
    """A group that grows after it was packaged lists every file, earlier ones included.

    A late DICOM instance, or an OME-TIFF metadata file arriving after its members were
    packaged at their timeout: the unchanged files packaged under the key are listed.
    """
    present = {member.settled.path for member in acquisition.members}
    extra: list[ProbedFile] = []
    for record in earlier:
        if record.path in present or record.root != acquisition.root:
            continue
        seen = current(record.path, record.root)
        if seen is None or (seen.size, seen.mtime_ns) != (record.size, record.mtime_ns):
            continue
        settled = FileSettled(
            record.path, record.root, record.size, record.mtime_ns, record.file_id
        )
        template = acquisition.members[0]
        extra.append(
            ProbedFile(
                settled,
                record.sha256,
                template.adapter,
                acquisition.key,
                role="member",
                collects=template.collects,
            )
        )
    members = acquisition.members
    if extra:
        members = tuple(sorted((*members, *extra), key=lambda m: m.settled.path))
    # The grouper counted expected files packaged earlier as present; one changed or
    # gone since is not listed, and the acquisition is then not complete.
    missing = missing_names(acquisition.root, members)
    complete = acquisition.complete and not missing
    if acquisition.complete and missing:
        log.warning(
            "acquisition_incomplete",
            key=acquisition.key,
            root=str(acquisition.root),
            missing=sorted(missing),
            reason="packaged earlier, changed or deleted since",
        )
    if not extra and complete == acquisition.complete:
        return acquisition
    return Acquisition(acquisition.key, acquisition.adapter, acquisition.root, members, complete)
