"""The Linux plan: its steps, the unit it writes (verified by the real systemd-analyze)."""

from __future__ import annotations

import getpass
import grp
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from acqharvest.service_install import apply
from acqharvest.service_plan import (
    MakeFolder,
    Program,
    Remove,
    Request,
    Run,
    ServicePaths,
    SetAccess,
    WriteFile,
)
from acqharvest.service_systemd import UNIT_PATH, packaged_unit, parse_status, plan, unit_text

REPO = Path(__file__).resolve().parent.parent
PATHS = ServicePaths(
    config="/etc/acqharvest/acqharvest.yaml",
    state_dir="/var/lib/acqharvest",
    log_dir="/var/log/acqharvest",
    endpoint_dir=None,
    watch=("/data/confocal 2", "/mnt/share/100%"),
    secrets=("/etc/acqharvest/token",),
)
PROGRAM = Program("/opt/acqharvest/bin/acqharvest")


def test_install_makes_the_user_the_folders_and_the_unit_then_starts_it() -> None:
    steps = plan(Request("install", "linux", PROGRAM, PATHS))

    assert steps == [
        Run(
            (
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/var/lib/acqharvest",
                "--shell",
                "/usr/sbin/nologin",
                "acqharvest",
            ),
            unless=("id", "-u", "acqharvest"),
        ),
        SetAccess("/etc/acqharvest/acqharvest.yaml", 0o640, "root", "acqharvest"),
        SetAccess("/etc/acqharvest/token", 0o640, "root", "acqharvest"),
        MakeFolder("/var/lib/acqharvest", 0o750, "acqharvest", "acqharvest"),
        MakeFolder("/var/log/acqharvest", 0o750, "acqharvest", "acqharvest", take_over=False),
        WriteFile(
            UNIT_PATH, unit_text(PROGRAM.executable, PATHS, "acqharvest"), 0o644, "root", "root"
        ),
        Run(("systemctl", "daemon-reload")),
        Run(("systemctl", "enable", "acqharvest.service")),
        Run(("systemctl", "restart", "acqharvest.service")),
    ]


def test_the_unit_names_the_executable_config_account_and_folders() -> None:
    unit = unit_text(PROGRAM.executable, PATHS, "svc-acq")

    assert "Type=notify\n" in unit
    assert "User=svc-acq\nGroup=svc-acq\n" in unit
    assert (
        "ExecStart=/opt/acqharvest/bin/acqharvest run --config /etc/acqharvest/acqharvest.yaml\n"
        in unit
    )
    assert "ReadWritePaths=/var/lib/acqharvest /var/log/acqharvest\n" in unit
    # a space quoted, a % escaped (systemd specifiers), a missing folder tolerated
    assert 'ReadOnlyPaths=-"/data/confocal 2" -/mnt/share/100%%\n' in unit
    for hardening in ("ProtectSystem=strict", "ProtectHome=read-only", "NoNewPrivileges=true"):
        assert f"{hardening}\n" in unit


def test_the_packaged_unit_is_the_generated_one() -> None:
    committed = (REPO / "packaging" / "linux" / "acqharvest.service").read_text(encoding="utf-8")
    assert committed == packaged_unit(), (
        "packaging/linux/acqharvest.service is stale; regenerate it with\n"
        '  python -c "from acqharvest.service_systemd import packaged_unit; '
        "print(packaged_unit(), end='')\" > packaging/linux/acqharvest.service"
    )
    assert "ReadOnlyPaths" not in committed  # no watch folders without a config


def test_the_written_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """The install plan's files written below a tmp root; the unit verified as systemd reads it."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: apt-get install systemd (see .ci/run)"
    executable = tmp_path / "opt dir" / "bin" / "acqharvest"
    executable.parent.mkdir(parents=True)
    executable.write_text("#!/bin/sh\n")
    executable.chmod(0o755)
    config = tmp_path / "etc" / "acqharvest.yaml"
    config.parent.mkdir()
    config.write_text("state_dir: x\n")
    token = tmp_path / "etc" / "token"
    token.write_text("secret\n")
    paths = ServicePaths(
        config=str(config),
        state_dir=str(tmp_path / "state"),
        log_dir=str(tmp_path / "log"),
        watch=(str(tmp_path / "data 1"), "/not/mounted/yet"),
        secrets=(str(token),),
    )
    user = getpass.getuser()
    group = grp.getgrgid(os.getgid()).gr_name
    steps = plan(Request("install", "linux", Program(str(executable)), paths, user=user))
    # the current account stands in for the service's; files only, below the tmp root
    # for the unit (the config and state paths are already inside tmp_path)
    steps = [
        step if not isinstance(step, (SetAccess, MakeFolder)) else _with_group(step, group)
        for step in steps
    ]
    unit_root = tmp_path / "root"
    apply(
        [step for step in steps if isinstance(step, WriteFile)],
        "linux",
        root=unit_root,
        run_commands=False,
        say=lambda _: None,
    )
    apply(
        [step for step in steps if not isinstance(step, WriteFile)],
        "linux",
        run_commands=False,
        say=lambda _: None,
    )

    unit = unit_root / UNIT_PATH.lstrip("/")
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert stat.S_IMODE(token.stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o750
    assert (tmp_path / "log").is_dir()
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=120, check=False
    )
    assert (result.returncode, result.stderr) == (0, ""), result.stderr


def _with_group(step: SetAccess | MakeFolder, group: str) -> SetAccess | MakeFolder:
    user = getpass.getuser()
    if isinstance(step, SetAccess):
        return SetAccess(step.path, step.mode, user, group)
    return MakeFolder(step.path, step.mode, user, group, step.take_over)


def test_the_verify_catches_a_unit_systemd_would_not_start(tmp_path: Path) -> None:
    """The check above can fail: a unit whose ExecStart is missing does not verify."""
    unit = tmp_path / "acqharvest.service"
    unit.write_text(unit_text(str(tmp_path / "missing"), PATHS, "acqharvest"))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "missing" in result.stderr


def test_uninstall_keeps_state_and_config_unless_purged() -> None:
    keep = plan(Request("uninstall", "linux", PROGRAM))
    assert keep == [
        Run(("systemctl", "disable", "--now", "acqharvest.service"), may_fail=True),
        Remove(UNIT_PATH),
        Run(("systemctl", "daemon-reload")),
    ]
    purge = plan(Request("uninstall", "linux", PROGRAM, PATHS, purge=True))
    assert purge[3:] == [
        Remove("/var/lib/acqharvest", tree=True),
        Remove("/etc/acqharvest/acqharvest.yaml"),
        Run(("userdel", "acqharvest"), may_fail=True),
    ]
    # an account the admin named is never deleted
    named = plan(Request("uninstall", "linux", PROGRAM, PATHS, user="svc-acq", purge=True))
    assert not any(isinstance(s, Run) and s.argv[0] == "userdel" for s in named)


def test_start_stop_and_status_commands() -> None:
    assert plan(Request("start", "linux", PROGRAM)) == [
        Run(("systemctl", "start", "acqharvest.service"))
    ]
    assert plan(Request("stop", "linux", PROGRAM)) == [
        Run(("systemctl", "stop", "acqharvest.service"))
    ]
    [status] = plan(Request("status", "linux", PROGRAM))
    assert isinstance(status, Run)
    assert status.argv[:3] == ("systemctl", "show", "acqharvest.service")


@pytest.mark.parametrize(
    ("returncode", "output", "installed", "running", "detail"),
    [
        (
            0,
            "LoadState=loaded\nActiveState=active\nSubState=running\nUnitFileState=enabled\n",
            True,
            True,
            "active (running), enabled",
        ),
        (
            0,
            "LoadState=loaded\nActiveState=failed\nSubState=failed\nUnitFileState=enabled\n",
            True,
            False,
            "failed (failed), enabled",
        ),
        (
            0,
            "LoadState=not-found\nActiveState=inactive\nSubState=dead\nUnitFileState=\n",
            False,
            False,
            "inactive (dead)",
        ),
        (
            1,
            "System has not been booted with systemd as init system (PID 1). Can't operate.\n",
            False,
            False,
            "System has not been booted with systemd as init system (PID 1). Can't operate.",
        ),
    ],
)
def test_status_is_read_from_systemctl_show(
    returncode: int, output: str, installed: bool, running: bool, detail: str
) -> None:
    state = parse_status(returncode, output)
    assert (state.installed, state.running, state.detail) == (installed, running, detail)
