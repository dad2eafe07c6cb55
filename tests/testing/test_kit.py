"""The conformance kit itself: each check fails for the adapter flaw it exists to catch.

A tiny in-memory format (``TINY`` + a 4-byte length + that many bytes of JSON) gets one
good adapter and one adapter per flaw, each run through ``AdapterConformance`` in a
pytester folder of its own. A flaw must fail exactly its check; the good adapter passes
everything, and ``--acqharvest-regenerate`` writes the golden the next run compares to.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from tests.conftest import CORPUS

ADAPTER = """
import json, os, struct, time
from pathlib import Path
from acqharvest.adapter_api import (
    AdapterError, AdapterInfo, AdapterOutput, Claim, FieldSpec, FormatSpec, normalized_fields,
)

FLAW = {flaw!r}
_LEAKED = []
_CALLS = [0]


class TinyAdapter:
    info = AdapterInfo(
        name="tiny",
        title="Tiny test format",
        version="1.0.0",
        stability="experimental",
        formats=(FormatSpec(name="TINY", extensions=(".tiny",), magic="TINY"),),
        fields=(
            *normalized_fields(
                {{"image.size_x": "w", "image.size_y": "h", "channels": "c", "acquired": "a"}}
            ),
            FieldSpec("tiny.label", "string", description="the label the file holds"),
        ),
    )

    def claim(self, probe, reader):
        if probe.head[:4] == b"TINY" and probe.size >= 8:
            return Claim(group_key=f"tiny:{{probe.path}}")
        if FLAW == "greedy" and probe.head[:4] in (b"II*\\0", b"MM\\0*"):
            return Claim(group_key=f"tiny:{{probe.path}}", confidence=0.1)
        return None

    def extract(self, draft, reader):
        path = draft.primary
        if FLAW == "hangs" and path.stat().st_size == 0:
            time.sleep(2)
        data = reader.read(path, 0, 1 << 20)
        if FLAW == "leaks_handle":
            _LEAKED.append(os.open(path, os.O_RDONLY))  # a bare fd: no ResourceWarning at exit
        if FLAW == "writes":
            path.with_name(path.name + ".cache").write_text("seen")
        if data[:4] != b"TINY" or len(data) < 8:
            raise AdapterError(path, "not a TINY file")
        (length,) = struct.unpack("<I", data[4:8])
        if length > 1 << 20:
            raise AdapterError(path, f"declares {{length}} bytes of payload")
        if len(data) - 8 < length and FLAW != "value_error":
            raise AdapterError(path, f"truncated: {{len(data) - 8}} of {{length}} bytes")
        body = json.loads(data[8 : 8 + length])
        image = {{"size_x": body["w"], "size_y": body["h"]}}
        metadata = {{"image": image, "tiny": {{"label": body["label"]}}}}
        if FLAW == "undeclared":
            metadata["colour"] = "blue"
        if FLAW == "wrong_type":
            metadata["image"]["size_x"] = str(body["w"])
        if FLAW == "bad_channel":
            metadata["channels"] = [{{"name": "DAPI", "emission_nm": "blue", "colour": 1}}]
        if FLAW == "impossible_date":
            metadata["acquired"] = "2020-13-45"
        _CALLS[0] += 1
        if FLAW == "nondeterministic":
            metadata["tiny"]["label"] += "!" * (_CALLS[0] % 2)
        return AdapterOutput(format="TINY", metadata=metadata)
"""

CONFORMANCE = """
import struct
from pathlib import Path
from acqharvest.testing import AdapterConformance
from tiny_adapter import TinyAdapter

HERE = Path(__file__).parent


class TestTiny(AdapterConformance):
    adapter = TinyAdapter()
    cases_dir = HERE / {cases!r}
    samples_root = HERE
    deadline_seconds = 0.5

    def header_lies(self, data):
        yield "length past EOF", data[:4] + struct.pack("<I", 0x7FFFFFF0) + data[8:]
"""

#: every check of the kit, by test method name.
CHECKS = {
    "test_info",
    "test_golden",
    "test_fields",
    "test_deterministic",
    "test_read_only",
    "test_claims_own_files",
    "test_not_outbid",
    "test_leaves_others_alone",
    "test_zero_byte",
    "test_truncated",
    "test_wrong_magic",
    "test_header_lies",
}


def _tiny(label: str, width: int, height: int) -> bytes:
    body = json.dumps({"w": width, "h": height, "label": label}).encode()
    return b"TINY" + len(body).to_bytes(4, "little") + body


def _project(pytester: pytest.Pytester, flaw: str, cases_dir: str = "cases") -> Path:
    pytester.makepyfile(
        tiny_adapter=ADAPTER.format(flaw=flaw),
        test_conformance=textwrap.dedent(CONFORMANCE.format(cases=cases_dir)),
    )
    samples = pytester.path / "samples"
    samples.mkdir()
    (samples / "run-001.tiny").write_bytes(_tiny("bead slide", 640, 480))
    cases = pytester.path / cases_dir
    cases.mkdir(parents=True)
    (cases / "run-001.yaml").write_text("files:\n  - samples/run-001.tiny\n")
    return cases / "run-001.expected.json"


def _failed_checks(pytester: pytest.Pytester, *args: str) -> set[str]:
    recorder = pytester.inline_run("-p", "no:cacheprovider", f"--acqharvest-corpus={CORPUS}", *args)
    passed, skipped, failed = recorder.listoutcomes()
    assert not skipped, [report.nodeid for report in skipped]
    ran = {report.nodeid.split("::")[-1].split("[")[0] for report in (*passed, *failed)}
    assert ran == CHECKS, f"checks that did not run: {sorted(CHECKS - ran)}"
    return {report.nodeid.split("::")[-1].split("[")[0] for report in failed}


def _regenerate(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """Regenerate the goldens: they are written and skipped, and the run does not pass."""
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "test_golden", *args)
    result.assert_outcomes(skipped=1)
    assert result.ret != 0
    result.stdout.fnmatch_lines(
        ["*regenerated 1 golden(s); review the diff and re-run without --acqharvest-regenerate*"]
    )
    return result


def test_a_good_adapter_passes_every_check_after_regenerating(pytester: pytest.Pytester) -> None:
    golden = _project(pytester, "none")
    assert _failed_checks(pytester) == {"test_golden"}  # no golden yet: regenerate says so
    assert not golden.exists()

    _regenerate(pytester, "--acqharvest-regenerate")
    written = json.loads(golden.read_text())
    assert written["format"] == "TINY"
    assert written["metadata"] == {
        "image": {"size_x": 640, "size_y": 480},
        "tiny": {"label": "bead slide"},
    }
    assert _failed_checks(pytester) == set()


def test_regenerating_never_passes_a_golden_even_from_the_environment(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    golden = _project(pytester, "none")
    monkeypatch.setenv("ACQHARVEST_REGENERATE", "1")  # left set in CI by mistake
    _regenerate(pytester)
    golden.write_text(golden.read_text().replace("bead slide", "other slide"))
    _regenerate(pytester)  # overwritten, and said so: not a silent pass
    assert "bead slide" in golden.read_text()


def test_the_kit_refuses_to_regenerate_into_site_packages(pytester: pytest.Pytester) -> None:
    golden = _project(pytester, "none", cases_dir="venv/lib/site-packages/tiny/cases")
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "golden", "--acqharvest-regenerate")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*installed copy*site-packages*pip install -e*"])
    assert not golden.exists()


def test_the_plugin_adds_no_bare_regenerate_option(pytester: pytest.Pytester) -> None:
    _project(pytester, "none")
    result = pytester.runpytest("-p", "no:cacheprovider", "--regenerate")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unrecognized arguments: --regenerate*"])


def test_a_changed_output_fails_the_golden_with_a_diff(pytester: pytest.Pytester) -> None:
    golden = _project(pytester, "none")
    _regenerate(pytester, "--acqharvest-regenerate")
    golden.write_text(golden.read_text().replace("bead slide", "other slide"))
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "test_golden")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(['*-*"label": "other slide"', '*+*"label": "bead slide"'])


@pytest.mark.parametrize(
    ("flaw", "check"),
    [
        ("undeclared", "test_fields"),
        ("wrong_type", "test_fields"),
        ("bad_channel", "test_fields"),
        ("impossible_date", "test_fields"),
        ("nondeterministic", "test_deterministic"),
        ("leaks_handle", "test_read_only"),
        ("writes", "test_read_only"),
        ("value_error", "test_truncated"),
        ("hangs", "test_zero_byte"),
        ("greedy", "test_leaves_others_alone"),
    ],
)
def test_each_flaw_fails_exactly_its_check(
    pytester: pytest.Pytester, flaw: str, check: str
) -> None:
    _project(pytester, flaw)
    try:
        # the golden of this very adapter, so only the flaw's own check can fail
        _regenerate(pytester, "--acqharvest-regenerate")
        assert _failed_checks(pytester) == {check}
    finally:
        _close_handles_under(pytester.path)


def _close_handles_under(folder: Path) -> None:
    """Close what the leaking adapter left open, so this process does not keep it."""
    for entry in os.scandir("/proc/self/fd"):
        try:
            target = os.readlink(entry.path)
        except OSError:
            continue
        if target.startswith(str(folder)):
            os.close(int(entry.name))
