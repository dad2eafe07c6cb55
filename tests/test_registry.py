"""Adapter discovery through real entry points, isolation of broken ones, claim arbitration."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import structlog

from acqharvest.adapter_api import (
    HEAD_BYTES,
    AdapterInfo,
    AdapterOutput,
    Claim,
    Draft,
    FileProbe,
    FormatSpec,
    Reader,
)
from acqharvest.readonly import FileReader
from acqharvest.registry import (
    DEFAULT_LOAD_SECONDS,
    ENV_LOAD,
    ENV_LOAD_SECONDS,
    GROUP,
    install_line,
    load_registry,
    missing_modules,
)

BUILTINS = [
    EntryPoint(name="dicom", value="acqharvest.adapters.dicom:DicomAdapter", group=GROUP),
    EntryPoint(name="tiff", value="acqharvest.adapters.tiff:TiffAdapter", group=GROUP),
]


def _info(name: str) -> AdapterInfo:
    return AdapterInfo(
        name=name, title=name, version="0.0.1", stability="experimental", formats=(), fields=()
    )


class ExplodingAdapter:
    """Claims by raising, as a buggy vendor adapter might."""

    info = _info("explodes")

    def claim(self, probe: FileProbe, reader: Reader) -> Claim | None:
        raise RuntimeError("boom")

    def extract(self, draft: Draft, reader: Reader) -> AdapterOutput:
        raise RuntimeError("boom")


class _Everything:
    def claim(self, probe: FileProbe, reader: Reader) -> Claim | None:
        return Claim(group_key=f"{self.info.name}:{probe.path}", confidence=0.5)  # type: ignore[attr-defined]

    def extract(self, draft: Draft, reader: Reader) -> AdapterOutput:
        return AdapterOutput(format="any", metadata={})


class AaaAdapter(_Everything):
    info = _info("aaa")


class ZzzAdapter(_Everything):
    info = _info("zzz")


class BadStability(_Everything):
    info = AdapterInfo(
        name="bad",
        title="bad",
        version="1",
        stability="gold",  # type: ignore[arg-type]
        formats=(),
        fields=(),
    )


class VendorAbort(BaseException):
    """A vendor SDK's fatal error, derived from BaseException to escape ``except Exception``."""


class ExitingAdapter(_Everything):
    info = _info("exits")

    def __init__(self) -> None:
        sys.exit("vendor SDK missing")


class AbortingAdapter(_Everything):
    info = _info("aborts")

    def __init__(self) -> None:
        raise VendorAbort("licence server unreachable")


class InterruptedAdapter(_Everything):
    info = _info("interrupted")

    def __init__(self) -> None:
        raise KeyboardInterrupt


#: what HangingAdapter waits for, as a vendor SDK waits for a licence server
LICENCE_SERVER_ANSWERED = threading.Event()


class HangingAdapter(_Everything):
    info = _info("hangs")

    def __init__(self) -> None:
        LICENCE_SERVER_ANSWERED.wait()


class ExitingClaim(_Everything):
    info = _info("exitclaim")

    def claim(self, probe: FileProbe, reader: Reader) -> Claim | None:
        sys.exit(1)


#: a reader no one installs: an adapter requiring it is unavailable
NO_SUCH_READER = "acqharvest_no_such_reader"


class NeedsMissingReader(_Everything):
    """Claims every file; its reader, which it would import in ``extract``, is not installed."""

    info = AdapterInfo(
        name="needsreader",
        title="needs a reader",
        version="1.0.0",
        stability="experimental",
        formats=(FormatSpec(name="Needs Format"),),
        fields=(),
        requires=(NO_SUCH_READER,),
        extra="needs",
    )

    def extract(self, draft: Draft, reader: Reader) -> AdapterOutput:
        raise AssertionError("extract of an unavailable adapter must never be called")


class RequiresAString(_Everything):
    info = dataclasses.replace(_info("stringreq"), requires="czifile")  # type: ignore[arg-type]


class AsksForSha256(_Everything):
    info = dataclasses.replace(_info("asks256"), digests={".raw": ("sha256",)})


class NamesNoMediaType(_Everything):
    info = dataclasses.replace(_info("badtype"), media_types={".raw": "raw data"})


class AsksForSha1(_Everything):
    info = dataclasses.replace(_info("asks1"), digests={".raw": ("sha1",), ".bin": ("md5",)})


def _ep(name: str, target: str) -> EntryPoint:
    return EntryPoint(name=name, value=f"tests.test_registry:{target}", group=GROUP)


def _probe(path: Path, reader: FileReader) -> FileProbe:
    return FileProbe(path, path.stat().st_size, reader.head(path, HEAD_BYTES))


@pytest.fixture(autouse=True)
def _no_env_limit(monkeypatch):
    monkeypatch.delenv(ENV_LOAD, raising=False)
    monkeypatch.delenv(ENV_LOAD_SECONDS, raising=False)


@pytest.fixture
def licence_server() -> Iterator[threading.Event]:
    LICENCE_SERVER_ANSWERED.clear()
    yield LICENCE_SERVER_ANSWERED
    LICENCE_SERVER_ANSWERED.set()  # the thread left behind finishes


def test_builtins_load_from_installed_metadata():
    registry = load_registry()
    assert {"dicom", "tiff"} <= set(registry.adapters)
    assert not [e for e in registry.errors if e.name in ("dicom", "tiff")]
    assert list(registry.adapters) == sorted(registry.adapters)
    assert registry.distributions["dicom"] == "acqharvest"
    rows = {row["name"]: row for row in registry.listing()}
    assert rows["tiff"]["status"] == "loaded"
    assert "OME-TIFF" in rows["tiff"]["formats"]
    assert rows["dicom"]["version"] == registry.adapters["dicom"].info.version


def test_env_var_limits_loading(monkeypatch):
    monkeypatch.setenv(ENV_LOAD, "tiff")
    assert list(load_registry(entry_points=BUILTINS).adapters) == ["tiff"]
    monkeypatch.setenv(ENV_LOAD, "")
    assert load_registry(entry_points=BUILTINS).adapters == {}
    monkeypatch.setenv(ENV_LOAD, " dicom , tiff ")
    assert list(load_registry(entry_points=BUILTINS).adapters) == ["dicom", "tiff"]


def test_enabled_limits_loading():
    assert list(load_registry(enabled=["dicom"], entry_points=BUILTINS).adapters) == ["dicom"]


def test_a_broken_entry_point_is_reported_and_the_others_load():
    broken = EntryPoint(name="broken", value="nonexistent.module:X", group=GROUP)
    misnamed = EntryPoint(name="other", value="acqharvest.adapters.dicom:DicomAdapter", group=GROUP)
    registry = load_registry(entry_points=[broken, *BUILTINS, misnamed, _ep("bad", "BadStability")])
    assert list(registry.adapters) == ["dicom", "tiff"]
    errors = {e.name: e for e in registry.errors}
    assert set(errors) == {"broken", "other", "bad"}
    assert errors["broken"].error.startswith("ModuleNotFoundError")
    assert errors["broken"].distribution == ""
    assert "differs from the entry-point name" in errors["other"].error
    assert "stability" in errors["bad"].error
    statuses = {row["name"]: row["status"] for row in registry.listing()}
    assert statuses["broken"].startswith("error: ModuleNotFoundError")


def test_claim_picks_the_right_builtin(corpus):
    registry = load_registry(entry_points=BUILTINS)
    reader = FileReader()
    dicom = registry.claim(_probe(corpus / "dicom/ct/CT_JPEG70.dcm", reader), reader)
    assert dicom is not None
    assert dicom[0] == "dicom"
    tiff = registry.claim(_probe(corpus / "tiff-vendor/zeiss-lsm/test.lsm", reader), reader)
    assert tiff is not None
    assert tiff[0] == "tiff"
    assert registry.claim(_probe(corpus / "czi/testTinyCzi.czi", reader), reader) is None
    limited = _probe(corpus / "dicom/ct/CT_JPEG70.dcm", reader)
    assert registry.claim(limited, reader, allowed=["tiff"]) is None


def test_a_raising_claim_is_ignored_and_confidence_wins(corpus):
    registry = load_registry(
        entry_points=[*BUILTINS, _ep("explodes", "ExplodingAdapter"), _ep("zzz", "ZzzAdapter")]
    )
    reader = FileReader()
    dicom = registry.claim(_probe(corpus / "dicom/dx/dx_image.dcm", reader), reader)
    assert dicom is not None
    assert dicom[0] == "dicom"  # 0.9 beats zzz's 0.5; explodes' exception is swallowed
    other = registry.claim(_probe(corpus / "czi/testTinyCzi.czi", reader), reader)
    assert other is not None
    assert other[0] == "zzz"


def test_ties_go_to_registry_order(corpus):
    registry = load_registry(entry_points=[_ep("zzz", "ZzzAdapter"), _ep("aaa", "AaaAdapter")])
    reader = FileReader()
    result = registry.claim(_probe(corpus / "czi/testTinyCzi.czi", reader), reader)
    assert result is not None
    assert result[0] == "aaa"


def test_system_exit_and_vendor_base_exceptions_are_load_errors():
    with structlog.testing.capture_logs() as logged:
        registry = load_registry(
            entry_points=[
                _ep("exits", "ExitingAdapter"),
                _ep("aborts", "AbortingAdapter"),
                *BUILTINS,
            ]
        )
    assert list(registry.adapters) == ["dicom", "tiff"]
    errors = {e.name: e.error for e in registry.errors}
    assert errors == {
        "exits": "SystemExit: vendor SDK missing",
        "aborts": "VendorAbort: licence server unreachable",
    }
    failed = {e["adapter"]: e for e in logged if e["event"] == "adapter_load_failed"}
    assert set(failed) == {"exits", "aborts"}
    assert failed["exits"]["error"] == "SystemExit: vendor SDK missing"
    assert failed["exits"]["log_level"] == "error"
    statuses = {row["name"]: row["status"] for row in registry.listing()}
    assert statuses["aborts"] == "error: VendorAbort: licence server unreachable"


def test_keyboard_interrupt_while_loading_still_stops_start_up():
    # A real Ctrl-C is indistinguishable from a vendor raising it: it must stop us.
    with pytest.raises(KeyboardInterrupt):
        load_registry(entry_points=[*BUILTINS, _ep("interrupted", "InterruptedAdapter")])


def test_a_claim_calling_sys_exit_is_ignored(corpus):
    registry = load_registry(entry_points=[_ep("exitclaim", "ExitingClaim"), *BUILTINS])
    reader = FileReader()
    with structlog.testing.capture_logs() as logged:
        result = registry.claim(_probe(corpus / "dicom/dx/dx_image.dcm", reader), reader)
    assert result is not None
    assert result[0] == "dicom"
    assert [e["error"] for e in logged if e["event"] == "adapter_claim_failed"] == ["SystemExit: 1"]


def test_an_adapter_that_never_finishes_loading_is_a_load_error(monkeypatch, licence_server):
    monkeypatch.setenv(ENV_LOAD_SECONDS, "0.5")
    with structlog.testing.capture_logs() as logged:
        registry = load_registry(entry_points=[_ep("hangs", "HangingAdapter"), *BUILTINS])
    assert list(registry.adapters) == ["dicom", "tiff"]
    (error,) = registry.errors
    assert error.name == "hangs"
    assert error.error == (
        "TimeoutError: import or construction still running after 0.5 s "
        f"({ENV_LOAD_SECONDS}); left behind"
    )
    assert [e["adapter"] for e in logged if e["event"] == "adapter_load_failed"] == ["hangs"]
    left_behind = [t for t in threading.enumerate() if t.name == "load-adapter-hangs"]
    assert left_behind
    assert left_behind[0].daemon, "a thread left behind must not keep the process alive"


@pytest.mark.parametrize("value", ["soon", "0", "-3", "inf", "nan"])
def test_an_invalid_load_time_limit_falls_back_to_the_default(monkeypatch, value):
    monkeypatch.setenv(ENV_LOAD_SECONDS, value)
    with structlog.testing.capture_logs() as logged:
        registry = load_registry(entry_points=BUILTINS)
    assert list(registry.adapters) == ["dicom", "tiff"]
    (warning,) = [e for e in logged if e["event"] == "adapter_load_seconds_invalid"]
    assert warning["value"] == value
    assert warning["used"] == DEFAULT_LOAD_SECONDS


def test_an_adapter_whose_reader_is_missing_claims_but_is_listed_unavailable(corpus):
    registry = load_registry(entry_points=[*BUILTINS, _ep("needsreader", "NeedsMissingReader")])
    assert list(registry.adapters) == ["dicom", "needsreader", "tiff"]
    assert registry.missing == {"needsreader": (NO_SUCH_READER,)}
    assert registry.unavailable("tiff") is None
    reason = registry.unavailable("needsreader")
    assert reason is not None
    assert NO_SUCH_READER in reason
    assert reason.endswith("install it with: pip install 'acqharvest[needs]'")
    statuses = {row["name"]: row["status"] for row in registry.listing()}
    assert statuses["needsreader"] == "unavailable: pip install 'acqharvest[needs]'"
    assert statuses["tiff"] == "loaded"
    # its files are still claimed (grouped, packaged with checksums)
    reader = FileReader()
    found = registry.claim(_probe(corpus / "czi/testTinyCzi.czi", reader), reader)
    assert found is not None
    assert found[0] == "needsreader"


def test_requires_is_looked_up_never_imported():
    assert missing_modules(("json", NO_SUCH_READER, f"{NO_SUCH_READER}.sub", "")) == (
        NO_SUCH_READER,
        f"{NO_SUCH_READER}.sub",
        "",
    )
    # A fresh interpreter: loading every installed adapter imports none of the optional
    # readers, though they are installed here (numpy comes with pydicom, a base dependency).
    script = (
        "import sys; from acqharvest.registry import load_registry; r = load_registry(); "
        "assert not r.missing, r.missing; "
        "print(sorted(m for m in ('czifile', 'nd2', 'readlif', 'nibabel', 'tifffile') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.splitlines()[-1] == "[]"


def test_install_line_without_an_extra_names_the_modules():
    info = dataclasses.replace(_info("vendor"), requires=("vendorsdk", "numpy"))
    assert install_line(info) == "pip install vendorsdk numpy"
    assert install_line(dataclasses.replace(info, extra="czi")) == "pip install 'acqharvest[czi]'"
    vendor = dataclasses.replace(info, extra="sdk")
    assert install_line(vendor, "acqharvest-zeiss") == "pip install 'acqharvest-zeiss[sdk]'"


def test_requires_given_as_a_string_is_a_load_error():
    registry = load_registry(entry_points=[_ep("stringreq", "RequiresAString")])
    assert registry.adapters == {}
    assert "requires must be a tuple" in registry.errors[0].error


def test_digests_are_asked_by_suffix_of_allowed_adapters_only():
    registry = load_registry(
        entry_points=[
            _ep("asks1", "AsksForSha1"),
            EntryPoint(name="imzml", value="acqharvest.adapters.imzml:ImzmlAdapter", group=GROUP),
        ]
    )
    assert registry.digests_for(Path("/d/run.IBD")) == ("md5", "sha1")
    assert registry.digests_for(Path("/d/run.raw")) == ("sha1",)
    assert registry.digests_for(Path("/d/run.imzML")) == ()
    assert registry.digests_for(Path("/d/run.ibd"), allowed=("asks1",)) == ()


def test_a_malformed_digests_request_is_a_load_error():
    registry = load_registry(entry_points=[_ep("asks256", "AsksForSha256")])
    assert registry.adapters == {}
    assert "digests['.raw']: ['sha256'] not among" in registry.errors[0].error
    assert "sha256 is always computed" in registry.errors[0].error


def test_a_malformed_media_type_is_a_load_error():
    registry = load_registry(entry_points=[_ep("badtype", "NamesNoMediaType")])
    assert registry.adapters == {}
    assert "media_types['.raw']: 'raw data' is not a media type" in registry.errors[0].error
