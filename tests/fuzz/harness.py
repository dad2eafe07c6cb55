"""What the fuzz tests and the atheris harness share: seeds, mutations and the adapter run.

A run claims and extracts one file with every built-in adapter, in this process, the way
a worker does, but calling the adapters directly so that whatever they raise is seen
(the agent's ``extract`` would turn it into a failure record). Bad input must end in a
claim of None, a successful extraction or an ``AdapterError``: anything else is a bug.
"""

from __future__ import annotations

import contextlib
import resource
import signal
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from acqharvest.adapter_api import HEAD_BYTES, AdapterError, AdapterOutput, Draft, FileProbe
from acqharvest.readonly import FileReader
from acqharvest.registry import Registry, load_registry

#: a fuzzed adapter may not grow beyond this: one trusting a declared size fails instead
MEMORY_CAP = 3 * 2**30

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"

#: small real files, so that every mutation lands in or near a header
SEEDS = (
    "dicom/sr/sr_document.dcm",
    "dicom/transfer-syntax/liver_deflate.dcm",
    "dicom/transfer-syntax/liver_rle.dcm",
    "dicom/sm-wsi/sm_image.dcm",
    "dicom/dx/dx_image.dcm",
    "ome-tiff/multifile-master/multifile-Z1.ome.tiff",
    "ome-tiff/bfconvert/res.ome.tiff",
    "tiff-vendor/zeiss-axiovision/optical_Zeiss_AxioVision_BW.tif",
    "tiff-vendor/imagej/xem_y32.tif",
    "tiff-vendor/gatan-dm-tiff/test_loading_image_saved_with_DM.tif",
    "czi/testCziYX0Tiny.czi",
    "nd2/cluster.nd2",
    "lif/LeicaLASX_wavelength-sweep_example.lif",
    "nifti/standard.nii.gz",
    "nifti/functional.nii",
    "imzml/Example_Continuous.imzML",
    "ome-zarr/xyz_8bit__mitotic_plate_calibrated.ome.zarr/0/.zattrs",
)

#: seconds one file may take before the run counts as a hang
HANG_SECONDS = 60

_registry: Registry | None = None


def registry() -> Registry:
    global _registry  # loaded once per process: entry points are slow to scan
    if _registry is None:
        _registry = load_registry()
    return _registry


def placed(folder: Path, seed: str) -> Path:
    """Where a mutated copy of ``seed`` goes under ``folder``: by its name, but inside a
    ``.zarr`` folder when the seed comes from one (only files in a store are claimed)."""
    store = next((part for part in Path(seed).parts[:-1] if part.endswith(".zarr")), None)
    name = Path(seed).name
    return folder / store / name if store else folder / name


def seed_bytes() -> dict[str, bytes]:
    return {name: (CORPUS / name).read_bytes() for name in SEEDS}


@dataclass(frozen=True)
class Outcome:
    """What each adapter made of a file: None (no claim), 'ok' or the AdapterError reason."""

    by_adapter: dict[str, str | None]
    #: what the adapters that succeeded returned
    outputs: dict[str, AdapterOutput]


class Hung(Exception):
    """An adapter was still busy after ``HANG_SECONDS``."""


@contextlib.contextmanager
def time_bound(seconds: float = HANG_SECONDS) -> Iterator[None]:
    """Raise ``Hung`` in this (main) thread if the body runs longer than ``seconds``."""

    def expired(_: int, __: FrameType | None) -> None:
        raise Hung(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def memory_capped(limit: int = MEMORY_CAP) -> Iterator[None]:
    """Cap this process's address space for the body only.

    Per example, never per module: a cap that outlives the fuzz test (a module fixture whose
    teardown xdist runs late) stays on the worker, and the next program it starts that reserves
    address space up front (Chromium, in the status page's browser test) dies with SIGTRAP.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def run_adapters(path: Path) -> Outcome:
    """Claim and extract ``path`` with every adapter; raises whatever is not AdapterError."""
    reader = FileReader()
    size = path.stat().st_size
    head, _, _ = reader.head_and_digests(path, HEAD_BYTES)
    outcome: dict[str, str | None] = {}
    outputs: dict[str, AdapterOutput] = {}
    for name, adapter in registry().adapters.items():
        try:
            claim = adapter.claim(FileProbe(path, size, head), reader)
        except AdapterError as error:
            outcome[name] = f"claim: {error.reason}"
            continue
        if claim is None:
            outcome[name] = None
            continue
        draft = Draft(key=claim.group_key, primary=path, members=(path,))
        try:
            outputs[name] = adapter.extract(draft, reader)
        except AdapterError as error:
            if error.path != path:
                raise AssertionError(f"AdapterError names {error.path}, not {path}") from error
            outcome[name] = error.reason
        else:
            outcome[name] = "ok"
    return Outcome(outcome, outputs)


# ---------------------------------------------------------------------------- mutations

#: lengths and counts an attacker (or a broken writer) puts where a small one belongs
HUGE = (0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0x10000000, 0xFFFF)


def flip(data: bytes, position: int, mask: int) -> bytes:
    if not data:
        return data
    position %= len(data)
    return data[:position] + bytes([data[position] ^ (mask or 1)]) + data[position + 1 :]


def truncate(data: bytes, length: int) -> bytes:
    return data[: length % (len(data) + 1)]


def huge_number(data: bytes, position: int, value: int, width: int, big_endian: bool) -> bytes:
    """Overwrite ``width`` bytes at ``position`` with ``value`` (a length, count or offset)."""
    position %= max(1, len(data) - width)
    packed = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "big" if big_endian else "little")
    return data[:position] + packed + data[position + width :]


def tiff_ifd(data: bytes, offset: int, count: int | None) -> bytes:
    """Point a TIFF's first IFD at ``offset``, or give the IFD ``count`` entries."""
    if len(data) < 8 or data[:2] not in (b"II", b"MM"):
        return data
    order = "<" if data[:2] == b"II" else ">"
    if struct.unpack(order + "H", data[2:4])[0] != 42:
        return data  # BigTIFF seeds are not mutated this way
    if count is None:
        return data[:4] + struct.pack(order + "I", offset & 0xFFFFFFFF) + data[8:]
    (first,) = struct.unpack(order + "I", data[4:8])
    if first + 2 > len(data):
        return data
    return data[:first] + struct.pack(order + "H", count & 0xFFFF) + data[first + 2 :]
