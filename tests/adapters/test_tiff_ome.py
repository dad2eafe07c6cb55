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
    assert meta["planes"] == {
        "count": 2,
        "exposure_s": [0.25, 0.5],
        "position_x_um": [1500.0, 1600.0],
        "position_y_um": [20.0, 20.0],
    }
    assert "ome_planes" not in output.original_metadata
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


#: every NBO Tier 1 element the mapping reads, with units other than the schema's defaults
NBO = f"""<?xml version="1.0" encoding="UTF-8"?>
<OME xmlns="{NS}">
 <Plate ID="Plate:0" Name="Screen 7" RowNamingConvention="letter" ColumnNamingConvention="number">
  <Well ID="Well:0" Row="0" Column="0">
   <WellSample ID="WellSample:0" Index="0"><ImageRef ID="Image:1"/></WellSample>
  </Well>
  <Well ID="Well:1" Row="1" Column="2">
   <WellSample ID="WellSample:1" Index="1"><ImageRef ID="Image:2"/></WellSample>
   <WellSample ID="WellSample:2" Index="2"><ImageRef ID="Image:0"/></WellSample>
  </Well>
 </Plate>
 <Instrument ID="Instrument:0">
  <Laser ID="LightSource:0" Model="Cobolt 06-MLD" Wavelength="0.488" WavelengthUnit="µm"
     Power="0.05" PowerUnit="W" Type="SemiconductorLaser"/>
  <Arc ID="LightSource:1" Model="X-Cite" Power="120000" PowerUnit="µW"/>
  <Detector ID="Detector:0" Model="ORCA" Type="CMOS"/>
  <Objective ID="Objective:0" Model="CFI Plan Apo 60x" NominalMagnification="60"
     LensNA="1.4" Immersion="Oil" Correction="PlanApo" WorkingDistance="0.13"
     WorkingDistanceUnit="mm"/>
  <FilterSet ID="FilterSet:0">
   <ExcitationFilterRef ID="Filter:0"/><DichroicRef ID="Dichroic:0"/>
   <EmissionFilterRef ID="Filter:1"/>
  </FilterSet>
  <Filter ID="Filter:0" Model="FF01-390/18">
   <TransmittanceRange CutIn="381" CutOut="399"/>
  </Filter>
  <Filter ID="Filter:1" Model="FF01-525/45">
   <TransmittanceRange CutIn="0.5025" CutInUnit="µm" CutOut="547.5" CutOutUnit="nm"/>
  </Filter>
  <Filter ID="Filter:2" FilterWheel="Em wheel 3"/>
  <Dichroic ID="Dichroic:0" Model="Di03-R405"/>
 </Instrument>
 <Image ID="Image:0">
  <ObjectiveSettings ID="Objective:0"/>
  <ImagingEnvironment Temperature="310.15" TemperatureUnit="K" CO2Percent="0.05"
     Humidity="0.9" AirPressure="1" AirPressureUnit="atm"/>
  <StageLabel Name="Position 12" X="10" Y="20"/>
  <Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint16" SizeX="6" SizeY="4" SizeZ="1"
     SizeC="2" SizeT="2" TimeIncrement="1500" TimeIncrementUnit="ms">
   <Channel ID="Channel:0:0" Name="GFP" IlluminationType="Epifluorescence"
      ContrastMethod="Fluorescence" AcquisitionMode="SpinningDiskConfocal"
      PinholeSize="50" PinholeSizeUnit="µm">
    <LightSourceSettings ID="LightSource:0" Attenuation="0.25"/>
    <DetectorSettings ID="Detector:0" Gain="2.5" Offset="-10" Binning="2x2"
       ReadOutRate="200000" ReadOutRateUnit="kHz" Voltage="-700" VoltageUnit="V"/>
    <LightPath>
     <ExcitationFilterRef ID="Filter:0"/><DichroicRef ID="Dichroic:0"/>
     <EmissionFilterRef ID="Filter:2"/>
    </LightPath>
   </Channel>
   <Channel ID="Channel:0:1" Name="DAPI" IlluminationType="Epifluorescence"
      ContrastMethod="Fluorescence" AcquisitionMode="WideField" PinholeSize="0.1"
      PinholeSizeUnit="mm">
    <LightSourceSettings ID="LightSource:1" Wavelength="395"/>
    <DetectorSettings ID="Detector:0" Gain="0" ReadOutRate="100"/>
    <FilterSetRef ID="FilterSet:0"/>
   </Channel>
   <Plane TheC="0" TheZ="0" TheT="0" DeltaT="0" ExposureTime="100" ExposureTimeUnit="ms"
      PositionX="-1.5" PositionXUnit="mm" PositionY="200" PositionYUnit="µm"
      PositionZ="3000" PositionZUnit="nm"/>
   <Plane TheC="1" TheZ="0" TheT="0" DeltaT="120" DeltaTUnit="ms" ExposureTime="0.2"
      PositionX="-1.4" PositionXUnit="mm" PositionY="200" PositionYUnit="µm"/>
   <Plane TheC="0" TheZ="0" TheT="1" DeltaT="1.5" ExposureTime="100000" ExposureTimeUnit="µs"
      PositionX="-1500" PositionXUnit="reference frame"/>
   <Plane TheC="1" TheZ="0" TheT="1" DeltaT="0.027" DeltaTUnit="min" ExposureTime="200"
      ExposureTimeUnit="ms"/>
  </Pixels>
 </Image>
</OME>"""


def test_nbo_tier1_elements_map_in_their_units(tmp_path):
    output = _extract(_ome_tiff(tmp_path / "screen.ome.tif", NBO))
    meta = output.metadata
    gfp, dapi = meta["channels"]
    assert gfp == {
        "name": "GFP",
        "exposure_s": 0.1,
        "illumination": "Epifluorescence",
        "contrast_method": "Fluorescence",
        "acquisition_mode": "SpinningDiskConfocal",
        "pinhole_um": 50.0,
        "light_source": {
            "type": "Laser",
            "model": "Cobolt 06-MLD",
            "wavelength_nm": 488.0,  # the laser's, in µm: the settings give none
            "power_mw": 50.0,  # W
            "attenuation_percent": 25.0,
        },
        "detector_settings": {
            "gain": 2.5,
            "offset": -10.0,
            "binning": "2x2",
            "readout_rate_mhz": 200.0,  # kHz
            "voltage_v": -700.0,
        },
        # the LightPath wins over any FilterSet; a filter without a model by its wheel
        "filters": {
            "excitation": "FF01-390/18",
            "excitation_nm": [381.0, 399.0],
            "dichroic": "Di03-R405",
            "emission": "Em wheel 3",
        },
    }
    assert dapi == {
        "name": "DAPI",
        "exposure_s": 0.2,
        "illumination": "Epifluorescence",
        "contrast_method": "Fluorescence",
        "acquisition_mode": "WideField",
        "pinhole_um": 100.0,  # mm
        "light_source": {
            "type": "Arc",
            "model": "X-Cite",
            "wavelength_nm": 395.0,
            "power_mw": 120.0,
        },
        "detector_settings": {"gain": 0.0, "readout_rate_mhz": 100.0},
        "filters": {
            "excitation": "FF01-390/18",
            "excitation_nm": [381.0, 399.0],
            "dichroic": "Di03-R405",
            "emission": "FF01-525/45",
            "emission_nm": [502.5, 547.5],  # a µm cut-in and a nm cut-out
        },
    }
    assert meta["image"]["time_increment_s"] == 1.5
    # DeltaT in ms, s and min; exposures in ms, s and µs; a reference-frame X is not a length
    assert meta["planes"] == {
        "count": 4,
        "delta_t_s": [0.0, 1.62],
        "exposure_s": [0.1, 0.2],
        "position_x_um": [-1500.0, -1400.0],
        "position_y_um": [200.0, 200.0],
        "position_z_um": [3.0, 3.0],
    }
    assert meta["specimen"] == {
        "plate": "Screen 7",
        "well": "B3",
        "field": 1,
        "stage_label": "Position 12",
    }
    assert meta["environment"] == {
        "temperature_c": 37.0,
        "co2_percent": 5.0,
        "humidity_percent": 90.0,
        "air_pressure_mbar": 1013.25,
    }
    assert meta["objective"]["correction"] == "PlanApo"
    assert meta["objective"]["working_distance_um"] == 130.0
    assert not [w for w in output.warnings if "dropped" in w], output.warnings


@pytest.mark.parametrize(
    ("element", "attributes", "unit", "expected"),
    [
        # (element kind, attributes, the unit table's symbol, the value in the field's unit)
        ("temperature", 'Temperature="98.6" TemperatureUnit="°F"', "°F", 37.0),
        ("temperature", 'Temperature="-5"', "°C", -5.0),
        ("temperature", 'Temperature="491.67" TemperatureUnit="°R"', "°R", 0.0),
        ("pressure", 'AirPressure="101.325" AirPressureUnit="kPa"', "kPa", 1013.25),
        ("pressure", 'AirPressure="760" AirPressureUnit="Torr"', "Torr", 1013.25),
        ("pressure", 'AirPressure="1" AirPressureUnit="bar"', "bar", 1000.0),
        ("pressure", 'AirPressure="995"', "mbar", 995.0),
    ],
)
def test_environment_units_convert(tmp_path, element, attributes, unit, expected):
    xml = NBO.replace(
        '<ImagingEnvironment Temperature="310.15" TemperatureUnit="K" CO2Percent="0.05"\n'
        '     Humidity="0.9" AirPressure="1" AirPressureUnit="atm"/>',
        f"<ImagingEnvironment {attributes}/>",
    )
    key = "temperature_c" if element == "temperature" else "air_pressure_mbar"
    environment = _extract(_ome_tiff(tmp_path / f"{unit}.ome.tif", xml)).metadata["environment"]
    assert environment == {key: pytest.approx(expected)}


@pytest.mark.parametrize(
    ("original", "replacement", "warning"),
    [
        ('PowerUnit="W"', 'PowerUnit="horsepower"', "Laser Power: unit 'horsepower'"),
        ('Humidity="0.9"', 'Humidity="90"', "ImagingEnvironment Humidity: not a fraction"),
        ('Temperature="310.15"', 'Temperature="-3"', "ImagingEnvironment Temperature: not a"),
        ('Gain="2.5"', 'Gain="high"', "DetectorSettings Gain: not a finite number"),
        ('DeltaT="0"', 'DeltaT="soon"', "Plane DeltaT: not a finite number"),
        ('PinholeSize="50"', 'PinholeSize="-50"', "Channel PinholeSize: not a finite positive"),
    ],
)
def test_unusable_settings_are_dropped_naming_them(tmp_path, original, replacement, warning):
    assert original in NBO
    output = _extract(_ome_tiff(tmp_path / "bad.ome.tif", NBO.replace(original, replacement, 1)))
    assert any(w.startswith(warning) and w.endswith("dropped") for w in output.warnings), (
        output.warnings
    )


def test_the_whole_ome_xml_is_kept_up_to_the_cap(tmp_path):
    padding = "".join(
        f'<MapAnnotation ID="Annotation:{i}"><Value><M K="k{i}">{"v" * 180}</M></Value>'
        "</MapAnnotation>"
        for i in range(1000)
    )
    big = NBO.replace("</OME>", f"<StructuredAnnotations>{padding}</StructuredAnnotations></OME>")
    assert 200 * 1024 < len(big.encode()) < 300 * 1024
    whole = _extract(_ome_tiff(tmp_path / "whole.ome.tif", big))
    assert whole.original_metadata["ome_xml"] == big
    assert "ome_xml_cut" not in whole.original_metadata
    huge = big.replace("</StructuredAnnotations>", padding * 8 + "</StructuredAnnotations>")
    assert len(huge.encode()) > 2 * 1024 * 1024
    cut = _extract(_ome_tiff(tmp_path / "cut.ome.tif", huge))
    kept = cut.original_metadata["ome_xml"]
    assert huge.startswith(kept)
    assert len(kept.encode()) == 1024 * 1024
    assert cut.original_metadata["ome_xml_cut"] == {
        "size_bytes": len(huge.encode()),
        "kept_bytes": 1024 * 1024,
    }
    assert any("kept the first 1048576" in w for w in cut.warnings)
    # the fields come from the whole document, not the part kept
    assert cut.metadata["specimen"]["well"] == "B3"
    # a site's smaller cap
    path = _ome_tiff(tmp_path / "small.ome.tif", big)
    draft = Draft("k", path, (path,), original_metadata_max_bytes=100_000)
    small = TiffAdapter().extract(draft, FileReader())
    assert len(small.original_metadata["ome_xml"].encode()) == 100_000
