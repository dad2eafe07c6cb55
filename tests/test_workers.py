"""The progress board the runtime reads to enforce the time budget, across real processes."""

from __future__ import annotations

import multiprocessing
import time

from acqharvest.workers import Progress


def _read_one_item_slowly(progress: Progress, started: multiprocessing.synchronize.Event) -> None:
    row = progress.claim_row()
    progress.begin(row, token=7, index=2)
    started.set()
    time.sleep(600)


def test_a_worker_busy_beyond_the_budget_is_named_with_its_item() -> None:
    context = multiprocessing.get_context("spawn")
    progress = Progress(context, 2)
    started = context.Event()
    worker = context.Process(target=_read_one_item_slowly, args=(progress, started), daemon=True)
    worker.start()
    try:
        assert started.wait(60)
        assert progress.overdue(budget=3600, now=time.monotonic()) == []
        late = progress.overdue(budget=0.0, now=time.monotonic() + 1)
        assert late == [(0, worker.pid, 7, 2)]
        progress.end(0)
        assert progress.overdue(budget=0.0, now=time.monotonic() + 1) == []
    finally:
        worker.kill()
        worker.join(10)


def test_an_idle_board_reports_nothing() -> None:
    progress = Progress(multiprocessing.get_context("spawn"), 3)
    row = progress.claim_row()
    progress.begin(row, token=1, index=0)
    progress.end(row)
    assert progress.overdue(budget=0.0, now=time.monotonic() + 1) == []
