"""``acqharvest outbox list | show | retry | purge``: against a real outbox on disk, filled
through the outbox API, and beside a running daemon that the endpoint refuses."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
from pathlib import Path

import pytest

from acqharvest.outbox import Outbox
from tests.endpoint import LoopbackEndpoint
from tests.helpers import wait_until
from tests.integration.conftest import Harness
from tests.test_cli import run, write_config
from tests.test_outbox import package

LONG_ID = "a" * 20 + "-rejected"


def outbox_command(config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return run("outbox", *args, "--config", str(config), input=stdin)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path, f"{{type: directory, path: {tmp_path / 'out'}}}")


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    """A real outbox in the config's state dir: one package pending after two failed
    attempts, one waiting, two rejected by the endpoint."""
    box = Outbox.open(tmp_path / "state" / "outbox")
    box.spool([package("p-failing"), package("p-waiting"), package(LONG_ID), package("r-2")])
    box.note_failure("p-failing", "HTTP 503: maintenance")
    box.note_failure("p-failing", "HTTP 503: maintenance")
    box.note_failure(LONG_ID, "HTTP 503: maintenance")
    box.reject(LONG_ID, 422, "HTTP 422: instrument not registered")
    box.reject("r-2", 400, "HTTP 400: schema_version 9")
    return box


def test_list_shows_state_attempts_age_and_reason(config: Path, outbox: Outbox) -> None:
    result = outbox_command(config, "list")

    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["ID", "STATE", "ATTEMPTS", "AGE", "REASON"]
    cells = [row.split(maxsplit=4) for row in rows]
    assert [(c[0], c[1], c[2]) for c in cells] == [
        ("p-failing", "pending", "2"),
        ("p-waiting", "pending", "0"),
        (LONG_ID[:16], "rejected", "2"),  # one failure, then the rejection
        ("r-2", "rejected", "1"),
    ]
    assert all(c[3].endswith(("s", "m")) for c in cells), cells
    assert cells[0][4] == "HTTP 503: maintenance"
    assert cells[2][4] == "HTTP 422: HTTP 422: instrument not registered"


def test_list_json_for_scripts(config: Path, outbox: Outbox) -> None:
    result = outbox_command(config, "list", "--json")

    listed = json.loads(result.stdout)
    assert [(e["package_id"], e["state"], e["attempts"]) for e in listed] == [
        ("p-failing", "pending", 2),
        ("p-waiting", "pending", 0),
        (LONG_ID, "rejected", 2),
        ("r-2", "rejected", 1),
    ]
    assert set(listed[0]) == {"package_id", "state", "attempts", "last_error", "at", "queued_ns"}
    assert all(isinstance(e["queued_ns"], int) for e in listed)


def test_show_prints_the_record_and_the_body_by_a_short_id(config: Path, outbox: Outbox) -> None:
    result = outbox_command(config, "show", LONG_ID[:16])

    assert result.returncode == 0, result.stderr
    decoder = json.JSONDecoder()
    record, end = decoder.raw_decode(result.stdout)
    body, _ = decoder.raw_decode(result.stdout[end:].lstrip())
    assert record["package_id"] == LONG_ID
    assert record["state"] == "rejected"
    assert record["attempts"] == 2
    assert record["last_error"] == "HTTP 422: HTTP 422: instrument not registered"
    assert body == {"package_id": LONG_ID, "schema_version": 1}
    assert "\n  " in result.stdout, "pretty printed"

    unknown = outbox_command(config, "show", "nothing-like-it")
    assert unknown.returncode == 1
    assert "no such package" in unknown.stderr


def test_retry_moves_rejected_back_and_leaves_pending_alone(config: Path, outbox: Outbox) -> None:
    result = outbox_command(config, "retry", "r-2", "p-waiting")

    assert result.returncode == 1, "one of the two was not rejected"
    assert result.stdout.splitlines() == [
        "r-2: queued again",
        "p-waiting: pending, not rejected; left alone",
    ]
    assert outbox.state_of("r-2") == "pending"
    assert outbox.pending()[-1] == "r-2", "back at the end of the queue"
    # the old top-level command is the same one
    alias = run("retry", "--all", "--config", str(config))
    assert alias.returncode == 0
    assert alias.stdout.splitlines() == [f"{LONG_ID}: queued again"]
    assert outbox.rejected() == []


def test_purge_asks_deletes_only_rejected_and_never_pending(config: Path, outbox: Outbox) -> None:
    rejected = config.parent / "state" / "outbox" / "rejected"

    unconfirmed = outbox_command(config, "purge", "r-2")
    assert unconfirmed.returncode == 1
    assert "pass --yes" in unconfirmed.stderr
    assert outbox.state_of("r-2") == "rejected"

    pending = outbox_command(config, "purge", "p-failing", "--yes")
    assert pending.returncode == 1
    assert "not delivered yet and deleting it would lose its metadata" in pending.stdout
    assert outbox.state_of("p-failing") == "pending"

    purged = outbox_command(config, "purge", "r-2", "--yes")
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout.splitlines() == ["r-2: deleted"]
    assert outbox.state_of("r-2") is None
    assert sorted(p.name for p in rejected.iterdir()) == [
        f"{LONG_ID}.json",
        f"{LONG_ID}.reason.json",
    ]

    every = outbox_command(config, "purge", "--rejected", "--yes")
    assert every.returncode == 0
    assert list(rejected.iterdir()) == []
    assert outbox.pending() == ["p-failing", "p-waiting"], "pending packages untouched"
    assert outbox_command(config, "purge", "--rejected", "--yes").stderr.startswith(
        "nothing to purge: no rejected packages"
    )


def test_a_held_package_a_person_decided_against_is_purged_by_its_id(
    config: Path, outbox: Outbox
) -> None:
    from acqharvest.model import Package

    outbox.spool([Package("h-burned", "k-h", {"package_id": "h-burned"}, held=True)])

    purged = outbox_command(config, "purge", "h-burned", "--yes")

    assert purged.returncode == 0, purged.stderr
    assert purged.stdout.splitlines() == ["h-burned: deleted"]
    assert outbox.state_of("h-burned") is None
    assert list((config.parent / "state" / "outbox" / "held").iterdir()) == []
    # --rejected stays what it says: held packages are only ever purged one by one
    assert outbox.pending() == ["p-failing", "p-waiting"]


def test_purge_asks_at_a_terminal(config: Path, outbox: Outbox) -> None:
    def answered(answer: str) -> subprocess.CompletedProcess[str]:
        controller, terminal = pty.openpty()
        os.write(controller, answer.encode() + b"\n")  # typed before the question: it waits
        try:
            return run("outbox", "purge", "r-2", "--config", str(config), stdin=terminal)
        finally:
            os.close(terminal)
            os.close(controller)

    declined = answered("n")
    assert declined.returncode == 1
    assert declined.stdout.startswith("delete 1 rejected or held package(s) for good? [y/N]")
    assert outbox.state_of("r-2") == "rejected"
    confirmed = answered("y")
    assert confirmed.returncode == 0, confirmed.stderr
    assert confirmed.stdout.endswith("r-2: deleted\n")
    assert outbox.state_of("r-2") is None


def test_a_purge_cut_short_leaves_no_half_package(outbox: Outbox) -> None:
    # the package goes first, its reason second: a crash between leaves an orphan reason,
    # which the daemon's next open removes (the package itself is never half there)
    root = outbox.root
    (root / "rejected" / "r-2.json").unlink()
    assert outbox.state_of("r-2") is None
    Outbox.open(root)
    assert not (root / "rejected" / "r-2.reason.json").exists()
    assert outbox.purge("r-2") is False


@pytest.mark.integration
def test_outbox_commands_beside_a_running_daemon(
    tmp_path: Path, corpus: Path, endpoint: LoopbackEndpoint
) -> None:
    harness = Harness(tmp_path, endpoint, workers=0)
    endpoint.behave("reject", text="instrument not registered")
    harness.start()
    try:
        shutil.copyfile(corpus / "dicom" / "dx" / "dx_image.dcm", harness.watch / "a.dcm")
        assert harness.wait_log("package_rejected", timeout=60), harness.output()
        listed = json.loads(outbox_command(harness.config, "list", "--json").stdout)
        ((rejected),) = listed
        assert rejected["state"] == "rejected"
        assert "instrument not registered" in rejected["last_error"]

        endpoint.behave("ok")
        # by the short id the table shows
        retried = outbox_command(harness.config, "retry", rejected["package_id"][:16])
        assert retried.returncode == 0, retried.stderr
        # the running daemon picks the package up again and delivers it
        assert wait_until(lambda: len(endpoint.unique) == 1, timeout=60), harness.output()
        assert json.loads(outbox_command(harness.config, "list", "--json").stdout) == []

        endpoint.behave("reject", text="still not registered")
        shutil.copyfile(
            corpus / "dicom/mr-siemens/MR-SIEMENS-DICOM-WithOverlays.dcm", harness.watch / "b.dcm"
        )
        assert harness.wait_log("package_rejected", timeout=60, count=2), harness.output()
        purged = outbox_command(harness.config, "purge", "--rejected", "--yes")
        assert purged.returncode == 0, purged.stderr
        assert json.loads(outbox_command(harness.config, "list", "--json").stdout) == []
        assert harness.process is not None
        assert harness.process.poll() is None, "the daemon ran on through it all"
    finally:
        assert harness.stop() == 0
