"""``acqharvest doctor`` as an admin meets it: real folders, a real loopback endpoint (HTTP
and HTTPS), real permissions, a real small disk, and real exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import trustme

from acqharvest.doctor import count_folders, inotify_budget
from acqharvest.model import WatchSettings
from acqharvest.watch import mount_fstype, network_filesystem
from tests.endpoint import LoopbackEndpoint, tls_server, write_pem
from tests.integration.test_optional_readers import HIDER
from tests.test_cli import ACQHARVEST, run

ROOT = os.geteuid() == 0
#: root reads and writes through any mode bits; without these two capabilities it is
#: held to them like any other user, so a folder's mode means what it says
AS_ORDINARY_USER = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if ROOT else []
KEYS = ["check", "status", "detail", "hint"]


def doctor(
    config: Path, *extra: str, prefix: list[str] | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run("doctor", "--config", str(config), *extra, prefix=prefix, env=env)


def findings(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = json.loads(result.stdout)
    assert all(list(finding) == KEYS for finding in listed), listed
    return listed


def verdicts(result: subprocess.CompletedProcess[str]) -> dict[str, list[str]]:
    """check name -> the statuses of its findings, in order."""
    by_check: dict[str, list[str]] = {}
    for finding in findings(result):
        by_check.setdefault(finding["check"], []).append(finding["status"])
    return by_check


def write_config(
    tmp_path: Path, endpoint: str, extra: str = "", instrument: str = "urn:acqharvest:scope-1"
) -> Path:
    watch = tmp_path / "watch"
    (watch / "day1" / "run1").mkdir(parents=True, exist_ok=True)
    config = tmp_path / "acqharvest.yaml"
    config.write_text(
        f"instrument: {{id: '{instrument}'}}\nwatch: [{{path: {watch}}}]\n"
        f"endpoint: {endpoint}\nstate_dir: {tmp_path / 'state'}\n{extra}"
    )
    return config


def http_config(tmp_path: Path, url: str, token: str, extra: str = "") -> Path:
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    return write_config(tmp_path, f"{{type: http, url: '{url}', token_file: {token_file}}}", extra)


def test_a_healthy_installation_passes_every_check_and_stores_nothing(
    tmp_path: Path, endpoint: LoopbackEndpoint
) -> None:
    endpoint.token = "doctor-token"
    config = http_config(tmp_path, endpoint.url, "doctor-token")

    result = doctor(config, "--json")

    assert result.returncode == 0, result.stdout + result.stderr
    assert verdicts(result) == {
        "config": ["ok"],
        "watch_folder": ["ok"],
        "watch_mode": ["ok"],
        "inotify_budget": ["ok"],
        "state_dir": ["ok"],
        "state_dir_space": ["ok"],
        "adapters": ["ok"],
        "endpoint": ["ok"],
        "clock": ["ok"],
    }
    by_check = {finding["check"]: finding for finding in findings(result)}
    assert "token accepted" in by_check["endpoint"]["detail"]
    assert by_check["inotify_budget"]["detail"].startswith("3 folders to watch natively")
    assert by_check["watch_mode"]["detail"].endswith("watched natively (mode: auto)")
    (probe,) = endpoint.probes
    assert probe.headers["authorization"] == "Bearer doctor-token"
    assert probe.headers["acqharvest-probe"] == "check"
    assert endpoint.received == [], "the probe is no package"
    assert not (tmp_path / "state").exists(), "doctor creates nothing"
    assert "doctor-token" not in result.stdout + result.stderr


def test_an_instrument_id_that_is_no_persistent_identifier_is_a_warning(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, f"{{type: directory, path: {tmp_path / 'out'}}}", instrument="CONFOCAL-2"
    )

    result = doctor(config, "--json")

    assert result.returncode == 0, result.stdout + result.stderr  # a warning fails nothing
    (finding,) = [f for f in findings(result) if f["check"] == "instrument_id"]
    assert finding["status"] == "warn"
    assert "'CONFOCAL-2' is a local name, not a persistent identifier" in finding["detail"]
    assert "PIDINST" in finding["hint"]


def test_the_text_report_has_a_verdict_and_a_hint_per_line(
    tmp_path: Path, endpoint: LoopbackEndpoint
) -> None:
    endpoint.token = "the-right-one"
    config = http_config(tmp_path, endpoint.url, "an-expired-one")

    result = doctor(config)

    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    (failed,) = [line for line in lines if line.startswith("fail")]
    assert failed.startswith(
        f"fail  endpoint         endpoint {endpoint.url}: HTTP 401: the endpoint does not "
        f"accept the token from token file {tmp_path / 'token'}"
    )
    assert lines[lines.index(failed) + 1] == (
        f"{'':23}hint: fix what the detail names; the probe stores nothing, so run again"
    )
    assert [line[:4] for line in lines[:-1] if not line.startswith(" ")] == [
        "ok  ",
        "ok  ",
        "ok  ",
        "ok  ",
        "ok  ",
        "ok  ",
        "ok  ",
        "fail",
        "ok  ",
    ]
    assert lines[-1].endswith("warning(s), 1 failure(s)")
    assert "an-expired-one" not in result.stdout + result.stderr


def test_an_unreachable_endpoint_fails_and_its_clock_is_not_guessed(
    tmp_path: Path, endpoint: LoopbackEndpoint
) -> None:
    config = http_config(tmp_path, endpoint.url, "doctor-token")
    endpoint.stop()

    result = doctor(config, "--json")

    assert result.returncode == 1
    by_check = verdicts(result)
    assert by_check["endpoint"] == ["fail"]
    assert "clock" not in by_check
    (failure,) = [f for f in findings(result) if f["check"] == "endpoint"]
    assert "cannot connect" in failure["detail"]
    assert failure["hint"]


def test_tls_is_verified_against_the_configured_ca_only(tmp_path: Path) -> None:
    ca = trustme.CA()
    with tls_server(ca, "localhost") as server:
        unknown = http_config(tmp_path, server.url, "doctor-token")
        refused = doctor(unknown, "--json")
        bundle = write_pem(ca, tmp_path / "ca.pem")
        trusted = http_config(
            tmp_path,
            server.url,
            "doctor-token",
        )
        trusted.write_text(
            trusted.read_text().replace("token_file:", f"ca_bundle: {bundle}, token_file:")
        )
        accepted = doctor(trusted, "--json")

    assert refused.returncode == 1
    (endpoint,) = [f for f in findings(refused) if f["check"] == "endpoint"]
    assert "TLS certificate verification failed" in endpoint["detail"]
    assert accepted.returncode == 0, accepted.stdout
    (endpoint,) = [f for f in findings(accepted) if f["check"] == "endpoint"]
    assert endpoint["status"] == "ok"
    assert "TLS verified" in endpoint["detail"]


@pytest.mark.parametrize("package_format", ["package", "ro-crate"])
def test_a_clock_far_from_the_endpoints_is_a_warning_not_a_failure(
    tmp_path: Path, endpoint: LoopbackEndpoint, package_format: str
) -> None:
    endpoint.clock_offset = -3600.0  # the endpoint's Date says an hour ago
    config = http_config(tmp_path, endpoint.url, "doctor-token")
    config.write_text(
        config.read_text().replace("token_file:", f"format: {package_format}, token_file:")
    )

    result = doctor(config, "--json")

    assert result.returncode == 0, "warnings alone exit 0"
    (clock,) = [f for f in findings(result) if f["check"] == "clock"]
    assert clock["status"] == "warn"
    # the Date header has whole seconds
    assert re.match(r"clock: this PC is 360[01] s ahead of the endpoint: ", clock["detail"])
    assert "NTP" in clock["hint"]


def test_folders_missing_unreadable_and_read_only(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"{{type: directory, path: {tmp_path / 'out'}}}")
    missing, unreadable, read_only = (tmp_path / n for n in ("missing", "locked", "readonly"))
    unreadable.mkdir()
    unreadable.chmod(0o000)
    read_only.mkdir()
    read_only.chmod(0o555)
    config.write_text(
        config.read_text().replace(
            "watch: [",
            f"watch: [{{path: {missing}}}, {{path: {unreadable}}}, {{path: {read_only}}}, ",
        )
    )
    try:
        result = doctor(config, "--json", prefix=AS_ORDINARY_USER)
    finally:
        unreadable.chmod(0o755)

    assert result.returncode == 1, result.stdout + result.stderr
    folders = [f for f in findings(result) if f["check"] == "watch_folder"]
    assert [f["status"] for f in folders] == ["fail", "fail", "ok", "ok"]
    assert folders[0]["detail"] == f"watch folder {missing}: No such file or directory"
    assert folders[0]["hint"] == "create the folder or correct its path"
    assert folders[1]["detail"] == f"watch folder {unreadable}: Permission denied"
    assert "read access" in folders[1]["hint"]
    # the daemon never writes in a watched folder: read-only is all it needs
    assert folders[2]["detail"] == f"watch folder {read_only} is readable"


def test_a_state_dir_without_write_permission_fails(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"{{type: directory, path: {tmp_path / 'out'}}}")
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o555)
    try:
        result = doctor(config, "--json", prefix=AS_ORDINARY_USER)
    finally:
        state.chmod(0o755)

    assert result.returncode == 1
    (finding,) = [f for f in findings(result) if f["check"] == "state_dir"]
    assert finding == {
        "check": "state_dir",
        "status": "fail",
        "detail": f"state dir {state}: {state} is not writable by this user",
        "hint": "give the service account write access, or set state_dir elsewhere",
    }


@pytest.mark.parametrize(
    ("size", "verdict", "words"),
    [("8m", "fail", "packages cannot be spooled"), ("64m", "warn", "an endpoint outage")],
)
def test_free_space_in_the_state_dir_on_a_small_disk(
    tmp_path: Path, size: str, verdict: str, words: str
) -> None:
    config = write_config(tmp_path, f"{{type: directory, path: {tmp_path / 'out'}}}")
    state = tmp_path / "state"
    state.mkdir()
    # a real file system of that size, in a mount namespace of its own
    unshare = ["unshare", "-m", "--propagation", "private"] if ROOT else ["unshare", "-Urm"]
    script = f'mount -t tmpfs -o size={size} tmpfs "$1" && exec "$2" doctor --config "$3" --json'
    result = subprocess.run(
        [*unshare, "sh", "-c", script, "sh", str(state), ACQHARVEST, str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if "mount" in result.stderr and not result.stdout:
        pytest.fail(f"this test mounts a tmpfs in a private mount namespace: {result.stderr}")

    (space,) = [f for f in findings(result) if f["check"] == "state_dir_space"]
    assert space["status"] == verdict, space
    assert words in space["detail"]
    assert result.returncode == (1 if verdict == "fail" else 0)


def test_a_missing_reader_is_a_warning_naming_the_extra(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"{{type: directory, path: {tmp_path / 'out'}}}")
    site = tmp_path / "site-without-readers"
    site.mkdir()
    (site / "sitecustomize.py").write_text(HIDER, encoding="utf-8")

    result = doctor(config, "--json", env={"PYTHONPATH": str(site), "ACQHARVEST_TEST_HIDE": "nd2"})

    assert result.returncode == 0, result.stdout + result.stderr
    (reader,) = [f for f in findings(result) if f["check"] == "adapter_reader"]
    assert reader["status"] == "warn"
    assert reader["detail"].startswith("adapter nd2 is unavailable")
    assert reader["hint"] == "pip install 'acqharvest[nd2]'"


def test_a_bad_config_names_the_key_and_line_and_exits_2(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"{{type: directory, path: {tmp_path / 'out'}}}")
    config.write_text(config.read_text() + "workers: 1000\nlog: {levle: debug}\n")

    result = doctor(config, "--json")
    text = doctor(config)

    assert result.returncode == 2
    assert [(f["check"], f["status"]) for f in findings(result)] == [("config", "fail")] * 2
    details = [f["detail"] for f in findings(result)]
    assert details[0].startswith(f"{config}:5: workers:")
    assert details[1].startswith(f"{config}:6: log.levle:")
    assert text.returncode == 2
    assert text.stdout.splitlines()[-1] == "0 ok, 0 warning(s), 2 failure(s)"


def test_the_inotify_budget_against_the_folder_tree(tmp_path: Path) -> None:
    for index in range(9):
        (tmp_path / "tree" / f"run{index}").mkdir(parents=True)
    (tmp_path / "tree" / "file.tif").write_bytes(b"II*\0")
    (tmp_path / "tree" / "link").symlink_to(tmp_path, target_is_directory=True)
    folder = WatchSettings(path=tmp_path / "tree")
    polled = WatchSettings(path=tmp_path / "tree", mode="polling")

    roomy = inotify_budget([folder, polled], limit=100)
    tight = inotify_budget([folder], limit=11)
    over = inotify_budget([folder], limit=5)

    assert (roomy.status, roomy.detail.split(" folders")[0]) == ("ok", "10")
    assert tight.status == "warn"
    assert tight.detail.startswith("10 folders to watch natively, 91% of the inotify watch")
    assert "fs.inotify.max_user_watches" in tight.hint
    assert over.status == "warn"
    assert over.detail.startswith("at least 6 folders")
    assert "reconciliation scans only" in over.detail
    # a walk that runs out of time says its count is a floor
    assert count_folders(tmp_path / "tree", True, 100, time.monotonic() - 1) == (0, False)
    assert count_folders(tmp_path / "tree", False, 100, time.monotonic() + 60) == (1, True)


def test_the_mount_of_a_folder_is_read_from_mountinfo(tmp_path: Path) -> None:
    # the file system type the kernel reports for this folder, as findmnt reads it
    expected = subprocess.run(
        ["findmnt", "-n", "-o", "FSTYPE", "-T", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    mountinfo = Path("/proc/self/mountinfo").read_text()
    assert mount_fstype(os.path.realpath(tmp_path), mountinfo) == expected
    assert network_filesystem(tmp_path) is None, f"{expected} is a local file system"


def test_network_file_systems_are_told_from_mountinfo_lines() -> None:
    # lines in the kernel's format (proc(5)); such mounts cannot be made on this machine
    mountinfo = "\n".join(
        [
            "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw",
            r"40 22 0:50 / /mnt/scope\040share rw,relatime shared:30 - cifs //nas/scope rw",
            "41 40 0:51 / /mnt/scope\\040share/local rw shared:31 - tmpfs tmpfs rw",
            "42 22 0:52 / /data/nfs rw,relatime - nfs4 nas:/export rw",
        ]
    )
    assert mount_fstype("/mnt/scope share/2026/run1", mountinfo) == "cifs"
    assert mount_fstype("/mnt/scope share/local/x", mountinfo) == "tmpfs"
    assert mount_fstype("/mnt/scope sharex", mountinfo) == "ext4"
    assert mount_fstype("/data/nfs", mountinfo) == "nfs4"


def test_network_file_systems_are_told_from_the_mount_list_where_there_is_no_mountinfo() -> None:
    """macOS: psutil's list of mounts, in macOS's names (a share mounted from Finder)."""
    from acqharvest.watch_limits import _NETWORK_FILESYSTEMS, _partitions, containing_mount

    mounts = [
        ("/", "apfs"),
        ("/System/Volumes/Data", "apfs"),
        ("/Volumes/scope share", "smbfs"),
        ("/Volumes/archive", "afpfs"),
    ]
    assert containing_mount("/Volumes/scope share/2026/run1", mounts) == "smbfs"
    assert containing_mount("/Volumes/archive", mounts) == "afpfs"
    assert containing_mount("/Users/scope/data", mounts) == "apfs"
    assert {"smbfs", "afpfs", "webdav", "nfs"} <= _NETWORK_FILESYSTEMS
    # here, on Linux, psutil lists the same mounts /proc/self/mountinfo does
    assert ("/", mount_fstype("/", Path("/proc/self/mountinfo").read_text())) in _partitions()


def test_check_stays_as_it_was_beside_doctor(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"{{type: directory, path: {tmp_path / 'out'}}}")
    checked = run("check", "--config", str(config))
    assert checked.returncode == 0
    assert checked.stdout.splitlines()[0] == f"ok    config {config} is valid"
    assert "inotify" not in checked.stdout, "check keeps its basic set"
