"""What a concurrent writer (a camera streaming to disk) loses while files are checksummed.

A writer process appends 4 MiB frames to a file and fsyncs every 16 frames, as an
acquisition streaming to disk does, and reports its throughput and the 99th percentile of
one frame's write time (a frame that waits too long is a dropped frame). It runs, in the
same run, alone and beside each reader of the same finished files:

- ``openssl dgst -sha256``: the field's checksum tool, reading as fast as it can;
- ``acqharvest run --once`` with ``priority: normal``;
- ``acqharvest run --once`` with ``priority: low`` (the default);
- ``acqharvest run --once`` with ``priority: low`` and ``checksum_max_mb_per_s``.

Each line gives the writer's figures as a ratio to the writer alone (the median of
``--repeat`` runs): absolute figures mean little on a shared machine, the ratios in one run
do. Usage (from the repo root):

    .venv/bin/python bench/writer_loss.py [--files 4] [--file-mib 256] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ACQHARVEST = Path(sys.executable).with_name("acqharvest")
FRAME = 4 * 2**20
FRAMES = 96  # 384 MiB per writer run
SYNC_EVERY = 16

WRITER = f"""
import os, sys, time
path, frame, frames, sync = sys.argv[1], {FRAME}, {FRAMES}, {SYNC_EVERY}
data = os.urandom(frame)
took = []
started = time.perf_counter()
with open(path, "wb") as handle:
    for index in range(frames):
        t = time.perf_counter()
        handle.write(data)
        if index % sync == sync - 1:
            handle.flush(); os.fsync(handle.fileno())
        took.append(time.perf_counter() - t)
total = time.perf_counter() - started
took.sort()
print(frame * frames / total / 1e6, took[int(len(took) * 0.99) - 1])
"""


def finished_files(folder: Path, count: int, mib: int) -> list[Path]:
    """Files with real content (not sparse: a hole costs a reader nothing)."""
    block = os.urandom(2**20)
    paths = []
    for index in range(count):
        path = folder / f"tile_{index:03d}.raw"
        with path.open("wb") as handle:
            for _ in range(mib):
                handle.write(block)
        paths.append(path)
    return paths


def write_beside(
    stream: Path, reader: Callable[[], subprocess.Popen[bytes]] | None
) -> tuple[float, float]:
    """The writer's MB/s and p99 frame seconds, with ``reader`` started just before it."""
    process = reader() if reader else None
    try:
        out = subprocess.run(
            [sys.executable, "-c", WRITER, str(stream)], capture_output=True, text=True, check=True
        ).stdout.split()
    finally:
        if process is not None:
            process.wait()
        stream.unlink(missing_ok=True)
    return float(out[0]), float(out[1])


def daemon(work: Path, watch: Path, extra: str) -> Callable[[], subprocess.Popen[bytes]]:
    def start() -> subprocess.Popen[bytes]:
        state, out = work / "state", work / "out"
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        config = work / "acqharvest.yaml"
        config.write_text(
            f"instrument: {{id: 'urn:bench:writer-loss'}}\n"
            f"watch: [{{path: {watch}, settle_seconds: 0}}]\n"
            f"endpoint: {{type: directory, path: {out}}}\n"
            f"state_dir: {state}\nworkers: 2\nlog: {{level: warning}}\n{extra}"
        )
        command = [str(ACQHARVEST), "run", "--once", "--config", str(config)]
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    return start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--file-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cap", type=float, default=100.0, help="checksum_max_mb_per_s")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="acqh-writer-") as tmp:
        work = Path(tmp)
        watch, stream_dir = work / "finished", work / "camera"
        watch.mkdir()
        stream_dir.mkdir()
        paths = finished_files(watch, args.files, args.file_mib)
        openssl = shutil.which("openssl")
        readers: dict[str, Callable[[], subprocess.Popen[bytes]] | None] = {"alone": None}
        if openssl:
            readers["openssl dgst -sha256"] = lambda: subprocess.Popen(
                [openssl, "dgst", "-sha256", *map(str, paths)], stdout=subprocess.DEVNULL
            )
        readers["acqharvest, priority normal"] = daemon(work, watch, "priority: normal\n")
        readers["acqharvest, priority low"] = daemon(work, watch, "")
        readers[f"acqharvest, low + cap {args.cap:g} MB/s"] = daemon(
            work, watch, f"checksum_max_mb_per_s: {args.cap}\n"
        )
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in readers}
        for _ in range(args.repeat):
            for name, reader in readers.items():  # interleaved: drift hits every reader alike
                results[name].append(write_beside(stream_dir / "frames.raw", reader))
    base_rate = statistics.median(rate for rate, _ in results["alone"])
    base_p99 = statistics.median(p99 for _, p99 in results["alone"])
    print(f"writer alone: {base_rate:.0f} MB/s, p99 frame {base_p99 * 1e3:.1f} ms")
    print(f"{'beside':<36} {'throughput':>11} {'p99 frame':>10}")
    for name, runs in results.items():
        rate = statistics.median(r for r, _ in runs) / base_rate
        p99 = statistics.median(p for _, p in runs) / base_p99
        print(f"{name:<36} {rate:>10.2f}x {p99:>9.2f}x")


if __name__ == "__main__":
    main()
