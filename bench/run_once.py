"""Throughput of ``acqharvest run --once`` against a bare pydicom header-read loop.

Both run in the same process tree, over the same files, in the same run, so the ratio is
meaningful on a noisy machine; absolute times are not. Usage (from the repo root):

    .venv/bin/python bench/run_once.py [--files 2000] [--workers 2] [--repeat 3]

It copies the corpus DICOM files into a temporary watch folder until there are ``--files``
of them, then, ``--repeat`` times, times a ``pydicom.dcmread(stop_before_pixels=True)``
loop over them (the baseline) and the real daemon (a fresh state dir each time)
harvesting them and delivering every package to a loopback HTTP endpoint. It prints the
median of each and their ratio (target: within 2x).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pydicom

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.endpoint import LoopbackEndpoint  # noqa: E402 - needs the repo root on sys.path

CORPUS = REPO.parent / "shared" / "corpus" / "dicom"


def populate(folder: Path, count: int) -> list[Path]:
    sources = sorted(p for p in CORPUS.rglob("*.dcm") if p.is_file())
    files: list[Path] = []
    index = 0
    while len(files) < count:
        source = sources[index % len(sources)]
        target = folder / source.parent.name / f"{index:05d}_{source.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        files.append(target)
        index += 1
    return files


def baseline(files: list[Path]) -> tuple[float, float]:
    """(wall, CPU) seconds of the bare header loop."""
    start, cpu = time.perf_counter(), time.process_time()
    for path in files:
        pydicom.dcmread(path, stop_before_pixels=True, force=True)
    return time.perf_counter() - start, time.process_time() - cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def harvest(work: Path, watch: Path, workers: int) -> tuple[float, float, int]:
    """(wall, CPU of the daemon and its workers, packages delivered)."""
    endpoint = LoopbackEndpoint()
    endpoint.start()
    shutil.rmtree(work / "state", ignore_errors=True)
    config = work / "bench.yaml"
    config.write_text(
        f"""
instrument: {{id: "urn:acqharvest:bench"}}
watch:
  - path: {watch}
    settle_seconds: 0
endpoint: {{type: http, url: "{endpoint.url}"}}
state_dir: {work / "state"}
workers: {workers}
log: {{level: warning}}
""",
        encoding="utf-8",
    )
    try:
        start, cpu = time.perf_counter(), _children_cpu()
        subprocess.run(
            [
                str(Path(sys.executable).parent / "acqharvest"),
                "run",
                "--once",
                "--config",
                str(config),
            ],
            check=True,
        )
        elapsed, used = time.perf_counter() - start, _children_cpu() - cpu
    finally:
        endpoint.stop()  # joins the server threads, so every request is counted below
    return elapsed, used, len(endpoint.unique)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    bare: list[tuple[float, float]] = []
    ours: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="acqharvest-bench-") as tmp:
        work = Path(tmp)
        watch = work / "watch"
        files = populate(watch, args.files)
        baseline(files[:50])  # warm the page cache and pydicom's imports
        for _ in range(args.repeat):
            bare.append(baseline(files))
            wall, cpu, packages = harvest(work, watch, args.workers)
            ours.append((wall, cpu))
            print(f"run: {wall:.2f} s wall, {cpu:.2f} s CPU, {packages} packages", file=sys.stderr)
    bare_wall = statistics.median(w for w, _ in bare)
    bare_cpu = statistics.median(c for _, c in bare)
    our_wall = statistics.median(w for w, _ in ours)
    our_cpu = statistics.median(c for _, c in ours)
    print(f"files:                 {len(files)} ({args.repeat} runs each, medians)")
    print(f"pydicom header loop:   {bare_wall:.2f} s wall, {bare_cpu:.2f} s CPU")
    print(
        f"acqharvest run --once: {our_wall:.2f} s wall, {our_cpu:.2f} s CPU "
        f"({packages} packages delivered, {args.workers} workers)"
    )
    print(
        f"ratio:                 {our_wall / bare_wall:.2f}x wall (target <= 2x), "
        f"{our_cpu / bare_cpu:.2f}x CPU"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
