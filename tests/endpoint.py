"""A real loopback HTTP(S) ingest endpoint for tests, with programmable misbehaviour.

Records every request; ``unique`` is the endpoint's exactly-once view (first 2xx per
Idempotency-Key). Not a mock: a ``ThreadingHTTPServer`` on 127.0.0.1 speaking HTTP/1.1.

Two hooks let a test act at exact points of a request, on the handler thread: ``on_receive``
runs once the body is read, before anything is stored or answered, and may return a mode
for this request only; ``on_accept`` runs after a 2xx request was stored in ``unique``,
before the response is written (crash tests kill the client there). ``hold()`` keeps
requests waiting before their body is read, until ``release()`` drops them unread.

It follows the README's HTTP contract: ``acqharvest check``'s probe (an empty POST with the
``Acqharvest-Probe`` header) is authenticated and answered without storing anything, and
with ``token`` set, any other bearer token is refused with 401, as a real endpoint does.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import trustme

MODES = (
    "ok",
    "conflict",
    "reject",
    "fail",
    "retry_after",
    "lie",
    "lie_digest",
    "no_receipt",
    "slow",
    "drop",
    "conflict_lie",
    "conflict_bare",
    "status",
    "drip",
    "huge",
    "login_portal",
    "echo",
)

#: ways ``echo`` writes the Authorization header back, as servers do in their error texts
ECHO_ENCODINGS: dict[str, Callable[[str], str]] = {
    "raw": lambda header: header,
    # PHP's json_encode writes / as \/
    "json_php": lambda header: json.dumps(header)[1:-1].replace("/", "\\/"),
    "json_unicode": lambda header: "".join(f"\\u{ord(c):04x}" for c in header),
    "percent": lambda header: urllib.parse.quote(header, safe=""),
    "percent_lower": lambda header: "".join(f"%{ord(c):02x}" for c in header),
    "html_numeric": lambda header: "".join(f"&#{ord(c)};" for c in header),
    "html_hex": lambda header: "".join(f"&#x{ord(c):X};" for c in header),
    "html_named": lambda header: header.replace("-", "&hyphen;").replace("/", "&sol;"),
    "base64": lambda header: base64.b64encode(header.encode()).decode(),
    "base64url": lambda header: base64.urlsafe_b64encode(header.encode()).decode(),
    "base64_token": lambda header: base64.b64encode(header.split(" ", 1)[-1].encode()).decode(),
}
#: modes whose answer to acqharvest check's probe is the one they give a package (the
#: endpoint as a whole behaves so); in the others the probe gets 204.
_PROBE_ANSWERED_AS_PACKAGE = frozenset(
    {"status", "fail", "retry_after", "no_receipt", "login_portal", "echo", "drop"}
)
PROBE_HEADER = "acqharvest-probe"


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
    #: ``time.monotonic()`` when the body had been read
    at: float = 0.0


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

    def date_time_string(self, timestamp: float | None = None) -> str:
        # the Date header of every answer, from a clock ``clock_offset`` seconds off
        now = time.time() if timestamp is None else timestamp
        return super().date_time_string(now + self.server.endpoint.clock_offset)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _reply(handler: _Handler, status: int, payload: bytes, headers: dict[str, str]) -> None:
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


def _drop(handler: _Handler) -> None:
    """Close the connection without an answer."""
    handler.close_connection = True
    with contextlib.suppress(OSError):
        handler.connection.shutdown(socket.SHUT_RDWR)


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
        self._holding = False
        self.received: list[RecordedRequest] = []
        self.unique: dict[str, RecordedRequest] = {}
        self.on_receive: Callable[[RecordedRequest], str | None] | None = None
        self.on_accept: Callable[[RecordedRequest], None] | None = None
        #: when set, a request bearing another token is refused with 401
        self.token: str | None = None
        #: ``acqharvest check``'s probes (never in ``received``: that is about packages)
        self.probes: list[RecordedRequest] = []
        #: bytes of the answers sent in ``drip`` and ``huge`` modes before the client left
        self.streamed = 0
        #: seconds the endpoint's clock (its ``Date`` header) is ahead of this host's
        self.clock_offset = 0.0

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
        with self._cond:
            self._cond.notify_all()  # wakes held requests, or server_close() would wait on them
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

        ``ok`` answers 200 with a receipt (``package_id`` and ``sha256`` of the body);
        ``reject`` takes ``text``; ``retry_after`` takes ``seconds`` or a raw header
        ``value``; ``slow`` takes ``seconds`` (then answers like ``ok``); ``lie`` answers
        200 naming another package, ``lie_digest`` 200 with a wrong ``sha256``,
        ``no_receipt`` 200 with an HTML page (none of the three is stored in ``unique``);
        ``drop`` closes the connection without an answer. ``conflict`` answers 409 with a
        receipt (stored: "already have it"), ``conflict_lie`` 409 naming another package,
        ``conflict_bare`` 409 with no body (neither stored). ``status`` answers ``code``
        with an optional ``location`` header and ``text``. ``login_portal`` answers 200
        with a sign-in page (a wrong URL landing on a portal); ``echo`` answers ``code``
        (403) with the Authorization header written back in ``encoding`` (a key of
        ``ECHO_ENCODINGS``) after ``pad`` characters of text (neither stored). ``drip``
        sends a 200 receipt one byte every ``interval`` seconds; ``huge`` a 200 declaring
        ``size`` bytes, streamed until the client goes away (``streamed`` counts what it
        took). None of those three is stored.
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

    def hold(self) -> None:
        """Keep every request arriving from now on waiting, its body unread, until ``release()``.

        Released, held requests are dropped unread and recorded nowhere: the endpoint never
        saw those packages. Crash tests hold while they kill a daemon right after it spooled,
        so that no package reaches the endpoint in between.
        """
        with self._cond:
            self._holding = True

    def release(self) -> None:
        """End ``hold()``: the requests it kept waiting are dropped unread."""
        with self._cond:
            self._holding = False
            self._cond.notify_all()

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

    def _held(self) -> bool:
        """Wait while ``hold()`` is on; True when this request was held."""
        with self._cond:
            if not self._holding:
                return False
            self._cond.wait_for(lambda: not self._holding or self._stopping.is_set())
            return True

    def _handle(self, handler: _Handler) -> None:
        if self._held():
            _drop(handler)
            return
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length)
        if len(body) < length:
            # the client went away mid-body (a daemon killed while posting): no request was
            # made, as for any HTTP server; storing the fragment would take it for a package
            _drop(handler)
            return
        headers = {name.lower(): value for name, value in handler.headers.items()}
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        record = RecordedRequest(
            handler.command,
            handler.path,
            headers,
            body,
            parsed,
            handler.client_address[1],
            time.monotonic(),
        )
        key = headers.get("idempotency-key", "")
        authorization = headers.get("authorization", "")
        if PROBE_HEADER in headers:
            self._probe(handler, record)
            return
        with self._cond:
            self.received.append(record)
            mode, kw = self._next.pop(0) if self._next else self._mode
            self._cond.notify_all()
        if self.on_receive is not None:
            override = self.on_receive(record)
            if override is not None:
                mode, kw = override, {}
        if self.token is not None and authorization != f"Bearer {self.token}":
            mode, kw = "status", {"code": 401, "text": "invalid or expired token"}
        if mode == "slow":
            self._stopping.wait(float(kw.get("seconds", 1.0)))
            mode = "ok"
        if mode == "drop":
            _drop(handler)
            return
        if mode in ("drip", "huge"):
            self._stream_answer(handler, mode, kw, key, body)
            return
        status, payload, extra = self._answer(mode, kw, key, body, authorization)
        if 200 <= status < 300 and mode == "ok":
            with self._cond:
                self.unique.setdefault(key, record)
                self._cond.notify_all()
            if self.on_accept is not None:
                self.on_accept(record)
        _reply(handler, status, payload, extra)

    def _probe(self, handler: _Handler, record: RecordedRequest) -> None:
        """``acqharvest check``'s no-store probe: authenticated, then 204, or what the
        endpoint as a whole answers now (``behave``'s mode; ``fail_next`` is left alone).

        Recorded in ``probes`` only: ``received`` and ``unique`` stay about packages.
        """
        authorization = record.headers.get("authorization", "")
        with self._cond:
            self.probes.append(record)
            mode, kw = self._mode
        if self.token is not None and authorization != f"Bearer {self.token}":
            mode, kw = "status", {"code": 401, "text": "invalid or expired token"}
        if mode == "drop":
            _drop(handler)
            return
        if mode not in _PROBE_ANSWERED_AS_PACKAGE:
            _reply(handler, 204, b"", {})
            return
        _reply(handler, *self._answer(mode, kw, "", b"", authorization))

    def _stream_answer(
        self, handler: _Handler, mode: str, kw: dict[str, Any], key: str, body: bytes
    ) -> None:
        """Answer slowly (``drip``) or endlessly (``huge``) until the client gives up."""
        handler.close_connection = True
        if mode == "drip":
            receipt = {"package_id": key, "sha256": hashlib.sha256(body).hexdigest()}
            pieces = [bytes([byte]) for byte in json.dumps(receipt).encode()]
            pause = float(kw.get("interval", 0.3))
        else:
            block = b" " * 65536
            pieces = [block] * (int(kw.get("size", 2**30)) // len(block))
            pause = 0.0
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(sum(map(len, pieces))))
            handler.end_headers()
            handler.wfile.flush()
            for piece in pieces:
                if self._stopping.wait(pause):
                    return
                handler.wfile.write(piece)
                handler.wfile.flush()
                with self._cond:
                    self.streamed += len(piece)
        except OSError:
            return  # the client cut the answer off

    @staticmethod
    def _answer(
        mode: str, kw: dict[str, Any], key: str, body: bytes, authorization: str
    ) -> tuple[int, bytes, dict[str, str]]:
        as_json = {"Content-Type": "application/json"}
        as_text = {"Content-Type": "text/plain; charset=utf-8"}
        digest = hashlib.sha256(body).hexdigest()
        if mode == "ok":
            return 200, json.dumps({"package_id": key, "sha256": digest}).encode(), as_json
        if mode == "conflict":
            return (
                409,
                json.dumps({"package_id": key, "detail": "already have it"}).encode(),
                as_json,
            )
        if mode == "conflict_lie":
            return 409, json.dumps({"package_id": "not-" + key}).encode(), as_json
        if mode == "conflict_bare":
            return 409, b"", as_text
        if mode == "status":
            extra = {**as_text, **({"Location": kw["location"]} if "location" in kw else {})}
            return int(kw["code"]), str(kw.get("text", "")).encode(), extra
        if mode == "reject":
            return 400, str(kw.get("text", "rejected by the test endpoint")).encode(), as_text
        if mode == "fail":
            return 500, str(kw.get("text", "internal error")).encode(), as_text
        if mode == "retry_after":
            value = str(kw.get("value", kw.get("seconds", 1)))
            return 429, b"slow down", {**as_text, "Retry-After": value}
        if mode == "lie":
            return 200, json.dumps({"package_id": "not-" + key}).encode(), as_json
        if mode == "lie_digest":
            wrong = hashlib.sha256(body + b"tampered").hexdigest()
            return 200, json.dumps({"package_id": key, "sha256": wrong}).encode(), as_json
        if mode == "no_receipt":
            return (
                200,
                b"<html><body>Welcome to the proxy</body></html>",
                {"Content-Type": "text/html"},
            )
        if mode == "login_portal":
            page = (
                "<!DOCTYPE html><html><head><meta charset='utf-8'>"
                "<title>Sign in - Example University SSO</title></head><body>"
                "<form method='post' action='/sso/login'><input name='username'>"
                "<input name='password' type='password'></form></body></html>"
            )
            return 200, page.encode(), {"Content-Type": "text/html; charset=utf-8"}
        if mode == "echo":
            echoed = ECHO_ENCODINGS[str(kw.get("encoding", "raw"))](authorization)
            text = "x" * int(kw.get("pad", 0)) + f"refused Authorization: {echoed}"
            if str(kw.get("encoding", "")).startswith("json"):
                payload = f'{{"error": "forbidden", "detail": "{text}"}}'.encode()
                return int(kw.get("code", 403)), payload, as_json
            return int(kw.get("code", 403)), text.encode(), as_text
        raise AssertionError(f"unhandled mode {mode}")


def max_attempts_within(window: float, cap: float, base: float = 1.0) -> int:
    """The most attempts acqharvest's endpoint-wide backoff allows in ``window`` seconds.

    After the n-th failure in a row it waits at least half of ``min(cap, base * 2**(n-1))``
    (see ``acqharvest.deliver.backoff_delay``), so a slow machine only lowers the count.
    """
    attempts, elapsed = 1, 0.0
    while True:
        elapsed += min(cap, base * 2.0 ** (attempts - 1)) / 2
        if elapsed > window:
            return attempts
        attempts += 1


class RawListener:
    """A plain TCP server that records the raw bytes clients send, then answers in plain
    HTTP: what an https client meets when the port it was given speaks plain http."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._lock = threading.Lock()
        self._received = bytearray()

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    @property
    def received(self) -> bytes:
        with self._lock:
            return bytes(self._received)

    def __enter__(self) -> RawListener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._socket.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(1.0)
                with contextlib.suppress(OSError):
                    data = connection.recv(65536)
                    with self._lock:
                        self._received += data
                    connection.sendall(
                        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                        b"Connection: close\r\n\r\n"
                    )


class ConnectProxy:
    """A forward proxy on loopback that tunnels ``CONNECT host:port`` and refuses the rest.

    ``heads`` holds the request head (request line and headers) of every request it got;
    ``tunnelled`` every byte it carried through tunnels, in both directions: what a
    proxy on the path can see.
    """

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.1)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.heads: list[str] = []
        self._tunnelled = bytearray()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    @property
    def tunnelled(self) -> bytes:
        with self._lock:
            return bytes(self._tunnelled)

    def __enter__(self) -> ConnectProxy:
        self._spawn(self._serve)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in list(self._threads):
            thread.join()
        self._socket.close()

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._socket.accept()
            except TimeoutError:
                continue
            self._spawn(self._handle, client)

    def _handle(self, client: socket.socket) -> None:
        with client:
            client.settimeout(5.0)
            head = b""
            with contextlib.suppress(OSError):
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    data = client.recv(4096)
                    if not data:
                        break
                    head += data
            text = head.split(b"\r\n\r\n", 1)[0].decode("latin-1")
            with self._lock:
                self.heads.append(text)
            method, target = [*text.split(" "), "", ""][:2]
            if method != "CONNECT":
                with contextlib.suppress(OSError):
                    client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            host, port = target.rsplit(":", 1)
            try:
                upstream = socket.create_connection((host, int(port)), timeout=5.0)
            except OSError:
                with contextlib.suppress(OSError):
                    client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                return
            with upstream:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self._spawn(self._pipe, upstream, client)
                self._pipe(client, upstream)

    def _pipe(self, source: socket.socket, target: socket.socket) -> None:
        source.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data = source.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            with self._lock:
                self._tunnelled += data
            try:
                target.sendall(data)
            except OSError:
                break
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)


def tls_server(
    ca: trustme.CA, *hosts: str, client_ca: trustme.CA | None = None
) -> LoopbackEndpoint:
    """A (not yet started) https endpoint with a certificate from ``ca`` for ``hosts``.

    With ``client_ca`` it accepts only client certificates that CA issued (mutual TLS).
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*hosts).configure_cert(context)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        client_ca.configure_trust(context)
    return LoopbackEndpoint(ssl_context=context)


@dataclass(frozen=True)
class ClientIdentity:
    cert: Path
    key: Path


def client_identity(ca: trustme.CA, folder: Path, name: str = "client") -> ClientIdentity:
    """A client certificate from ``ca`` and its key (mode 600), as PEM files in ``folder``."""
    leaf = ca.issue_cert(f"{name}@scope-pc.example.org")
    identity = ClientIdentity(folder / f"{name}.crt", folder / f"{name}.key")
    leaf.cert_chain_pems[0].write_to_path(str(identity.cert))
    leaf.private_key_pem.write_to_path(str(identity.key))
    identity.key.chmod(0o600)
    return identity


def write_pem(ca: trustme.CA, path: Path) -> Path:
    """``ca``'s certificate as a PEM file: an ``endpoint.ca_bundle``."""
    ca.cert_pem.write_to_path(str(path))
    return path
