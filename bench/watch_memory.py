"""Peak memory of watching a huge tree, against a bare ``os.scandir`` walk of the same tree.

Usage (from the repo root; building 1,000,000 files takes a few minutes, once):

    .venv/bin/python bench/watch_memory.py [--folders 100000] [--files 1000000] [--tree DIR]
        [--phases native ...]

It builds (or reuses, with ``--tree``) a tree of ``--folders`` leaf folders holding
``--files`` one-byte files (new files with content: an empty file is not tracked until it
has data), then measures each phase in a fresh process, so that every peak
RSS (``ru_maxrss``) belongs to one phase only:

- ``walk``: the baseline, a bare stack-based ``os.scandir`` walk counting files;
- ``scan``: ``Watcher.scan_folder`` consumed to the end (what every reconciliation scan does);
- ``scan+state``: the scan plus ``State.is_done`` for every file against a registry that
  holds every file already (the steady state of a daemon: nothing new to harvest);
- ``settler``: a cold start, every file new: the scan handed to a ``Settler`` through the
  runtime's ``ScanFeed`` (at most ``SCAN_BATCH`` files settling at once), each batch ticked
  a window later so that it settles, as the harvest loop does;
- ``native``: a recursive inotify observer started on the tree (one watch per folder).
  Watchdog skips a folder it cannot watch without a word, so the phase counts the watches
  the process holds (``/proc/self/fdinfo`` of its inotify descriptor) and the bench fails
  unless there is one for every folder of the tree.

Every phase imports the same modules first; "above imports" is the peak minus the RSS
measured after those imports. The ratio compares that growth with the walk's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PHASES = ("walk", "scan", "scan+state", "settler", "native")


def build_tree(tree: Path, folders: int, files: int) -> None:
    done = tree / ".complete"
    layout = f"{folders} {files} one byte each"
    if done.exists() and done.read_text() == layout:
        print(f"reusing {tree}", flush=True)
        return
    per_folder, extra = divmod(files, folders)
    started = time.monotonic()
    made = 0
    for index in range(folders):
        folder = tree / f"g{index // 1000:04d}" / f"f{index:07d}"
        folder.mkdir(parents=True, exist_ok=True)
        for number in range(per_folder + (1 if index < extra else 0)):
            fd = os.open(folder / f"img{number:03d}.dat", os.O_CREAT | os.O_WRONLY, 0o644)
            os.write(fd, b"x")
            os.close(fd)
            made += 1
        if index % 10_000 == 0:
            print(
                f"  built {index:,} folders, {made:,} files ({time.monotonic() - started:.0f} s)",
                flush=True,
            )
    done.write_text(layout)


def _rss_now_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _walk(tree: Path) -> int:
    count = 0
    pending = [str(tree)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                else:
                    count += 1
    return count


def _inotify_watches() -> int:
    """Inotify watches this process holds: the ``inotify wd:`` lines of its inotify fds."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:inotify":
                continue
            with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as info:
                count += sum(line.startswith("inotify wd:") for line in info)
        except OSError:
            continue  # the listing's own descriptor, closed by now
    return count


def _folders_in(folders: int) -> int:
    """Every folder ``build_tree`` makes: the leaves, their groups and the root."""
    return folders + (folders - 1) // 1000 + 2  # leaves, groups, root


def _prefill_state(db: Path, tree: Path) -> None:
    """A registry that has every file of the tree recorded as harvested."""
    from acqharvest.model import FileSettled, ProbedFile, WatchSettings
    from acqharvest.state import State
    from acqharvest.watch import Watcher

    ws = WatchSettings(path=tree, exclude=(".complete",))
    state = State.open(db)
    batch = []
    for seen in Watcher([ws], lambda _: None).scan_folder(ws):
        settled = FileSettled(seen.path, seen.root, seen.size, seen.mtime_ns, seen.file_id)
        batch.append(("k:" + str(seen.path), "p", None, [ProbedFile(settled, "0" * 64, None, "k")]))
        if len(batch) == 10_000:
            state.record_packages(batch)
            batch.clear()
    state.record_packages(batch)
    state.close()


def measure(phase: str, tree: Path, db: Path) -> dict[str, float]:
    """Runs in a child process: one phase, its peak RSS, its count and its time."""
    from acqharvest import logs
    from acqharvest.model import WatchSettings
    from acqharvest.settle import ScanFeed, Settler
    from acqharvest.state import State
    from acqharvest.watch import Watcher, stat_file

    logs.configure("warning", "json", None, stream=sys.stderr)  # stdout carries the result
    ws = WatchSettings(path=tree, exclude=(".complete",), mode="native")
    watcher = Watcher([ws], lambda _: None)
    state = State.open(db) if phase == "scan+state" else None
    settler = Settler(lambda _: ws)
    base = _rss_now_kib()
    started = time.monotonic()
    count = 0
    if phase == "walk":
        count = _walk(tree)
    elif phase == "native":
        watcher.start()
        # watchdog skips folders it cannot watch without a word: count what it holds
        count = _inotify_watches() if not watcher.unwatched() else -1
        watcher.stop()
    elif phase == "settler":
        feed = ScanFeed()
        feed.start(watcher.scan_folder(ws))
        while feed.active or settler.tracked:
            feed.feed(settler.observe, lambda: settler.tracked)
            # a window later: everything fed so far settles (the tree is old)
            later = time.time() + ws.settle_seconds
            count += len(settler.tick(later, lambda path, root: stat_file(path, root, "scan")))
    else:
        for seen in watcher.scan_folder(ws):
            count += 1
            if state is not None:
                state.is_done(seen.path, seen.size, seen.mtime_ns, seen.file_id)
    seconds = time.monotonic() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"base_mib": base / 1024, "peak_mib": peak / 1024, "count": count, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folders", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--tree", type=Path, help="build the tree here, or reuse it")
    parser.add_argument(
        "--phases",
        nargs="+",
        choices=PHASES,
        default=list(PHASES),
        help="measure these only (the walk, the baseline, always runs)",
    )
    parser.add_argument("--measure", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.tree, args.db)))
        return
    with tempfile.TemporaryDirectory(prefix="acqharvest-watch-bench-") as scratch:
        tree = args.tree or Path(scratch) / "tree"
        print(f"tree: {args.folders:,} folders, {args.files:,} files in {tree}", flush=True)
        build_tree(tree, args.folders, args.files)
        db = Path(scratch) / "state.sqlite3"
        if "scan+state" in args.phases:
            print("recording every file in a state registry ...", flush=True)
            _prefill_state(db, tree)
        results: dict[str, dict[str, float]] = {}
        for phase in ["walk", *(p for p in PHASES if p in args.phases and p != "walk")]:
            command = [sys.executable, __file__, "--measure", phase, "--tree", str(tree)]
            output = subprocess.run(
                [*command, "--db", str(db)], check=True, capture_output=True, text=True
            ).stdout
            results[phase] = json.loads(output)
            print(f"  measured {phase}", flush=True)
    walk = results["walk"]["peak_mib"] - results["walk"]["base_mib"]
    print(
        f"\n{'phase':<11} {'peak MiB':>9} {'above imports':>14} {'vs walk':>8} "
        f"{'seconds':>8} {'files/watches':>14}"
    )
    for phase, result in results.items():
        growth = result["peak_mib"] - result["base_mib"]
        print(
            f"{phase:<11} {result['peak_mib']:>9.1f} {growth:>14.1f} "
            f"{growth / max(walk, 0.1):>7.1f}x {result['seconds']:>8.1f} {result['count']:>14,.0f}"
        )
    if "native" in results:
        watches, folders = int(results["native"]["count"]), _folders_in(args.folders)
        print(f"\nnative observer: {watches:,} inotify watches for {folders:,} folders")
        if watches != folders:
            sys.exit("the observer did not watch every folder: its memory is not the tree's")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
