"""Golden cases: the input files of one acquisition and the output expected from them.

A case is two files side by side in an adapter's ``cases/`` folder:

``<case>.yaml``
    names the input files, primary first, relative to the conformance class's
    ``samples_root`` (the corpus for built-in adapters, the vendor's package folder for
    third-party ones)::

        # a multi-file OME-TIFF set: one acquisition, the master file first
        files:
          - ome-tiff/multifile-master/multifile-Z1.ome.tiff
          - ome-tiff/multifile-master/multifile-Z2.ome.tiff

    A case may read a derived input instead: ``first_bytes: N`` makes the primary a copy
    of the named file's first N bytes, for a file that ends cleanly short of what its
    header announces (a header written without its pixel data) when such a file cannot be
    shipped: it is derived from a sample at test time. The case's files are then copied,
    with their relative paths, into a temporary folder of the test process, which stands
    for ``samples_root`` (``Case.root``)::

        # the MG image's header alone: the file cut just before its Pixel Data element
        files:
          - dicom/mg/MG_Explicit_Little.dcm
        first_bytes: 1696

``<case>.expected.json``
    the normalized output (see :func:`golden_of`), or ``{"error": "<reason>"}`` for a
    case whose input the adapter must refuse with an ``AdapterError``. It is written by
    running the tests with ``--acqharvest-regenerate`` (or ``ACQHARVEST_REGENERATE=1``)
    and reviewed as a diff like any other change.

The golden keeps ``format``, ``metadata``, ``started``, ``warnings``, any
``identifiers`` and, when set, ``incomplete`` verbatim, and
summarizes ``original_metadata`` (often hundreds of KiB of vendor text) as its size, a
sha256 of its canonical JSON and a one-line-per-key preview, so a reviewer sees which
keys came or went and what their short values are, while any deeper change still moves
the digest. Absolute paths of the samples folder are replaced by ``<samples>``.
"""

from __future__ import annotations

import atexit
import difflib
import hashlib
import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from acqharvest.adapter_api import AdapterOutput

#: strings in the ``original_metadata`` preview are cut after this many characters.
PREVIEW_TEXT = 100
#: mappings with at most this many keys are expanded in the preview (two levels deep).
PREVIEW_KEYS = 40
#: lists of at most this many scalars are shown in the preview.
PREVIEW_ITEMS = 8
#: the preview lists at most this many top-level keys of ``original_metadata``.
PREVIEW_TOP_KEYS = 300

CASE_SUFFIX = ".yaml"
EXPECTED_SUFFIX = ".expected.json"


class CaseError(ValueError):
    """A case file is malformed; the message names the file."""


@dataclass(frozen=True, slots=True)
class Case:
    """One golden case: its name, its input files (primary first) and where it lives."""

    name: str
    #: paths as written in the case file, relative to the samples root.
    files: tuple[str, ...]
    #: the ``<case>.yaml`` file.
    source: Path
    #: the primary is this many leading bytes of the named file (see the module doc).
    first_bytes: int | None = None

    @property
    def expected_path(self) -> Path:
        return self.source.with_name(self.name + EXPECTED_SUFFIX)

    def root(self, samples_root: Path) -> Path:
        """What the input files are relative to: ``samples_root``, or the derived copy's."""
        return samples_root if self.first_bytes is None else _derived_root() / self.name

    def paths(self, samples_root: Path) -> tuple[Path, ...]:
        """The input files, absolute, primary first; a derived case's written on first use."""
        root = self.root(samples_root)
        paths = tuple(root / rel for rel in self.files)
        if self.first_bytes is not None and not paths[0].is_file():
            self._derive(samples_root, root)
        return paths

    def _derive(self, samples_root: Path, root: Path) -> None:
        for index, rel in enumerate(self.files):
            source, copy = samples_root / rel, root / rel
            size = source.stat().st_size
            length = self.first_bytes if index == 0 and self.first_bytes is not None else size
            if length > size:
                raise CaseError(f"{self.source}: first_bytes {length} is past the end of {source}")
            copy.parent.mkdir(parents=True, exist_ok=True)
            with source.open("rb") as reading:
                copy.write_bytes(reading.read(length))


@cache
def _derived_root() -> Path:
    """A temporary folder for derived inputs, one per test process, removed at its exit."""
    folder = tempfile.TemporaryDirectory(prefix="acqharvest-cases-")
    atexit.register(folder.cleanup)
    return Path(folder.name)


def load_cases(cases_dir: Path) -> list[Case]:
    """Every ``*.yaml`` case in ``cases_dir``, sorted by name; malformed ones raise."""
    cases = []
    for source in sorted(cases_dir.glob(f"*{CASE_SUFFIX}")):
        try:
            body = yaml.safe_load(source.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise CaseError(f"{source}: not valid YAML: {error}") from error
        files = body.get("files") if isinstance(body, dict) else None
        if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
            raise CaseError(f"{source}: needs 'files', a non-empty list of paths (primary first)")
        first_bytes = body.get("first_bytes")
        if first_bytes is not None and not (
            isinstance(first_bytes, int) and not isinstance(first_bytes, bool) and first_bytes > 0
        ):
            raise CaseError(f"{source}: 'first_bytes' must be a positive number of bytes")
        cases.append(Case(source.name[: -len(CASE_SUFFIX)], tuple(files), source, first_bytes))
    return cases


def write_case(cases_dir: Path, name: str, files: Sequence[str], comment: str = "") -> Case:
    """Write ``<name>.yaml`` listing ``files`` (primary first); used to seed new cases."""
    cases_dir.mkdir(parents=True, exist_ok=True)
    source = cases_dir / f"{name}{CASE_SUFFIX}"
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    source.write_text(
        header + yaml.safe_dump({"files": list(files)}, sort_keys=False), encoding="utf-8"
    )
    return Case(name, tuple(files), source)


def canonical(value: Any) -> str:
    """Sorted, indented JSON: the form goldens are stored and compared in."""
    return json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False, allow_nan=False)


def golden_of(output: AdapterOutput, samples_root: Path) -> dict[str, Any]:
    """The comparable form of an adapter's output.

    Raises ``TypeError``/``ValueError`` when the output is not plain JSON data, which is
    part of the adapter contract.
    """
    original = json.loads(canonical(dict(output.original_metadata)))
    blob = json.dumps(original, sort_keys=True, ensure_ascii=False).encode("utf-8")
    golden: dict[str, Any] = {
        "format": output.format,
        "metadata": dict(output.metadata),
        "started": output.started,
        "warnings": list(output.warnings),
        **({} if output.incomplete is None else {"incomplete": output.incomplete}),
        "original_metadata": {
            "bytes": len(blob),
            "sha256": hashlib.sha256(blob).hexdigest(),
            "keys": len(original),
            "preview": _preview_top(original),
        },
    }
    if output.identifiers:  # left out when there are none: older goldens stay as they are
        golden["identifiers"] = [
            {"attribute": i.attribute, "value": i.value, "path": list(i.path)}
            for i in output.identifiers
        ]
    cleaned: dict[str, Any] = _without_root(json.loads(canonical(golden)), str(samples_root))
    return cleaned


def error_golden(reason: str, samples_root: Path) -> dict[str, Any]:
    """The golden of a case the adapter refuses."""
    return {"error": reason.replace(str(samples_root), "<samples>")}


def read_expected(case: Case) -> dict[str, Any] | None:
    """The stored golden, or None when it has not been generated yet."""
    if not case.expected_path.is_file():
        return None
    loaded: dict[str, Any] = json.loads(case.expected_path.read_text(encoding="utf-8"))
    return loaded


def write_expected(case: Case, golden: Mapping[str, Any]) -> None:
    """Write the golden beside its case; never into an installed copy of a package.

    Cases found in ``site-packages`` mean the adapter is installed, not checked out: a
    golden written there is lost on the next install and never reaches the source tree.
    """
    installed = {"site-packages", "dist-packages"} & set(case.source.resolve().parts)
    if installed:
        raise CaseError(
            f"{case.source} is an installed copy (in {installed.pop()}); install the "
            "adapter editable (pip install -e .) and regenerate in its source tree"
        )
    case.expected_path.write_text(canonical(golden) + "\n", encoding="utf-8")


def golden_diff(expected: Mapping[str, Any], actual: Mapping[str, Any], name: str) -> str:
    """A unified diff of two goldens, for a readable assertion message."""
    return "\n".join(
        difflib.unified_diff(
            canonical(expected).splitlines(),
            canonical(actual).splitlines(),
            fromfile=f"{name}{EXPECTED_SUFFIX} (expected)",
            tofile=f"{name} (extracted now)",
            lineterm="",
        )
    )


def _preview_top(original: Mapping[str, Any]) -> dict[str, Any]:
    keys = sorted(original)
    preview = {key: _preview(original[key], depth=1) for key in keys[:PREVIEW_TOP_KEYS]}
    if len(keys) > PREVIEW_TOP_KEYS:
        preview["..."] = f"<{len(keys) - PREVIEW_TOP_KEYS} more keys>"
    return preview


def _preview(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        if len(value) <= PREVIEW_TEXT:
            return value
        return f"{value[:PREVIEW_TEXT]}<+{len(value) - PREVIEW_TEXT} chars>"
    if isinstance(value, dict):
        if depth < 2 and len(value) <= PREVIEW_KEYS:
            return {k: _preview(v, depth + 1) for k, v in sorted(value.items())}
        return f"<{len(value)} keys>"
    if isinstance(value, list):
        if len(value) <= PREVIEW_ITEMS and not any(isinstance(v, (dict, list)) for v in value):
            return [_preview(v, depth + 1) for v in value]
        return f"<{len(value)} items>"
    return value


def _without_root(value: Any, root: str) -> Any:
    if isinstance(value, str):
        return value.replace(root, "<samples>")
    if isinstance(value, dict):
        return {k: _without_root(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_root(v, root) for v in value]
    return value
