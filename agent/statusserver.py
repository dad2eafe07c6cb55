"""The status server: ``/healthz``, ``/metrics`` and a status page, on loopback by default.

The standard library's ``ThreadingHTTPServer`` in a daemon thread, answering from
``status.StatusSnapshot``s only (the runtime hands it a callable that builds one): it never
reaches into the daemon's stages.

Security: the server binds where ``status_server.listen`` says (``settings`` refuses a
non-loopback address without ``allow_remote`` and a token). With a token every request
needs ``Authorization: Bearer <token>``, compared in constant time and never logged.
Without ``allow_remote`` a request must name a loopback host (``Host:``), so a web page
the microscopist opens cannot read the status through DNS rebinding. File names are
hostile input: the page escapes every text, and its Content-Security-Policy forbids
scripts altogether, so even a name that slipped through could not run.
"""

from __future__ import annotations

import hmac
import html
import json
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from acqharvest import logs
from acqharvest.deliver import read_token
from acqharvest.metrics import CONTENT_TYPE_LATEST, Metrics
from acqharvest.settings import StatusServerSettings
from acqharvest.status import FolderStatus, StatusSnapshot
from acqharvest.urls import is_loopback

log = logs.get_logger("acqharvest.statusserver")

#: seconds between the page's reloads
PAGE_REFRESH_SECONDS = 5
#: a client that sends nothing for this long is dropped (a thread each, while it lasts)
_REQUEST_TIMEOUT_SECONDS = 10


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
