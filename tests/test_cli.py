"""The command line as a user meets it: real subprocesses, real files, real exit codes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from acqharvest.deidentify import Deidentifier
from acqharvest.model import DeidentifySettings
from acqharvest.testing import AdapterConformance, golden
from tests.adapters import test_builtin_conformance as builtin
from tests.endpoint import LoopbackEndpoint
from tests.helpers import wait_until

ACQHARVEST = str(Path(sys.executable).parent / "acqharvest")
REPO = Path(__file__).resolve().parents[1]
PACKAGE_SCHEMA = REPO / "config" / "package.schema.json"


def own_environment() -> dict[str, str]:
    """This environment without a site config: every command gets its config by --config."""
    return {k: v for k, v in os.environ.items() if k != "ACQHARVEST_CONFIG"}


def run(
    *args: str,
    cwd: Path | None = None,
    prefix: list[str] | None = None,
    env: dict[str, str] | None = None,
    **streams: Any,
) -> subprocess.CompletedProcess[str]:
    """``acqharvest ARGS`` run as a user runs it, after ``prefix`` (setpriv), with ``env``
    added to the environment; ``streams``: ``input`` or ``stdin``."""
    return subprocess.run(
        [*(prefix or []), ACQHARVEST, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**own_environment(), **(env or {})},
        timeout=120,
        check=False,
        **streams,
    )


def write_config(tmp_path: Path, endpoint: str, name: str = "acqharvest.yaml") -> Path:
    """A minimal valid config watching ``tmp_path/watch``, with the given endpoint mapping."""
    watch = tmp_path / "watch"
    watch.mkdir(exist_ok=True)
    config = tmp_path / name
    config.write_text(
        f"instrument: {{id: local-1}}\nwatch: [{{path: {watch}}}]\n"
        f"endpoint: {endpoint}\nstate_dir: {tmp_path / 'state'}\n"
    )
    return config


def test_bad_config_reports_every_problem_with_line_and_exit_2(tmp_path: Path) -> None:
    watch = tmp_path / "watch"
    config = tmp_path / "bad.yaml"
    config.write_text(
        "instrument:\n"
        "  name: no id here\n"
        "watch:\n"
        f"  - path: {watch}\n"
        "    settle_seconds: soon\n"
        "    colour: blue\n"
        "endpoint: {type: directory, path: out}\n"
        f"state_dir: {watch / 'state'}\n"
    )
    result = run("run", "--config", str(config))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("config error:")]
    assert len(lines) >= 4, result.stderr
    text = result.stderr
    assert "instrument.id" in text
    assert "watch[0].settle_seconds" in text
    assert "bad.yaml:5" in text
    assert "watch[0].colour" in text
    assert "bad.yaml:6" in text
    assert "state_dir" in text
    assert "bad.yaml:8" in text
    assert run("check", "--config", str(config)).returncode == 2


def test_extract_prints_packages_without_config_or_writes(corpus: Path, tmp_path: Path) -> None:
    source = corpus / "dicom" / "pt" / "ACRIN-FLT-Breast_1.dcm"
    result = run("extract", "--json", str(source), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    body = json.loads(line)
    jsonschema.validate(body, json.loads(PACKAGE_SCHEMA.read_text()))
    assert body["metadata"]["modality"] == "PT"
    assert body["harvester"]["adapter"] == "dicom"
    assert list(tmp_path.iterdir()) == [], "extract must write nothing"


def test_extract_of_a_folder_shows_what_the_sidecars_above_each_acquisition_add(
    corpus: Path, tmp_path: Path
) -> None:
    """How a microscopist checks a new sidecar: the folder given stands for the watch folder."""
    folder = tmp_path / "alice" / "neuro"
    folder.mkdir(parents=True)
    shutil.copyfile(corpus / "tiff-vendor" / "imagej" / "xem_y32.tif", folder / "cells.tif")
    (tmp_path / "acquisition.csv").write_text("Study,Calcium imaging\nOrganism,Mus musculus\n")
    (tmp_path / "alice" / "acquisition.yaml").write_text("sample: [a, b]\n")

    result = run("extract", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:3] == [
        "alice/neuro/cells.tif",  # the sidecars are no acquisitions, nor counted as files
        "  adapter: tiff  format: TIFF (ImageJ)",
        '  annotations: {"study": "Calcium imaging", "organism": "Mus musculus"}',
    ]
    assert (
        "  warning: sidecar alice/acquisition.yaml not applied: line 1 column 9: the value of "
        "'sample' is a list, not text"
    ) in result.stdout.splitlines()

    (line,) = run("extract", "--json", str(tmp_path)).stdout.splitlines()
    body = json.loads(line)
    jsonschema.validate(body, json.loads(PACKAGE_SCHEMA.read_text()))
    assert [(f["path"], f.get("role")) for f in body["files"]] == [
        ("alice/neuro/cells.tif", None),
        ("acquisition.csv", "sidecar"),
    ]


def test_extract_ignores_a_site_config(corpus: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("instrument: [\n")
    env = {**os.environ, "ACQHARVEST_CONFIG": str(broken)}
    source = corpus / "dicom" / "pt" / "ACRIN-FLT-Breast_1.dcm"
    result = subprocess.run(
        [ACQHARVEST, "extract", "--json", str(source)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["provenance"]["deidentification"]["removed"] > 0


def test_extract_prints_the_ro_crate_under_a_named_config(corpus: Path, tmp_path: Path) -> None:
    config = tmp_path / "site.yaml"
    config.write_text(
        "instrument:\n"
        "  id: https://hdl.handle.net/21.11157/example-lsm980\n"
        "  name: LSM 980\n"
        "  serial_number: '2801000123'\n"
        f"watch:\n  - path: {tmp_path / 'watch'}\n"
        f"endpoint:\n  type: directory\n  path: {tmp_path / 'out'}\n"
        f"state_dir: {tmp_path / 'state'}\n"
    )
    source = corpus / "tiff-vendor" / "zeiss-lsm" / "test.lsm"
    result = run("extract", "--config", str(config), "--format", "ro-crate", str(source))
    assert result.returncode == 0, result.stderr
    crate = json.loads(result.stdout)
    entities = {entity["@id"]: entity for entity in crate["@graph"]}
    assert crate["@context"][0] == "https://w3id.org/ro/crate/1.1/context"
    instrument = entities["https://hdl.handle.net/21.11157/example-lsm980"]
    assert (instrument["@type"], instrument["serialNumber"]) == ("IndividualProduct", "2801000123")
    assert entities["test.lsm"]["@type"] == "File"
    assert not (tmp_path / "out").exists(), "extract must write nothing"
    bad = run("extract", "--config", str(tmp_path / "missing.yaml"), str(source))
    assert bad.returncode == 2
    assert "missing.yaml" in bad.stderr


def test_extract_names_a_bad_file_without_a_traceback(tmp_path: Path, corpus: Path) -> None:
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes((corpus / "dicom" / "ct" / "CT_JPEG70.dcm").read_bytes()[:700])
    result = run("extract", str(truncated))
    assert result.returncode == 1
    assert "truncated.dcm" in result.stderr
    assert "Traceback" not in result.stderr


def test_adapters_lists_the_built_ins() -> None:
    result = run("adapters")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "VERSION", "STABILITY"]
    assert sorted(row.split()[0] for row in rows) == [
        "czi",
        "dicom",
        "imzml",
        "lif",
        "nd2",
        "nifti",
        "tiff",
        "zarr",
    ]
    # the test extra installs every reader: none is unavailable here
    assert all(row.rstrip().endswith("loaded") for row in rows), rows
    assert "adapter_not_stable" not in result.stderr


def test_config_schema_matches_the_committed_schema() -> None:
    result = run("config", "schema")
    committed = Path(__file__).resolve().parents[1] / "config" / "acqharvest.schema.json"
    assert json.loads(result.stdout) == json.loads(committed.read_text())


def test_check_and_status_on_a_directory_endpoint(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"{{type: directory, path: {tmp_path / 'out'}}}")
    checked = run("check", "--config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "FAIL" not in checked.stdout
    status = run("status", "--config", str(config))
    assert status.returncode == 0, status.stderr
    assert "pending 0" in status.stdout
    assert not (tmp_path / "state").exists(), "check and status must create nothing"
    assert not (tmp_path / "out").exists()
    retried = run("retry", "--all", "--config", str(config))
    assert retried.returncode == 0
    assert "no rejected packages" in retried.stderr

    typo = tmp_path / "typo.yaml"
    typo.write_text(
        config.read_text().replace(
            f"{{path: {tmp_path / 'watch'}}}", f"{{path: {tmp_path / 'watch'}, adapters: [dicm]}}"
        )
    )
    checked = run("check", "--config", str(typo))
    assert checked.returncode == 1
    assert "not installed: dicm" in checked.stdout

    missing = tmp_path / "missing.yaml"
    missing.write_text(config.read_text().replace(str(tmp_path / "watch"), str(tmp_path / "nope")))
    checked = run("check", "--config", str(missing))
    assert checked.returncode == 1
    assert "nope" in checked.stdout


def test_outbox_release_lets_a_held_package_go_and_names_what_it_cannot(tmp_path: Path) -> None:
    from acqharvest.model import Package
    from acqharvest.outbox import Outbox

    config = write_config(tmp_path, f"{{type: directory, path: {tmp_path / 'out'}}}")
    outbox = Outbox.open(tmp_path / "state" / "outbox")
    body = {"package_id": "h1", "provenance": {"deidentification": {"burned_in_annotation": "YES"}}}
    outbox.spool([Package("h1", "k", body, held=True), Package("p1", "k2", {"package_id": "p1"})])

    status = run("status", "--config", str(config))
    assert "held 1" in status.stdout
    assert "acqharvest outbox release h1" in status.stdout

    released = run("outbox", "release", "h1", "p1", "nope", "--config", str(config))
    assert released.returncode == 1  # two of three were not held
    assert released.stdout == "h1: released, queued for delivery\n"
    assert released.stderr.splitlines() == [
        "p1: pending, not held; left alone",
        "nope: no such package in the outbox",
    ]
    assert outbox.pending() == ["p1", "h1"]
    assert run("outbox", "--config", str(config)).returncode == 2  # an action is required


def test_check_refuses_a_state_dir_linked_into_the_watch_folder(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"{{type: directory, path: {tmp_path / 'out'}}}")
    (tmp_path / "state").symlink_to(tmp_path / "watch")

    checked = run("check", "--config", str(config))

    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert checked.stderr.splitlines() == [
        f"config error: {config}:4: state_dir: {tmp_path / 'state'} (really "
        f"{tmp_path / 'watch'}) is the same folder as watch[0].path ({tmp_path / 'watch'}); "
        "the state folder must be outside every watched folder"
    ]


def test_check_refuses_an_alias_bomb_and_unbounded_numbers_at_once(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"{{type: directory, path: {tmp_path / 'out'}}}")
    # the "billion laughs": each level nine aliases of the one before
    bomb = "".join(f"x{i + 1}: &x{i + 1} [{', '.join([f'*x{i}'] * 9)}]\n" for i in range(9))
    config.write_text(f'x0: &x0 ["lol"]\n{bomb}' + config.read_text())
    numbers = write_config(tmp_path, "{type: directory, path: out}", name="numbers.yaml")
    numbers.write_text(numbers.read_text() + "workers: 10000\nrescan_seconds: 1e309\n")

    bombed = run("check", "--config", str(config))
    unbounded = run("check", "--config", str(numbers))

    assert bombed.returncode == 2
    assert "YAML aliases (*name) expand the config to" in bombed.stderr
    assert unbounded.returncode == 2
    assert unbounded.stderr.splitlines() == [
        f"config error: {numbers}:5: workers: Input should be less than or equal to 64",
        f"config error: {numbers}:6: rescan_seconds: must be a finite number of at most 604800",
    ]


@pytest.mark.integration
def test_embedded_default_harvests_the_demo_folder(tmp_path: Path, corpus: Path) -> None:
    # its own process group, so that SIGINT reaches the workers too, as Ctrl-C does
    process = subprocess.Popen(
        [ACQHARVEST, "run"],
        cwd=tmp_path,
        env=own_environment(),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert wait_until(lambda: (tmp_path / "acquisitions").is_dir(), timeout=20)
        shutil.copyfile(
            corpus / "ome-tiff" / "single-file" / "z-series.ome.tif",
            tmp_path / "acquisitions" / "z.ome.tif",
        )
        harvested = tmp_path / "harvested"
        assert wait_until(lambda: any(harvested.glob("*.json")), timeout=30)
    finally:
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=15)
    assert process.returncode == 0, stderr
    assert "embedded default" in stderr
    assert "Traceback" not in stderr
    (package,) = harvested.glob("*.json")
    assert json.loads(package.read_text())["files"][0]["path"] == "z.ome.tif"


def test_check_probes_an_http_endpoint(tmp_path: Path, endpoint: LoopbackEndpoint) -> None:
    token = tmp_path / "token"
    token.write_text("check-token\n")
    token.chmod(0o600)
    endpoint.token = "check-token"
    url = f"{endpoint.url}?project=b104"
    config = write_config(tmp_path, f"{{type: http, url: '{url}', token_file: {token}}}")
    checked = run("check", "--config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert (
        f"endpoint {endpoint.url}?project=[redacted]: answered HTTP 204 to the no-store probe "
        "(token accepted)" in checked.stdout
    )
    (probe,) = endpoint.probes
    assert probe.headers["authorization"] == "Bearer check-token"
    assert endpoint.received == [], "the probe stores nothing"

    endpoint.token = "rotated-elsewhere"
    checked = run("check", "--config", str(config))
    assert checked.returncode == 1
    assert (
        f"FAIL  endpoint {endpoint.url}?project=[redacted]: HTTP 401: the endpoint does not "
        f"accept the token from token file {token}" in checked.stdout
    )
    assert "check-token" not in checked.stdout + checked.stderr

    endpoint.stop()
    checked = run("check", "--config", str(config))
    assert checked.returncode == 1
    assert "FAIL" in checked.stdout


@pytest.mark.parametrize(
    ("rel", "conformance"),
    [
        ("dicom/dx/dx_image.dcm", builtin.TestDicomConformance),
        ("tiff-vendor/zeiss-lsm/test.lsm", builtin.TestTiffConformance),
    ],
)
def test_extract_gives_one_error_line_per_bad_variant(
    corpus: Path, tmp_path: Path, rel: str, conformance: type[AdapterConformance]
) -> None:
    """Truncated, empty, wrong-magic and lying copies: one clear line each, exit 1."""
    data = (corpus / rel).read_bytes()
    kit = conformance()
    variants = {
        "empty": b"",
        "wrong-magic": kit.wrong_magic(data),
        # two cuts keep the subprocess count down: into the header, and into the data
        **{f"cut-{cut}": data[:cut] for cut in sorted(kit.truncations(data).values())[1:3]},
        **{f"lie-{n}": lie for n, (_, lie) in enumerate(kit.header_lies(data))},
    }
    for name, body in variants.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / Path(rel).name).write_bytes(body)
        result = run("extract", "--json", str(folder / Path(rel).name))
        assert result.returncode == 1, f"{name}: {result.stdout[:300]}"
        assert result.stdout == "", name
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, f"{name}: {result.stderr}"
        assert lines[0].startswith("error: "), name
        assert Path(rel).name in lines[0], name
        assert "Traceback" not in result.stderr


#: what the agent's default de-identification changes in a DICOM package (UIDs replaced;
#: dates shifted; names and descriptions removed), so these fields cannot equal the
#: adapter's golden.
DEIDENTIFIED = {
    "study_uid",
    "series_uid",
    "operator",
    "acquired",
    "series_description",
    "protocol_name",
}


DEFAULT_POLICY = Deidentifier(DeidentifySettings(), b"k" * 32)


def test_extract_json_over_the_corpus_agrees_with_every_golden(corpus: Path) -> None:
    folders = ("dicom", "ome-tiff", "tiff-vendor", "czi", "nd2", "lif")
    result = run("extract", "--json", *(str(corpus / folder) for folder in folders))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    # by content: a file named after its patient (US1_J2KR.dcm of patient ...^US1) is
    # listed under a pseudonym
    package_of = {}
    for line in result.stdout.splitlines():
        package = json.loads(line)
        for file in package["files"]:
            package_of[file["sha256"]] = package
    cases = [
        (case, golden.read_expected(case))
        for adapter in ("dicom", "tiff", "czi", "nd2", "lif")
        for case in golden.load_cases(REPO / "adapters" / adapter / "cases")
    ]
    digest = {
        path: hashlib.sha256((corpus / path).read_bytes()).hexdigest()
        for case, _ in cases
        for path in case.files
    }
    assert set(package_of) == set(digest.values())
    for case, expected in cases:
        assert expected is not None, f"{case.name} has no golden"
        package = package_of[digest[case.files[0]]]
        files = {file["sha256"] for file in package["files"]}
        # Corpus files of one DICOM series (the same scan in two transfer syntaxes) are one
        # acquisition to the daemon, read from its first file, and one case each to the kit.
        series = files != {digest[path] for path in case.files}
        assert not series or expected["format"] == "DICOM", case.name
        assert package["acquisition"]["format"] == expected["format"], case.name
        if package["files"][0]["sha256"] != digest[case.files[0]]:
            continue
        # what the adapter named as identifying and the default policy removes (a slide's
        # scan date); a retained one (a scanner's serial number) must equal the golden
        removed = {
            identifier["path"][1]
            for identifier in expected.get("identifiers", ())
            if identifier["path"][:1] == ["metadata"]
            and DEFAULT_POLICY.action(identifier["attribute"]) != "keep"
        }
        for key, value in expected["metadata"].items():
            if (expected["format"] == "DICOM" and key in DEIDENTIFIED) or key in removed:
                assert package["metadata"].get(key) != value, f"{case.name}: {key} kept"
            elif not (series and key == "instances"):
                assert package["metadata"].get(key) == value, f"{case.name}: {key}"


def test_extract_json_gives_one_package_per_directory_and_paired_acquisition(
    corpus: Path,
) -> None:
    folders = ("ome-zarr", "nifti", "imzml")
    result = run("extract", "--json", *(str(corpus / folder) for folder in folders))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    packages = [json.loads(line) for line in result.stdout.splitlines()]
    by_adapter: dict[str, list[dict[str, object]]] = {}
    for package in packages:
        by_adapter.setdefault(package["harvester"]["adapter"], []).append(package)
    # the whole .zarr store is one package, the imzML pair one, each NIfTI file one
    assert {name: len(found) for name, found in by_adapter.items()} == {
        "zarr": 1,
        "imzml": 1,
        "nifti": 5,
    }
    cases = {
        case.files[0]: (case, golden.read_expected(case))
        for adapter in ("zarr", "nifti", "imzml")
        for case in golden.load_cases(REPO / "adapters" / adapter / "cases")
    }
    for package in packages:
        listed = [file["path"] for file in package["files"]]
        case, expected = cases[listed[0]]
        assert set(listed) == set(case.files)
        assert expected is not None
        assert package["acquisition"]["format"] == expected["format"]
        for key in ("image", "pixel_size_um"):
            assert package["metadata"].get(key) == expected["metadata"].get(key), case.name


def test_check_warns_when_the_instrument_id_is_no_persistent_identifier(tmp_path: Path) -> None:
    local = write_config(tmp_path, f"{{type: directory, path: {tmp_path / 'out'}}}")
    checked = run("check", "--config", str(local))
    # a warning, not a failure: the config works, its packages are just less findable
    assert checked.returncode == 0, checked.stdout + checked.stderr
    (warning,) = [line for line in checked.stdout.splitlines() if line.startswith("WARN")]
    assert warning.startswith(
        "WARN  instrument.id 'local-1' is a local name, not a persistent identifier"
    )

    url = tmp_path / "url.yaml"
    url.write_text(local.read_text().replace("id: local-1", "id: 'https://lab.example.org/s1'"))
    assert (
        "is a plain URL, not a persistent identifier" in run("check", "--config", str(url)).stdout
    )

    handle = tmp_path / "handle.yaml"
    handle.write_text(
        local.read_text().replace("id: local-1", "id: 'https://hdl.handle.net/21.T11998/x'")
    )
    checked = run("check", "--config", str(handle))
    assert checked.returncode == 0
    assert "WARN" not in checked.stdout


def test_a_broken_people_file_fails_check_and_stops_the_daemon_with_exit_2(
    tmp_path: Path,
) -> None:
    people = tmp_path / "people.csv"
    people.write_text("username,name,orcid\nalice,Alice,0000-0002-1825-0098\n")
    config = write_config(tmp_path, f"{{type: directory, path: {tmp_path / 'out'}}}")
    config.write_text(config.read_text() + "people: people.csv\n")  # beside the config

    checked = run("check", "--config", str(config))
    assert checked.returncode == 1
    assert (
        f"FAIL  people: {people}: row 2, column 'orcid': '0000-0002-1825-0098' is not an "
        "ORCID iD: its check character is wrong"
    ) in checked.stdout.splitlines()

    started = run("run", "--once", "--config", str(config))
    assert started.returncode == 2, started.stdout + started.stderr
    assert started.stderr.startswith(f"config error: people: {people}: row 2, column 'orcid'")

    people.write_text("username,name,orcid\nalice,Alice,0000-0002-1825-0097\n")
    checked = run("check", "--config", str(config))
    assert f"ok    people file {people}: 1 people" in checked.stdout.splitlines()
