"""Log set-up: JSON lines in the file, and secrets never reach it."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from acqharvest import logs
from acqharvest.pathtext import unescape
from acqharvest.settings import LogSettings
from tests.endpoint import ECHO_ENCODINGS

pytestmark = pytest.mark.usefixtures("restored_logging")


def test_registered_secrets_and_secret_keys_are_masked_in_the_file(tmp_path: Path) -> None:
    log_file = tmp_path / "acqharvest.log"
    console = io.StringIO()
    logs.configure("info", "json", log_file, stream=console)
    logs.register_secret("hunter2-token")
    log = logs.get_logger("acqharvest.test")
    log.info("delivery_failed", detail="server echoed Bearer hunter2-token", token="hunter2-token")
    log.debug("below_the_level", path="/x")

    (line,) = log_file.read_text().splitlines()
    event = json.loads(line)
    assert event["event"] == "delivery_failed"
    assert event["detail"] == f"server echoed Bearer {logs.MASK}"
    assert event["token"] == logs.MASK
    assert "hunter2" not in console.getvalue()
    assert "timestamp" in event
    assert event["level"] == "info"


@pytest.mark.parametrize("encoding", sorted(ECHO_ENCODINGS))
def test_registered_secrets_are_masked_in_their_encoded_forms(
    tmp_path: Path, encoding: str
) -> None:
    secret = "pw/9Kx+q2&Lm=rT~encoded"
    log_file = tmp_path / "acqharvest.log"
    logs.configure("info", "json", log_file, stream=io.StringIO())
    logs.register_secret(secret)
    echoed = ECHO_ENCODINGS[encoding](f"Bearer {secret}")
    logs.get_logger("acqharvest.test").warning("echo", detail=f"server said <{echoed}>")
    (line,) = log_file.read_text().splitlines()
    detail = json.loads(line)["detail"]
    assert logs.MASK in detail
    # what is left of the echo is the encoded "Bearer " and at most 3 base64 characters
    left = detail.removeprefix("server said <").removesuffix(">").replace(logs.MASK, "")
    assert len(left) <= len(ECHO_ENCODINGS[encoding]("Bearer ")) + 3, detail


def test_masking_leaves_ordinary_text_alone() -> None:
    masker = logs.Masker(["s3cr3t-token-value"])
    text = "HTTP 500: internal error at /api/v2?x=%2F&y=&amp; c2VjcmV0 \\u0041"
    assert masker(text) == text
    assert logs.Masker()("s3cr3t-token-value") == "s3cr3t-token-value"


def test_third_party_library_warnings_become_structured_lines(tmp_path: Path) -> None:
    import tifffile

    console = io.StringIO()
    log_file = tmp_path / "acqharvest.log"
    logs.configure("info", "json", log_file, stream=console)
    cut = tmp_path / "cut.tif"
    whole = io.BytesIO()
    tifffile.imwrite(whole, [[1, 2], [3, 4]], dtype="uint8")
    data = whole.getvalue()
    first_ifd = int.from_bytes(data[4:8], "little")
    cut.write_bytes(data[:4] + (len(data) + 100).to_bytes(4, "little") + data[8:first_ifd])
    with tifffile.TiffFile(cut) as tif:  # tifffile logs "invalid offset to first page"
        assert len(tif.pages) == 0
    logging.getLogger("pydicom").info("below warning: not shown")

    lines = console.getvalue().splitlines()
    events = [json.loads(line) for line in lines]  # every line is JSON: no bare text
    (event,) = events
    assert event["logger"] == "tifffile"
    assert event["level"] == "warning"
    assert "invalid offset" in event["event"]
    assert "timestamp" in event
    assert [json.loads(line)["logger"] for line in log_file.read_text().splitlines()] == [
        "tifffile"
    ]


def test_a_second_configure_replaces_its_handlers_on_the_root_only(tmp_path: Path) -> None:
    foreign = logging.NullHandler()
    logging.getLogger().addHandler(foreign)
    first, second = io.StringIO(), io.StringIO()
    logs.configure("info", "json", stream=first)
    logs.configure("error", "json", stream=second)
    logging.getLogger("pydicom").warning("below the configured error level")
    logging.getLogger("pydicom").error("unreadable element")

    assert foreign in logging.getLogger().handlers
    assert first.getvalue() == ""
    (line,) = second.getvalue().splitlines()
    assert json.loads(line)["event"] == "unreadable element"


def _events(path: Path) -> list[str]:
    return [json.loads(line)["event"] for line in path.read_text().splitlines()]


def test_the_log_file_comes_back_when_its_folder_is_deleted_or_it_is_moved(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    log_file = state / "acqharvest.log"
    logs.configure("info", "json", log_file, stream=io.StringIO())
    log = logs.get_logger("acqharvest.test")
    log.info("before")
    shutil.rmtree(state)
    log.info("after_the_folder_went")
    assert _events(log_file) == ["after_the_folder_went"]
    moved = tmp_path / "moved.log"
    log_file.rename(moved)
    log.info("after_the_move")
    assert _events(log_file) == ["after_the_move"]
    assert _events(moved) == ["after_the_folder_went"]


def test_the_log_file_rotates_at_max_bytes_and_keeps_backups(tmp_path: Path) -> None:
    log_file = tmp_path / "acqharvest.log"
    logs.configure("info", "json", log_file, stream=io.StringIO(), max_bytes=400, backups=3)
    log = logs.get_logger("acqharvest.test")
    for index in range(40):
        log.info("line", index=index, padding="x" * 50)
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == [f"acqharvest.log{suffix}" for suffix in ("", ".1", ".2", ".3")]
    assert all(path.stat().st_size <= 400 for path in tmp_path.iterdir())
    last = json.loads(log_file.read_text().splitlines()[-1])
    assert last["index"] == 39
    # the newest backup holds the lines just before the current file's
    newest = json.loads((tmp_path / "acqharvest.log.1").read_text().splitlines()[-1])
    current_first = json.loads(log_file.read_text().splitlines()[0])
    assert newest["index"] + 1 == current_first["index"]


def test_the_defaults_are_the_settings_defaults() -> None:
    assert LogSettings().max_bytes == logs.LOG_FILE_BYTES
    assert LogSettings().backups == logs.LOG_FILE_BACKUPS


def test_a_rotation_that_fails_loses_no_record_and_is_retried_later(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_file = tmp_path / "acqharvest.log"
    logs.configure("info", "json", log_file, stream=io.StringIO(), max_bytes=400, backups=2)
    (handler,) = [
        h
        for h in logging.getLogger("acqharvest").handlers
        if isinstance(h, logs.ReopeningFileHandler)
    ]
    renames: list[str] = []

    def held_open_elsewhere(source: str, _dest: str) -> None:
        # Windows refuses to rename a file another process holds open: that cannot happen
        # on Linux, so the rename is refused here the way Windows refuses it
        renames.append(source)
        raise PermissionError(13, "The process cannot access the file", source)

    handler.rotator = held_open_elsewhere
    log = logs.get_logger("acqharvest.test")
    for index in range(30):
        log.info("line", index=index, padding="x" * 50)
    indexes = [json.loads(line)["index"] for line in log_file.read_text().splitlines()]
    assert indexes == list(range(30)), "every record is in the file, none lost"
    assert len(renames) == 1, "tried once, not at every record"
    assert "cannot rotate the log file" in capsys.readouterr().err

    handler.rotator = None  # the other program let go; the retry is due
    handler._rotation_blocked_until = 0.0
    log.info("after", index=30)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acqharvest.log", "acqharvest.log.1"]
    assert [json.loads(line)["index"] for line in log_file.read_text().splitlines()] == [30]


def test_pydicom_warnings_quoting_file_values_never_reach_the_log(tmp_path: Path) -> None:
    import warnings

    from pydicom.dataset import Dataset

    console = io.StringIO()
    logs.configure("info", "json", tmp_path / "acqharvest.log", stream=console)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # pydicom logs the invalid UID, with its value, and warns the same
        Dataset().StudyInstanceUID = "1.2.840.0999.12345"
    logging.getLogger("pydicom").error("a pydicom error still shows")

    assert "0999" not in console.getvalue()
    assert "0999" not in (tmp_path / "acqharvest.log").read_text()
    assert [json.loads(line)["event"] for line in console.getvalue().splitlines()] == [
        "a pydicom error still shows"
    ]


def test_names_that_are_not_utf8_are_logged_percent_encoded_and_listed(tmp_path: Path) -> None:
    log_file = tmp_path / "acqharvest.log"
    console = io.StringIO()
    logs.configure("info", "console", log_file, stream=console)
    path = os.fsdecode(b"/data/caf\xe9.dcm")
    log = logs.get_logger("acqharvest.test")
    log.error(
        "extraction_failed",
        path=path,
        reason=f"{path}: truncated",
        missing=(os.fsdecode(b"a\xb5.tif"), "b.tif"),
        files=2,
        note="100% fine",
        ratio=float("nan"),
    )
    logging.getLogger("tifffile").warning("cannot read %s", path)  # a library's record

    own, library = (json.loads(line) for line in log_file.read_bytes().decode().splitlines())
    assert own["path"] == "/data/caf%E9.dcm"
    assert os.fsencode(unescape(own["path"])) == b"/data/caf\xe9.dcm"
    assert own["reason"] == "/data/caf%E9.dcm: truncated"
    assert own["missing"] == ["a%B5.tif", "b.tif"]
    assert own["note"] == "100% fine"  # valid text: neither escaped nor listed
    assert sorted(own["escaped"]) == ["missing", "path", "reason"]
    assert library["event"] == "cannot read /data/caf%E9.dcm"
    assert library["escaped"] == ["event"]
    assert "caf%E9.dcm" in console.getvalue()


def _looped_tiff(path: Path) -> Path:
    """A one-page TIFF whose IFD names itself as the next one: tifffile logs an error
    (``invalid circular reference``) that does not say which file it read."""
    import tifffile

    whole = io.BytesIO()
    tifffile.imwrite(whole, [[1, 2], [3, 4]], dtype="uint8")
    data = bytearray(whole.getvalue())
    first = int.from_bytes(data[4:8], "little")
    entries = int.from_bytes(data[first : first + 2], "little")
    next_link = first + 2 + 12 * entries
    data[next_link : next_link + 4] = first.to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


def test_a_library_line_made_while_a_file_is_read_names_the_file(tmp_path: Path) -> None:
    import tifffile

    console = io.StringIO()
    logs.configure("info", "json", stream=console)
    looped = _looped_tiff(tmp_path / "looped.tif")
    with logs.reading(looped):
        with tifffile.TiffFile(looped) as tif:
            assert len(tif.pages) == 1
        logs.get_logger("acqharvest.test").warning("own_path_kept", path="/elsewhere")
    with tifffile.TiffFile(looped) as tif:  # outside the context: no path to give
        assert len(tif.pages) == 1

    inside, own, outside = (json.loads(line) for line in console.getvalue().splitlines())
    assert inside["logger"] == "tifffile"
    assert "circular reference" in inside["event"]
    assert inside["path"] == str(looped)
    assert own["path"] == "/elsewhere"
    assert "path" not in outside


def test_a_worker_extracting_a_file_names_it_on_tifffile_lines(tmp_path: Path) -> None:
    """Through the worker's extraction, as the daemon runs it, the line names the file."""
    from acqharvest import workers
    from acqharvest.model import Acquisition, Extraction
    from tests.helpers import probed

    console = io.StringIO()
    logs.configure("info", "json", stream=console)
    looped = _looped_tiff(tmp_path / "looped.tif")
    member = probed(looped, tmp_path)
    acquisition = Acquisition(member.group_key, member.adapter, tmp_path, (member,))
    assert isinstance(workers.extract_acquisition(acquisition), Extraction)

    events = [json.loads(line) for line in console.getvalue().splitlines()]
    assert [e["path"] for e in events if e.get("logger") == "tifffile"] == [str(looped)]


def test_auto_format_is_human_on_a_terminal_and_json_elsewhere(tmp_path: Path) -> None:
    import pty

    controller, terminal_fd = pty.openpty()
    log_file = tmp_path / "acqharvest.log"
    with open(terminal_fd, "w", encoding="utf-8", closefd=True) as terminal:
        logs.configure("info", "auto", log_file, stream=terminal)
        logs.get_logger("acqharvest.test").info("on_a_terminal", folder="/data")
        terminal.flush()
        shown = os.read(controller, 4096).decode()
    os.close(controller)
    assert "on_a_terminal" in shown
    assert not shown.lstrip().startswith("{"), "a person reads it: not JSON"
    # the file is JSON lines whatever the console is
    assert json.loads(log_file.read_text())["event"] == "on_a_terminal"

    piped = io.StringIO()  # a service's stderr: a pipe or the journal, not a terminal
    logs.configure("info", "auto", stream=piped)
    logs.get_logger("acqharvest.test").info("in_a_service")
    assert json.loads(piped.getvalue())["event"] == "in_a_service"
