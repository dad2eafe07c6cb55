"""The TIFF adapter on the OME-TIFF and vendor TIFF corpus, plus cut-short and foreign files."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from acqharvest.adapter_api import HEAD_BYTES, AdapterError, Draft, FileProbe
from acqharvest.adapters.tiff import TiffAdapter
from acqharvest.readonly import FileReader

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"


def _listed() -> list[str]:
    manifest = CORPUS / "MANIFEST.tsv"
    if not manifest.is_file():
        return []
    return [row.split("\t", 1)[0] for row in manifest.read_text("utf-8").splitlines()[1:]]


LISTED = _listed()
TIFF_FILES = sorted(
    rel
    for rel in LISTED
    if rel.startswith("tiff-vendor/") or (rel.startswith("ome-tiff/") and ".tif" in rel)
)
OME_FILES = [rel for rel in TIFF_FILES if rel.startswith("ome-tiff/")]


def _probe(path: Path, reader: FileReader) -> FileProbe:
    return FileProbe(path, path.stat().st_size, reader.head(path, HEAD_BYTES))


def _extract(path: Path, reader: FileReader | None = None) -> dict[str, Any]:
    reader = reader or FileReader()
    adapter = TiffAdapter()
    claim = adapter.claim(_probe(path, reader), reader)
    assert claim is not None, f"{path} not claimed"
    output = adapter.extract(Draft(claim.group_key, path, (path,)), reader)
    return {
        "format": output.format,
        "metadata": dict(output.metadata),
        "original": dict(output.original_metadata),
        "started": output.started,
        "warnings": output.warnings,
    }


def test_corpus_has_tiff_files():
    assert len(TIFF_FILES) >= 30
    assert len(OME_FILES) >= 10


@pytest.mark.parametrize("rel", TIFF_FILES)
def test_every_tiff_file_extracts(corpus, rel):
    result = _extract(corpus / rel)
    image = result["metadata"]["image"]
    assert image["size_x"] > 0
    assert image["size_y"] > 0
    assert image["frames"] >= 1
    if rel in OME_FILES:
        assert result["format"] == "OME-TIFF"
        assert "ome_xml" in result["original"]
    else:
        assert result["format"].startswith("TIFF")
    declared = {spec.key for spec in TiffAdapter.info.fields}
    for key, value in result["metadata"].items():
        if isinstance(value, dict):
            assert {f"{key}.{sub}" for sub in value} <= declared
        else:
            assert key in declared
    json.dumps(result)


COMPANION = "ome-tiff/multifile-companion/multifile.companion.ome"


def test_cross_claims_over_the_whole_corpus(corpus):
    """TIFF claims the TIFF files and the OME companion; not DICOM, CZI, OME-Zarr XML, ..."""
    adapter, reader = TiffAdapter(), FileReader()
    claimed = {rel for rel in LISTED if adapter.claim(_probe(corpus / rel, reader), reader)}
    assert claimed == {*TIFF_FILES, COMPANION}
    plain = "tiff-vendor/zeiss-lsm/test.lsm"
    claim = adapter.claim(_probe(corpus / plain, reader), reader)
    assert claim is not None
    assert claim.group_key == f"tiff:{corpus / plain}"
    assert (claim.role, claim.confidence, claim.expects) == ("primary", 0.5, ())


def test_vendor_flavours_and_pixel_sizes(corpus):
    lsm = _extract(corpus / "tiff-vendor/zeiss-lsm/test.lsm")
    assert lsm["format"] == "TIFF (Zeiss LSM)"
    assert lsm["metadata"]["pixel_size_um"]["x"] == pytest.approx(0.6919, abs=1e-4)
    assert "z" not in lsm["metadata"]["pixel_size_um"]  # LSM's 1e-19 "no z" is ignored
    # ScanInformation: one track, laser line 561 nm on, detection channel ChS1 on PmtSPI1
    assert lsm["metadata"]["channels"] == [
        {"name": "ChS1", "excitation_nm": 561.0, "fluor": "Alexa Fluor 568"}
    ]
    assert lsm["metadata"]["objective"] == {
        "model": "EC Plan-Neofluar 40x/1.30 Oil DIC M27",
        "magnification": 40.0,
        "na": 1.3,
        "immersion": "Oil",
    }
    assert lsm["metadata"]["detector"] == {"model": "PmtSPI1"}
    # Sample0time 41732.6559837963 days after 1899-12-30 (tifffile's excel_datetime)
    assert lsm["metadata"]["acquired"] == "2014-04-03T15:44:37"

    stack = _extract(corpus / "tiff-vendor/imagej/test_loading_image_saved_with_imageJ_stack.tif")
    assert stack["format"] == "TIFF (ImageJ)"
    assert stack["metadata"]["pixel_size_um"]["z"] == 2.5
    assert stack["metadata"]["image"]["size_z"] == 2

    svs = _extract(corpus / "tiff-vendor/aperio-svs/CMU-1-Small-Region.svs")
    assert svs["format"] == "TIFF (SVS)"
    assert svs["metadata"]["pixel_size_um"] == {"x": 0.499, "y": 0.499}
    assert svs["metadata"]["objective"]["magnification"] == 20.0
    assert svs["metadata"]["instrument_reported"] == {
        "manufacturer": "Aperio",
        "serial_number": "CPAPERIOCS",
    }
    assert svs["metadata"]["acquired"] == "2009-12-29T09:59:15"

    ndpi = _extract(corpus / "tiff-vendor/hamamatsu-ndpi/test3-DAPI-2-(387).ndpi")
    assert ndpi["format"] == "TIFF (NDPI)"
    assert ndpi["metadata"]["instrument_reported"]["manufacturer"] == "Hamamatsu"
    # 43826 pixels per centimetre
    assert ndpi["metadata"]["pixel_size_um"]["x"] == pytest.approx(1e4 / 43826)

    fei = _extract(corpus / "tiff-vendor/fei-sem/FEI-Helios-Ebeam-16bits.tif")
    assert fei["format"] == "TIFF (FEI SEM)"
    assert fei["metadata"]["pixel_size_um"]["x"] == pytest.approx(3.3724)
    assert fei["metadata"]["acquired"] == "2016-06-13T17:06:40"
    assert "fei_metadata" in fei["original"]

    sem = _extract(corpus / "tiff-vendor/zeiss-sem/test_tiff_Zeiss_SEM_512pix.tif")
    assert sem["format"] == "TIFF (Zeiss SEM)"
    assert sem["metadata"]["pixel_size_um"]["x"] == pytest.approx(0.005825)

    assert sem["metadata"]["acquired"] == "2018-09-25T08:20:42"
    assert sem["metadata"]["detector"]["model"] == "InLens"
    sem_1k = _extract(corpus / "tiff-vendor/zeiss-sem/test_tiff_Zeiss_SEM_1k.tif")
    # ap_pixel_size 2.615 µm; ap_width 2.677 mm over 1024 px agrees
    assert sem_1k["metadata"]["pixel_size_um"]["x"] == 2.615
    assert sem_1k["metadata"]["acquired"] == "2015-12-23T09:40:32"
    # dp_sem names the microscope; sv_version is SmartSEM's version, with no name given
    assert sem_1k["metadata"]["instrument_reported"] == {
        "model": "Merlin",
        "serial_number": "Merlin-61-08",
        "software_version": "V05.07.00.00 : 08-Jul-14",
    }
    assert "model" not in sem["metadata"]["instrument_reported"]  # no dp_sem in this one

    streak = _extract(corpus / "tiff-vendor/hamamatsu-streak/test_hamamatsu_streak_FOCUS.tif")
    assert streak["format"] == "TIFF (Hamamatsu streak)"
    assert streak["metadata"]["instrument_reported"] == {
        "model": "C10910",
        "serial_number": "301964",
        "software": "HPD-TA 9.5 pf4",  # the Software tag comes before the header's HPD-TA
        "software_version": "9.5 pf4",
    }
    assert streak["metadata"]["detector"] == {"model": "C13440-20CU"}

    plain = _extract(corpus / "tiff-vendor/zeiss-axiovision/optical_Zeiss_AxioVision_BW.tif")
    assert plain["format"] == "TIFF"
    assert "pixel_size_um" not in plain["metadata"]  # 150 dpi is print resolution, not sampling
    assert plain["metadata"]["acquired"].startswith("2016-06-13T")
    assert plain["metadata"]["instrument_reported"] == {
        "model": "AxioCamERc5s",
        "station_name": "E-D07MNJME25PJ",
    }


def test_electron_microscopy_calibrations(corpus):
    """Pixel sizes checked by hand against the tags (and RosettaSciIO's expectations)."""
    dm = _extract(corpus / "tiff-vendor/gatan-dm-tiff/test_loading_image_saved_with_DM.tif")
    assert dm["format"] == "TIFF (Gatan DigitalMicrograph)"
    # tags 65009/65010 = 0.16867469 with units 65003/65004 = "µm"
    assert dm["metadata"]["pixel_size_um"] == pytest.approx({"x": 0.1686747, "y": 0.1686747})

    jeol = _extract(corpus / "tiff-vendor/jeol-sightx/JEOL-SightX-TEM-mag-dummy.tif")
    assert jeol["format"] == "TIFF (JEOL SightX)"
    # MAG mode: 93 px/inch detector pitch (273.1 µm) over magnification 150000 = 1.8208 nm
    assert jeol["metadata"]["pixel_size_um"]["x"] == pytest.approx(0.0018208, rel=1e-4)
    assert jeol["metadata"]["instrument_reported"] == {
        "manufacturer": "JEOL Ltd.",
        "model": "JEM-ARM200F",
    }
    assert jeol["metadata"]["acquired"] == "2019-11-27T16:11:26.6205405+09:00"

    sis = _extract(corpus / "tiff-vendor/olympus-sis/olympus_SIS.tif")
    assert sis["format"] == "TIFF (Olympus SIS)"
    # SIS tag 33560 on the second IFD: pixelsizex 2.3928e-11 m
    assert sis["metadata"]["pixel_size_um"]["x"] == pytest.approx(2.3928e-5, rel=1e-4)
    assert sis["metadata"]["instrument_reported"]["model"] == "Quemesa"

    tvips = _extract(corpus / "tiff-vendor/tvips/TVIPS_bin4.tif")
    assert tvips["format"] == "TIFF (TVIPS)"
    # PixelSizeX 1.4208 nm, and XResolution 7038270 px/cm says the same
    assert tvips["metadata"]["pixel_size_um"]["x"] == pytest.approx(1e4 / 7038270, rel=1e-6)
    assert tvips["metadata"]["detector"] == {"model": "F416", "manufacturer": "TVIPS"}
    assert tvips["metadata"]["instrument_reported"] == {"model": "MCL_04"}
    # Date 0x07E1040C, Time 32477 s; the image is named ..._12-04-2017_001
    assert tvips["metadata"]["acquired"] == "2017-04-12T09:01:17"

    navcam = _extract(corpus / "tiff-vendor/fei-sem/FEI-Helios-navcam.tif")
    assert navcam["metadata"]["detector"] == {"model": "Nav-Cam"}  # Mode "None" is not a type


def test_ome_fields(corpus):
    result = _extract(corpus / "ome-tiff/acquisition/170918_tn_neutrophil_migration_wave.ome.tif")
    meta = result["metadata"]
    assert meta["image"]["dimension_order"] == "XYCZT"
    assert meta["pixel_size_um"] == {"x": 1.0, "y": 1.0, "z": 1.0}
    assert meta["channels"][0]["name"] == "488 TIRF left"
    assert meta["detector"]["model"] == "Left-EMCCD"

    series = _extract(corpus / "ome-tiff/single-file/multi-channel-time-series.ome.tif")
    image = series["metadata"]["image"]
    assert (image["size_c"], image["size_t"], image["frames"]) == (3, 7, 21)

    master = _extract(corpus / "ome-tiff/multifile-master/multifile-Z1.ome.tiff")
    assert master["metadata"]["acquired"] == "2010-03-02T15:08:59"
    assert master["metadata"]["image"]["size_z"] == 5
    # no PhysicalSize in the OME-XML: Bio-Formats' placeholder resolution is not a pixel size
    assert "pixel_size_um" not in master["metadata"]
    assert any(
        "multifile-Z2.ome.tiff" in w and "not in the acquisition" in w for w in master["warnings"]
    )
    member = _extract(corpus / "ome-tiff/multifile-master/multifile-Z2.ome.tiff")
    assert any("BinaryOnly" in warning for warning in member["warnings"])


@pytest.mark.parametrize(
    "rel",
    [
        "tiff-vendor/aperio-svs/CMU-1-Small-Region.svs",
        "tiff-vendor/hamamatsu-ndpi/test3-DAPI-2-(387).ndpi",
    ],
)
def test_headers_only_byte_budget(corpus, rel):
    path = corpus / rel
    reader = FileReader()
    TiffAdapter().extract(Draft("tiff:x", path, (path,)), reader)
    assert reader.bytes_read < path.stat().st_size * 0.10


@pytest.mark.parametrize(
    "rel",
    [
        "tiff-vendor/aperio-svs/CMU-1-Small-Region.svs",
        "tiff-vendor/fei-sem/FEI-Helios-Ebeam-16bits.tif",
        "tiff-vendor/zeiss-lsm/test.lsm",
        "tiff-vendor/imagej/test_loading_image_saved_with_imageJ_stack.tif",
        "ome-tiff/single-file/multi-channel.ome.tif",
        "ome-tiff/single-file/z-series.ome.tif",
    ],
)
@pytest.mark.parametrize("cut", ["200 bytes", "half"])
def test_cut_short_copies_fail_cleanly(corpus, tmp_path, rel, cut):
    data = (corpus / rel).read_bytes()
    copy = tmp_path / "cut.tif"
    copy.write_bytes(data[:200] if cut == "200 bytes" else data[: len(data) // 2])
    adapter, reader = TiffAdapter(), FileReader()
    claim = adapter.claim(_probe(copy, reader), reader)
    if claim is None:
        return
    with pytest.raises(AdapterError) as raised:
        adapter.extract(Draft(claim.group_key, copy, (copy,)), reader)
    assert raised.value.path == copy


def test_zero_byte_and_foreign_files(corpus, tmp_path):
    adapter, reader = TiffAdapter(), FileReader()
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    assert adapter.claim(_probe(empty, reader), reader) is None
    with pytest.raises(AdapterError, match="empty"):
        adapter.extract(Draft("tiff:x", empty, (empty,)), reader)

    wrong = tmp_path / "wrong.tif"
    wrong.write_bytes(b"XX*\x00" + (corpus / "tiff-vendor/imagej/xem_y32.tif").read_bytes()[4:])
    assert adapter.claim(_probe(wrong, reader), reader) is None
    with pytest.raises(AdapterError):
        adapter.extract(Draft("tiff:x", wrong, (wrong,)), reader)

    dicom = corpus / "dicom/ct/CT_JPEG70.dcm"
    with pytest.raises(AdapterError):
        adapter.extract(Draft("tiff:x", dicom, (dicom,)), reader)


def test_a_self_pointing_ifd_is_no_image(tmp_path):
    """64 bytes: an IFD with no entries whose next-IFD link is itself. tifffile reads it as
    one page of 0x0; no image has an extent, so nothing is packaged."""
    looped = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<HI", 0, 8)
    path = tmp_path / "self.tif"
    path.write_bytes(looped.ljust(64, b"\x00"))
    adapter, reader = TiffAdapter(), FileReader()
    claim = adapter.claim(_probe(path, reader), reader)
    assert claim is not None
    with pytest.raises(AdapterError, match="no image with an extent") as raised:
        adapter.extract(Draft(claim.group_key, path, (path,)), reader)
    assert raised.value.path == path


@pytest.mark.parametrize("first_ifd", [0, 8])
def test_a_sparse_file_with_tiff_magic_is_no_image(tmp_path, first_ifd):
    """``II*\\0``, perhaps a first-IFD offset, then a hole (a preallocated file)."""
    path = tmp_path / "sparse.tif"
    with path.open("wb") as handle:
        handle.write(b"II*\x00" + struct.pack("<I", first_ifd))
        handle.truncate(1 << 20)
    reason = "no image with an extent" if first_ifd else "no IFD"
    with pytest.raises(AdapterError, match=reason) as raised:
        TiffAdapter().extract(Draft("tiff:x", path, (path,)), FileReader())
    assert raised.value.path == path


def test_an_image_after_an_empty_first_ifd_is_read(tmp_path):
    """Only a chain with no image at all is refused: a later page with an extent counts."""
    import tifffile

    path = tmp_path / "later.tif"
    tifffile.imwrite(path, np.zeros((1, 1), np.uint8))
    tifffile.imwrite(path, np.zeros((4, 6), np.uint8), append=True)
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        width = tif.pages.first.tags["ImageWidth"]
        data[width.valueoffset : width.valueoffset + width.valuebytecount] = bytes(
            width.valuebytecount
        )
    path.write_bytes(bytes(data))
    assert _extract(path)["metadata"]["image"]["frames"] == 2


def _five_pages(tmp_path: Path) -> tuple[Path, bytes, Any]:
    import tifffile

    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.arange(5 * 16 * 16, dtype=np.uint16).reshape(5, 16, 16))
    with tifffile.TiffFile(path) as tif:
        middle = tif.pages[2]
        assert isinstance(middle, tifffile.TiffPage)
        strips = middle.tags["StripOffsets"]
        layout = (strips.valueoffset, middle.dataoffsets[0], middle.offset)
    return path, path.read_bytes(), layout


def test_every_page_of_the_chain_is_bounds_checked(tmp_path):
    path, data, (strip_value_at, _, _) = _five_pages(tmp_path)
    lie = data[:strip_value_at] + struct.pack("<I", len(data) + 10) + data[strip_value_at + 4 :]
    path.write_bytes(lie)  # page 2 of 5: neither the first nor the last page
    with pytest.raises(AdapterError, match="truncated: image data") as raised:
        TiffAdapter().extract(Draft("tiff:x", path, (path,)), FileReader())
    assert raised.value.path == path


def test_a_copy_cut_inside_a_middle_page_is_truncated(tmp_path):
    path, data, (_, data_at, _) = _five_pages(tmp_path)
    path.write_bytes(data[: data_at + 10])
    with pytest.raises(AdapterError, match="truncated"):
        TiffAdapter().extract(Draft("tiff:x", path, (path,)), FileReader())


def test_olympus_sis_records_past_the_end_are_truncation(corpus, tmp_path):
    data = (corpus / "tiff-vendor/olympus-sis/olympus_SIS.tif").read_bytes()
    sis = data.index(b"SIS0")
    calibration = sis + 60 + 4  # the first record of the table: (type 1, 1, offset)
    assert struct.unpack_from("<hhI", data, sis + 60)[0] == 1
    lie = data[:calibration] + struct.pack("<I", len(data) - 20) + data[calibration + 4 :]
    path = tmp_path / "sis.tif"
    path.write_bytes(lie)
    with pytest.raises(AdapterError, match="Olympus SIS record 0"):
        TiffAdapter().extract(Draft("tiff:x", path, (path,)), FileReader())


def test_readme_field_table_is_the_declared_fields():
    """Every declared field is in the README's table with its source, and nothing else."""
    readme = (Path(__file__).resolve().parents[2] / "adapters/tiff/README.md").read_text()
    rows = [
        f"| `{spec.key}` | {spec.source} | {spec.unit or ''} |" for spec in TiffAdapter.info.fields
    ]
    table = "\n".join(["| field | source | unit |", "| --- | --- | --- |", *rows])
    assert f"{table}\n\n" in readme, f"regenerate the README's field table:\n{table}"
    section = readme.split("\n## Fields\n", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([\w.]+)` \|", section, re.M)
    assert sorted(documented) == sorted(spec.key for spec in TiffAdapter.info.fields)
