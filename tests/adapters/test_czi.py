"""The Zeiss CZI adapter on the corpus's ZEN files, against czifile's own reading of them."""

from __future__ import annotations

import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import czifile
import pytest

from acqharvest.adapter_api import AdapterError, Draft, FileProbe
from acqharvest.adapters.czi import CziAdapter
from acqharvest.readonly import FileReader
from tests.adapters.readme import assert_readme_table
from tests.adapters.test_builtin_conformance import _Builtin, _patch
from tests.conftest import CORPUS, REPO

FILES = sorted(p.relative_to(CORPUS).as_posix() for p in (CORPUS / "czi").glob("*.czi"))
#: in the file header segment's data (which starts at 32): metadata position (int64)
METADATA_POSITION_AT = 32 + 60


class TestCziConformance(_Builtin):
    entry_point = "czi"
    cases_dir = REPO / "adapters" / "czi" / "cases"

    def header_lies(self, data: bytes) -> Iterator[tuple[str, bytes]]:
        past = len(data) + 4096
        yield "file header segment size past EOF", _patch(data, 16, struct.pack("<q", past))
        yield (
            "metadata position past EOF",
            _patch(data, METADATA_POSITION_AT, struct.pack("<q", past)),
        )
        (metadata,) = struct.unpack_from("<q", data, METADATA_POSITION_AT)
        yield "metadata XML size past EOF", _patch(data, metadata + 32, struct.pack("<i", past))


def _extract(path: Path, reader: FileReader | None = None) -> Any:
    return CziAdapter().extract(Draft("czi:x", path, (path,)), reader or FileReader())


@pytest.mark.parametrize("rel", FILES)
def test_sizes_and_pixel_sizes_agree_with_czifile(corpus: Path, rel: str) -> None:
    """czifile's shape comes from the subblock directory, not the XML the adapter reads."""
    path = corpus / rel
    output = _extract(path)
    with czifile.CziFile(str(path)) as czi:
        shape = dict(zip(czi.axes, czi.shape, strict=True))
        scaling = czi.metadata(raw=False)["ImageDocument"]["Metadata"]["Scaling"]
    image = output.metadata["image"]
    keys = {"X": "size_x", "Y": "size_y", "Z": "size_z", "C": "size_c", "T": "size_t"}
    keys["S"] = "scenes"
    for axis, key in keys.items():
        expected = shape.get(axis, 1)
        if axis == "C" and shape.get("0", 1) > 1:
            expected = 1  # RGB samples are czifile's axis 0, not channels
        assert image.get(key, 1) == expected, (rel, axis, shape)
    distances = scaling["Items"]["Distance"]
    distances = distances if isinstance(distances, list) else [distances]
    expected_um = {d["Id"].lower(): d["Value"] * 1e6 for d in distances}
    assert output.metadata["pixel_size_um"] == pytest.approx(expected_um, rel=1e-9)


def test_a_z_stack_reads_instrument_objective_channels_and_time(corpus: Path) -> None:
    output = _extract(corpus / "czi/testCziZStack4.czi")
    meta = output.metadata
    assert meta["image"] == {
        "size_x": 61,
        "size_y": 61,
        "size_z": 4,
        "size_c": 2,
        "pixel_type": "uint16",
        "bits": 14,
    }
    assert meta["pixel_size_um"] == pytest.approx({"x": 0.454, "y": 0.454, "z": 1.0})
    assert meta["objective"] == {
        "model": "EC Plan-Neofluar 10x/0.30 Ph 1",
        "magnification": 10.0,
        "na": 0.3,
        "immersion": "Air",
        "working_distance_um": 5300.0,
    }
    assert meta["instrument_reported"]["model"] == "Axio Observer.Z1 / 7"
    assert meta["instrument_reported"]["software_version"] == "2.3.64.0"
    assert meta["channels"][1] == {
        "name": "EGFP",
        "fluor": "EGFP",
        "excitation_nm": 488.0,
        "emission_nm": 509.0,
        "exposure_s": 3.0,
        "illumination": "Epifluorescence",
        "contrast_method": "Fluorescence",
        "acquisition_mode": "WideField",
        "detector_settings": {"binning": "1x1"},
        # LightSource:2, an HXP 120 V arc lamp; FilterSet:2's Filter:3 and Filter:4
        "light_source": {"type": "Arc", "model": "HXP 120 V"},
        "filters": {"excitation_nm": [450.0, 490.0], "emission_nm": [500.0, 550.0]},
    }
    assert output.started == meta["acquired"] == "2018-10-25T15:54:18.4488006Z"


def test_channel_settings_follow_their_references(corpus: Path) -> None:
    """Each channel names its own light source and filter set: the third is not the first's."""
    channels = _extract(corpus / "czi/testCziBSCZY0Tiny.czi").metadata["channels"]
    assert [c["filters"] for c in channels] == [
        {"excitation_nm": [335.0, 383.0], "emission_nm": [420.0, 470.0]},
        {"excitation_nm": [450.0, 490.0], "emission_nm": [500.0, 550.0]},
        {"excitation_nm": [530.0, 585.0], "emission_nm": [615.0, 4095.0]},
    ]
    assert {c["light_source"]["type"] for c in channels} == {"Arc"}


def test_scenes_and_tiles_and_an_rgb_image_without_instrument(corpus: Path) -> None:
    scenes = _extract(corpus / "czi/testCziFileTwoScenesTiny.czi").metadata["image"]
    assert (scenes["scenes"], scenes["tiles"]) == (2, 2)
    rgb = _extract(corpus / "czi/testCziYX0Tiny.czi")
    assert rgb.metadata["image"]["samples_per_pixel"] == 3
    assert rgb.metadata["image"]["pixel_type"] == "uint8"
    assert "objective" not in rgb.metadata
    assert rgb.started is None  # its T StartTime is ZEN's year-1 placeholder


def test_headers_only_a_large_segment_is_skipped_unread(corpus: Path, tmp_path: Path) -> None:
    """A CZI of 8 MiB more (a deleted segment, as ZEN leaves after an edit) costs nothing."""
    data = (corpus / "czi/testCziZStack4.czi").read_bytes()
    big = 8 * 2**20
    path = tmp_path / "large.czi"
    path.write_bytes(data + struct.pack("<16sqq", b"DELETED", big, big) + bytes(big))
    small, large = FileReader(), FileReader()
    _extract(corpus / "czi/testCziZStack4.czi", small)
    output = _extract(path, large)
    assert output.metadata["image"]["size_z"] == 4
    assert large.bytes_read < path.stat().st_size * 0.05
    assert large.bytes_read - small.bytes_read == 32  # the deleted segment's header only


def test_a_file_cut_inside_a_subblock_is_truncated(corpus: Path, tmp_path: Path) -> None:
    data = (corpus / "czi/testTinyCzi.czi").read_bytes()
    path = tmp_path / "cut.czi"
    path.write_bytes(data[:-1])
    with pytest.raises(AdapterError, match=r"truncated: segment ZISRAW\w+ at \d+ declares"):
        _extract(path)


def test_a_file_header_id_with_a_stray_byte_is_not_a_czi(corpus: Path, tmp_path: Path) -> None:
    # found by atheris: czifile reads such a first segment as unknown and fails on it with
    # an AttributeError; the claim (magic at offset 0) still takes the file
    data = bytearray((corpus / "czi/testTinyCzi.czi").read_bytes())
    data[10] = 1
    path = tmp_path / "stray.czi"
    path.write_bytes(bytes(data))
    with pytest.raises(
        AdapterError, match=r"not a CZI file \(no ZISRAWFILE header: b'ZISRAWFILE\\x01"
    ):
        _extract(path)


def test_claim_needs_no_czifile(corpus: Path) -> None:
    """Claiming reads the magic only, in a process where czifile cannot be imported."""
    path = corpus / "czi/testTinyCzi.czi"
    script = (
        "import sys; sys.modules['czifile'] = None\n"
        "from pathlib import Path\n"
        "from acqharvest.adapter_api import FileProbe\n"
        "from acqharvest.adapters.czi import CziAdapter\n"
        "from acqharvest.readonly import FileReader\n"
        f"path = Path({str(path)!r})\n"
        "claim = CziAdapter().claim(FileProbe(path, 1, path.read_bytes()[:4096]), FileReader())\n"
        "print(claim.group_key, 'numpy' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == [f"czi:{path}", "False"]
    probe = FileProbe(path, 16, b"ZISRAWMETADATA\0\0")
    assert CziAdapter().claim(probe, FileReader()) is None


def test_readme_field_table_is_the_declared_fields() -> None:
    assert_readme_table(CziAdapter.info.fields, REPO / "adapters" / "czi" / "README.md")
