"""The state dir's layout and health, without a daemon: the secret, the checks that
``status`` shows, the logging of write failures and the recreation of a deleted one."""

from __future__ import annotations

import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from acqharvest.config import parse_settings
from acqharvest.durable import InstanceHeld, InstanceLock, StorageError
from acqharvest.model import Settings
from acqharvest.statedir import (
    StorageHealth,
    installation_secret,
    instance_lock_path,
    recreate,
    state_dir_problems,
    state_paths,
)


def _settings(tmp_path: Path) -> Settings:
    watch = tmp_path / "instrument"
    watch.mkdir(exist_ok=True)
    return parse_settings(
        f"instrument: {{id: local-1}}\nwatch: [{{path: {watch}}}]\n"
        f"endpoint: {{type: directory, path: {tmp_path / 'out'}}}\n"
        f"state_dir: {tmp_path / 'state'}\n",
        source="test.yaml",
        base_dir=tmp_path,
    )


def test_installation_secret_is_created_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "secret.key"
    first = installation_secret(path)
    assert len(first) == 32
    assert installation_secret(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_an_incomplete_secret_left_by_a_crash_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    path.write_bytes(b"")
    replaced = installation_secret(path)
    assert len(replaced) == 32
    assert path.read_bytes() == replaced


def test_a_state_dir_never_created_or_writable_with_room_has_no_problem(tmp_path: Path) -> None:
    assert state_dir_problems(tmp_path / "never-ran-here") == []
    assert state_dir_problems(tmp_path) == []


def test_storage_problems_are_logged_once_each_and_once_when_over(
    tmp_path: Path, log_events: Callable[[], list[dict[str, Any]]]
) -> None:
    health = StorageHealth()
    health.ok()  # nothing was wrong: nothing to say
    full = StorageError("disk full", tmp_path / "outbox", "ENOSPC")
    health.failed(full, packages=3)
    health.failed(full)
    health.failed(StorageError("read-only", tmp_path / "outbox", "EROFS"))
    health.ok()
    health.ok()

    logged = [
        (e["event"], e["level"], e.get("errno"))
        for e in log_events()
        if e["event"].startswith("state_dir_")
    ]
    assert logged == [
        ("state_dir_unwritable", "error", "ENOSPC"),
        ("state_dir_unwritable", "debug", "ENOSPC"),
        ("state_dir_unwritable", "error", "EROFS"),
        ("state_dir_writable_again", "info", None),
    ]
    assert log_events()[0]["packages"] == 3
    assert log_events()[0]["path"] == str(tmp_path / "outbox")


def test_the_storage_problem_going_on_is_readable_for_the_status_server(tmp_path: Path) -> None:
    health = StorageHealth()
    seen = [health.problem]
    health.failed(StorageError("disk full", tmp_path / "outbox", "ENOSPC"))
    seen.append(health.problem)
    health.ok()
    seen.append(health.problem)
    assert seen == [None, f"cannot write {tmp_path / 'outbox'} (ENOSPC)", None]


def test_a_deleted_state_dir_is_recreated_locked_with_the_same_secret(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    _, _, secret_path = state_paths(settings)
    secret = installation_secret(secret_path)
    lock = InstanceLock(instance_lock_path(settings))
    lock.acquire()
    try:
        shutil.rmtree(settings.state_dir)
        recreate(settings, lock, secret)

        assert secret_path.read_bytes() == secret
        assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
        with pytest.raises(InstanceHeld):
            InstanceLock(instance_lock_path(settings)).acquire()
    finally:
        lock.release()


def test_a_state_dir_that_cannot_be_recreated_names_it(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    shutil.rmtree(settings.state_dir, ignore_errors=True)
    settings.state_dir.write_text("a file where the folder was")
    lock = InstanceLock(tmp_path / "elsewhere.lock")
    with pytest.raises(StorageError) as raised:
        recreate(settings, lock, b"k" * 32)
    assert raised.value.path == settings.state_dir
    assert raised.value.code == "EEXIST"
    assert str(settings.state_dir) in str(raised.value)
