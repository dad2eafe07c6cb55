"""rocrate-validator, run in an environment of its own and offline (see
``crate_validator_run.py`` for how the RO-Crate context is served without the network).

roc-validator pins ``rich<14`` and the project's import-linter needs ``rich>=14.2``, so
the two cannot share the test environment: the ``crate-validation`` extra of
``pyproject.toml`` names the validator and the ``rocrate`` package (whose data holds the
RO-Crate 1.1 context), and ``validator_python`` installs exactly that list into
``.venv-crate-validation`` beside the checkout, once (rebuilt when the list changes; a lock
file keeps parallel test workers from building it twice). Installing needs the package
registry, as the project's own install does.
"""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from tests.conftest import REPO

VENV = REPO / ".venv-crate-validation"
RUNNER = Path(__file__).with_name("crate_validator_run.py")


def requirements() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    listed: list[str] = project["optional-dependencies"]["crate-validation"]
    return listed


def validator_python() -> Path:
    """The interpreter of the validator's environment, built on first use."""
    python = VENV / "bin" / "python"
    stamp = VENV / "installed.json"
    wanted = json.dumps(requirements())
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(REPO / ".venv-crate-validation.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if python.exists() and stamp.is_file() and stamp.read_text() == wanted:
            return python
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", *requirements()],
            check=True,
            timeout=600,
        )
        stamp.write_text(wanted)
    return python


def validate_crates(crates: list[Path], cache: Path) -> list[dict[str, Any]]:
    """One result per crate folder (holding ``ro-crate-metadata.json``), in order."""
    done = subprocess.run(
        [str(validator_python()), str(RUNNER), str(cache), *map(str, crates)],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert done.returncode == 0, f"the validator failed:\n{done.stderr[-4000:]}"
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
