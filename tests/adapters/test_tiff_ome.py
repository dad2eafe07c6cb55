"""OME-XML mapping, multi-file claims, hostile XML, and tifffile-written vendor variants."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy
import pytest
import tifffile

from acqharvest.adapter_api import HEAD_BYTES, AdapterError, Claim, Draft, FileProbe
from acqharvest.adapters.tiff import TiffAdapter, sniff
from acqharvest.readonly import FileReader

NS = "http://www.openmicroscopy.org/Schemas/OME/2016-06"


def _claim(path: Path, reader: FileReader | None = None) -> Claim | None:
    reader = reader or FileReader()
    probe = FileProbe(path, path.stat().st_size, reader.head(path, HEAD_BYTES))
    return TiffAdapter().claim(probe, reader)


def _extract(primary: Path, *others: Path) -> Any:
    return TiffAdapter().extract(Draft("k", primary, (primary, *others)), FileReader())


def _ome_tiff(path: Path, xml: str) -> Path:
    data = numpy.zeros((4, 6), numpy.uint16)
    tifffile.imwrite(path, data, description=xml.encode("utf-8"), metadata=None)
    return path


FULL = f"""<?xml version="1.0" encoding="UTF-8"?>
<OME xmlns="{NS}" UUID="urn:uuid:own">
 <Instrument ID="Instrument:0">
  <Microscope Manufacturer="Nikon" Model="Ti2-E" SerialNumber="S123" Type="Inverted"/>
  <Detector ID="Detector:0" Model="Wrong" Type="PMT"/>
  <Detector ID="Detector:1" Manufacturer="Hamamatsu" Model="ORCA-Fusion" Type="CMOS"/>
  <Objective ID="Objective:0" Model="Plan Apo 10x" NominalMagnification="10" LensNA="0.45"/>
  <Objective ID="Objective:1" Manufacturer="Nikon" Model="Plan Apo 60x Oil"
     NominalMagnification="60" LensNA="1.4" Immersion="Oil"/>
 </Instrument>
 <Experimenter ID="Experimenter:0" UserName="jdoe"/>
 <Experimenter ID="Experimenter:1" FirstName="Ada" LastName="Lovelace"/>
 <Image ID="Image:0">
  <AcquisitionDate>2024-05-06T07:08:09</AcquisitionDate>
  <ExperimenterRef ID="Experimenter:1"/>
  <InstrumentRef ID="Instrument:0"/>
  <ObjectiveSettings ID="Objective:1"/>
  <Pixels ID="Pixels:0" DimensionOrder="XYZCT" Type="uint16" SignificantBits="12"
     SizeX="6" SizeY="4" SizeZ="1" SizeC="2" SizeT="1"
     PhysicalSizeX="650" PhysicalSizeXUnit="nm" PhysicalSizeY="0.00065" PhysicalSizeYUnit="mm"
     PhysicalSizeZ="20000" PhysicalSizeZUnit="Å">
   <Channel ID="Channel:0:0" Name="DAPI" Fluor="DAPI" ExcitationWavelength="0.405"
      ExcitationWavelengthUnit="µm" EmissionWavelength="450">
    <DetectorSettings ID="Detector:1"/>
   </Channel>
   <Channel ID="Channel:0:1" Name="GFP" EmissionWavelength="5.2e-7"
      EmissionWavelengthUnit="m"/>
   <TiffData IFD="0" PlaneCount="1"><UUID FileName="old-name.ome.tif">urn:uuid:own</UUID></TiffData>
   <TiffData IFD="0" PlaneCount="1" FirstC="1">
    <UUID FileName="sub/other.ome.tif">urn:uuid:x</UUID></TiffData>
   <Plane TheC="0" TheZ="0" TheT="0" ExposureTime="250" ExposureTimeUnit="ms"
      PositionX="1.5" PositionXUnit="mm" PositionY="20" PositionYUnit="µm"/>
   <Plane TheC="1" TheZ="0" TheT="0" ExposureTime="0.5" PositionX="1.6" PositionXUnit="mm"/>
  </Pixels>
 </Image>
</OME>"""


def test_ome_model_maps_with_refs_and_units(tmp_path):
    output = _extract(_ome_tiff(tmp_path / "cells.ome.tif", FULL))
    meta = output.metadata
    assert meta["instrument_reported"] == {
        "manufacturer": "Nikon",
        "model": "Ti2-E",
        "serial_number": "S123",
        "type": "Inverted",
        "software": "tifffile.py",
    }
    # ObjectiveSettings and DetectorSettings pick the referenced elements, not the first
    assert meta["objective"] == {
        "model": "Plan Apo 60x Oil",
        "manufacturer": "Nikon",
        "magnification": 60.0,
        "na": 1.4,
        "immersion": "Oil",
    }
    assert meta["detector"] == {"model": "ORCA-Fusion", "manufacturer": "Hamamatsu", "type": "CMOS"}
    assert meta["operator"] == "Ada Lovelace"
    assert meta["acquired"] == "2024-05-06T07:08:09"
    assert meta["pixel_size_um"] == {"x": 0.65, "y": 0.65, "z": 2.0}
    assert meta["channels"] == [
        {
            "name": "DAPI",
            "excitation_nm": 405.0,
            "emission_nm": 450.0,
            "fluor": "DAPI",
            "exposure_s": 0.25,
        },
        {"name": "GFP", "emission_nm": 520.0, "exposure_s": 0.5},
    ]
    assert meta["image"]["dimension_order"] == "XYZCT"
    assert meta["image"]["bits"] == 16  # BitsPerSample of the stored data, not SignificantBits
    planes = output.original_metadata["ome_planes"]
    assert planes == {"count": 2, "position_um_range": {"x": [1500.0, 1600.0], "y": [20.0, 20.0]}}
    json.dumps(output.original_metadata)


def test_claims_follow_uuids_and_references(tmp_path):
    # renamed: the UUID equal to the document's own names this file, whatever FileName says
    claim = _claim(_ome_tiff(tmp_path / "renamed.ome.tif", FULL))
    assert claim is not None
    assert claim.role == "primary"
    assert claim.expects == ("renamed.ome.tif", "sub/other.ome.tif")
    assert claim.group_key == f"tiff:{tmp_path / 'renamed.ome.tif'}"
    assert not claim.collects


@pytest.mark.parametrize(
    ("metadata_file", "group_file", "expects"),
    [
        ("../sub/./set.companion.ome", "sub/set.companion.ome", ("set.companion.ome",)),
        # outside the member's folder: the grouper resolves it against the watch root
        ("../up.companion.ome", "up.companion.ome", ("../up.companion.ome",)),
    ],
)
def test_binaryonly_member_claims_the_metadata_files_group(
    tmp_path, metadata_file, group_file, expects
):
    (tmp_path / "sub").mkdir()
    member = _ome_tiff(
        tmp_path / "sub" / "b.ome.tif",
        f'<OME xmlns="{NS}"><BinaryOnly MetadataFile="{metadata_file}" UUID="u"/></OME>',
    )
    claim = _claim(member)
    assert claim is not None
    assert claim.group_key == f"tiff:{tmp_path / group_file}"
    assert (claim.role, claim.confidence, claim.expects) == ("member", 0.6, expects)


def test_claim_reads_a_bounded_prefix_of_a_huge_description(tmp_path):
    planes = "".join(f'<Plane TheC="0" TheZ="{z}" TheT="0"/>' for z in range(20000))
    xml = FULL.replace("</Pixels>", planes + "</Pixels>")
    path = _ome_tiff(tmp_path / "big.ome.tif", xml)
    assert len(xml) > 4 * sniff.CLAIM_BUDGET
    reader = FileReader()
    claim = _claim(path, reader)
    assert claim is not None
    # cut at the budget: best-effort references, and the group waits to go quiet
    assert claim.collects
    assert claim.expects == ("big.ome.tif", "sub/other.ome.tif")
    assert reader.bytes_read <= HEAD_BYTES + sniff.CLAIM_BUDGET


def test_companion_without_tiff_references_is_not_claimed(tmp_path):
    plain = tmp_path / "METADATA.ome.xml"
    plain.write_text(f'<?xml version="1.0"?><OME xmlns="{NS}"><Image ID="Image:0"/></OME>')
    assert _claim(plain) is None
    other = tmp_path / "notes.xml"
    other.write_text('<?xml version="1.0"?><notes/>')
    assert _claim(other) is None


def test_companion_extraction_lists_missing_and_checks_members(corpus, tmp_path):
    source = corpus / "ome-tiff" / "multifile-companion"
    for name in ("multifile.companion.ome", "multifile-Z1.ome.tiff", "multifile-Z2.ome.tiff"):
        (tmp_path / name).write_bytes((source / name).read_bytes())
    # a stranger in the group: a BinaryOnly TIFF naming another metadata file
    stranger = _ome_tiff(
        tmp_path / "stray.ome.tif", f'<OME xmlns="{NS}"><BinaryOnly MetadataFile="x.ome"/></OME>'
    )
    output = _extract(
        tmp_path / "multifile.companion.ome",
        tmp_path / "multifile-Z1.ome.tiff",
        tmp_path / "multifile-Z2.ome.tiff",
        stranger,
    )
    assert output.format == "OME-TIFF"
    assert output.metadata["image"]["size_z"] == 5
    assert output.metadata["image"]["bits"] == 8  # from Type uint8
    assert output.metadata["instances"] == 4
    files = output.original_metadata["ome_files"]
    assert files["missing"] == [
        "multifile-Z3.ome.tiff",
        "multifile-Z4.ome.tiff",
        "multifile-Z5.ome.tiff",
    ]
    assert files["unreferenced"] == ["stray.ome.tif"]
    assert "stray.ome.tif: BinaryOnly names x.ome, not multifile.companion.ome" in output.warnings


BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE OME [<!ENTITY a "aaaaaaaaaa">'
    + "".join(
        f'<!ENTITY {c} "{("&" + p + ";") * 10}">'
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + f']><OME xmlns="{NS}"><Image ID="&i;"/></OME>'
)
EXTERNAL = (
    '<?xml version="1.0"?><!DOCTYPE OME [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    f'<OME xmlns="{NS}"><Image ID="&x;"/></OME>'
)
DEEP = f'<OME xmlns="{NS}">' + "<Image>" * 500 + "</Image>" * 500 + "</OME>"


@pytest.mark.parametrize(
    "hostile", [BILLION_LAUGHS, EXTERNAL, DEEP], ids=["laughs", "external", "deep"]
)
def test_hostile_ome_xml_is_refused_naming_the_file(tmp_path, hostile):
    tiff = _ome_tiff(tmp_path / "evil.ome.tif", hostile)
    claim = _claim(tiff)
    assert claim is not None  # claimed alone, without raising
    assert claim.group_key == f"tiff:{tiff}"
    with pytest.raises(AdapterError, match="OME-XML refused") as raised:
        _extract(tiff)
    assert raised.value.path == tiff

    companion = tmp_path / "evil.companion.ome"
    companion.write_text(
        hostile.replace(
            "<Image", '<Image><TiffData><UUID FileName="a.tif"/></TiffData></Image><Image', 1
        )
    )
    assert _claim(companion) is None
    with pytest.raises(AdapterError, match="refused") as raised:
        _extract(companion)
    assert raised.value.path == companion


def test_oversize_ome_xml_is_a_warning_with_tag_metadata(tmp_path, monkeypatch):
    monkeypatch.setattr("acqharvest.adapters.tiff.reader.MAX_BYTES", 1000)
    output = _extract(_ome_tiff(tmp_path / "large.ome.tif", FULL))
    assert output.format == "OME-TIFF"
    assert output.metadata["image"]["size_x"] == 6  # from the TIFF tags
    assert "objective" not in output.metadata
    assert any("not parsed" in warning for warning in output.warnings)


def test_imagej_written_by_tifffile(tmp_path):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(
        path,
        numpy.zeros((3, 2, 8, 8), numpy.uint8),
        imagej=True,
        resolution=(1 / 0.25, 1 / 0.5),
        metadata={"axes": "ZCYX", "unit": "um", "spacing": 1.5},
    )
    output = _extract(path)
    assert output.format == "TIFF (ImageJ)"
    assert output.metadata["pixel_size_um"] == {"z": 1.5, "x": 0.25, "y": 0.5}
    assert (output.metadata["image"]["size_z"], output.metadata["image"]["size_c"]) == (3, 2)


SCN = """<?xml version="1.0"?>
<scn xmlns="http://www.leica-microsystems.com/scn/2010/10/01">
 <collection name="slide" sizeX="20000000" sizeY="10000000">
  <image name="tissue">
   <creationDate>2012-03-04T05:06:07.89Z</creationDate>
   <device model="Leica SCN400;Leica SCN" version="1.4.0.10995 2012/05/10 13:41:18;1.4.0.11019"/>
   <pixels sizeX="4000" sizeY="2000">
    <dimension sizeX="4000" sizeY="2000" r="0" ifd="0"/>
    <dimension sizeX="1000" sizeY="500" r="1" ifd="1"/>
   </pixels>
   <view sizeX="2000000" sizeY="1000000" offsetX="0" offsetY="0"/>
   <scanSettings>
    <objectiveSettings><objective>20</objective></objectiveSettings>
    <illuminationSettings><numericalAperture>0.4</numericalAperture></illuminationSettings>
   </scanSettings>
  </image>
 </collection>
</scn>"""


def test_leica_scn_description(tmp_path):
    path = tmp_path / "slide.scn"
    tifffile.imwrite(path, numpy.zeros((8, 8), numpy.uint8), description=SCN, metadata=None)
    output = _extract(path)
    assert output.format == "TIFF (Leica SCN)"
    meta = output.metadata
    assert meta["pixel_size_um"] == {"x": 0.5, "y": 0.5}  # 2 mm over 4000 px
    assert meta["objective"] == {"magnification": 20.0, "na": 0.4}
    assert meta["instrument_reported"]["model"] == "Leica SCN400;Leica SCN"
    assert meta["acquired"] == "2012-03-04T05:06:07.89Z"


@pytest.mark.parametrize("metadata_file", ["../set.companion.ome", "set.companion.ome"])
def test_binaryonly_members_without_their_metadata_file_are_one_incomplete_package(
    tmp_path, metadata_file
):
    from acqharvest.commands import preview
    from acqharvest.config import embedded_settings
    from acqharvest.deidentify import Deidentifier

    (tmp_path / "sub").mkdir()
    xml = f'<OME xmlns="{NS}"><BinaryOnly MetadataFile="{metadata_file}" UUID="u"/></OME>'
    members = [_ome_tiff(tmp_path / "sub" / f"m{i}.ome.tif", xml) for i in (1, 2)]
    settings = embedded_settings()
    [package], errors = preview(members, settings, Deidentifier(settings.deidentify, b"k" * 32))
    assert errors == []
    assert package["acquisition"]["complete"] is False
    assert [f["path"] for f in package["files"]] == ["m1.ome.tif", "m2.ome.tif"]
    assert package["metadata"]["instances"] == 2
    assert any(
        w.startswith(f"{metadata_file}: the metadata file") and "not in the acquisition" in w
        for w in package["provenance"]["warnings"]
    ), package["provenance"]["warnings"]


def test_non_finite_numbers_and_dates_that_are_not_dates_are_dropped_with_a_warning(tmp_path):
    xml = f"""<OME xmlns="{NS}"><Instrument ID="Instrument:0">
     <Objective ID="Objective:0" Model="O" NominalMagnification="inf" LensNA="NaN"/></Instrument>
     <Image ID="Image:0"><AcquisitionDate>last tuesday</AcquisitionDate>
     <Pixels ID="Pixels:0" DimensionOrder="XYZCT" Type="uint16" SizeX="6" SizeY="4" SizeZ="1"
       SizeC="1" SizeT="1" PhysicalSizeX="inf" PhysicalSizeY="0.5" PhysicalSizeZ="-1">
      <Channel ID="Channel:0:0" Name="A" EmissionWavelength="1e999"/>
     </Pixels></Image></OME>"""
    output = _extract(_ome_tiff(tmp_path / "a.ome.tif", xml))
    meta = output.metadata
    assert "acquired" not in meta
    assert output.started is None
    assert meta["pixel_size_um"] == {"y": 0.5}
    assert meta["objective"] == {"model": "O"}
    assert meta["channels"] == [{"name": "A"}]
    warnings = "\n".join(output.warnings)
    assert "AcquisitionDate: not an RFC 3339 date-time; dropped" in warnings
    for attribute in ("PhysicalSizeX", "PhysicalSizeZ", "NominalMagnification", "LensNA"):
        assert f"{attribute}: not a finite positive number; dropped" in warnings
    assert "EmissionWavelength: not a finite positive number; dropped" in warnings
    json.dumps(meta, allow_nan=False)


def test_acquisition_dates_keep_their_offset_and_fraction(tmp_path):
    xml = FULL.replace("2024-05-06T07:08:09", "2024-05-06T07:08:09.250+02:00")
    output = _extract(_ome_tiff(tmp_path / "a.ome.tif", xml))
    assert output.metadata["acquired"] == output.started == "2024-05-06T07:08:09.250+02:00"


@pytest.mark.parametrize(
    ("layout", "metadata_file"),
    [
        ("multifile-companion", "multifile.companion.ome"),
        ("multifile-master", "multifile-Z1.ome.tiff"),
    ],
)
def test_a_set_member_cut_short_fails_the_extraction_naming_it(
    corpus, tmp_path, layout, metadata_file
):
    # The metadata file is whole; one plane of the set stopped half-way and held still.
    source = corpus / "ome-tiff" / layout
    for path in source.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    others = sorted(p for p in tmp_path.iterdir() if p.name != metadata_file)
    assert _extract(tmp_path / metadata_file, *others).metadata["instances"] == len(others) + 1
    cut = others[-1]
    data = cut.read_bytes()
    for length in (len(data) // 2, len(data) - 1):
        cut.write_bytes(data[:length])
        with pytest.raises(AdapterError, match="truncated") as raised:
            _extract(tmp_path / metadata_file, *others)
        assert raised.value.path == cut


def test_binaryonly_members_are_checked_without_their_metadata_file(tmp_path):
    xml = f'<OME xmlns="{NS}"><BinaryOnly MetadataFile="set.ome" UUID="u"/></OME>'
    first, second = (_ome_tiff(tmp_path / f"m{i}.ome.tif", xml) for i in (1, 2))
    assert _extract(first, second).metadata["instances"] == 2
    second.write_bytes(second.read_bytes()[:-1])
    with pytest.raises(AdapterError, match="truncated") as raised:
        _extract(first, second)
    assert raised.value.path == second
