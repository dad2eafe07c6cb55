"""Group state machine with an injected clock."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest

from acqharvest.group import Grouper, missing_names
from acqharvest.model import Acquisition, FileSettled, ProbedFile

ROOT = Path("/data/instrument")
QUIET = 30.0
TIMEOUT = 3600.0
T0 = 1_000_000.0


def probed(
    name: str,
    key: str,
    *,
    adapter: str | None = "dicom",
    role: Literal["primary", "member", "sidecar"] = "primary",
    expects: tuple[str, ...] = (),
    collects: bool = False,
    expected_instances: int | None = None,
    size: int = 100,
    root: Path = ROOT,
    tree: Path | None = None,
) -> ProbedFile:
    settled = FileSettled(
        path=root / name, root=root, size=size, mtime_ns=1, file_id=f"1:{hash(name)}"
    )
    return ProbedFile(
        settled=settled,
        sha256="0" * 64,
        adapter=adapter,
        group_key=key,
        role=role,
        expects=expects,
        collects=collects,
        expected_instances=expected_instances,
        tree=tree,
    )


@pytest.fixture
def grouper() -> Grouper:
    return Grouper(lambda root: QUIET, lambda root: TIMEOUT)


def test_single_file_group_is_released_immediately(grouper: Grouper) -> None:
    member = probed("img.tif", "tiff:img", adapter="tiff")
    grouper.add(member, T0)
    assert grouper.next_due(T0) == 0.0
    [acq] = grouper.ready(T0)
    assert (acq.key, acq.adapter, acq.root, acq.members, acq.complete) == (
        "tiff:img",
        "tiff",
        ROOT,
        (member,),
        True,
    )
    assert grouper.pending == 0
    assert grouper.ready(T0 + 1) == []
    assert grouper.next_due(T0 + 1) is None


def test_collecting_group_waits_for_quiet_window(grouper: Grouper) -> None:
    key = "dicom:1.2.3"
    names = [f"series/IM{i:04d}.dcm" for i in (4, 2, 0, 3, 1)]
    for step, name in enumerate(names):
        now = T0 + step * 10
        grouper.add(probed(name, key, role="member", collects=True), now)
        assert grouper.ready(now) == []
        assert grouper.ready(now + QUIET - 0.1) == []
    last = T0 + 40
    assert grouper.pending == 1
    assert grouper.next_due(last) == pytest.approx(QUIET)
    [acq] = grouper.ready(last + QUIET)
    assert acq.complete
    assert [m.settled.path.name for m in acq.members] == [f"IM{i:04d}.dcm" for i in range(5)]
    assert grouper.pending == 0


def series_file(name: str, expected: int | None, key: str = "dicom:1.2.3") -> ProbedFile:
    return probed(name, key, role="member", collects=True, expected_instances=expected)


def test_series_is_released_as_soon_as_the_announced_count_is_there(grouper: Grouper) -> None:
    grouper.add(series_file("IM1.dcm", 3), T0)
    grouper.add(series_file("IM2.dcm", 3), T0 + 1)
    grouper.add(series_file("IM2.dcm", 3), T0 + 2)  # the same file again is not a third
    assert grouper.ready(T0 + 2) == []
    assert grouper.next_due(T0 + 2) == pytest.approx(QUIET)
    grouper.add(series_file("IM3.dcm", 3), T0 + 3)
    assert grouper.next_due(T0 + 3) == 0.0
    [acq] = grouper.ready(T0 + 3)
    assert acq.complete
    assert [m.settled.path.name for m in acq.members] == ["IM1.dcm", "IM2.dcm", "IM3.dcm"]


def test_short_series_falls_back_to_the_quiet_window(grouper: Grouper) -> None:
    grouper.add(series_file("IM1.dcm", 5), T0)
    grouper.add(series_file("IM2.dcm", 5), T0 + 1)
    assert grouper.ready(T0 + QUIET) == []
    [acq] = grouper.ready(T0 + 1 + QUIET)
    assert acq.complete
    assert len(acq.members) == 2


def test_members_that_disagree_wait_for_the_largest_count(grouper: Grouper) -> None:
    grouper.add(series_file("IM1.dcm", 2), T0)
    grouper.add(series_file("IM2.dcm", None), T0)
    grouper.add(series_file("IM3.dcm", 4), T0)
    assert grouper.ready(T0) == []  # three files: two said 2, but one says 4
    grouper.add(series_file("IM4.dcm", 4), T0 + 1)
    [acq] = grouper.ready(T0 + 1)
    assert len(acq.members) == 4


def test_members_are_sorted_primary_first(grouper: Grouper) -> None:
    grouper.add(probed("a_info.txt", "mrc:x", adapter=None, role="sidecar"), T0)
    grouper.add(probed("b.mrc", "mrc:x", adapter="mrc", collects=True), T0)
    grouper.add(probed("a_1.mrc", "mrc:x", adapter="mrc", role="member"), T0)
    [acq] = grouper.ready(T0 + QUIET)
    assert [m.settled.path.name for m in acq.members] == ["b.mrc", "a_1.mrc", "a_info.txt"]
    assert acq.adapter == "mrc"
    assert acq.primary.settled.path.name == "b.mrc"


def test_expected_companion_arrives(grouper: Grouper) -> None:
    grouper.add(probed("run/a.emi", "tia:a", adapter="tia", expects=("run/a_1.ser",)), T0)
    assert grouper.ready(T0 + 100) == []
    # Only the timeout can release it without an add: no busy loop on the quiet window.
    assert grouper.next_due(T0 + 100) == pytest.approx(TIMEOUT - 100)
    grouper.add(probed("run/a_1.ser", "tia:a", adapter="tia", role="member"), T0 + 200)
    [acq] = grouper.ready(T0 + 200)
    assert acq.complete
    assert [m.settled.path.name for m in acq.members] == ["a.emi", "a_1.ser"]


def test_expects_not_met_times_out_incomplete(grouper: Grouper) -> None:
    grouper.add(probed("a.imzML", "imzml:u", adapter="imzml", expects=("a.ibd",)), T0)
    assert grouper.ready(T0 + TIMEOUT - 1) == []
    assert grouper.pending == 1
    [acq] = grouper.ready(T0 + TIMEOUT)
    assert not acq.complete
    assert [m.settled.path.name for m in acq.members] == ["a.imzML"]
    assert grouper.pending == 0


def test_collecting_group_that_never_goes_quiet_times_out(grouper: Grouper) -> None:
    now = T0
    released: list[Acquisition] = []
    while not released:
        grouper.add(probed(f"IM{int(now - T0)}.dcm", "dicom:busy", collects=True), now)
        released = grouper.ready(now)
        now += QUIET / 2
    [acq] = released
    assert not acq.complete
    assert now - QUIET / 2 - T0 >= TIMEOUT
    assert len(acq.members) == int(TIMEOUT / (QUIET / 2)) + 1


def test_re_add_replaces_the_earlier_member(grouper: Grouper) -> None:
    grouper.add(probed("IM1.dcm", "dicom:s", collects=True, size=10), T0)
    grouper.add(probed("IM1.dcm", "dicom:s", collects=True, size=20), T0 + 5)
    assert grouper.ready(T0 + QUIET) == []  # the re-add counts as activity
    [acq] = grouper.ready(T0 + 5 + QUIET)
    assert [m.settled.size for m in acq.members] == [20]


def test_re_add_under_another_key_moves_the_file(grouper: Grouper) -> None:
    grouper.add(probed("IM1.dcm", "dicom:old", collects=True), T0)
    grouper.add(probed("IM2.dcm", "dicom:old", collects=True), T0)
    grouper.add(probed("IM1.dcm", "dicom:new", collects=True), T0 + 1)
    released = grouper.ready(T0 + 1 + QUIET)
    assert {a.key: [m.settled.path.name for m in a.members] for a in released} == {
        "dicom:old": ["IM2.dcm"],
        "dicom:new": ["IM1.dcm"],
    }


def test_remove(grouper: Grouper) -> None:
    grouper.add(probed("IM1.dcm", "dicom:s", collects=True), T0)
    grouper.add(probed("IM2.dcm", "dicom:s", collects=True), T0)
    grouper.remove(ROOT / "IM1.dcm")
    grouper.remove(ROOT / "unknown.dcm")
    [acq] = grouper.ready(T0 + QUIET)
    assert [m.settled.path.name for m in acq.members] == ["IM2.dcm"]


def test_removing_the_last_member_drops_the_group(grouper: Grouper) -> None:
    grouper.add(probed("a.imzML", "imzml:u", expects=("a.ibd",)), T0)
    grouper.remove(ROOT / "a.imzML")
    assert grouper.pending == 0
    assert grouper.ready(T0 + TIMEOUT) == []
    assert grouper.next_due(T0) is None


def test_same_key_under_two_roots_is_two_acquisitions(grouper: Grouper) -> None:
    other = Path("/data/other")
    grouper.add(probed("IM1.dcm", "dicom:s"), T0)
    grouper.add(probed("IM1.dcm", "dicom:s", root=other), T0)
    released = grouper.ready(T0)
    assert sorted(a.root for a in released) == sorted([ROOT, other])


def test_quiet_and_timeout_are_per_root() -> None:
    fast = Path("/data/fast")
    grouper = Grouper(
        lambda root: 1.0 if root == fast else QUIET,
        lambda root: 5.0 if root == fast else TIMEOUT,
    )
    grouper.add(probed("IM1.dcm", "dicom:a", collects=True, root=fast), T0)
    grouper.add(probed("IM1.dcm", "dicom:b", collects=True), T0)
    grouper.add(probed("x.imzML", "imzml:c", expects=("x.ibd",), root=fast), T0)
    assert grouper.next_due(T0) == pytest.approx(1.0)
    assert [a.key for a in grouper.ready(T0 + 1)] == ["dicom:a"]
    assert [(a.key, a.complete) for a in grouper.ready(T0 + 5)] == [("imzml:c", False)]
    assert [a.key for a in grouper.ready(T0 + QUIET)] == ["dicom:b"]


def test_expected_names_that_climb_are_resolved_against_the_root(grouper: Grouper) -> None:
    # A member in run/sub names its metadata file ../set.companion.ome: run/set.companion.ome.
    member = probed(
        "run/sub/m1.ome.tif", "tiff:set", role="member", expects=("run/sub/../set.companion.ome",)
    )
    grouper.add(member, T0)
    assert grouper.ready(T0 + 1) == []
    grouper.add(probed("run/set.companion.ome", "tiff:set", adapter="tiff"), T0 + 2)
    [acq] = grouper.ready(T0 + 2)
    assert acq.complete
    assert acq.primary.settled.path.name == "set.companion.ome"


def test_members_without_their_primary_are_released_incomplete_at_the_timeout(
    grouper: Grouper,
) -> None:
    # BinaryOnly members whose metadata file lies outside the watch root, or that name none
    # the grouper can wait for: never complete, never lost.
    grouper.add(probed("m1.ome.tif", "tiff:x", role="member", expects=("../x.ome",)), T0)
    grouper.add(probed("m2.ome.tif", "tiff:x", role="member"), T0)
    assert grouper.ready(T0 + TIMEOUT - 1) == []
    assert grouper.next_due(T0) == pytest.approx(TIMEOUT)
    [acq] = grouper.ready(T0 + TIMEOUT)
    assert not acq.complete
    assert [m.settled.path.name for m in acq.members] == ["m1.ome.tif", "m2.ome.tif"]
    # members alone, expecting nothing: still waiting for a primary
    grouper.add(probed("m3.ome.tif", "tiff:y", role="member"), T0)
    assert grouper.ready(T0 + 1) == []
    [alone] = grouper.ready(T0 + TIMEOUT)
    assert not alone.complete


def test_expected_files_packaged_earlier_under_the_key_are_not_missing() -> None:
    # BinaryOnly members were packaged incomplete at their timeout; their companion then
    # arrives in a group of its own under the same key, and is complete at once.
    planes = tuple(f"run/m{z}.ome.tif" for z in (1, 2, 3))
    packaged: dict[tuple[Path, str], list[str]] = {}
    asked: list[tuple[Path, str]] = []

    def harvested(root: Path, key: str) -> list[str]:
        asked.append((root, key))
        return packaged.get((root, key), [])

    grouper = Grouper(lambda root: QUIET, lambda root: TIMEOUT, harvested)
    for plane in planes:
        grouper.add(probed(plane, "tiff:set", role="member", expects=("run/set.ome",)), T0)
    [members] = grouper.ready(T0 + TIMEOUT)
    assert not members.complete
    packaged[(ROOT, "tiff:set")] = list(planes)
    packaged[(Path("/data/other"), "tiff:set")] = ["run/m4.ome.tif"]  # another root: no help

    companion = probed("run/set.ome", "tiff:set", adapter="tiff", expects=planes)
    grouper.add(companion, T0 + 2 * TIMEOUT)
    [acq] = grouper.ready(T0 + 2 * TIMEOUT)
    assert acq.complete
    assert acq.members == (companion,)  # the caller lists the files packaged earlier

    # one plane never packaged: still missing, released incomplete only at the timeout
    grouper.add(probed("run/set.ome", "tiff:set", expects=(*planes, "run/m4.ome.tif")), T0)
    assert grouper.ready(T0 + 1) == []
    assert grouper.next_due(T0 + 1) == pytest.approx(TIMEOUT - 1)
    [late] = grouper.ready(T0 + TIMEOUT)
    assert not late.complete
    # only groups missing expected names are looked up, and only in their own root
    assert set(asked) == {(ROOT, "tiff:set")}
    grouper.add(probed("single.tif", "tiff:single", adapter="tiff"), T0)
    grouper.ready(T0)
    assert set(asked) == {(ROOT, "tiff:set")}


def test_files_packaged_earlier_are_looked_up_again_until_they_are_there() -> None:
    # The members' extraction was still under way when the companion's group formed.
    packaged: list[str] = []
    grouper = Grouper(lambda root: QUIET, lambda root: TIMEOUT, lambda root, key: packaged)
    grouper.add(probed("set.ome", "tiff:set", expects=("m1.ome.tif",)), T0)
    assert grouper.ready(T0 + 1) == []
    packaged.append("m1.ome.tif")
    [acq] = grouper.ready(T0 + 2)
    assert acq.complete


def test_missing_names_are_root_relative_and_normalized() -> None:
    members = [
        probed("run/sub/m1.ome.tif", "k", role="member", expects=("run/sub/../set.ome",)),
        probed("run/set.ome", "k", expects=("run/sub/m1.ome.tif", "run/sub/m2.ome.tif")),
    ]
    assert missing_names(ROOT, members) == {"run/sub/m2.ome.tif"}
    assert missing_names(ROOT, members[:1]) == {"run/set.ome"}
    assert missing_names(ROOT, [probed("a.tif", "k")]) == set()


STORE = ROOT / "run/plate.zarr"


def chunk(name: str, role: Literal["primary", "member"] = "member") -> ProbedFile:
    return probed(f"run/plate.zarr/{name}", "zarr:plate", adapter="zarr", role=role, tree=STORE)


def test_a_tree_of_chunks_waits_for_its_metadata_past_the_quiet_window() -> None:
    busy: set[Path] = set()
    grouper = Grouper(lambda root: QUIET, lambda root: TIMEOUT, busy=lambda f: f in busy)
    grouper.add(chunk("0/0/0"), T0)
    grouper.add(chunk("0/0/1"), T0 + 1)
    # chunks alone never form a package, however long they are quiet
    assert grouper.ready(T0 + 10 * QUIET) == []
    assert grouper.next_due(T0 + 10 * QUIET) == pytest.approx(TIMEOUT - 10 * QUIET)
    grouper.add(chunk(".zattrs", role="primary"), T0 + 20 * QUIET)
    assert grouper.ready(T0 + 21 * QUIET - 1) == []  # the tree collects: quiet window first
    assert grouper.next_due(T0 + 20 * QUIET) == pytest.approx(QUIET)
    # a file under the store still settling holds the whole tree back, without a busy loop
    busy.add(STORE)
    assert grouper.ready(T0 + 21 * QUIET) == []
    assert grouper.next_due(T0 + 21 * QUIET) == pytest.approx(TIMEOUT - 21 * QUIET)
    busy.clear()
    [acq] = grouper.ready(T0 + 21 * QUIET + 1)
    assert acq.complete
    assert [m.settled.path.relative_to(STORE).as_posix() for m in acq.members] == [
        ".zattrs",
        "0/0/0",
        "0/0/1",
    ]


def test_a_tree_never_complete_is_released_whole_at_the_timeout() -> None:
    grouper = Grouper(lambda root: QUIET, lambda root: TIMEOUT, busy=lambda f: True)
    grouper.add(chunk(".zattrs", role="primary"), T0)
    grouper.add(chunk("0/0/0"), T0)
    assert grouper.ready(T0 + TIMEOUT - 1) == []
    [acq] = grouper.ready(T0 + TIMEOUT)
    assert not acq.complete
    assert len(acq.members) == 2


def test_a_late_file_of_a_packaged_tree_or_pair_is_packaged_without_its_primary() -> None:
    packaged: dict[str, list[str]] = {}
    grouper = Grouper(
        lambda root: QUIET, lambda root: TIMEOUT, lambda root, key: packaged.get(key, [])
    )
    grouper.add(chunk("0/0/9"), T0)
    assert grouper.ready(T0 + QUIET) == []  # nothing packaged yet: waits for the metadata
    packaged["zarr:plate"] = ["run/plate.zarr/.zattrs", "run/plate.zarr/0/0/0"]
    [late] = grouper.ready(T0 + QUIET + 1)
    assert late.complete
    assert [m.settled.path.name for m in late.members] == ["9"]
    # an .ibd rewritten after its pair was packaged: a new package at once
    grouper.add(probed("run/a.ibd", "imzml:u", adapter="imzml", role="member"), T0)
    assert grouper.ready(T0) == []
    packaged["imzml:u"] = ["run/a.imzML", "run/a.ibd"]
    assert len(grouper.ready(T0 + 1)) == 1
    # a DICOM series has no primary to wait for, and its key is never looked up for one
    packaged.clear()
    grouper.add(probed("s/1.dcm", "dicom:s", role="member", collects=True), T0)
    assert len(grouper.ready(T0 + QUIET)) == 1


def test_a_pair_is_complete_only_with_both_members_in_either_order(grouper: Grouper) -> None:
    ibd = probed("run/a.ibd", "imzml:u", adapter="imzml", role="member")
    imzml = probed("run/a.imzML", "imzml:u", adapter="imzml", expects=("run/a.ibd",))
    grouper.add(ibd, T0)
    assert grouper.ready(T0 + QUIET) == []
    grouper.add(imzml, T0 + QUIET)
    [acq] = grouper.ready(T0 + QUIET)
    assert acq.complete
    assert acq.members == (imzml, ibd)
    grouper.add(imzml, T0)
    assert grouper.ready(T0 + QUIET) == []
    assert grouper.next_due(T0 + QUIET) == pytest.approx(TIMEOUT - QUIET)
    grouper.add(ibd, T0 + QUIET)
    [again] = grouper.ready(T0 + QUIET)
    assert again.complete
