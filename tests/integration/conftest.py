"""A real daemon process, real folders, real timing, and a loopback endpoint."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.endpoint import LoopbackEndpoint

REPO = Path(__file__).resolve().parents[2]
PACKAGE_SCHEMA = json.loads((REPO / "config" / "package.schema.json").read_text())
ACQHARVEST = str(Path(sys.executable).parent / "acqharvest")
TOKEN = "s3cr3t-token-for-tests-only"
#: small single-file corpus acquisitions (TIFF from several vendors): one package each
SMALL_TIFFS = (
    "tiff-vendor/imagej/xem_y32.tif",
    "tiff-vendor/zeiss-axiovision/optical_Zeiss_AxioVision_BW.tif",
    "tiff-vendor/gatan-dm-tiff/test_loading_image_saved_with_DM.tif",
    "tiff-vendor/olympus-sis/olympus_SIS.tif",
    "tiff-vendor/imagej/P1_T0.tif",
    "tiff-vendor/zeiss-sem/test_tiff_Zeiss_SEM_512pix.tif",
)


@dataclass(frozen=True)
class Entry:
    """One thing in a folder tree, as ``lstat`` sees it (links are not followed)."""

    mode: int
    size: int
    mtime_ns: int
    #: a chmod, chown, hard link or rename by the daemon moves the ctime even when
    #: nothing else shows it
    ctime_ns: int
    inode: int
    #: sha256 of a regular file, target of a link, device number of a device
    content: str

    def __str__(self) -> str:
        return f"{stat.filemode(self.mode)} {self.size} bytes, mtime {self.mtime_ns}"


def _content(path: str | Path, st: os.stat_result, dir_fd: int | None = None) -> str:
    if stat.S_ISREG(st.st_mode):
        try:
            # O_NOFOLLOW: the entry may have become a link since the lstat
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        except OSError as error:
            return f"unreadable ({error.strerror})"
        with os.fdopen(fd, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    if stat.S_ISLNK(st.st_mode):
        return os.readlink(path, dir_fd=dir_fd)
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return f"device {os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    return ""  # folders, FIFOs and sockets: their stat says it all (FIFOs are never opened)


def entry_of(path: str | Path, dir_fd: int | None = None) -> Entry:
    """``path`` as ``lstat`` sees it; relative to the folder open as ``dir_fd`` if given."""
    st = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    return Entry(
        st.st_mode,
        st.st_size,
        st.st_mtime_ns,
        st.st_ctime_ns,
        st.st_ino,
        _content(path, st, dir_fd),
    )


def tree_snapshot(root: Path) -> dict[str, Entry]:
    """Every folder, file, link, FIFO and device below ``root`` and ``root`` itself ("."):
    type and permission bits, size, mtime, ctime, inode and content hash (or link target).

    Each folder is entered through its parent's open descriptor, so a tree whose paths are
    longer than ``PATH_MAX`` is snapshotted whole (keys are still the relative paths)."""
    snapshot: dict[str, Entry] = {".": entry_of(root)}
    #: the folders on the way to the one being listed: descriptor, key, names left
    levels: list[tuple[int, str, list[str]]] = []

    def enter(key: str, name: str | Path, parent: int | None) -> None:
        flags = os.O_RDONLY | os.O_DIRECTORY | (0 if parent is None else os.O_NOFOLLOW)
        try:
            fd = os.open(name, flags, dir_fd=parent)
        except PermissionError:
            snapshot[key] = dataclasses.replace(snapshot[key], content="cannot list")
            return
        try:
            names = os.listdir(fd)
        except PermissionError:
            os.close(fd)
            snapshot[key] = dataclasses.replace(snapshot[key], content="cannot list")
            return
        levels.append((fd, key, names))

    enter(".", root, None)
    try:
        while levels:
            fd, key, names = levels[-1]
            if not names:
                os.close(levels.pop()[0])
                continue
            name = names.pop()
            child = name if key == "." else f"{key}/{name}"
            snapshot[child] = entry_of(name, fd)
            if stat.S_ISDIR(snapshot[child].mode):
                enter(child, name, fd)
    finally:
        for fd, _, _ in levels:
            os.close(fd)
    return snapshot


def tree_changes(before: dict[str, Entry], after: dict[str, Entry]) -> list[str]:
    """What differs between two snapshots, one line per path, for assertion messages."""
    changes = []
    for name in sorted(before.keys() | after.keys()):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        if old is None:
            changes.append(f"+ {name} appeared: {new}")
        elif new is None:
            changes.append(f"- {name} vanished (was {old})")
        else:
            moved = [
                f"{f.name} {getattr(old, f.name)!r} -> {getattr(new, f.name)!r}"
                for f in dataclasses.fields(Entry)
                if getattr(old, f.name) != getattr(new, f.name)
            ]
            changes.append(f"~ {name}: " + "; ".join(moved))
    return changes


class FolderGuard:
    """A folder as the test last left it; ``check`` fails on anything else changing it.

    The test declares its own writes by calling ``mark`` when they are done; whatever
    changed since the last mark was done by someone else: the daemon.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._expected: dict[str, Entry] | None = None

    def mark(self) -> None:
        self._expected = tree_snapshot(self.root)

    def check(self) -> None:
        if self._expected is None:
            return
        changes = tree_changes(self._expected, tree_snapshot(self.root))
        assert not changes, (
            f"{self.root} changed since the daemon started or the test last called "
            "mark() (a test that writes while the daemon runs must mark its writes):\n"
            + "\n".join(changes[:50])
        )


def _process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it (the worker pool, its forkserver)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo += [int(child) for child in children.read_text().split()]
    return found


_LOCKED_INODE = re.compile(r"\b([0-9a-f]+):([0-9a-f]+):(\d+)\b")
_FD_FLAGS = re.compile(r"^flags:\s*([0-7]+)$", re.MULTILINE)


@dataclass
class HandleSurvey:
    """What repeated looks at a daemon's open descriptors and the kernel's locks found."""

    samples: int = 0
    #: descriptors on things in the watched folder, open for reading only (not a fault:
    #: they show that the survey looked while the daemon was reading)
    read_handles: int = 0
    faults: list[str] = field(default_factory=list)
    #: (device, inode) of everything below the folder, and of locked things found
    #: elsewhere (the daemon's own registry): the folder is walked again only when a lock
    #: on an inode in neither set appears
    _inside: set[tuple[int, int]] = field(default_factory=set, repr=False)
    _outside: set[tuple[int, int]] = field(default_factory=set, repr=False)

    def look(self, root: Path, pid: int) -> None:
        prefix = f"{root}/"
        for process in _process_tree(pid):
            fd_dir = f"/proc/{process}/fd"
            with contextlib.suppress(OSError):
                for fd in os.listdir(fd_dir):
                    with contextlib.suppress(OSError):
                        target = os.readlink(f"{fd_dir}/{fd}")
                        if target != str(root) and not target.startswith(prefix):
                            continue
                        info = Path(f"/proc/{process}/fdinfo/{fd}").read_text()
                        self._judge(process, target, info)
        self._judge_locks(root)
        self.samples += 1

    def _judge(self, process: int, target: str, info: str) -> None:
        flags_found = _FD_FLAGS.search(info)
        flags = int(flags_found.group(1), 8) if flags_found else -1
        if flags == -1 or flags & os.O_ACCMODE != os.O_RDONLY:
            self._fault(f"pid {process} has {target} open for writing (flags {flags:o})")
        elif "lock:" in info:
            self._fault(f"pid {process} holds a lock on {target}: {info}")
        else:
            self.read_handles += 1

    def _fault(self, fault: str) -> None:
        if fault not in self.faults:  # a held handle is seen at every look: report it once
            self.faults.append(fault)

    def _judge_locks(self, root: Path) -> None:
        locked: dict[tuple[int, int], str] = {}
        for line in Path("/proc/locks").read_text().splitlines():
            if found := _LOCKED_INODE.search(line):
                major, minor, inode = found.groups()
                locked[os.makedev(int(major, 16), int(minor, 16)), int(inode)] = line
        unknown = locked.keys() - self._inside - self._outside
        if unknown:
            self._inside = _inodes_below(root)
            self._outside |= unknown - self._inside
        for key in locked.keys() & self._inside:
            self._fault(f"a lock on an inode in {root}: {locked[key]}")


def _inodes_below(root: Path) -> set[tuple[int, int]]:
    inodes = set()
    for folder, folders, files in os.walk(root):
        for name in (".", *folders, *files):
            with contextlib.suppress(OSError):  # gone since the listing: the writer's doing
                st = os.lstat(os.path.join(folder, name))
                inodes.add((st.st_dev, st.st_ino))
    return inodes


def write_slowly(source: bytes, target: Path, *, chunks: int = 4, pause: float = 0.3) -> None:
    """Append ``source`` to ``target`` in chunks, pausing less than the settle window."""
    step = max(1, len(source) // chunks)
    with target.open("wb") as handle:
        for offset in range(0, len(source), step):
            handle.write(source[offset : offset + step])
            handle.flush()
            time.sleep(pause)


def drop_files(harness: Harness, corpus: Path, count: int) -> None:
    """Copy the first ``count`` of ``SMALL_TIFFS`` into the watched folder."""
    for source in SMALL_TIFFS[:count]:
        shutil.copyfile(corpus / source, harness.watch / Path(source).name)


def _yaml_options(options: dict[str, Any], indent: str = "    ") -> str:
    """More keys for the watch entry (JSON values are YAML), indented to fit; another
    ``indent`` for another section."""
    return "".join(f"{indent}{key}: {json.dumps(value)}\n" for key, value in options.items())


def harvested(packages: Iterable[Any]) -> dict[str, list[tuple[int, str, str]]]:
    """(size, sha256, package_id) of every ``files`` entry of these packages, by path."""
    found: dict[str, list[tuple[int, str, str]]] = {}
    for body in packages:
        for entry in body["files"]:
            found.setdefault(entry["path"], []).append(
                (entry["size"], entry["sha256"], body["package_id"])
            )
    return found


def _endpoint_yaml(url: str, token_file: Path, options: dict[str, Any]) -> str:
    """The endpoint section: the test defaults, updated by ``options`` (None drops a key)."""
    settings: dict[str, Any] = {
        "type": "http",
        "url": url,
        "token_file": str(token_file),
        "timeout_seconds": 5,
        "max_backoff_seconds": 1,
    }
    settings.update(options)
    return "".join(
        f"  {key}: {json.dumps(value)}\n" for key, value in settings.items() if value is not None
    )


#: built once: ``jsonschema.validate`` checks the schema itself on every call.
_PACKAGE_VALIDATOR = jsonschema.validators.validator_for(PACKAGE_SCHEMA)(PACKAGE_SCHEMA)


def validate_package(body: Any) -> None:
    _PACKAGE_VALIDATOR.validate(body)


class Harness:
    """Config, watch folder, state dir and a daemon subprocess for one test.

    With ``guard_watch`` (the integration fixtures), every daemon run is checked: the
    watched folder is snapshotted as each daemon starts, and again whenever the test calls
    ``mark()`` after writing into it while the daemon runs; once the daemon has stopped
    (``stop``, ``kill``, the end of ``run_once``, the fixture's teardown) the folder must
    equal the last snapshot, to the mtime and content hash. What happens between a start
    and the test's ``mark()`` is taken as the test's doing: mark as soon as writing ends.
    """

    def __init__(
        self, tmp: Path, endpoint: LoopbackEndpoint, *, guard_watch: bool = False, workers: int = 0
    ) -> None:
        self.tmp = tmp
        #: ``workers`` of every config written unless a test asks for another number
        self.workers = workers
        self.endpoint = endpoint
        self.watch = tmp / "instrument"
        self.state = tmp / "state"
        self.watch.mkdir()
        token_file = tmp / "token"
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)
        self.config = tmp / "acqharvest.yaml"
        self.settle = 1.0
        self.write_config(token_file)
        self.process: subprocess.Popen[bytes] | None = None
        #: argv put before ``acqharvest run`` (a namespace, dropped capabilities)
        self.launcher: list[str] = []
        self._guard = FolderGuard(self.watch) if guard_watch else None

    def mark(self) -> None:
        """Declare the test's writes into the watched folder done: the folder as it is now
        is what it must still be once the daemon has stopped."""
        assert self._guard is not None, "this harness does not guard its watched folder"
        self._guard.mark()

    def _daemon_started(self) -> None:
        # a second daemon beside a running one (refused) must not hide the first one's doings
        if self._guard is not None and self.process is None:
            self._guard.mark()

    def _daemon_ended(self) -> None:
        if self._guard is not None:
            self._guard.check()

    def write_config(self, token_file: Path, **extra: Any) -> None:
        self.config.write_text(
            f"""
instrument:
  id: "https://hdl.handle.net/21.T11998/test-instrument"
  name: Test confocal
  manufacturer: Example Optics
  type: confocal microscope
{_yaml_options(extra.get("instrument_options", {}), "  ")}watch:
  - path: {self.watch}
    settle_seconds: {self.settle}
    group_quiet_seconds: {extra.get("group_quiet_seconds", 1.5)}
    path_template: "{{operator}}/{{project}}/**"
{_yaml_options(extra.get("watch_options", {}))}endpoint:
{_endpoint_yaml(self.endpoint.url, token_file, extra.get("endpoint", {}))}state_dir: {self.state}
workers: {extra.get("workers", self.workers)}
rescan_seconds: {extra.get("rescan_seconds", 2)}
log: {{level: debug, format: json}}
{_yaml_options(extra.get("top_options", {}), "")}{extra.get("more_yaml", "")}""",
            encoding="utf-8",
        )

    def start(self, env: dict[str, str] | None = None) -> None:
        """Start the daemon (with ``env`` added to the environment); wait until it runs."""
        assert self.process is None
        earlier = self.count_events("daemon_started")
        self._daemon_started()
        with self.console.open("ab") as console:
            self.process = subprocess.Popen(
                [*self.launcher, ACQHARVEST, "run", "--config", str(self.config)],
                stdout=console,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        started = self.wait_log("daemon_started", timeout=30, count=earlier + 1)
        assert started, f"daemon did not start:\n{self.output()}"

    def kill(self) -> None:
        """SIGKILL the daemon (if still running) and reap it."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait(timeout=30)
        self.process = None
        self._daemon_ended()

    def command(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``acqharvest <args> --config <this config>`` (with ``env`` added to the
        environment), output captured; a ``run`` is checked like a daemon started with
        ``start``."""
        daemon = args[:1] == ("run",)
        if daemon:
            self._daemon_started()
        result = subprocess.run(
            [ACQHARVEST, *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **(env or {})},
        )
        if daemon:
            self._daemon_ended()
        return result

    @property
    def pending_dir(self) -> Path:
        return self.state / "outbox" / "pending"

    def pending(self) -> list[Path]:
        return sorted(self.pending_dir.glob("*.json")) if self.pending_dir.is_dir() else []

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout)
        self.process = None
        self._daemon_ended()
        return code

    def run_once(self) -> subprocess.CompletedProcess[str]:
        return self.command("run", "--once")

    @contextlib.contextmanager
    def handles_surveyed(self, interval: float = 0.01) -> Iterator[HandleSurvey]:
        """Look at the running daemon's (and its workers') descriptors and at the kernel's
        locks every ``interval`` seconds until the block ends; fail if anything in the
        watched folder was open for writing or locked. Linux only (/proc)."""
        assert self.process is not None
        pid, survey, done = self.process.pid, HandleSurvey(), threading.Event()

        def survey_until_done() -> None:
            while not done.wait(interval):
                survey.look(self.watch, pid)

        looker = threading.Thread(target=survey_until_done, daemon=True)
        looker.start()
        try:
            yield survey
        finally:
            done.set()
            looker.join(timeout=30)
        assert survey.samples > 0, "the daemon was never looked at"
        assert not survey.faults, "\n".join(survey.faults[:20])

    @property
    def console(self) -> Path:
        return self.tmp / "console.txt"

    @property
    def log_file(self) -> Path:
        return self.state / "acqharvest.log"

    def events(self) -> list[dict[str, Any]]:
        if not self.log_file.exists():
            return []
        parsed = []
        for line in self.log_file.read_text().splitlines():
            # a daemon killed with SIGKILL may leave its last line torn
            with contextlib.suppress(ValueError):
                parsed.append(json.loads(line))
        return parsed

    def journal(self) -> list[dict[str, Any]]:
        """The JSON lines of the console: what a service's journal gets (workers' too)."""
        if not self.console.exists():
            return []
        parsed = []
        for line in self.console.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                parsed.append(json.loads(line))
        return [event for event in parsed if isinstance(event, dict)]

    def count_events(self, event: str) -> int:
        """How often ``event`` was logged (a text count: cheap on a long log)."""
        if not self.log_file.exists():
            return 0
        return self.log_file.read_text(errors="replace").count(f'"event": "{event}"')

    def wait_log(self, event: str, timeout: float = 10.0, count: int = 1) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count_events(event) >= count:
                return True
            if self.process is not None and self.process.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def status(self) -> str:
        """What ``acqharvest status`` prints for this config (stdout and stderr)."""
        result = subprocess.run(
            [ACQHARVEST, "status", "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return result.stdout + result.stderr

    def output(self) -> str:
        """The console and the JSON log, for assertion messages."""
        parts = [p.read_text(errors="replace") for p in (self.console, self.log_file) if p.exists()]
        return "\n".join(parts) or "(no output)"

    def packages(self) -> dict[str, Any]:
        """Package bodies the endpoint received, by Idempotency-Key."""
        return {key: request.json for key, request in self.endpoint.unique.items()}


@pytest.fixture
def harness(tmp_path: Path, endpoint: LoopbackEndpoint) -> Iterator[Harness]:
    """A daemon harness guarding its watched folder (see ``Harness``); at the end the daemon
    is stopped if the test left it running, and the token must not be in its output."""
    os.environ.pop("ACQHARVEST_CONFIG", None)
    # worker processes, as shipped (``workers: 2``): extraction is tested the way it runs
    h = Harness(tmp_path, endpoint, guard_watch=True, workers=2)
    yield h
    try:
        if h.process is not None:
            h.kill()
    finally:
        assert TOKEN not in h.output(), "the bearer token leaked into the log"
