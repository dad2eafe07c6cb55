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
import ctypes, json, os, struct, tempfile, time
from pathlib import Path
from acqharvest.adapter_api import (
    AdapterError, AdapterInfo, AdapterOutput, Claim, FieldSpec, FormatSpec, normalized_fields,
)

FLAW = {flaw!r}
_LEAKED = []
_CALLS = [0]
# native code's file calls: no Python audit event sees them
_LIBC = ctypes.CDLL(None)
_CASE = str(Path(__file__).parent / "cases" / "run-001.yaml")


def _c_append(target):
    fd = _LIBC.open(str(target).encode(), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    _LIBC.write(fd, b"x", 1)
    _LIBC.close(fd)


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
        if FLAW == "writes_tmp":  # outside every tree the kit snapshots, and gone at once
            with tempfile.TemporaryFile() as scratch:
                scratch.write(data)
        if FLAW == "leaks_other_handle":
            _LEAKED.append(os.open(_CASE, os.O_RDONLY))
        if FLAW == "c_writes_parent":
            _c_append(path.parent.parent / "harvest-index.db")
        if FLAW == "c_scratch":
            _c_append(path.with_name(".scratch"))
            _LIBC.unlink(str(path.with_name(".scratch")).encode())
        if FLAW == "c_write_handle":  # opened for writing, never written: no mtime moves
            _LEAKED.append(_LIBC.open(_CASE.encode(), os.O_WRONLY))
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
        # a header announcing pixels that the file, ending cleanly after it, lacks
        incomplete = "no pixels" if body.get("pixels") and len(data) == 8 + length else None
        if FLAW == "incomplete_without_reason":
            incomplete = True
        return AdapterOutput(format="TINY", metadata=metadata, incomplete=incomplete)
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
{hooks}
"""

LIES = """
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


def _project(
    pytester: pytest.Pytester, flaw: str, cases_dir: str = "cases", hooks: str = LIES
) -> Path:
    pytester.makepyfile(
        tiny_adapter=ADAPTER.format(flaw=flaw),
        test_conformance=textwrap.dedent(CONFORMANCE.format(cases=cases_dir, hooks=hooks)),
    )
    samples = pytester.path / "samples"
    samples.mkdir()
    (samples / "run-001.tiny").write_bytes(_tiny("bead slide", 640, 480))
    cases = pytester.path / cases_dir
    cases.mkdir(parents=True)
    (cases / "run-001.yaml").write_text("files:\n  - samples/run-001.tiny\n")
    return cases / "run-001.expected.json"


def _run_checks(pytester: pytest.Pytester, *args: str) -> tuple[dict[str, str], dict[str, str]]:
    """(failed check -> its report, skipped check -> its reason); every check must have run."""
    recorder = pytester.inline_run("-p", "no:cacheprovider", f"--acqharvest-corpus={CORPUS}", *args)
    passed, skipped, failed = recorder.listoutcomes()
    ran = {_check(report) for report in (*passed, *skipped, *failed)}
    assert ran == CHECKS, f"checks that did not run: {sorted(CHECKS - ran)}"
    return (
        {_check(report): report.longreprtext for report in failed},
        {_check(report): report.longreprtext for report in skipped},
    )


def _check(report: pytest.TestReport | pytest.CollectReport) -> str:
    return report.nodeid.split("::")[-1].split("[")[0]


def _failed_checks(pytester: pytest.Pytester, *args: str) -> set[str]:
    failed, skipped = _run_checks(pytester, *args)
    assert not skipped, skipped
    return set(failed)


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
    ("flaw", "check", "finding"),
    [
        ("undeclared", "test_fields", "colour is emitted but not declared"),
        ("wrong_type", "test_fields", "image.size_x = '640'"),
        ("bad_channel", "test_fields", "channels[0]"),
        ("impossible_date", "test_fields", "acquired = '2020-13-45'"),
        ("incomplete_without_reason", "test_fields", "incomplete = True: give the reason"),
        ("nondeterministic", "test_deterministic", "two extractions differ"),
        ("leaks_handle", "test_read_only", "left open: {samples}/run-001.tiny"),
        ("writes", "test_read_only", "wrote: opened {samples}/run-001.tiny.cache for writing"),
        ("value_error", "test_truncated", "instead of AdapterError"),
        ("hangs", "test_zero_byte", "did not return within 0.5 s"),
        ("greedy", "test_leaves_others_alone", "claims tiff's samples"),
        # Python writes anywhere, even undone before extract returns: the audit hook
        ("writes_tmp", "test_read_only", "wrote: opened"),
        # a handle on a file that is not an input is a leak all the same
        ("leaks_other_handle", "test_read_only", "left open: {root}/cases/run-001.yaml"),
        # native writes: only the snapshot of the tree around the case sees them ...
        (
            "c_writes_parent",
            "test_read_only",
            "changed under {root}: content of {root}/harvest-index.db changed",
        ),
        ("c_scratch", "test_read_only", "entries of folder {samples} changed"),
        # ... or, for a handle opened to write and left open, its access mode in fdinfo
        ("c_write_handle", "test_read_only", "run-001.yaml (open for writing)"),
    ],
)
def test_each_flaw_fails_exactly_its_check(
    pytester: pytest.Pytester, flaw: str, check: str, finding: str
) -> None:
    _project(pytester, flaw)
    try:
        # the golden of this very adapter, so only the flaw's own check can fail
        _regenerate(pytester, "--acqharvest-regenerate")
        failed, skipped = _run_checks(pytester)
        assert not skipped, skipped
        assert set(failed) == {check}
        root = pytester.path
        assert finding.format(root=root, samples=root / "samples") in failed[check]
    finally:
        _close_handles_under(pytester.path)


def test_a_case_derived_from_the_first_bytes_of_a_sample_keeps_incomplete_in_its_golden(
    pytester: pytest.Pytester,
) -> None:
    golden = _project(pytester, "none")
    header = _tiny("header export", 64, 32).replace(b'"label"', b'"pixels": 4, "label"')
    header = header[:4] + (len(header) - 8).to_bytes(4, "little") + header[8:]
    (pytester.path / "samples" / "run-001.tiny").write_bytes(header + b"PIXL")
    (pytester.path / "cases" / "run-001.yaml").write_text(
        f"files:\n  - samples/run-001.tiny\nfirst_bytes: {len(header)}\n"
    )
    _regenerate(pytester, "--acqharvest-regenerate")
    written = json.loads(golden.read_text())
    assert written["incomplete"] == "no pixels"
    assert written["metadata"]["tiny"] == {"label": "header export"}
    assert _failed_checks(pytester) == set()
    # the sample itself is whole: the case reads a derived copy, not the sample
    assert (pytester.path / "samples" / "run-001.tiny").read_bytes() == header + b"PIXL"


def test_header_lies_fail_until_overridden(pytester: pytest.Pytester) -> None:
    _project(pytester, "none", hooks="")
    _regenerate(pytester, "--acqharvest-regenerate")
    failed, skipped = _run_checks(pytester)
    assert not skipped, skipped
    assert set(failed) == {"test_header_lies"}
    assert "header_lies() is not overridden" in failed["test_header_lies"]
    assert "header_lies_waiver" in failed["test_header_lies"]


def test_an_override_that_yields_no_lie_fails(pytester: pytest.Pytester) -> None:
    _project(pytester, "none", hooks="\n    def header_lies(self, data):\n        return []\n")
    _regenerate(pytester, "--acqharvest-regenerate")
    failed, _ = _run_checks(pytester)
    assert set(failed) == {"test_header_lies"}
    assert "yields no lie for this sample" in failed["test_header_lies"]


def test_a_waiver_skips_the_header_lies_and_says_why_on_every_run(
    pytester: pytest.Pytester,
) -> None:
    reason = "TINY declares one length, and the truncations already cut inside it"
    _project(pytester, "none", hooks=f"\n    header_lies_waiver = {reason!r}\n")
    _regenerate(pytester, "--acqharvest-regenerate")
    result = pytester.runpytest("-p", "no:cacheprovider", "-rs", "-k", "test_header_lies")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        [f"acqharvest: TestTiny waives *: {reason}", f"SKIPPED*header lies waived: {reason}"]
    )


@pytest.mark.parametrize(
    ("hooks", "finding"),
    [
        ("\n    header_lies_waiver = '  '\n", "header_lies_waiver is blank"),
        (LIES + "    header_lies_waiver = 'no lies'\n", "header_lies_waiver is stale"),
    ],
    ids=["blank", "stale"],
)
def test_a_blank_or_stale_waiver_fails(pytester: pytest.Pytester, hooks: str, finding: str) -> None:
    _project(pytester, "none", hooks=hooks)
    _regenerate(pytester, "--acqharvest-regenerate")
    failed, _ = _run_checks(pytester)
    assert set(failed) == {"test_header_lies"}
    assert finding in failed["test_header_lies"]


def _close_handles_under(folder: Path) -> None:
    """Close what the leaking adapter left open, so this process does not keep it."""
    for entry in os.scandir("/proc/self/fd"):
        try:
            target = os.readlink(entry.path)
        except OSError:
            continue
        if target.startswith(str(folder)):
            os.close(int(entry.name))
