"""Throughput of ``acqharvest run --once`` against a bare pydicom header-read loop.

Both run in the same process tree, over the same files, in the same run, so the ratio is
meaningful on a noisy machine; absolute times are not. Usage (from the repo root):

    .venv/bin/python bench/run_once.py [--files 2000] [--workers 2]

It copies the corpus DICOM files into a temporary watch folder until there are ``--files``
of them, times a ``pydicom.dcmread(stop_before_pixels=True)`` loop over them (the
baseline), then times the real daemon harvesting them and delivering every package to a
loopback HTTP endpoint, and prints both times and the ratio (target: within 2x).
"""

from __future__ import annotations

import argparse
import shutil
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


def baseline(files: list[Path]) -> float:
    start = time.perf_counter()
    for path in files:
        pydicom.dcmread(path, stop_before_pixels=True, force=True)
    return time.perf_counter() - start


def harvest(work: Path, watch: Path, workers: int) -> tuple[float, int]:
    endpoint = LoopbackEndpoint()
    endpoint.start()
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
        start = time.perf_counter()
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
        elapsed = time.perf_counter() - start
        return elapsed, len(endpoint.unique)
    finally:
        endpoint.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="acqharvest-bench-") as tmp:
        work = Path(tmp)
        watch = work / "watch"
        files = populate(watch, args.files)
        baseline(files[:50])  # warm the page cache and pydicom's imports
        bare = baseline(files)
        ours, packages = harvest(work, watch, args.workers)
    ratio = ours / bare
    print(f"files:                 {len(files)}")
    print(f"pydicom header loop:   {bare:.2f} s")
    print(f"acqharvest run --once: {ours:.2f} s ({packages} packages delivered)")
    print(f"ratio:                 {ratio:.2f}x (target <= 2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
