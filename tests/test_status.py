"""The status board: rows per folder from what the daemon tells it, snapshots of it.

The server answering from these snapshots is tested in ``tests/test_statusserver.py``.
"""

from __future__ import annotations

from pathlib import Path

from acqharvest.metrics import Metrics
from acqharvest.status import ROWS_PER_FOLDER, PackageState, StatusBoard, StatusSnapshot

SINK = "https://ingest.example.org/packages"


def board_of(tmp_path: Path, folders: int = 1) -> StatusBoard:
    roots = [tmp_path / f"watch{i}" if i else tmp_path / "watch" for i in range(folders)]
    return StatusBoard(roots, Metrics(SINK, [str(r) for r in roots]), instrument="Confocal 3")


def snapshot_of(
    board: StatusBoard,
    outbox: dict[str, int] | None = None,
    packages: dict[str, PackageState] | None = None,
    state_dir: tuple[str, ...] = (),
) -> StatusSnapshot:
    return board.snapshot(
        outbox=outbox or {"pending": 0, "delivered": 0, "rejected": 0, "corrupt": 0},
        package_state=(packages or {}).get,
        oldest_pending_age=None,
        state_dir_problems=state_dir,
    )


def test_rows_follow_an_acquisition_from_waiting_to_delivered(tmp_path: Path) -> None:
    board = board_of(tmp_path)
    root = tmp_path / "watch"
    series = [root / "series" / f"{i}.dcm" for i in range(3)]
    for path in series:
        board.file_seen(root, path)
    waiting = snapshot_of(board).folders[0].acquisitions
    assert [(r.name, r.state) for r in waiting] == [
        ("series/2.dcm", "waiting"),
        ("series/1.dcm", "waiting"),
        ("series/0.dcm", "waiting"),
    ]
    assert waiting[0].reason == "waiting for the file to settle"

    board.packaged(root, series[0], series, "p-series")
    (packaged,) = snapshot_of(board).folders[0].acquisitions
    assert (packaged.name, packaged.state, packaged.files) == ("series/0.dcm", "packaged", 3)

    retrying = snapshot_of(board, packages={"p-series": ("pending", 2, "HTTP 503")})
    assert retrying.folders[0].acquisitions[0].reason == "sending failed 2x, retrying: HTTP 503"
    held = snapshot_of(board, packages={"p-series": ("held", 0, "burned-in annotation")})
    assert held.folders[0].acquisitions[0].state == "held"

    board.delivered("p-series")
    (delivered,) = snapshot_of(board).folders[0].acquisitions
    assert delivered.state == "delivered"


def test_a_refused_package_an_admin_retries_shows_as_on_its_way_again(tmp_path: Path) -> None:
    board = board_of(tmp_path)
    root = tmp_path / "watch"
    board.file_seen(root, root / "a.tif")
    board.packaged(root, root / "a.tif", [root / "a.tif"], "p-a")
    board.rejected("p-a", "HTTP 422: schema says no")
    refused = snapshot_of(board, packages={"p-a": ("rejected", 1, "HTTP 422: schema says no")})
    assert refused.folders[0].acquisitions[0].state == "failed"

    # acqharvest outbox retry p-a: the outbox has it pending again
    retried = snapshot_of(board, packages={"p-a": ("pending", 0, None)})
    (row,) = retried.folders[0].acquisitions
    assert (row.state, row.reason) == ("packaged", "waiting to be sent")


def test_a_file_deleted_while_settling_leaves_the_page(tmp_path: Path) -> None:
    board, root = board_of(tmp_path), tmp_path / "watch"
    board.file_seen(root, root / "scratch.tif")
    board.file_left(root, root / "scratch.tif")
    assert snapshot_of(board).folders[0].acquisitions == ()


def test_the_page_keeps_the_latest_acquisitions_per_folder(tmp_path: Path) -> None:
    board, root = board_of(tmp_path, folders=2), tmp_path / "watch"
    for i in range(ROWS_PER_FOLDER + 5):
        board.file_seen(root, root / f"{i:03}.tif")
    board.file_seen(tmp_path / "watch1", tmp_path / "watch1" / "other.tif")

    first, second = snapshot_of(board).folders
    assert len(first.acquisitions) == ROWS_PER_FOLDER
    assert first.acquisitions[0].name == f"{ROWS_PER_FOLDER + 4:03}.tif"
    assert [r.name for r in second.acquisitions] == ["other.tif"]
