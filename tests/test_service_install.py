"""The service command's executor and glue: real files, real commands, the CLI's dry run."""

from __future__ import annotations

import stat
import sys
import textwrap
from pathlib import Path

import pytest

from acqharvest.cli import main
from acqharvest.config import load_settings
from acqharvest.service_install import StepFailed, apply, paths_of, this_program
from acqharvest.service_plan import FromEnv, MakeFolder, Remove, Run, SetAccess, WriteFile


def _config(tmp_path: Path, extra: str = "") -> Path:
    config = tmp_path / "etc" / "acqharvest.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "etc" / "token").write_text("t0ken\n")
    config.write_text(
        textwrap.dedent(
            f"""\
            instrument: {{id: "urn:test:confocal-2"}}
            watch:
              - path: {tmp_path / "data one"}
              - path: ../data2
            endpoint:
              type: http
              url: https://archive.example.org/api/packages
              token_file: token
            state_dir: {tmp_path / "state"}
            """
        )
        + extra
    )
    return config


def test_paths_come_from_the_config(tmp_path: Path) -> None:
    config = _config(tmp_path, f"log: {{file: {tmp_path / 'log' / 'acqharvest.log'}}}\n")
    paths = paths_of(load_settings(config), config)

    assert paths.config == str(config)
    assert paths.state_dir == str(tmp_path / "state")
    assert paths.log_dir == str(tmp_path / "log")
    assert paths.endpoint_dir is None
    assert paths.watch == (str(tmp_path / "data one"), str(tmp_path / "data2"))
    assert paths.secrets == (str(tmp_path / "etc" / "token"),)


def test_every_secret_the_service_reads_is_made_readable_by_its_account(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        "status_server: {listen: '127.0.0.1:9464', token_file: status-token}\n",
    )
    config.write_text(
        config.read_text().replace(
            "token_file: token",
            "token_file: token\n  client_cert: client.pem\n  client_key: client.key",
        )
    )
    paths = paths_of(load_settings(config), config)
    folder = config.parent
    assert paths.secrets == (
        str(folder / "token"),
        str(folder / "client.key"),
        str(folder / "status-token"),
    )


def test_a_log_inside_the_state_dir_and_a_delivery_folder(tmp_path: Path) -> None:
    config = tmp_path / "acqharvest.yaml"
    config.write_text(
        'instrument: {id: "urn:x"}\nwatch: [{path: data}]\n'
        "endpoint: {type: directory, path: out}\nstate_dir: state\n"
    )
    paths = paths_of(load_settings(config), config)
    assert (paths.log_dir, paths.endpoint_dir, paths.secrets) == (None, str(tmp_path / "out"), ())


def test_the_service_runs_the_acqharvest_beside_this_interpreter() -> None:
    program = this_program("linux")
    assert program.executable == str(Path(sys.executable).parent / "acqharvest")
    assert Path(program.executable).is_file()


def test_file_steps_below_a_root_with_their_modes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    shared = root / "srv" / "shared"
    shared.mkdir(parents=True)
    shared.chmod(0o755)
    (root / "etc").mkdir()
    (root / "etc" / "cfg.yaml").write_text("x: 1\n")
    (root / "old").mkdir()
    (root / "old" / "f").write_text("")
    said: list[str] = []

    apply(
        [
            WriteFile("/etc/unit", "[Unit]\n", 0o644),
            MakeFolder("/var/lib/acq", 0o750),
            MakeFolder("/srv/shared", 0o700, take_over=False),
            SetAccess("/etc/cfg.yaml", 0o640),
            Remove("/old", tree=True),
            Remove("/never/there"),
        ],
        "linux",
        root=root,
        say=said.append,
    )

    assert (root / "etc" / "unit").read_text() == "[Unit]\n"
    assert stat.S_IMODE((root / "etc" / "unit").stat().st_mode) == 0o644
    assert stat.S_IMODE((root / "var" / "lib" / "acq").stat().st_mode) == 0o750
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755  # an existing shared folder kept
    assert stat.S_IMODE((root / "etc" / "cfg.yaml").stat().st_mode) == 0o640
    assert not (root / "old").exists()
    assert said[0] == "write /etc/unit (mode 0644)"


def test_a_missing_config_stops_the_plan_naming_it(tmp_path: Path) -> None:
    with pytest.raises(StepFailed, match=r"set /etc/acqharvest.yaml \(mode 0640\): no such file"):
        apply(
            [SetAccess("/etc/acqharvest.yaml", 0o640), WriteFile("/after", "")],
            "linux",
            root=tmp_path,
            say=lambda _: None,
        )
    assert not (tmp_path / "after").exists()


def test_commands_run_in_order_skip_when_done_and_stop_at_a_failure(tmp_path: Path) -> None:
    log = tmp_path / "log"
    said: list[str] = []
    steps = [
        Run(("sh", "-c", f"echo one >> {log}")),
        Run(("sh", "-c", f"echo skipped >> {log}"), unless=("true",)),
        Run(("false",), may_fail=True),
        Run(("sh", "-c", f'echo "$0" >> {log}', FromEnv("ACQ_TEST_SECRET"))),
        Run(("sh", "-c", "exit 3")),
        Run(("sh", "-c", f"echo never >> {log}")),
    ]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ACQ_TEST_SECRET", "s3cret")
        with pytest.raises(StepFailed, match=r"sh -c 'exit 3' failed: exit status 3"):
            apply(steps, "linux", say=said.append)

    assert log.read_text() == "one\ns3cret\n"
    assert "  skipped: already done" in said
    assert "  false failed: exit status 1 (ignored)" in said
    assert not any("s3cret" in line for line in said)


def test_a_missing_secret_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACQ_TEST_SECRET", raising=False)
    with pytest.raises(StepFailed, match="ACQ_TEST_SECRET"):
        apply([Run(("true", FromEnv("ACQ_TEST_SECRET")))], "linux", say=lambda _: None)


def test_dry_run_prints_every_step_and_does_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path)
    before = sorted(tmp_path.rglob("*"))

    assert main(["service", "install", "--config", str(config), "--dry-run"]) == 0

    out = capsys.readouterr().out
    assert "run: useradd --system" in out
    assert f"set {config} (mode 0640, owner root:acqharvest)" in out
    assert f"make folder {tmp_path / 'state'} (mode 0750, owner acqharvest:acqharvest)" in out
    assert "write /etc/systemd/system/acqharvest.service (mode 0644, owner root:root):" in out
    assert (
        f"    ExecStart={Path(sys.executable).parent / 'acqharvest'} run --config {config}" in out
    )
    assert out.rstrip().endswith("run: systemctl restart acqharvest.service")
    assert sorted(tmp_path.rglob("*")) == before
    assert not Path("/etc/systemd/system/acqharvest.service").exists()


def test_uninstall_dry_run_needs_no_config(capsys: pytest.CaptureFixture[str]) -> None:
    missing = "/nonexistent/acqharvest.yaml"
    assert main(["service", "uninstall", "--config", missing, "--dry-run"]) == 0
    assert "remove /etc/systemd/system/acqharvest.service" in capsys.readouterr().out


def test_a_bad_config_is_named_and_nothing_is_planned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, "workers: many\n")
    assert main(["service", "install", "--config", str(config), "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert "config error:" in captured.err
    assert "workers" in captured.err
    assert captured.out == ""
