"""Secrets stay secret: the bearer token and the client key never appear in the daemon's
log file or console, in ``acqharvest status`` or ``check`` output, in the state folder or
in a package, even when the endpoint echoes them back in its error texts."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pytest
import trustme

from tests.endpoint import (
    ECHO_ENCODINGS,
    LoopbackEndpoint,
    RawListener,
    client_identity,
    tls_server,
    write_pem,
)
from tests.helpers import wait_until
from tests.integration.conftest import TOKEN, Harness, drop_files

pytestmark = pytest.mark.integration

#: acquisitions per test (of tests.integration.conftest.SMALL_TIFFS)
FILES = 3
ENV_TOKEN = "env-tok-7c1d2e9f0a-not-for-logs"
#: encodings in which the test endpoint writes the Authorization header back (base64 last)
ENCODED_ECHOES = ("json_unicode", "percent_lower", "html_numeric", "base64")


def key_material(key: Path) -> list[str]:
    """The base64 lines of a PEM private key: any of them in a text means the key leaked."""
    return [line for line in key.read_text().splitlines() if line and not line.startswith("-")]


def everything_visible(harness: Harness, endpoint: LoopbackEndpoint) -> dict[str, str]:
    """Every text an admin or the endpoint can see, by where it came from."""
    texts = {
        "log file and console": harness.output(),
        "status": "\n".join(harness.command("status").__dict__[k] for k in ("stdout", "stderr")),
        "check": "\n".join(harness.command("check").__dict__[k] for k in ("stdout", "stderr")),
    }
    for path in sorted(harness.state.rglob("*")):
        if path.is_file() and path.suffix != ".sqlite3":
            texts[str(path)] = path.read_text(errors="replace")
    database = harness.state / "state.sqlite3"
    if database.exists():
        texts["state database"] = database.read_bytes().decode("latin-1")
    for index, request in enumerate(endpoint.received):
        texts[f"request {index} body"] = request.body.decode(errors="replace")
    return texts


def assert_absent(secrets: Iterable[str], texts: dict[str, str]) -> None:
    for secret in secrets:
        leaks = [where for where, text in texts.items() if secret in text]
        assert not leaks, f"{secret[:12]}... leaked into {leaks}"


def test_token_and_client_key_never_leak(harness: Harness, corpus: Path) -> None:
    server_ca, client_ca = trustme.CA(), trustme.CA()
    bundle = write_pem(server_ca, harness.tmp / "ca.pem")
    identity = client_identity(client_ca, harness.tmp)
    cert, key = identity.cert, identity.key
    with tls_server(server_ca, "localhost", client_ca=client_ca) as server:
        harness.settle = 0.5
        harness.write_config(
            harness.tmp / "token",
            endpoint={
                "url": server.url,
                "ca_bundle": str(bundle),
                "client_cert": str(cert),
                "client_key": str(key),
            },
        )
        # an endpoint that echoes the Authorization header in its error texts
        echo = f"bad credentials: Authorization: Bearer {TOKEN}"
        server.fail_next(2, "fail", text=echo)
        server.fail_next(1, "reject", text=echo)
        # and refusals that write it back encoded, cut or not
        for encoding in ENCODED_ECHOES:
            server.fail_next(1, "echo", code=403, encoding=encoding)
        server.fail_next(1, "echo", code=500, encoding="raw", pad=2048 - 40)
        drop_files(harness, corpus, FILES)
        harness.start()
        assert wait_until(lambda: len(server.unique) == FILES - 1, timeout=120), harness.output()
        assert wait_until(lambda: not harness.pending(), timeout=60)
        assert harness.stop() == 0
        assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in server.received)
        texts = everything_visible(harness, server)
    assert any("[redacted]" in text for text in texts.values()), "the echo should be masked"
    assert "rejected 1" in texts["status"]
    encoded = [ECHO_ENCODINGS[encoding](f"Bearer {TOKEN}") for encoding in ENCODED_ECHOES]
    pieces = [ECHO_ENCODINGS[encoding](TOKEN[:6]) for encoding in ENCODED_ECHOES[:-1]]
    assert_absent([TOKEN, TOKEN[:6], *encoded, *pieces, *key_material(key)], texts)


def test_token_from_the_environment_never_leaks(
    harness: Harness, corpus: Path, endpoint: LoopbackEndpoint
) -> None:
    harness.write_config(
        harness.tmp / "token", endpoint={"token_file": None, "token_env": "ACQ_TEST_TOKEN"}
    )
    endpoint.fail_next(1, "fail", text=f"you sent {ENV_TOKEN}")
    drop_files(harness, corpus, FILES)
    with RawListener() as proxy:
        # proxies from the environment are ignored: the plain-http loopback exchange
        # (token included) must not take a detour through one
        proxy_url = f"http://127.0.0.1:{proxy.port}"
        harness.start(
            env={
                "ACQ_TEST_TOKEN": ENV_TOKEN,
                "HTTP_PROXY": proxy_url,
                "http_proxy": proxy_url,
                "ALL_PROXY": "socks5://127.0.0.1:1080",
            }
        )
        assert endpoint.wait_for(FILES, timeout=120), harness.output()
        assert harness.stop() == 0
        assert proxy.received == b""
    assert endpoint.received[-1].headers["authorization"] == f"Bearer {ENV_TOKEN}"
    assert_absent([ENV_TOKEN], everything_visible(harness, endpoint))


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_token_file_readable_by_others_is_warned_about(
    harness: Harness, corpus: Path, endpoint: LoopbackEndpoint
) -> None:
    token_file = harness.tmp / "token"
    token_file.chmod(0o644)
    drop_files(harness, corpus, FILES)
    harness.start()
    assert endpoint.wait_for(FILES, timeout=120), harness.output()
    assert harness.stop() == 0
    (warning,) = [e for e in harness.events() if e.get("event") == "token_file_permissions"]
    assert warning["level"] == "warning"
    assert warning["path"] == str(token_file)
    assert f"chmod 600 {token_file}" in warning["hint"]
    assert "token_file_permissions" in harness.console.read_text()
    assert_absent([TOKEN], everything_visible(harness, endpoint))


def test_a_token_in_the_config_itself_is_refused(harness: Harness) -> None:
    inline = "inline-secret-9a8b7c6d5e"
    config = harness.config.read_text()
    assert '  type: "http"\n' in config
    harness.config.write_text(
        config.replace('  type: "http"\n', f'  type: "http"\n  token: {inline}\n')
    )
    result = harness.command("check")
    assert result.returncode == 2
    assert "endpoint.token" in result.stderr
    assert inline not in result.stdout + result.stderr
