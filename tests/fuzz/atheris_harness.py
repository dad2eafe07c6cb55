"""Coverage-guided fuzzing of the built-in adapters with atheris (libFuzzer), as a script.

    .venv/bin/python -m tests.fuzz.atheris_harness -max_total_time=600 -rss_limit_mb=3072 \\
        /tmp/acqharvest-fuzz-corpus

Starts from the seed files of ``tests/fuzz/harness.py`` (copied into the corpus folder
given last, which libFuzzer then grows), writes each input to a temporary file with a
DICOM and a TIFF name in turn, and runs every adapter's claim and extract on it. Any
exception other than ``AdapterError`` is a crash: libFuzzer saves the input as
``crash-<sha1>`` in the current folder; reproduce it with
``.venv/bin/python -m tests.fuzz.atheris_harness crash-<sha1>``. atheris comes with the
``test`` extra on x86-64 Linux; ``test_atheris.py`` runs this harness for a minute.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from tests.fuzz.harness import SEEDS, run_adapters, seed_bytes

_SCRATCH = Path(tempfile.mkdtemp(prefix="acqharvest-atheris-"))
_NAMES = (
    _SCRATCH / "input.dcm",
    _SCRATCH / "input.ome.tif",
    _SCRATCH / "input.nii",
    _SCRATCH / "input.imzML",
    _SCRATCH / "input.zarr" / ".zattrs",
)


def test_one_input(data: bytes) -> None:
    _NAMES[-1].parent.mkdir(exist_ok=True)
    for path in _NAMES:
        path.write_bytes(data)
        run_adapters(path)


def _seed(corpus: Path) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    for name, content in zip(SEEDS, seed_bytes().values(), strict=True):
        target = corpus / Path(name).name
        if not target.exists():
            target.write_bytes(content)


def main() -> None:
    folders = [Path(arg) for arg in sys.argv[1:] if not arg.startswith("-")]
    if folders and (folders[-1].is_dir() or not folders[-1].exists()):
        _seed(folders[-1])
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
