"""A real loopback HTTP(S) ingest endpoint for tests, with programmable misbehaviour.

Records every request; ``unique`` is the endpoint's exactly-once view (first 2xx per
Idempotency-Key). Not a mock: a ``ThreadingHTTPServer`` on 127.0.0.1 speaking HTTP/1.1.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODES = ("ok", "conflict", "reject", "fail", "retry_after", "lie", "slow")


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    #: header names lower-cased
    headers: dict[str, str]
    body: bytes
    #: the body parsed as JSON, None when it is not JSON
    json: Any
    #: the client's source port: equal ports mean a kept-alive connection
    client_port: int


class _Server(ThreadingHTTPServer):
    # Non-daemon so server_close() joins every handler thread: stop() leaks no threads.
    daemon_threads = False
    endpoint: LoopbackEndpoint

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients time out or vanish on purpose in these tests; a traceback is noise.
        pass


class _Handler(BaseHTTPRequestHandler):
    # Headers and body go out in two writes; without this the body waits for the client's
    # delayed ACK (~40 ms a response on Linux), which would make every test slow.
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.endpoint._track(self.connection, add=True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.endpoint._track(self.connection, add=False)

    def do_POST(self) -> None:
        self.server.endpoint._handle(self)

    do_PUT = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        pass


class LoopbackEndpoint:
    """Start with ``start()``; ``stop()`` then ``start()`` again reuses the same port."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl_context = ssl_context
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._port = 0
        self._mode: tuple[str, dict[str, Any]] = ("ok", {})
        self._next: list[tuple[str, dict[str, Any]]] = []
        self.received: list[RecordedRequest] = []
        self.unique: dict[str, RecordedRequest] = {}

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> LoopbackEndpoint:
        if self._server is not None:
            raise RuntimeError("endpoint already started")
        self._stopping.clear()
        server = _Server(("127.0.0.1", self._port), _Handler)
        server.endpoint = self
        if self._ssl_context is not None:
            server.socket = self._ssl_context.wrap_socket(server.socket, server_side=True)
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening, drop kept-alive connections, and join every server thread."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping.set()
        server.shutdown()
        with self._cond:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        server.server_close()
        thread.join()
        self._server = None
        self._thread = None

    def __enter__(self) -> LoopbackEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        scheme = "https" if self._ssl_context is not None else "http"
        host = "localhost" if self._ssl_context is not None else "127.0.0.1"
        return f"{scheme}://{host}:{self._port}/ingest"

    # ------------------------------------------------------------------ behaviour

    def behave(self, mode: str, **kw: Any) -> None:
        """Answer every following request this way.

        ``reject`` takes ``text``; ``retry_after`` takes ``seconds`` or a raw header
        ``value``; ``slow`` takes ``seconds`` (then answers like ``ok``).
        """
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {MODES}")
        with self._cond:
            self._mode = (mode, kw)

    def fail_next(self, n: int, mode: str = "fail", **kw: Any) -> None:
        """Answer the next ``n`` requests with ``mode``, then go back to ``behave``'s mode."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {MODES}")
        with self._cond:
            self._next.extend([(mode, kw)] * n)

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until ``len(unique) >= count``; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.unique) >= count, timeout)

    def requests_for(self, key: str) -> list[RecordedRequest]:
        """Every request received with this Idempotency-Key."""
        with self._cond:
            return [r for r in self.received if r.headers.get("idempotency-key") == key]

    # ------------------------------------------------------------------ serving

    def _track(self, connection: socket.socket, *, add: bool) -> None:
        with self._cond:
            if not add:
                self._connections.discard(connection)
                return
            self._connections.add(connection)
            if self._stopping.is_set():
                # Accepted just before stop(): close it, or server_close() would wait on it.
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def _handle(self, handler: _Handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length)
        headers = {name.lower(): value for name, value in handler.headers.items()}
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        record = RecordedRequest(
            handler.command, handler.path, headers, body, parsed, handler.client_address[1]
        )
        key = headers.get("idempotency-key", "")
        with self._cond:
            self.received.append(record)
            mode, kw = self._next.pop(0) if self._next else self._mode
            self._cond.notify_all()
        if mode == "slow":
            self._stopping.wait(float(kw.get("seconds", 1.0)))
            mode = "ok"
        status, payload, extra = self._answer(mode, kw, key)
        if 200 <= status < 300:
            with self._cond:
                self.unique.setdefault(key, record)
                self._cond.notify_all()
        handler.send_response(status)
        for name, value in extra.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    @staticmethod
    def _answer(mode: str, kw: dict[str, Any], key: str) -> tuple[int, bytes, dict[str, str]]:
        as_json = {"Content-Type": "application/json"}
        as_text = {"Content-Type": "text/plain; charset=utf-8"}
        if mode == "ok":
            return 200, json.dumps({"package_id": key}).encode(), as_json
        if mode == "conflict":
            return (
                409,
                json.dumps({"package_id": key, "detail": "already have it"}).encode(),
                as_json,
            )
        if mode == "reject":
            return 400, str(kw.get("text", "rejected by the test endpoint")).encode(), as_text
        if mode == "fail":
            return 500, b"internal error", as_text
        if mode == "retry_after":
            value = str(kw.get("value", kw.get("seconds", 1)))
            return 429, b"slow down", {**as_text, "Retry-After": value}
        if mode == "lie":
            return 200, json.dumps({"package_id": "not-" + key}).encode(), as_json
        raise AssertionError(f"unhandled mode {mode}")
