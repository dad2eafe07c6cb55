"""Headers only, measured: bytes the adapters read per file, and files per second.

Over the corpus DICOM files (``dicom/``), TIFF files (``ome-tiff/``, ``tiff-vendor/``) and
light-microscopy files (``czi/``, ``nd2/``, ``lif/``), in the same run: the built-in
adapter's ``extract`` through the agent's counting ``FileReader`` against a baseline
reading the same file through a ``FileReader`` too (bytes handed to the caller):
``pydicom.dcmread(stop_before_pixels=True)`` for DICOM, a bare ``tifffile.TiffFile`` open
plus page-0 tags for TIFF, czifile's header and ``metadata()`` for CZI, an
``nd2.ND2File`` on the handle with its attributes and metadata for ND2, and the LIF XML
header alone (readlif opens paths itself, so its reads cannot be counted). A file the
adapter refuses or the baseline fails on is listed apart, with the reason, and left out of
the totals and ratios rather than counted as 0 bytes. Only ratios mean anything on a
shared machine. The multi-file formats (``ome-zarr/``, ``nifti/``, ``imzml/``) are read one
acquisition at a time, every file of it in the draft with the digests the agent hands
``extract`` (computed by a reader of their own, as the agent's hashing pass is not the
adapter's: the imzML's ``.ibd`` checksum is compared with them, its ``.ibd`` never read
whole), and reported per file as a share of its size (the headers-only rule: at most 5%
of any file over 1 MB). Usage (from the repo root):

    .venv/bin/python bench/adapter_headers.py [--repeat 5] [--quiet]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import czifile
import nd2
import pydicom
import tifffile

from acqharvest.adapter_api import HEAD_BYTES, Adapter, AdapterError, Draft, FileProbe
from acqharvest.adapters.czi import CziAdapter
from acqharvest.adapters.dicom import DicomAdapter
from acqharvest.adapters.imzml import ImzmlAdapter
from acqharvest.adapters.lif import LifAdapter
from acqharvest.adapters.nd2 import Nd2Adapter
from acqharvest.adapters.nifti import NiftiAdapter
from acqharvest.adapters.tiff import TiffAdapter
from acqharvest.adapters.zarr import ZarrAdapter
from acqharvest.readonly import FileReader
from acqharvest.testing.checks import digests_of

TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"


@dataclass(frozen=True, slots=True)
class Family:
    adapter: Adapter
    #: reads the header from a handle, given the file's name (tifffile wants one)
    baseline: Callable[[BinaryIO, str], object]
    baseline_name: str


def pydicom_header(handle: BinaryIO, name: str) -> None:
    pydicom.dcmread(handle, stop_before_pixels=True, force=True)


def tifffile_header(handle: BinaryIO, name: str) -> None:
    with tifffile.TiffFile(handle, name=name) as tif:
        for tag in tif.pages.first.tags.values():
            _ = tag.value


def czifile_header(handle: BinaryIO, name: str) -> None:
    czifile.CziFile(tifffile.FileHandle(handle, name=name)).metadata()


def nd2_header(handle: BinaryIO, name: str) -> None:
    with nd2.ND2File(handle) as file:  # type: ignore[arg-type]
        _ = file.attributes, file.metadata


def lif_xml_header(handle: BinaryIO, name: str) -> None:
    """The least any LIF reader reads: the magic, the XML's length, and the XML."""
    units = int.from_bytes(handle.read(13)[9:13], "little")
    handle.read(2 * units)


def adapter_read(adapter: Adapter, path: Path) -> int:
    """Bytes the adapter reads to extract ``path``; raises what the adapter raises."""
    reader = FileReader()
    adapter.extract(Draft("bench", path, (path,)), reader)
    return reader.bytes_read


def baseline_read(baseline: Callable[[BinaryIO, str], object], path: Path) -> int:
    """Bytes the baseline reads of ``path``, through the agent's own counting reader."""
    reader = FileReader()
    with reader.open(path) as handle:
        baseline(handle, path.name)
    return reader.bytes_read


def corpus_files() -> dict[str, list[Path]]:
    dicom = sorted(p for p in (CORPUS / "dicom").rglob("*") if p.is_file())
    tiffs = sorted(
        p
        for folder in ("ome-tiff", "tiff-vendor")
        for p in (CORPUS / folder).rglob("*")
        if p.is_file() and p.read_bytes()[:4] in TIFF_MAGIC
    )
    light = {fmt: sorted((CORPUS / fmt).glob(f"*.{fmt}")) for fmt in ("czi", "nd2", "lif")}
    return {"dicom": dicom, "tiff": tiffs, **light}


def files_per_second(call: Callable[[Path], object], files: list[Path], repeat: int) -> float:
    """Median over ``repeat`` passes of files handled per second."""
    rates = []
    for _ in range(repeat):
        started = time.perf_counter()
        for path in files:
            call(path)
        rates.append(len(files) / (time.perf_counter() - started))
    return statistics.median(rates)


def measure(name: str, family: Family, files: list[Path], repeat: int, quiet: bool) -> None:
    compared: list[tuple[Path, int, int, int]] = []  # path, size, adapter, baseline bytes
    apart: list[str] = []
    for path in files:
        rel = path.relative_to(CORPUS)
        try:
            ours = adapter_read(family.adapter, path)
        except AdapterError as error:
            apart.append(f"  refused by the adapter: {rel}: {error.reason}")
            continue
        try:
            theirs = baseline_read(family.baseline, path)
        except Exception as error:  # noqa: BLE001 - any baseline failure is reported, not fatal
            apart.append(f"  baseline failed: {rel}: {type(error).__name__}: {error}")
            continue
        compared.append((path, path.stat().st_size, ours, theirs))
    if not quiet:
        print(f"\n{name}: bytes read per file (adapter vs {family.baseline_name})")
        print(
            f"  {'size':>9}  {'adapter':>9}  {'baseline':>9}  {'ad/base':>7}  {'ad/size':>7}  file"
        )
        for path, size, ours, theirs in compared:
            print(
                f"  {size:>9}  {ours:>9}  {theirs:>9}  {ours / theirs:>7.2f}  "
                f"{ours / size:>7.3f}  {path.relative_to(CORPUS)}"
            )
    print(f"\n{name}: {len(compared)} files compared, {len(apart)} left out")
    for line in apart:
        print(line)
    if not compared:
        return
    size = sum(row[1] for row in compared)
    ours = sum(row[2] for row in compared)
    theirs = sum(row[3] for row in compared)
    per_file = statistics.median(row[2] / row[3] for row in compared)
    print(
        f"  bytes: adapter {ours} ({ours / size:.2%} of {size}), {family.baseline_name} "
        f"{theirs} ({theirs / size:.2%}); adapter/baseline {ours / theirs:.2f}x in total, "
        f"{per_file:.2f}x median per file"
    )
    paths = [row[0] for row in compared]
    rate = files_per_second(lambda p: adapter_read(family.adapter, p), paths, repeat)
    base = files_per_second(lambda p: baseline_read(family.baseline, p), paths, repeat)
    print(
        f"  speed: adapter {rate:.0f} files/s, {family.baseline_name} {base:.0f} files/s, "
        f"adapter/baseline {rate / base:.2f}x"
    )


#: headers only: of a file over this many bytes an adapter reads at most ``LARGE_SHARE``
LARGE_FILE = 1_000_000
LARGE_SHARE = 0.05


def acquisitions(adapter: Adapter, folder: Path) -> list[Draft]:
    """The folder's files grouped by the adapter's claims, primary first, as the agent does."""
    reader = FileReader()
    groups: dict[str, list[tuple[bool, Path]]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        probe = FileProbe(path, path.stat().st_size, reader.head(path, HEAD_BYTES))
        claim = adapter.claim(probe, reader)
        if claim is not None:
            groups.setdefault(claim.group_key, []).append((claim.role != "primary", path))
    drafts = []
    for key, members in groups.items():
        ordered = tuple(path for _, path in sorted(members))
        drafts.append(Draft(key, ordered[0], ordered, digests_of(adapter.info, ordered)))
    return drafts


def measure_acquisitions(name: str, adapter: Adapter, folder: Path, quiet: bool) -> None:
    rows: list[tuple[Path, int, int]] = []
    for draft in acquisitions(adapter, folder):
        reader = FileReader()
        try:
            adapter.extract(draft, reader)
        except AdapterError as error:
            print(f"  refused by the adapter: {error}")
            continue
        rows += [(p, p.stat().st_size, reader.read_by_path.get(p, 0)) for p in draft.members]
    if not quiet:
        print(f"\n{name}: bytes read per file of each acquisition")
        print(f"  {'size':>9}  {'adapter':>9}  {'ad/size':>7}  file")
        for path, size, ours in rows:
            print(f"  {size:>9}  {ours:>9}  {ours / size:>7.3f}  {path.relative_to(CORPUS)}")
    size = sum(row[1] for row in rows)
    ours = sum(row[2] for row in rows)
    large = [row[2] / row[1] for row in rows if row[1] > LARGE_FILE]
    worst = f"{max(large):.2%}" if large else "none over 1 MB"
    print(
        f"\n{name}: {len(rows)} files, adapter read {ours} of {size} bytes ({ours / size:.2%}); "
        f"largest share of a file over 1 MB: {worst} (limit {LARGE_SHARE:.0%})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quiet", action="store_true", help="no per-file table")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # vendor files make both readers warn; not measured here
    families = {
        "dicom": Family(DicomAdapter(), pydicom_header, "pydicom stop_before_pixels"),
        "tiff": Family(TiffAdapter(), tifffile_header, "tifffile page-0 tags"),
        "czi": Family(CziAdapter(), czifile_header, "czifile metadata()"),
        "nd2": Family(Nd2Adapter(), nd2_header, "nd2 attributes+metadata"),
        "lif": Family(LifAdapter(), lif_xml_header, "the XML header alone"),
    }
    for name, files in corpus_files().items():
        measure(name, families[name], files, args.repeat, args.quiet)
    for name, adapter in (
        ("ome-zarr", ZarrAdapter()),
        ("nifti", NiftiAdapter()),
        ("imzml", ImzmlAdapter()),
    ):
        measure_acquisitions(name, adapter, CORPUS / name, args.quiet)


if __name__ == "__main__":
    main()
