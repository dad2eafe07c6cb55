"""A bounded coverage-guided run of the atheris harness: no input makes an adapter crash.

atheris installs from wheels on x86-64 Linux (the ``test`` extra asks for it there only);
elsewhere the hypothesis tests beside this file are the fuzzing.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.harness import SEEDS

pytest.importorskip("atheris", reason="atheris ships wheels for x86-64 Linux only")

REPO = Path(__file__).resolve().parents[2]
#: a fixed seed and run count: every CI run fuzzes the same inputs for the same code, so
#: a new finding comes with the change that caused it; open-ended runs are the README's
FUZZ_SEED, FUZZ_RUNS = 1, 8000
#: libFuzzer's own cap on the run; the test's timeout leaves room for start-up
FUZZ_SECONDS = 120


# a fuzzing campaign, CPU-bound for minutes on a small machine: CI runs it with the long tier
@pytest.mark.long
@pytest.mark.timeout(FUZZ_SECONDS * 4)
def test_coverage_guided_fuzzing_finds_no_crash(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.fuzz.atheris_harness",
            f"-seed={FUZZ_SEED}",
            f"-runs={FUZZ_RUNS}",
            f"-max_total_time={FUZZ_SECONDS}",
            "-rss_limit_mb=3072",
            "-timeout=20",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=FUZZ_SECONDS * 3,
    )
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name != "corpus")
    assert not crashes, (crashes, done.stderr[-4000:])
    assert done.returncode == 0, done.stderr[-4000:]
    runs = re.search(r"Done (\d+) runs", done.stderr)
    assert runs is not None, done.stderr[-2000:]
    # a run that barely started proves nothing: the harness must really have been exercised
    assert int(runs.group(1)) >= 500, runs.group(0)
    # libFuzzer grew the seeded corpus: coverage feedback reached the adapters
    assert len(list(corpus.iterdir())) > len(SEEDS)
