"""The status server: ``/healthz``, ``/metrics`` and a status page, on loopback by default.

Three parts, and the daemon's stages know none of them:

- ``StatusBoard``, the holder the runtime tells what happens (a file seen, settled, failed,
  an acquisition packaged, a package delivered, the watch health) from the harvest and
  delivery threads. It keeps the latest acquisitions per folder and counts into the
  daemon's ``Metrics``. Thread-safe; every call is a few dictionary operations.
- ``StatusSnapshot``, plain data: what the board holds, completed by the runtime with what
  only it can read (the outbox, the state dir), built afresh for each request.
- ``StatusServer``, the standard library's ``ThreadingHTTPServer`` in a daemon thread,
  answering from snapshots only.

Security: the server binds where ``status_server.listen`` says (``settings`` refuses a
non-loopback address without ``allow_remote`` and a token). With a token every request
needs ``Authorization: Bearer <token>``, compared in constant time and never logged.
Without ``allow_remote`` a request must name a loopback host (``Host:``), so a web page
the microscopist opens cannot read the status through DNS rebinding. File names are
hostile input: the page escapes every text, and its Content-Security-Policy forbids
scripts altogether, so even a name that slipped through could not run.

Healthy (``/healthz`` 200, else 503) means: every watch folder is watched as configured
(an observer that died and could not be restarted makes it unhealthy; a folder left to
scans after the inotify budget ran out is watched, on purpose), and the state dir is
writable with free space. An endpoint that is down is not unhealthy: packages wait in the
outbox, which ``/healthz`` shows.
"""

from __future__ import annotations

import hmac
import html
import json
import os
import socket
import socketserver
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from acqharvest import logs
from acqharvest.deliver import read_token
from acqharvest.metrics import CONTENT_TYPE_LATEST, Metrics
from acqharvest.package import rfc3339
from acqharvest.pathtext import escape
from acqharvest.settings import StatusServerSettings
from acqharvest.urls import is_loopback

log = logs.get_logger("acqharvest.statusserver")

#: acquisitions kept per folder for the page (the most recently seen)
ROWS_PER_FOLDER = 20
#: seconds between the page's reloads
PAGE_REFRESH_SECONDS = 5
#: a client that sends nothing for this long is dropped (a thread each, while it lasts)
_REQUEST_TIMEOUT_SECONDS = 10

_WAITING = "waiting for the file to settle"
_READING = "complete on disk; being read"


# --------------------------------------------------------------------------- snapshot


@dataclass(frozen=True, slots=True)
class AcquisitionRow:
    """One acquisition (or a file not yet grouped into one) as the page shows it."""

    #: the main file's path below the watch folder (percent form when not UTF-8)
    name: str
    #: waiting, packaged, delivered, failed, or another outbox state (held)
    state: str
    reason: str
    files: int
    #: Unix time the file was first seen
    seen_at: float


@dataclass(frozen=True, slots=True)
class FolderStatus:
    path: str
    #: why the folder is not watched as configured; None while it is
    watch_problem: str | None
    #: the latest failure in this folder: (Unix time, message)
    last_error: tuple[float, str] | None
    #: newest first
    acquisitions: tuple[AcquisitionRow, ...]


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    instrument: str
    folders: tuple[FolderStatus, ...]
    #: packages per outbox state (every count the outbox reports)
    outbox: Mapping[str, int]
    oldest_pending_age: float | None
    last_delivery_at: float | None
    state_dir_problems: tuple[str, ...]
    taken_at: float = field(default_factory=time.time)

    @property
    def problems(self) -> list[str]:
        """What makes the daemon unhealthy (see the module docstring); empty when healthy."""
        unwatched = [
            f"{folder.path} is not watched: {folder.watch_problem}"
            for folder in self.folders
            if folder.watch_problem is not None
        ]
        return unwatched + list(self.state_dir_problems)

    def health(self) -> dict[str, Any]:
        """The ``/healthz`` document."""
        return {
            "healthy": not self.problems,
            "problems": self.problems,
            "watchers": {
                f.path: {"alive": f.watch_problem is None, "problem": f.watch_problem}
                for f in self.folders
            },
            "outbox": dict(self.outbox),
            "oldest_pending_age_seconds": self.oldest_pending_age,
            "last_delivery": _stamp(self.last_delivery_at),
            "last_error": {
                f.path: None
                if f.last_error is None
                else {"at": _stamp(f.last_error[0]), "error": f.last_error[1]}
                for f in self.folders
            },
            "state_dir": {
                "healthy": not self.state_dir_problems,
                "problems": list(self.state_dir_problems),
            },
        }


def _stamp(seconds: float | None) -> str | None:
    return None if seconds is None else rfc3339(round(seconds, 3))


#: what the outbox knows of a package: (state, failed attempts, last error)
PackageState = tuple[str, int, str | None]


def _outbox_row(state: PackageState) -> tuple[str, str]:
    """The page's state and reason for a package in this outbox state."""
    name, attempts, error = state
    if name == "pending":
        if attempts:
            return "packaged", f"sending failed {attempts}x, retrying: {error or 'unknown'}"
        return "packaged", "waiting to be sent"
    if name == "delivered":
        return "delivered", ""
    if name == "rejected":
        return "failed", f"refused by the endpoint: {error or 'reason unknown'}"
    return name, error or ""


# --------------------------------------------------------------------------- board


@dataclass(slots=True)
class _Row:
    state: str
    reason: str
    seen_at: float
    files: int = 1
    package_id: str | None = None


class StatusBoard:
    """What the daemon tells the status server; see the module docstring."""

    def __init__(self, folders: Sequence[Path], metrics: Metrics, *, instrument: str) -> None:
        self.metrics = metrics
        self._instrument = instrument
        self._lock = threading.Lock()
        self._rows: dict[Path, OrderedDict[str, _Row]] = {f: OrderedDict() for f in folders}
        self._package_rows: dict[str, tuple[Path, str]] = {}
        #: monotonic time each package was spooled, for the delivery latency
        self._spooled_at: dict[str, float] = {}
        self._watch: dict[Path, str | None] = dict.fromkeys(folders)
        self._errors: dict[Path, tuple[float, str]] = {}
        self._last_delivery: float | None = None

    # ------------------------------------------------------------------ events
    def file_seen(self, root: Path, path: Path) -> None:
        """A new file version started settling."""
        self.metrics.file_seen(str(root))
        with self._lock:
            self._put(root, _name(path, root), _Row("waiting", _WAITING, time.time()))

    def file_settled(self, root: Path, path: Path) -> None:
        self.metrics.file_settled(str(root))
        with self._lock:
            row = self._rows[root].get(_name(path, root))
            if row is not None and row.state == "waiting":
                row.reason = _READING

    def file_left(self, root: Path, path: Path) -> None:
        """A file deleted before it was packaged, or found harvested already unchanged."""
        with self._lock:
            rows = self._rows[root]
            name = _name(path, root)
            row = rows.get(name)
            if row is not None and row.state == "waiting":
                del rows[name]

    def file_failed(self, root: Path, path: Path, reason: str) -> None:
        """A file refused or unreadable (before any adapter read it)."""
        self._finished(root, path, [path], _Row("failed", reason, time.time()))

    def acquisition_failed(
        self, adapter: str | None, root: Path, primary: Path, failed: Sequence[Path], reason: str
    ) -> None:
        self.metrics.adapter_failed(adapter)
        main = primary if primary in failed or not failed else failed[0]
        self._finished(root, main, failed, _Row("failed", reason, time.time(), len(failed)))

    def packaged(self, root: Path, primary: Path, members: Sequence[Path], package_id: str) -> None:
        """An acquisition's package is in the outbox (counted once per batch by the caller)."""
        row = _Row("packaged", "waiting to be sent", time.time(), len(members), package_id)
        self._finished(root, primary, members, row)
        with self._lock:
            self._spooled_at[package_id] = time.monotonic()

    def built(self, count: int) -> None:
        self.metrics.packages_built(count)

    def delivered(self, package_id: str) -> None:
        with self._lock:
            spooled = self._spooled_at.pop(package_id, None)
            self._last_delivery = time.time()
            self._set_package_state(package_id, "delivered", "")
        self.metrics.package_delivered(None if spooled is None else time.monotonic() - spooled)

    def rejected(self, package_id: str, reason: str) -> None:
        with self._lock:
            self._spooled_at.pop(package_id, None)
            self._set_package_state(package_id, "failed", f"refused by the endpoint: {reason}")
            where = self._package_rows.get(package_id)
            if where is not None:
                self._errors[where[0]] = (time.time(), f"{where[1]}: refused: {reason}")
        self.metrics.package_rejected()

    def watch_health(self, problems: Mapping[Path, str], restarted: Iterable[Path] = ()) -> None:
        """The folders not watched as configured now, after restarting those in ``restarted``."""
        for folder in restarted:
            self.metrics.watch_restarted(str(folder))
        with self._lock:
            for folder in self._watch:
                problem = problems.get(folder)
                if problem is not None and self._watch[folder] != problem:
                    self._errors[folder] = (time.time(), f"not watched: {problem}")
                self._watch[folder] = problem

    # ------------------------------------------------------------------ reading
    def snapshot(
        self,
        *,
        outbox: Mapping[str, int],
        package_state: Callable[[str], PackageState | None],
        oldest_pending_age: float | None,
        state_dir_problems: Sequence[str],
    ) -> StatusSnapshot:
        """The board as it is now, rows of packages in the state the outbox has them in."""
        with self._lock:
            copied = {
                root: [
                    (name, _Row(r.state, r.reason, r.seen_at, r.files, r.package_id))
                    for name, r in rows.items()
                ]
                for root, rows in self._rows.items()
            }
            watch, errors = dict(self._watch), dict(self._errors)
            last_delivery = self._last_delivery
        folders = []
        for root, rows in copied.items():
            shown = []
            # newest acquisition first (kept in order of latest news, for eviction); ties
            # (a coarse clock) in the order they came
            ordered = sorted(enumerate(rows), key=lambda item: (item[1][1].seen_at, item[0]))
            for _, (name, row) in reversed(ordered):
                state, reason = row.state, row.reason
                if row.package_id is not None and state in ("packaged", "delivered"):
                    # the outbox is the truth: held, rejected or retried by a command since
                    found = package_state(row.package_id)
                    if found is not None:
                        state, reason = _outbox_row(found)
                shown.append(AcquisitionRow(name, state, reason, row.files, row.seen_at))
            folders.append(FolderStatus(str(root), watch[root], errors.get(root), tuple(shown)))
        return StatusSnapshot(
            self._instrument,
            tuple(folders),
            dict(outbox),
            oldest_pending_age,
            last_delivery,
            tuple(state_dir_problems),
        )

    # ------------------------------------------------------------------ helpers
    def _finished(self, root: Path, main: Path, members: Iterable[Path], row: _Row) -> None:
        """One row for an acquisition in place of its members' rows."""
        if row.state == "failed":
            self._errors_note(root, main, row.reason)
        with self._lock:
            rows = self._rows[root]
            name = _name(main, root)
            earlier = rows.get(name)
            if earlier is not None:
                row.seen_at = earlier.seen_at
            for member in members:
                self._drop(rows, _name(member, root))
            self._put(root, name, row)

    def _errors_note(self, root: Path, path: Path, reason: str) -> None:
        with self._lock:
            self._errors[root] = (time.time(), f"{_name(path, root)}: {reason}")

    def _put(self, root: Path, name: str, row: _Row) -> None:
        rows = self._rows[root]
        self._drop(rows, name)
        rows[name] = row
        if row.package_id is not None:
            self._package_rows[row.package_id] = (root, name)
        while len(rows) > ROWS_PER_FOLDER:
            self._drop(rows, next(iter(rows)))

    def _drop(self, rows: OrderedDict[str, _Row], name: str) -> None:
        row = rows.pop(name, None)
        if row is not None and row.package_id is not None:
            self._package_rows.pop(row.package_id, None)

    def _set_package_state(self, package_id: str, state: str, reason: str) -> None:
        where = self._package_rows.get(package_id)
        if where is None:
            return
        row = self._rows[where[0]].get(where[1])
        if row is not None:
            row.state, row.reason = state, reason


def _name(path: Path, root: Path) -> str:
    """The path below the watch folder, as the page shows it."""
    # string slicing, not relative_to: this runs for every file an event storm brings
    text, prefix = str(path), os.path.join(root, "")
    relative = text[len(prefix) :] if text.startswith(prefix) else text
    return escape(relative.replace(os.sep, "/"))


# --------------------------------------------------------------------------- server


def status_server(
    config: StatusServerSettings | None,
    snapshot: Callable[[], StatusSnapshot],
    metrics: Metrics,
) -> StatusServer | None:
    """The configured server, not started (None when ``status_server`` is not set).

    Reads the token now: ``DeliveryConfigError`` (key ``status_server``) when it cannot.
    """
    if config is None:
        return None
    token = read_token(config, key="status_server")
    if token:
        logs.register_secret(token)
    return StatusServer(
        config.address, snapshot, metrics, token=token, allow_remote=config.allow_remote
    )


class StatusServer:
    """Serves ``/healthz``, ``/metrics`` and ``/`` from ``snapshot()`` in a daemon thread."""

    def __init__(
        self,
        address: tuple[str, int],
        snapshot: Callable[[], StatusSnapshot],
        metrics: Metrics,
        *,
        token: str | None = None,
        allow_remote: bool = False,
    ) -> None:
        self.address = address
        self.snapshot = snapshot
        self.metrics = metrics
        self._expected = None if token is None else f"Bearer {token}".encode()
        self.allow_remote = allow_remote
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` as bound (the real port when 0 was asked for)."""
        assert self._server is not None, "not started"
        host, port = self._server.server_name, self._server.server_port
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}"

    def serve(self) -> bool:
        """Start; an address that cannot be bound (in use) is logged, and False returned:
        the harvest goes on without the server."""
        try:
            self.start()
        except OSError as error:
            host, port = self.address
            log.error(
                "status_server_failed",
                key="status_server.listen",
                address=f"{host}:{port}",
                error=str(error),
                effect="no /healthz, /metrics or status page; harvesting goes on",
            )
            return False
        log.info("status_server_started", url=self.url)
        return True

    def start(self) -> None:
        """Bind and serve; raises ``OSError`` when the address cannot be bound."""
        host, port = self.address
        family, _, _, _, sockaddr = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
        self._server = _Server((str(sockaddr[0]), int(sockaddr[1])), family, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name="acqharvest-status",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    def authorized(self, header: str | None) -> bool:
        if self._expected is None:
            return True
        # constant time: how much of a guess matched must not show in the answer's timing
        return hmac.compare_digest((header or "").encode(), self._expected)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # On Windows SO_REUSEADDR lets another program bind the same port and take requests
    allow_reuse_address = sys.platform != "win32"

    def __init__(self, address: tuple[str, int], family: int, status: StatusServer) -> None:
        self.address_family = socket.AddressFamily(family)
        self.status = status
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer's own looks the host's name up in DNS, which can hang start-up
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "acqharvest"
    sys_version = ""
    timeout = _REQUEST_TIMEOUT_SECONDS

    def do_GET(self) -> None:
        status = self.server.status
        if not status.allow_remote and not _loopback_host(self.headers.get("Host")):
            self._send(403, "text/plain; charset=utf-8", b"this server answers loopback names\n")
            return
        if not status.authorized(self.headers.get("Authorization")):
            self._send(
                401,
                "text/plain; charset=utf-8",
                b"a bearer token is required\n",
                {"WWW-Authenticate": 'Bearer realm="acqharvest"'},
            )
            return
        path = urlsplit(self.path).path
        if path not in ("/", "/healthz", "/metrics"):
            self._send(404, "text/plain; charset=utf-8", b"not found: try /, /healthz, /metrics\n")
            return
        try:
            snapshot = status.snapshot()
            if path == "/healthz":
                health = snapshot.health()
                body = logs.mask(json.dumps(health, indent=2, ensure_ascii=False)).encode()
                code = 200 if health["healthy"] else 503
                self._send(code, "application/json", body)
            elif path == "/metrics":
                body = status.metrics.exposition(
                    snapshot.outbox,
                    snapshot.oldest_pending_age,
                    {f.path: f.watch_problem is None for f in snapshot.folders},
                )
                self._send(200, CONTENT_TYPE_LATEST, body)
            else:
                page = logs.mask(render_page(snapshot))  # an endpoint's answer may echo a token
                self._send(200, "text/html; charset=utf-8", page.encode())
        except Exception as error:
            log.exception("status_request_failed", path=path, error=str(error))
            self._send(500, "text/plain; charset=utf-8", b"internal error; see the daemon log\n")

    def _send(
        self, code: int, content_type: str, body: bytes, extra: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(code)
        headers = {
            "Content-Type": content_type,
            "Content-Length": str(len(body)),
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            # no script, no outside resource, no frame, whatever a file name holds
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
            "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            **(extra or {}),
        }
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged: a scrape every 15 s would drown the log."""


def _loopback_host(header: str | None) -> bool:
    """Whether a ``Host`` header names this machine (``localhost``, 127.x, [::1])."""
    if not header:
        return False
    host = header.strip()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host
    else:
        host = host.rsplit(":", 1)[0]
    return is_loopback(host)


# --------------------------------------------------------------------------- page

#: (background, text) of each state: the word is always shown beside its colour
_STATE_COLOURS = {
    "waiting": ("#ffd23f", "#000000"),
    "packaged": ("#1f5fbf", "#ffffff"),
    "delivered": ("#0b7a33", "#ffffff"),
    "failed": ("#b3001b", "#ffffff"),
    "held": ("#6a1b9a", "#ffffff"),
}
_OTHER_STATE = ("#444444", "#ffffff")

_STYLE = """
body { font: 22px/1.4 system-ui, sans-serif; margin: 0; background: #fff; color: #000; }
header { padding: 16px 24px; color: #fff; }
header.ok { background: #0b7a33; } header.bad { background: #b3001b; }
header h1 { margin: 0; font-size: 34px; } header p { margin: 4px 0 0; }
main { padding: 8px 24px 24px; }
h2 { font-size: 26px; margin: 24px 0 8px; overflow-wrap: anywhere; }
.watch { font-size: 20px; font-weight: normal; }
.watch.bad { color: #b3001b; font-weight: bold; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 8px 12px; border-bottom: 2px solid #ccc; vertical-align: top; }
th { font-size: 18px; text-transform: uppercase; color: #333; }
td.name { font-family: ui-monospace, monospace; overflow-wrap: anywhere; }
.state { display: inline-block; min-width: 8em; padding: 2px 10px; border-radius: 6px;
         font-weight: bold; text-align: center; }
.error { color: #b3001b; } .empty { color: #333; font-style: italic; }
footer { padding: 0 24px 24px; color: #333; font-size: 18px; }
"""


def render_page(snapshot: StatusSnapshot) -> str:
    """The status page: every text from the daemon HTML-escaped (file names are input)."""
    problems = snapshot.problems
    pending = snapshot.outbox.get("pending", 0)
    verdict = "Problem: " + "; ".join(problems) if problems else "acqharvest is running"
    queue = [f"Waiting to be sent: {pending}"]
    queue += [
        f"{state.capitalize()}: {count}"
        for state, count in snapshot.outbox.items()
        if state not in ("pending", "delivered", "corrupt") and count
    ]
    last = "never" if snapshot.last_delivery_at is None else _clock(snapshot.last_delivery_at)
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{PAGE_REFRESH_SECONDS}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>acqharvest: {_e(snapshot.instrument)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f'<header class="{"bad" if problems else "ok"}" id="summary">',
        f"<h1>{_e(snapshot.instrument)}</h1>",
        f'<p id="verdict">{_e(verdict)}</p>',
        f"<p>Last delivery: {_e(last)} &middot; {' &middot; '.join(map(_e, queue))}</p>",
        "</header><main>",
    ]
    for folder in snapshot.folders:
        parts.append(_folder_section(folder))
    parts.append(
        f"</main><footer>Updated {_e(_clock(snapshot.taken_at))}; this page reloads every "
        f"{PAGE_REFRESH_SECONDS} s.</footer></body></html>"
    )
    return "\n".join(parts)


def _folder_section(folder: FolderStatus) -> str:
    if folder.watch_problem is None:
        watch = '<span class="watch">watched</span>'
    else:
        watch = f'<span class="watch bad">NOT WATCHED: {_e(folder.watch_problem)}</span>'
    lines = [f'<section class="folder"><h2>{_e(folder.path)} {watch}</h2>']
    if folder.last_error is not None:
        at, message = folder.last_error
        lines.append(f'<p class="error">Last error ({_e(_clock(at))}): {_e(_short(message))}</p>')
    if not folder.acquisitions:
        lines.append('<p class="empty">No acquisitions since acqharvest started.</p>')
    else:
        lines.append(
            "<table><thead><tr><th>Acquisition</th><th>State</th><th>Why</th>"
            "<th>Seen</th></tr></thead><tbody>"
        )
        for row in folder.acquisitions:
            background, text = _STATE_COLOURS.get(row.state, _OTHER_STATE)
            files = f" ({row.files} files)" if row.files > 1 else ""
            lines.append(
                f'<tr class="acquisition" data-state="{_e(row.state)}">'
                f'<td class="name">{_e(row.name)}{_e(files)}</td>'
                f'<td><span class="state" style="background:{background};color:{text}">'
                f"{_e(row.state)}</span></td>"
                f'<td class="reason">{_e(_short(row.reason))}</td>'
                f"<td>{_e(_clock(row.seen_at))}</td></tr>"
            )
        lines.append("</tbody></table>")
    lines.append("</section>")
    return "\n".join(lines)


def _short(text: str, limit: int = 300) -> str:
    """An endpoint's answer can be a whole page: the screen shows its start."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _clock(seconds: float) -> str:
    """Local time, with the date when it is not today (the screen is in the lab)."""
    moment = time.localtime(seconds)
    if time.strftime("%Y-%m-%d", moment) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M:%S", moment)
    return time.strftime("%Y-%m-%d %H:%M", moment)
