"""The imzML adapter against pyimzML's own reading, and the pair's links and checks."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from pyimzml.ImzMLParser import ImzMLParser

from acqharvest.adapter_api import AdapterError, Draft
from acqharvest.adapters.imzml import ImzmlAdapter
from acqharvest.readonly import FileReader
from tests.adapters.acquisition import claims_of, draft_of, extract_all, overread

NAME = "Example_Continuous"
#: the ibd SHA-1 (IMS:1000091) the corpus imzML names
SHA1 = "a5be532d25997b71be6d20c76561ddc4d5307ddd"


@pytest.fixture
def pair(corpus: Path, tmp_path: Path) -> tuple[Path, Path]:
    for suffix in (".imzML", ".ibd"):
        shutil.copy(corpus / "imzml" / f"{NAME}{suffix}", tmp_path / f"{NAME}{suffix}")
    return tmp_path / f"{NAME}.imzML", tmp_path / f"{NAME}.ibd"


def test_values_equal_pyimzmls(corpus: Path) -> None:
    imzml, ibd = corpus / "imzml" / f"{NAME}.imzML", corpus / "imzml" / f"{NAME}.ibd"
    claims = claims_of(ImzmlAdapter(), [ibd, imzml])
    header, data = claims[imzml], claims[ibd]
    assert header is not None
    assert data is not None
    assert header.group_key == data.group_key
    assert (header.role, header.expects, data.role) == ("primary", (ibd.name,), "member")
    output, _ = extract_all(ImzmlAdapter(), [ibd, imzml])
    with ImzMLParser(str(imzml)) as parser:
        settings = parser.imzmldict
        spectra = len(parser.coordinates)
    metadata = output.metadata
    assert metadata["image"] == {
        "size_x": settings["max count of pixels x"],
        "size_y": settings["max count of pixels y"],
    }
    assert metadata["pixel_size_um"] == {
        "x": pytest.approx(settings["pixel size x"]),
        "y": pytest.approx(settings["pixel size y"]),
    }
    assert metadata["msi"]["spectra"] == spectra
    assert metadata["msi"]["storage"] == "continuous"
    assert metadata["msi"]["ion_source"] == "electrospray ionization"
    assert metadata["msi"]["analyzer"] == "ion trap"
    assert metadata["detector"] == {"type": "electron multiplier"}
    assert metadata["instances"] == 2
    assert output.original_metadata["ibd_checksum"] == "sha1 verified"
    assert metadata["msi"]["ibd_checksum_verified"] == "sha1"
    assert output.original_metadata["uuid"] == ibd.read_bytes()[:16].hex()


def test_ibd_cut_short_or_not_the_named_one_fails_naming_it(pair: tuple[Path, Path]) -> None:
    imzml, ibd = pair
    whole = ibd.read_bytes()
    ibd.write_bytes(whole[:-4])
    with pytest.raises(AdapterError, match="truncated") as caught:
        extract_all(ImzmlAdapter(), [imzml, ibd])
    assert caught.value.path == ibd
    ibd.write_bytes(whole[:100] + bytes([whole[100] ^ 0xFF]) + whole[101:])
    with pytest.raises(AdapterError, match="checksum mismatch") as checksum:
        extract_all(ImzmlAdapter(), [imzml, ibd])
    assert checksum.value.path == ibd
    assert (
        hashlib.sha1(ibd.read_bytes(), usedforsecurity=False).hexdigest() in checksum.value.reason
    )
    assert SHA1 in checksum.value.reason
    # another UUID: never grouped with this imzML (its key differs)
    ibd.write_bytes(bytes(16) + whole[16:])
    keys = {c.group_key for c in claims_of(ImzmlAdapter(), [imzml, ibd]).values() if c}
    assert len(keys) == 2
    with pytest.raises(AdapterError, match="UUID"):
        ImzmlAdapter().extract(Draft("k", imzml, (imzml, ibd)), FileReader())


def test_imzml_cut_short_fails(pair: tuple[Path, Path]) -> None:
    imzml, ibd = pair
    text = imzml.read_bytes()
    imzml.write_bytes(text[: len(text) * 2 // 3])
    with pytest.raises(AdapterError, match="truncated") as caught:
        extract_all(ImzmlAdapter(), [imzml, ibd])
    assert caught.value.path == imzml


def _grow(ibd: Path, extra: int) -> bytes:
    """The ``.ibd`` with ``extra`` bytes after its spectra (still a valid pair); its bytes."""
    with ibd.open("ab") as handle:
        handle.write(b"\x5a" * extra)
    return ibd.read_bytes()


@pytest.mark.parametrize(
    ("accession", "term", "algorithm"),
    [("IMS:1000091", "ibd SHA-1", "sha1"), ("IMS:1000090", "ibd MD5", "md5")],
)
def test_a_large_ibds_checksum_is_verified_from_the_agents_digest_reading_its_header_only(
    pair: tuple[Path, Path], accession: str, term: str, algorithm: str
) -> None:
    imzml, ibd = pair
    data = _grow(ibd, 3_000_000)
    named = hashlib.new(algorithm, data).hexdigest()
    text = imzml.read_text(encoding="latin-1")
    text = text.replace(
        f'accession="IMS:1000091" name="ibd SHA-1" value="{SHA1}"',
        f'accession="{accession}" name="{term}" value="{named.upper()}"',  # as writers vary
    )
    assert named.upper() in text
    imzml.write_text(text, encoding="latin-1")
    output, reader = extract_all(ImzmlAdapter(), [imzml, ibd])
    assert output.metadata["msi"]["ibd_checksum_verified"] == algorithm
    assert output.original_metadata["ibd_checksum"] == f"{algorithm} verified"
    assert reader.read_by_path[ibd] == 16  # its UUID: the digest is the agent's
    assert overread(reader) == {}


def test_a_large_ibd_whose_checksum_differs_fails_naming_it_and_both_values(
    pair: tuple[Path, Path],
) -> None:
    imzml, ibd = pair
    actual = hashlib.sha1(_grow(ibd, 2_000_000), usedforsecurity=False).hexdigest()
    reader = FileReader()
    with pytest.raises(AdapterError) as caught:
        ImzmlAdapter().extract(draft_of(ImzmlAdapter(), [imzml, ibd]), reader)
    assert caught.value.path == ibd
    assert caught.value.reason == (
        f"checksum mismatch: its sha1 is {actual}, but {imzml} names {SHA1}"
    )
    assert overread(reader) == {}


def test_without_the_agents_digest_the_checksum_is_said_not_verified(
    pair: tuple[Path, Path],
) -> None:
    imzml, ibd = pair
    reader = FileReader()
    output = ImzmlAdapter().extract(Draft("k", imzml, (imzml, ibd)), reader)
    assert output.original_metadata["ibd_checksum"] == (
        "not verified: the agent computed no sha1 of the .ibd"
    )
    assert "ibd_checksum_verified" not in output.metadata["msi"]
    assert reader.read_by_path[ibd] == 16


def test_uuid_spelled_with_braces_and_dashes_links_the_pair(pair: tuple[Path, Path]) -> None:
    imzml, ibd = pair
    uuid = ibd.read_bytes()[:16].hex()
    spelled = f"{{{uuid[:8]}-{uuid[8:12]}-{uuid[12:16]}-{uuid[16:20]}-{uuid[20:]}}}"
    imzml.write_bytes(imzml.read_bytes().replace(uuid.encode(), spelled.upper().encode()))
    output, _ = extract_all(ImzmlAdapter(), [imzml, ibd])
    assert output.metadata["instances"] == 2


def test_either_file_alone_is_listed_with_what_is_missing(pair: tuple[Path, Path]) -> None:
    imzml, ibd = pair
    alone = ImzmlAdapter().extract(Draft("k", ibd, (ibd,)), FileReader())
    assert alone.format == "imzML"
    assert "no imzML" in alone.warnings[0]
    header = ImzmlAdapter().extract(Draft("k", imzml, (imzml,)), FileReader())
    assert header.metadata["msi"]["spectra"] == 9
    assert "not in the acquisition" in header.warnings[0]


def test_processed_storage_is_told_from_its_cv_term(pair: tuple[Path, Path]) -> None:
    """The corpus pair is continuous; the same spectra declared processed (each spectrum
    with m/z values of its own, IMS:1000031) keep their count and say so."""
    imzml, ibd = pair
    continuous = b'accession="IMS:1000030" name="continuous"'
    text = imzml.read_bytes()
    assert text.count(continuous) == 1
    imzml.write_bytes(text.replace(continuous, b'accession="IMS:1000031" name="processed"'))
    output, _ = extract_all(ImzmlAdapter(), [imzml, ibd])
    assert output.metadata["msi"]["storage"] == "processed"
    with ImzMLParser(str(imzml)) as parser:
        assert output.metadata["msi"]["spectra"] == len(parser.coordinates)
