"""TIFF flavours with no corpus file, written here as their programs lay them out.

Each file is written with tifffile's writer (the vendor tags as ``extratags``, ScanImage's
headers as Software and ImageDescription text); each test first checks that tifffile
recognises the flavour, so the adapter is tested on what tifffile really parses.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy
import pytest
import tifffile
from tifffile.tifffile import TIFF

from acqharvest.adapter_api import HEAD_BYTES, AdapterOutput, Draft, FileProbe
from acqharvest.adapters.tiff import TiffAdapter, flavours, vendors
from acqharvest.readonly import FileReader
from acqharvest.testing import checks
from tests import slides

PLANE = numpy.zeros((8, 8), numpy.uint16)


def _extract(path: Path) -> AdapterOutput:
    adapter, reader = TiffAdapter(), FileReader()
    probe = FileProbe(path, path.stat().st_size, reader.head(path, HEAD_BYTES))
    claim = adapter.claim(probe, reader)
    assert claim is not None
    return adapter.extract(Draft(claim.group_key, path, (path,)), reader)


# --------------------------------------------------------------------------- MetaMorph STK


def _stk(path: Path, spatial_calibration: int) -> Path:
    """UIC1Tag entries as MetaMorph writes them: (id, value) pairs, counted in pairs, and
    rational or string values stored elsewhere by absolute offset."""

    def entries(at: int) -> bytes:
        values = at + 4 * 8  # after the four pairs
        pairs = struct.pack("<8I", 3, spatial_calibration, 4, values, 5, values + 8, 6, values + 16)
        x, y = struct.pack("<2I", 65, 100), struct.pack("<2I", 13, 40)
        return pairs + x + y + struct.pack("<I", 3) + b"um\0\0"  # Pascal string, padded

    def write(at: int) -> None:
        tag = (33628, "I", None, entries(at), True)
        tifffile.imwrite(path, PLANE, metadata=None, extratags=[tag])

    write(0)  # the offsets depend on where the writer puts the value: learn it, rewrite
    with tifffile.TiffFile(path) as tif:
        uic1 = tif.pages.first.tags[33628]
        at, entry = uic1.valueoffset, uic1.offset
    write(at)
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, entry + 4, 4)  # the TIFF count is the number of pairs
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("spatial_calibration", "expected"), [(1, {"x": 0.65, "y": 0.325}), (0, None)]
)
def test_metamorph_stk_calibration(tmp_path, spatial_calibration, expected):
    path = _stk(tmp_path / "cells.stk", spatial_calibration)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages.first.is_stk
        parsed = tif.stk_metadata
        assert parsed is not None
        assert (parsed["XCalibration"], parsed["CalibrationUnits"]) == (0.65, "um")
    output = _extract(path)
    assert output.format == "TIFF (MetaMorph STK)"
    assert output.metadata.get("pixel_size_um") == expected
    assert output.original_metadata["stk_metadata"]["YCalibration"] == 0.325


# --------------------------------------------------------------------------- FluoView


def _fluoview(path: Path, dimensions: list[tuple[str, int, float, str]]) -> Path:
    header = numpy.zeros(1, numpy.dtype(TIFF.MM_HEADER))
    header["HeaderFlag"] = 2
    for index, (name, size, resolution, unit) in enumerate(dimensions):
        header["Dimensions"][0][index] = (name.encode(), size, 0.0, resolution, unit.encode())
    tags = [(34361, "B", None, header.tobytes(), True), (34362, "d", 8, numpy.zeros(8), True)]
    tifffile.imwrite(path, PLANE, metadata=None, extratags=tags)
    return path


def test_fluoview_mm_header_dimensions(tmp_path):
    path = _fluoview(
        tmp_path / "fv.tif",
        [("X", 512, 0.207, "um"), ("Y", 512, 207.0, "nm"), ("Z", 3, 0.5, ""), ("Ch", 2, 1, "")],
    )
    with tifffile.TiffFile(path) as tif:
        assert tif.pages.first.is_fluoview
        parsed = tif.fluoview_metadata
        assert parsed is not None
        assert parsed["Dimensions"][1] == ("Y", 512, 0.0, 207.0, "nm")
    output = _extract(path)
    assert output.format == "TIFF (Olympus FluoView)"
    # Z has no unit: a number without one is not a spacing
    assert output.metadata["pixel_size_um"] == {"x": 0.207, "y": 0.207}


# --------------------------------------------------------------------------- NIH Image


@pytest.mark.parametrize(("version", "units_id"), [(160, 6), (150, 1)])
def test_nih_image_header(tmp_path, version, units_id):
    """Micrometres are UnitsID 6 from version 154 on and 1 before, as ImageJ reads them."""
    header = numpy.zeros(1, numpy.dtype(TIFF.NIH_IMAGE_HEADER).newbyteorder(">"))
    header["FileID"] = b"IPICIMAG"
    header["Version"] = version
    header["XScale"] = 4.0  # pixels per unit
    header["UnitsID"] = units_id
    header["PixelAspectRatio"] = 0.5
    header["nSlices"] = 3
    header["SliceSpacing"] = 1.5
    block = header.tobytes().ljust(512, b"\0")  # 256 shorts, the count ImageJ expects
    path = tmp_path / "nih.tif"
    tifffile.imwrite(
        path, numpy.zeros((3, 8, 8), numpy.uint8), photometric="minisblack", metadata=None,
        byteorder=">",
        extratags=[(43314, "H", None, block, True)],
    )  # fmt: skip
    with tifffile.TiffFile(path) as tif:
        assert tif.pages.first.is_nih
        parsed = tif.nih_metadata
        assert parsed is not None
        assert parsed["XScale"] == 4.0
    output = _extract(path)
    assert output.format == "TIFF (NIH Image)"
    assert output.metadata["pixel_size_um"] == {"x": 0.25, "y": 0.5, "z": 1.5}


# --------------------------------------------------------------------------- ScanImage

SI_SETTINGS = (
    "SI.VERSION_MAJOR = '2020'\n"
    "SI.hRoiManager.pixelsPerLine = 512\n"
    "SI.hRoiManager.linesPerFrame = 128\n"
    "SI.hRoiManager.imagingFovUm = [-256 -128;256 -128;256 128;-256 128]\n"
)
SI_FRAME = (
    "frameNumbers = 1\nacquisitionNumbers = 1\nframeTimestamps_sec = 0.000000\n"
    "epoch = [2020  3 14 12 30 45.5]\n"
)


def test_scanimage_settings_in_the_software_tag(tmp_path):
    path = tmp_path / "si.tif"
    tifffile.imwrite(path, PLANE, software=SI_SETTINGS, description=SI_FRAME, metadata=None)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages.first.is_scanimage
    output = _extract(path)
    assert output.format == "TIFF (ScanImage)"
    # a 512 x 256 µm field over 512 x 128 pixels
    assert output.metadata["pixel_size_um"] == {"x": 1.0, "y": 2.0}
    assert output.metadata["acquired"] == "2020-03-14T12:30:45.500"


def test_scanimage_3_state_header_names_the_flavour_only(tmp_path):
    path = tmp_path / "si3.tif"
    state = "state.configPath='C:\\\\cfg'\nstate.acq.pixelsPerLine=512\nstate.acq.zoomFactor=2\n"
    tifffile.imwrite(path, PLANE, description=state, metadata=None)
    output = _extract(path)
    assert output.format == "TIFF (ScanImage)"
    assert "pixel_size_um" not in output.metadata  # ScanImage 3 stores no calibration
    assert "acquired" not in output.metadata


# --------------------------------------------------------------------------- Micro-Manager


def test_micromanager_image_tag(tmp_path):
    path = tmp_path / "mm.tif"
    tag = {
        "PixelSizeUm": 0.108,
        "Camera": "Andor Zyla",
        "Exposure-ms": 30.0,
        "Channel": "GFP",
        "Time": "2017-09-18 14:20:46.123 -0700",
        "UserName": "mmuser",
        "ComputerName": "SCOPE-PC",
        "MicroManagerVersion": "2.0.0",
    }
    tifffile.imwrite(path, PLANE, extratags=[(51123, "s", 0, json.dumps(tag), True)], metadata=None)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages.first.is_micromanager
    output = _extract(path)
    assert output.format == "TIFF (Micro-Manager)"
    meta = output.metadata
    assert meta["pixel_size_um"] == {"x": 0.108, "y": 0.108}
    assert meta["detector"] == {"model": "Andor Zyla"}
    assert meta["channels"] == [{"name": "GFP", "exposure_s": 0.03}]
    assert meta["acquired"] == "2017-09-18T14:20:46.123-07:00"
    assert meta["operator"] == "mmuser"
    assert meta["instrument_reported"] == {
        "station_name": "SCOPE-PC",
        "software": "Micro-Manager",
        "software_version": "2.0.0",
    }


def _micromanager(path: Path, image_tag: dict[str, Any], block: bytes) -> Path:
    """A one-plane 8x8 TIFF with Micro-Manager's ``block`` between header and first IFD.

    Written by hand: tifffile's writer always puts the first IFD at byte 8.
    """
    pixels, text = bytes(128), json.dumps(image_tag).encode() + b"\0"
    pixels_at = 8 + len(block)
    text_at = pixels_at + len(pixels)
    ifd_at = text_at + len(text) + len(text) % 2
    short, long, ascii_ = 3, 4, 2
    entries = [
        (256, short, 1, 8),
        (257, short, 1, 8),
        (258, short, 1, 16),
        (259, short, 1, 1),
        (262, short, 1, 1),
        (273, long, 1, pixels_at),
        (277, short, 1, 1),
        (278, short, 1, 8),
        (279, long, 1, len(pixels)),
        (51123, ascii_, len(text), text_at),
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        field = struct.pack("<HH", value, 0) if kind == short else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + field
    ifd += struct.pack("<I", 0)
    data = b"II*\0" + struct.pack("<I", ifd_at) + block + pixels + text
    path.write_bytes(data + bytes(ifd_at - len(data)) + ifd)
    return path


def _summary_block(layout: str, summary: bytes) -> bytes:
    """The words before the summary JSON, per layout (see ``vendors.micromanager_summary``)."""
    marker, length = 2355492, len(summary)
    words = {
        # index map, display settings and comments headers with offsets, then the summary
        "multipage": (54773648, 0, 483765892, 0, 99384722, 0, marker, length),
        "ndtiff2": (483729, 2, marker, length),
        "ndtiff3": (483729, 3, 1, marker, length),
    }[layout]
    return struct.pack(f"<{len(words)}I", *words) + summary


MM_IMAGE = {
    "PixelSizeUm": 0.108,
    "Camera": "Andor Zyla",
    "Exposure-ms": 30.0,
    "Channel": "GFP",
    "MicroManagerVersion": "2.0.0",
}


@pytest.mark.parametrize("layout", ["multipage", "ndtiff2", "ndtiff3"])
def test_micromanager_summary_adds_z_step_dimensions_and_every_channel(tmp_path, layout):
    dimensions: dict[str, Any] = {"Slices": 5, "Channels": 2, "Frames": 3}
    if layout != "multipage":  # Micro-Manager 2 states them as intended dimensions
        dimensions = {"IntendedDimensions": {"z": 5, "channel": 2, "time": 3, "position": 1}}
    summary = {
        "ChNames": ["DAPI", "GFP"],
        "z-step_um": 0.5,
        "UserName": "mmuser",
        "ComputerName": "SCOPE-PC",
        "StartTime": "2017-09-18 14:20:46.123 -0700",
        **dimensions,
    }
    block = _summary_block(layout, json.dumps(summary).encode())
    path = _micromanager(tmp_path / "mm.tif", MM_IMAGE, block)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages.first.is_micromanager
        known = tif.micromanager_metadata  # the layout tifffile knows
        assert known is not None
        assert known["Summary"] == summary
    output = _extract(path)
    meta = output.metadata
    assert output.format == "TIFF (Micro-Manager)"
    assert meta["pixel_size_um"] == {"x": 0.108, "y": 0.108, "z": 0.5}
    assert (meta["image"]["size_z"], meta["image"]["size_c"], meta["image"]["size_t"]) == (5, 2, 3)
    assert meta["channels"] == [{"name": "DAPI"}, {"name": "GFP", "exposure_s": 0.03}]
    assert meta["acquired"] == "2017-09-18T14:20:46.123-07:00"
    assert meta["operator"] == "mmuser"
    assert meta["instrument_reported"]["station_name"] == "SCOPE-PC"
    assert output.original_metadata["micromanager_summary"] == summary


@pytest.mark.parametrize(
    "summary",
    [b'{"ChNames": ["DAPI", "GF', b"\xff\xfe not JSON", b'["a list, not an object"]'],
    ids=["cut-short", "not-json", "not-an-object"],
)
def test_a_broken_micromanager_summary_leaves_the_image_tag_fields(tmp_path, summary):
    path = _micromanager(tmp_path / "mm.tif", MM_IMAGE, _summary_block("multipage", summary))
    meta = _extract(path).metadata
    assert meta["channels"] == [{"name": "GFP", "exposure_s": 0.03}]
    assert meta["pixel_size_um"] == {"x": 0.108, "y": 0.108}


def test_a_micromanager_summary_over_the_cap_is_not_read(tmp_path):
    big = json.dumps({"z-step_um": 0.5, "Comment": "x" * vendors.MM_SUMMARY_CAP}).encode()
    path = _micromanager(tmp_path / "mm.tif", MM_IMAGE, _summary_block("multipage", big))
    adapter, reader = TiffAdapter(), FileReader()
    probe = FileProbe(path, path.stat().st_size, reader.head(path, HEAD_BYTES))
    claim = adapter.claim(probe, reader)
    assert claim is not None
    reader.bytes_read = 0
    meta = adapter.extract(Draft(claim.group_key, path, (path,)), reader).metadata
    assert "z" not in meta["pixel_size_um"]
    assert reader.bytes_read < vendors.MM_SUMMARY_CAP // 4


# --------------------------------------------------------------------------- LSM rules


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "EC Plan-Neofluar 40x/1.30 Oil DIC M27",
            {"magnification": 40.0, "na": 1.3, "immersion": "Oil"},
        ),
        (
            "C-Apochromat 40x/1.20 W Corr M27",
            {"magnification": 40.0, "na": 1.2, "immersion": "Water"},
        ),
        ("Plan-Apochromat 20x/0.8 M27", {"magnification": 20.0, "na": 0.8}),
        ("Achroplan 63x/160", {"magnification": 63.0}),  # 160 is a tube length, not an NA
        ("Objective 1", {}),
    ],
)
def test_objective_fields_are_parsed_from_the_name(name, expected):
    assert flavours.objective_from_name(name) == {"model": name, **expected}


def _track(lasers: list[float], detections: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "Acquire": 1,
        "IlluminationChannels": [{"Aquire": 1, "Wavelength": w} for w in lasers],
        "DetectionChannels": detections,
    }


def test_lsm_channels_take_the_laser_only_when_one_line_is_on():
    scan = {
        "Tracks": [
            _track([488.0], [{"Acquire": 1, "ChannelName": "Ch1", "DyeName": "Alexa Fluor 488"}]),
            _track(
                [561.0, 633.0],
                [
                    {"Acquire": 1, "ChannelName": "Ch2", "PointDetectorName": "PMT2"},
                    {"Acquire": 0, "ChannelName": "Ch3"},  # not acquired: not a channel
                ],
            ),
        ],
        "Sample0time": 40237.029999999795,  # tifffile's excel_datetime doctest value
    }
    found = flavours.lsm({"ScanInformation": scan})
    assert found["channels"] == [
        {"name": "Ch1", "excitation_nm": 488.0, "fluor": "Alexa Fluor 488"},
        {"name": "Ch2"},
    ]
    assert found["detector"] == {"model": "PMT2"}
    assert found["acquired"] == "2010-02-28T00:43:12"


# --------------------------------------------------------------------------- whole-slide scanners


@pytest.mark.parametrize("vendor", ["aperio", "hamamatsu", "leica", "philips", "ventana"])
def test_slide_scanners_name_every_value_that_may_identify_a_patient(
    tmp_path: Path, vendor: str
) -> None:
    """What is planted is named (the agent's policy decides its fate), with paths the
    conformance kit accepts; the Philips label image is not in the output at all."""
    slide = getattr(slides, vendor)(tmp_path)
    with tifffile.TiffFile(slide.path) as tif:
        assert slide.flag in tif.flags
    output = _extract(slide.path)
    named = {identifier.value for identifier in output.identifiers}
    assert {*slide.identity, *slide.dates, *slide.labels, *slide.device} <= named
    assert checks.identifier_problems(output) == []
    text = json.dumps(dict(output.original_metadata))
    assert all(value not in text for value in slide.never)


def test_microscope_flavours_name_no_identifier(corpus: Path) -> None:
    """Dates and operators of microscopes are the science, not a patient's: kept."""
    output = _extract(corpus / "tiff-vendor/fei-sem/FEI-Helios-Ebeam-16bits.tif")
    assert output.metadata.get("acquired")
    assert output.identifiers == ()
