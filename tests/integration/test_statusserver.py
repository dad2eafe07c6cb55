"""The status server of a real daemon: files harvested and delivered to the loopback
endpoint, ``/healthz`` and ``/metrics`` asked over HTTP, and the status page loaded in a
real headless Chromium (Debian's ``chromium``, driven by Playwright; ``.ci/run`` installs
it) whose screenshot is kept as a test artifact."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.endpoint import LoopbackEndpoint
from tests.helpers import wait_until
from tests.integration.conftest import SMALL_TIFFS, Harness, drop_files
from tests.test_metrics import samples_of

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
#: where CI keeps what the browser test saw (``.ci/run`` sets it)
ARTIFACTS_ENV = "ACQHARVEST_ARTIFACTS"
STATUS_TOKEN = "status-token-for-integration-tests"
LOOPBACK = 'status_server: {listen: "127.0.0.1:0"}\n'


def _serve(harness: Harness, status_yaml: str = LOOPBACK, env: dict[str, str] | None = None) -> str:
    """Start the daemon with a status server; its URL, as the daemon logged it."""
    harness.write_config(harness.tmp / "token", more_yaml=status_yaml)
    harness.start(env)
    assert harness.wait_log("status_server_started", timeout=30), harness.output()
    (started,) = [e for e in harness.events() if e["event"] == "status_server_started"]
    url = str(started["url"])
    assert url.startswith("http://127.0.0.1:")
    return url


def _metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = httpx.get(f"{url}/metrics", timeout=10)
    assert answer.status_code == 200
    return samples_of(answer.text)


def test_healthz_and_metrics_follow_a_real_harvest(harness: Harness, corpus: Path) -> None:
    url = _serve(harness)
    folder = (("folder", str(harness.watch)),)
    sink = (("sink", harness.endpoint.url),)
    before = _metrics(url)
    assert before["acqharvest_files_seen_total", folder] == 0
    assert before["acqharvest_watch_up", folder] == 1

    drop_files(harness, corpus, 3)
    harness.mark()
    assert harness.endpoint.wait_for(3, timeout=60), harness.output()
    # the endpoint stored them before the daemon recorded the confirmation: wait for that
    assert wait_until(
        lambda: _metrics(url)["acqharvest_packages_delivered_total", sink] == 3, timeout=30
    )

    after = _metrics(url)
    assert after["acqharvest_files_seen_total", folder] == 3
    assert after["acqharvest_files_settled_total", folder] == 3
    assert after["acqharvest_packages_built_total", sink] == 3
    assert after["acqharvest_packages_rejected_total", sink] == 0
    assert after["acqharvest_delivery_latency_seconds_count", sink] == 3
    assert after["acqharvest_outbox_packages", (("state", "delivered"),)] == 3
    assert after["acqharvest_outbox_packages", (("state", "pending"),)] == 0
    health = httpx.get(f"{url}/healthz", timeout=10)
    assert health.status_code == 200
    body = health.json()
    assert body["healthy"] is True
    assert body["watchers"][str(harness.watch)]["alive"] is True
    assert body["outbox"]["delivered"] == 3
    assert body["last_delivery"] is not None
    assert body["last_error"][str(harness.watch)] is None

    # the endpoint refuses the next one: counted, kept in the outbox, named per folder
    harness.endpoint.behave("reject", text="schema says no")
    refused = Path(SMALL_TIFFS[3]).name
    shutil.copyfile(corpus / SMALL_TIFFS[3], harness.watch / refused)
    harness.mark()
    assert wait_until(
        lambda: _metrics(url)["acqharvest_packages_rejected_total", sink] == 1, timeout=60
    ), harness.output()
    body = httpx.get(f"{url}/healthz", timeout=10).json()
    assert body["healthy"] is True  # the daemon is fine; the endpoint said no
    assert body["outbox"]["rejected"] == 1
    assert refused in body["last_error"][str(harness.watch)]["error"]
    assert "schema says no" in body["last_error"][str(harness.watch)]["error"]
    assert harness.stop() == 0


def test_a_token_guards_the_daemons_status_and_is_never_logged(harness: Harness) -> None:
    status = 'status_server: {listen: "127.0.0.1:0", token_env: ACQ_STATUS_TOKEN}\n'
    url = _serve(harness, status, env={"ACQ_STATUS_TOKEN": STATUS_TOKEN})

    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 401
    bearer = {"Authorization": f"Bearer {STATUS_TOKEN}"}
    assert httpx.get(f"{url}/metrics", headers=bearer, timeout=10).status_code == 200
    assert harness.stop() == 0
    assert STATUS_TOKEN not in harness.output()


@pytest.mark.parametrize(
    ("status", "message"),
    [
        pytest.param(
            'status_server: {listen: "0.0.0.0:9847"}\n',
            "status_server.listen: 0.0.0.0 is not a loopback address",
            id="all-interfaces",
        ),
        pytest.param(
            'status_server: {listen: "127.0.0.1:0", token_file: /nonexistent/status.token}\n',
            "config error: status_server: token file /nonexistent/status.token does not exist",
            id="token-file-missing",
        ),
    ],
)
def test_a_status_server_that_cannot_be_set_up_stops_the_start(
    tmp_path: Path, endpoint: LoopbackEndpoint, status: str, message: str
) -> None:
    harness = Harness(tmp_path, endpoint)
    harness.write_config(tmp_path / "token", more_yaml=status)

    result = harness.command("run")

    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not harness.pending_dir.exists(), "nothing is written before the config is good"


def test_healthz_is_503_while_a_watch_folder_is_gone(
    tmp_path: Path, endpoint: LoopbackEndpoint
) -> None:
    # not the guarded fixture: this test deletes the watched folder itself
    harness = Harness(tmp_path, endpoint, workers=0)
    url = _serve(harness)
    try:
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
        shutil.rmtree(harness.watch)

        # the daemon's health check runs every 10 s and cannot restart a missing folder
        def unhealthy() -> bool:
            return httpx.get(f"{url}/healthz", timeout=10).status_code == 503

        assert wait_until(unhealthy, timeout=60, interval=0.5), harness.output()
        body = httpx.get(f"{url}/healthz", timeout=10).json()
        assert body["watchers"][str(harness.watch)]["alive"] is False
        assert body["problems"] == [
            f"{harness.watch} is not watched: {body['watchers'][str(harness.watch)]['problem']}"
        ]

        harness.watch.mkdir()
        assert wait_until(lambda: not unhealthy(), timeout=60, interval=0.5), harness.output()
        restarts = _metrics(url)[
            "acqharvest_watch_restarts_total", (("folder", str(harness.watch)),)
        ]
        assert restarts >= 1
        assert harness.stop() == 0
    finally:
        if harness.process is not None:
            harness.kill()


# --------------------------------------------------------------------------- the browser


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Page]:
    """A page in the system's headless Chromium; its screenshot is kept after the test."""
    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing: apt-get install -y chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            # a shared screen in the lab: 1280x800
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            # a loaded CI machine: every check waits generously, none asserts on time
            page.set_default_timeout(60_000)
            expect.set_options(timeout=30_000)
            yield page
        finally:
            browser.close()


def _keep_screenshot(page: Page, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    artifacts = os.environ.get(ARTIFACTS_ENV)
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(artifacts) / name)
    return shot


def test_the_status_page_in_a_real_browser(
    harness: Harness, corpus: Path, browser_page: Page, tmp_path: Path
) -> None:
    url = _serve(harness)
    hostile = "<img src=x onerror=window.pwned=1>.tif"
    drop_files(harness, corpus, 2)
    shutil.copyfile(corpus / SMALL_TIFFS[2], harness.watch / hostile)
    # a TIFF cut short: the adapter fails on it, and the page says why
    (harness.watch / "broken.tif").write_bytes((corpus / SMALL_TIFFS[0]).read_bytes()[:300])
    harness.mark()
    assert harness.endpoint.wait_for(3, timeout=60), harness.output()
    assert harness.wait_log("extraction_failed", timeout=60), harness.output()

    page = browser_page
    page.goto(url + "/")
    expect(page.locator("#verdict")).to_have_text("acqharvest is running")
    # every package the endpoint received is a row, named by its file, delivered
    names = sorted(body["files"][0]["path"] for body in harness.packages().values())
    assert hostile in names
    for name in names:
        row = page.locator("tr.acquisition").filter(has=page.locator("td.name", has_text=name))
        expect(row).to_have_count(1)
        # the page reloads itself: the confirmation may reach the daemon just after
        expect(row).to_have_attribute("data-state", "delivered", timeout=30_000)
        expect(row.locator(".state")).to_have_text("delivered")
    assert page.evaluate("window.pwned") is None, "a file name ran as markup"
    broken = page.locator("tr.acquisition").filter(has=page.locator("td.name", has_text="broken"))
    expect(broken).to_have_attribute("data-state", "failed")
    expect(broken.locator(".reason")).to_contain_text("truncated")
    rows = page.locator("tr.acquisition td.name").all_inner_texts()
    assert sorted(rows) == sorted([*names, "broken.tif"])

    # a new acquisition shows up by the page's own refresh, without the test reloading it
    newcomer = "alice/neuro/" + Path(SMALL_TIFFS[3]).name
    (harness.watch / newcomer).parent.mkdir(parents=True)
    shutil.copyfile(corpus / SMALL_TIFFS[3], harness.watch / newcomer)
    harness.mark()
    assert harness.endpoint.wait_for(4, timeout=60), harness.output()
    fresh = page.locator("tr.acquisition").filter(has=page.locator("td.name", has_text=newcomer))
    expect(fresh).to_have_attribute("data-state", "delivered", timeout=60_000)
    expect(page.locator("tr.acquisition")).to_have_count(5)
    assert page.locator("tr.acquisition td.name").first.inner_text() == newcomer

    shot = _keep_screenshot(page, tmp_path, "status-page.png")
    assert shot.stat().st_size > 10_000
    assert harness.stop() == 0


def test_ci_installs_chromium_for_the_browser_test() -> None:
    # the browser test must run in CI, not be skipped there: .ci/run installs the browser
    ci = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    assert "apt-get install -y chromium" in ci
    assert ARTIFACTS_ENV in ci
    version = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, check=True)
    assert "Chromium" in version.stdout
