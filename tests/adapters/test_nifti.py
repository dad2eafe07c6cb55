"""The NIfTI adapter against nibabel's own reading of every corpus file, and pairs."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Any

import nibabel
import numpy as np
import pytest

from acqharvest.adapter_api import AdapterError, Draft
from acqharvest.adapters.nifti import NiftiAdapter
from acqharvest.readonly import FileReader
from tests.adapters.acquisition import claims_of, extract_all, overread
from tests.conftest import CORPUS

FILES = sorted(p.name for p in (CORPUS / "nifti").iterdir()) if (CORPUS / "nifti").is_dir() else []
SPACE_UM = {"mm": 1e3, "micron": 1.0, "meter": 1e6}
TIME_S = {"sec": 1.0, "msec": 1e-3}


def test_corpus_has_nifti_files() -> None:
    assert len(FILES) >= 5


@pytest.mark.parametrize("name", FILES)
def test_sizes_and_voxel_sizes_equal_nibabels(corpus: Path, name: str) -> None:
    path = corpus / "nifti" / name
    image = nibabel.load(path)
    header: Any = image.header
    output, _ = extract_all(NiftiAdapter(), [path])
    metadata = output.metadata
    shape = header.get_data_shape()
    sizes = [metadata["image"][f"size_{a}"] for a in ("x", "y", "z", "t", "c")[: len(shape)]]
    assert sizes == list(shape)
    assert metadata["image"]["pixel_type"] == header.get_value_label("datatype")
    space, time = header.get_xyzt_units()
    zooms = header.get_zooms()
    if space in SPACE_UM:
        expected = [z * SPACE_UM[space] for z in zooms[:3]]
        assert [metadata["pixel_size_um"][a] for a in "xyz"] == pytest.approx(expected)
    else:
        assert "pixel_size_um" not in metadata
    if len(shape) >= 4:
        assert metadata["repetition_time_s"] == pytest.approx(zooms[3] * TIME_S[time])
    assert output.format == f"NIfTI-{2 if isinstance(header, nibabel.Nifti2Header) else 1}"
    assert metadata["nifti"]["qform"] == header.get_value_label("qform_code")


def _volume(
    shape: tuple[int, ...], units: tuple[str, str] = ("micron", "msec")
) -> nibabel.Nifti1Image:
    rng = np.random.default_rng(7)
    data = rng.integers(0, 2**15, size=shape, dtype=np.int16)
    image = nibabel.Nifti1Image(data, np.eye(4))
    image.header.set_zooms((0.5, 0.25, 2.0, 1500.0)[: len(shape)])
    image.header.set_xyzt_units(*units)
    image.header["descrip"] = b"written here"
    image.header.set_intent("t test", (12.0,))
    return image


def test_units_are_converted_and_large_files_read_their_headers_only(tmp_path: Path) -> None:
    plain = tmp_path / "big.nii"
    nibabel.save(_volume((64, 64, 40, 4)), plain)
    packed = tmp_path / "big.nii.gz"
    nibabel.save(_volume((64, 64, 40, 4)), packed)
    assert plain.stat().st_size > 1_000_000
    assert packed.stat().st_size > 1_000_000
    for path in (plain, packed):
        output, reader = extract_all(NiftiAdapter(), [path])
        assert output.metadata["pixel_size_um"] == {"x": 0.5, "y": 0.25, "z": 2.0}
        assert output.metadata["repetition_time_s"] == 1.5
        assert output.metadata["description"] == "written here"
        assert output.metadata["nifti"]["intent"] == "t test"
        assert overread(reader) == {}, path.name


def test_a_units_byte_with_codes_nifti_does_not_define_drops_the_units_only(
    tmp_path: Path,
) -> None:
    """Found by the long fuzz run: nibabel raises KeyError on such a byte."""
    image = _volume((8, 8, 4, 2))
    image.header["xyzt_units"] = 7 | 64  # neither 7 nor 64 is a NIfTI unit code
    path = tmp_path / "odd-units.nii"
    nibabel.save(image, path)
    output, _ = extract_all(NiftiAdapter(), [path])
    assert "pixel_size_um" not in output.metadata
    assert "repetition_time_s" not in output.metadata
    assert output.metadata["image"]["size_x"] == 8  # the rest is read
    assert any("spatial unit 'code 7'" in note for note in output.warnings), output.warnings


def test_a_cut_short_file_fails_naming_it(tmp_path: Path) -> None:
    plain = tmp_path / "cut.nii"
    nibabel.save(_volume((16, 16, 8)), plain)
    plain.write_bytes(plain.read_bytes()[:-10])
    with pytest.raises(AdapterError, match="truncated") as caught:
        extract_all(NiftiAdapter(), [plain])
    assert caught.value.path == plain
    packed = tmp_path / "cut.nii.gz"
    nibabel.save(_volume((16, 16, 8)), packed)
    packed.write_bytes(packed.read_bytes()[: packed.stat().st_size // 2])
    with pytest.raises(AdapterError, match="truncated"):
        extract_all(NiftiAdapter(), [packed])
    # a BGZF-style stream (several members) is accepted as it stands
    bgzf = tmp_path / "multi.nii.gz"
    shutil.copy(tmp_path / "cut.nii", tmp_path / "whole.nii")
    nibabel.save(_volume((16, 16, 8)), tmp_path / "whole.nii")
    raw = (tmp_path / "whole.nii").read_bytes()
    eof = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
    bgzf.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]) + eof)
    output, _ = extract_all(NiftiAdapter(), [bgzf])
    assert output.metadata["image"]["size_x"] == 16


def test_hdr_img_pair_is_one_acquisition_found_by_the_header_magic(tmp_path: Path) -> None:
    pair = nibabel.Nifti1Pair(_volume((20, 10, 5)).get_fdata().astype(np.int16), np.eye(4))
    pair.header.set_zooms((1.0, 1.0, 3.0))
    pair.header.set_xyzt_units("mm")
    nibabel.save(pair, tmp_path / "scan.hdr")
    hdr, img = tmp_path / "scan.hdr", tmp_path / "scan.img"
    claims = claims_of(NiftiAdapter(), [hdr, img])
    header, data = claims[hdr], claims[img]
    assert header is not None
    assert data is not None
    assert (header.role, header.expects) == ("primary", ("scan.img",))
    assert (data.role, data.group_key) == ("member", header.group_key)
    output, _ = extract_all(NiftiAdapter(), [hdr, img])
    loaded: Any = nibabel.load(hdr)
    assert output.format == "NIfTI-1"
    assert [output.metadata["image"][f"size_{a}"] for a in "xyz"] == list(loaded.shape)
    assert output.metadata["pixel_size_um"] == {"x": 1000.0, "y": 1000.0, "z": 3000.0}
    assert output.metadata["instances"] == 2
    assert output.original_metadata["layout"] == "pair"
    img.write_bytes(img.read_bytes()[:100])
    with pytest.raises(AdapterError, match="truncated") as caught:
        extract_all(NiftiAdapter(), [hdr, img])
    assert caught.value.path == img


def test_an_img_waits_for_its_header_and_leaves_other_formats_alone(tmp_path: Path) -> None:
    early = tmp_path / "early.img"
    early.write_bytes(b"\0" * 64)
    claim = claims_of(NiftiAdapter(), [early])[early]
    assert claim is not None
    assert claim.role == "member"
    assert claim.expects == ("early.hdr",)
    assert claim.confidence < 0.5  # another format's .img is not outbid
    output = NiftiAdapter().extract(Draft("k", early, (early,)), FileReader())
    assert output.metadata == {"instances": 1}
    assert "early.hdr" in output.warnings[0]
    envi = tmp_path / "envi.img"
    envi.write_bytes(b"\0" * 64)
    (tmp_path / "envi.hdr").write_text("ENVI\nsamples = 4\n")
    assert claims_of(NiftiAdapter(), [envi, tmp_path / "envi.hdr"]) == {
        envi: None,
        tmp_path / "envi.hdr": None,
    }
