"""Headers only, measured: bytes the adapters read per file, and files per second.

Over the corpus DICOM files (``dicom/``) and TIFF files (``ome-tiff/``, ``tiff-vendor/``),
in the same run: the built-in adapter's ``extract`` through the agent's counting
``FileReader`` against a baseline, ``pydicom.dcmread(stop_before_pixels=True)`` for DICOM
and a bare ``tifffile.TiffFile`` open plus page-0 tags for TIFF. Only ratios mean anything
on a shared machine. Usage (from the repo root):

    .venv/bin/python bench/adapter_headers.py [--repeat 5] [--quiet]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pydicom
import tifffile

from acqharvest.adapter_api import Adapter, AdapterError, Draft
from acqharvest.adapters.dicom import DicomAdapter
from acqharvest.adapters.tiff import TiffAdapter
from acqharvest.readonly import FileReader

TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"


def corpus_files() -> dict[str, list[Path]]:
    dicom = sorted(p for p in (CORPUS / "dicom").rglob("*") if p.is_file())
    tiffs = sorted(
        p
        for folder in ("ome-tiff", "tiff-vendor")
        for p in (CORPUS / folder).rglob("*")
        if p.is_file() and p.read_bytes()[:4] in TIFF_MAGIC
    )
    return {"dicom": dicom, "tiff": tiffs}


def adapter_read(adapter: Adapter, path: Path) -> int:
    """Bytes the adapter reads to extract ``path`` (0 when it refuses the file)."""
    reader = FileReader()
    try:
        adapter.extract(Draft("bench", path, (path,)), reader)
    except AdapterError:
        return 0
    return reader.bytes_read


def pydicom_header(path: Path) -> None:
    pydicom.dcmread(path, stop_before_pixels=True, force=True)


def tifffile_header(path: Path) -> None:
    with tifffile.TiffFile(path) as tif:
        for tag in tif.pages.first.tags.values():
            _ = tag.value


def files_per_second(call: Callable[[Path], object], files: list[Path], repeat: int) -> float:
    """Median over ``repeat`` passes of files handled per second."""
    rates = []
    for _ in range(repeat):
        started = time.perf_counter()
        for path in files:
            call(path)
        rates.append(len(files) / (time.perf_counter() - started))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quiet", action="store_true", help="no per-file table")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # vendor files make both readers warn; not measured here
    families: dict[str, tuple[Adapter, Callable[[Path], None], str]] = {
        "dicom": (DicomAdapter(), pydicom_header, "pydicom stop_before_pixels"),
        "tiff": (TiffAdapter(), tifffile_header, "tifffile page-0 tags"),
    }
    for family, files in corpus_files().items():
        adapter, baseline, baseline_name = families[family]
        total_read = total_size = 0
        if not args.quiet:
            print(f"\n{family}: bytes read by the adapter / file size")
        for path in files:
            read, size = adapter_read(adapter, path), path.stat().st_size
            total_read, total_size = total_read + read, total_size + size
            if not args.quiet:
                rel = path.relative_to(CORPUS)
                print(f"  {read:>9} / {size:>9}  {read / size:7.2%}  {rel}")

        def extract(path: Path, adapter: Adapter = adapter) -> int:
            return adapter_read(adapter, path)

        ours = files_per_second(extract, files, args.repeat)
        theirs = files_per_second(baseline, files, args.repeat)
        print(
            f"{family}: {len(files)} files, adapter read {total_read} of {total_size} bytes "
            f"({total_read / total_size:.2%}); adapter {ours:.0f} files/s, {baseline_name} "
            f"{theirs:.0f} files/s, ratio {ours / theirs:.2f}x"
        )


if __name__ == "__main__":
    main()
