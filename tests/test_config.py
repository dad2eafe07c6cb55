"""Config loading: YAML to frozen Settings, and every error naming file, line and key path."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest

from acqharvest.config import (
    CONFIG_ENV,
    DEFAULT_EXCLUDE,
    EMBEDDED_SOURCE,
    MAX_MEMORY_MB,
    MAX_NODES,
    MAX_WORKERS,
    ConfigError,
    is_embedded_default,
    load_settings,
    parse_settings,
)
from acqharvest.model import (
    DeidentifySettings,
    EndpointSettings,
    InstrumentSettings,
    LogSettings,
    Settings,
    WatchSettings,
)
from acqharvest.settings import (
    AlternateIdentifier,
    FacilitySettings,
    OwnerSettings,
    RelatedIdentifier,
    TypedIdentifier,
)

# The smallest valid config; the error tests change one line of it.
MINIMAL = """\
instrument:
  id: urn:test:instrument
watch:
  - path: acquisitions
endpoint:
  type: directory
  path: harvested
state_dir: state
"""

FULL = """\
instrument:
  id: urn:test:instrument
  name: Test scope
  manufacturer: ACME
  model: 9000
  serial_number: 12345
  type: microscope
  owner: Imaging facility
watch:
  - path: /data/scope
    include: ["*.tif", "*.dcm"]
    exclude: []
    recursive: false
    settle_seconds: 2.5
    mode: polling
    path_template: "{operator}/{project}"
    group_quiet_seconds: 30
    group_timeout_seconds: 600
    adapters: [dicom]
  - path: second
endpoint:
  type: http
  url: https://harvest.example.org/packages
  token_file: secrets/token
  ca_bundle: /etc/ssl/ca.pem
  timeout_seconds: 5
  max_backoff_seconds: 60
state_dir: /var/lib/acqharvest
deidentify:
  enabled: false
  retain_uids: true
  retain_dates: true
  retain_patient_characteristics: true
log:
  level: debug
  format: json
  file: logs/agent.log
workers: 0
rescan_seconds: 30
"""


def parse(text: str, base_dir: Path = Path("/etc/acqharvest")) -> Settings:
    return parse_settings(text, source="acqharvest.yaml", base_dir=base_dir)


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    assert str(caught.value) == "\n".join(caught.value.messages)
    return caught.value.messages


def test_full_config_becomes_exactly_these_settings(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "acqharvest.yaml"
    config.parent.mkdir()
    config.write_text(FULL, encoding="utf-8")

    settings = load_settings(config)

    assert settings == Settings(
        instrument=InstrumentSettings(
            id="urn:test:instrument",
            name="Test scope",
            manufacturer="ACME",
            model="9000",
            serial_number="12345",
            type="microscope",
            owner="Imaging facility",
        ),
        watch=(
            WatchSettings(
                path=Path("/data/scope"),
                include=("*.tif", "*.dcm"),
                exclude=(),
                recursive=False,
                settle_seconds=2.5,
                mode="polling",
                path_template="{operator}/{project}",
                group_quiet_seconds=30.0,
                group_timeout_seconds=600.0,
                adapters=("dicom",),
            ),
            WatchSettings(path=config.parent / "second", exclude=DEFAULT_EXCLUDE),
        ),
        endpoint=EndpointSettings(
            type="http",
            url="https://harvest.example.org/packages",
            token_file=config.parent / "secrets" / "token",
            ca_bundle=Path("/etc/ssl/ca.pem"),
            timeout_seconds=5.0,
            max_backoff_seconds=60.0,
        ),
        state_dir=Path("/var/lib/acqharvest"),
        deidentify=DeidentifySettings(
            enabled=False,
            retain_uids=True,
            retain_dates=True,
            retain_patient_characteristics=True,
            dates="keep",  # what the deprecated retain_dates: true means
        ),
        log=LogSettings(level="debug", format="json", file=config.parent / "logs" / "agent.log"),
        workers=0,
        rescan_seconds=30.0,
        source=str(config),
    )


def test_defaults_fill_every_optional_key() -> None:
    settings = parse(MINIMAL)

    (watch,) = settings.watch
    assert watch.exclude == DEFAULT_EXCLUDE
    assert watch.include == ("*",)
    assert watch.settle_seconds == 10.0
    assert watch.mode == "auto"
    assert watch.recursive is True
    assert settings.deidentify == DeidentifySettings()
    assert settings.log == LogSettings()
    assert (settings.workers, settings.rescan_seconds) == (2, 300.0)


def test_default_exclude_skips_partial_files_but_keeps_zarr_metadata() -> None:
    assert {"*.tmp", "*.part", "*.crdownload", "~$*", ".DS_Store"} <= set(DEFAULT_EXCLUDE)
    assert not any(pattern in (".*", "*") for pattern in DEFAULT_EXCLUDE)


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "acqharvest.yaml").write_text(MINIMAL, encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    settings = load_settings(Path("../conf/acqharvest.yaml"))

    assert settings.watch[0].path == folder / "acquisitions"
    assert settings.endpoint.path == folder / "harvested"
    assert settings.state_dir == folder / "state"
    assert settings.source == "../conf/acqharvest.yaml"


def test_embedded_default_resolves_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)

    settings = load_settings(None, cwd=tmp_path)

    assert is_embedded_default(settings)
    assert settings.source == EMBEDDED_SOURCE
    assert settings.instrument == InstrumentSettings(
        id="urn:acqharvest:demo-instrument", name="Demo instrument"
    )
    assert [w.path for w in settings.watch] == [tmp_path / "acquisitions"]
    assert settings.watch[0].settle_seconds == 2.0
    assert settings.endpoint.type == "directory"
    assert settings.endpoint.path == tmp_path / "harvested"
    assert settings.state_dir == tmp_path / ".acqharvest"


def test_environment_variable_names_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "from-env.yaml"
    config.write_text(MINIMAL.replace("urn:test:instrument", "urn:test:env"), encoding="utf-8")
    monkeypatch.setenv(CONFIG_ENV, str(config))

    settings = load_settings(None)

    assert settings.instrument.id == "urn:test:env"
    assert settings.source == str(config)
    assert not is_embedded_default(settings)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"

    with pytest.raises(ConfigError) as caught:
        load_settings(missing)

    (message,) = caught.value.messages
    assert message.startswith(f"{missing}: cannot read config file: ")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            "state_dir: state",
            "state_dir: state\nsettle_seconds: 3",
            "acqharvest.yaml:9: settle_seconds: unknown key (allowed: instrument, watch, "
            "endpoint, state_dir, deidentify, log, workers, rescan_seconds, "
            "extract_timeout_seconds, priority, checksum_max_mb_per_s, extract_memory_mb, "
            "sidecar_names, people, "
            "people_include_email, facility, license, status_server, "
            "original_metadata_max_bytes)",
            id="unknown-top-level-key",
        ),
        pytest.param(
            "  - path: acquisitions",
            "  - path: acquisitions\n    settle_second: 3",
            "acqharvest.yaml:5: watch[0].settle_second: unknown key (did you mean "
            "'settle_seconds'? allowed: path, include, exclude, recursive, settle_seconds, "
            "settle_on_close, blank_head_wait_seconds, mode, path_template, "
            "group_quiet_seconds, group_timeout_seconds, adapters, defer_while_writing, "
            "defer_max_seconds)",
            id="unknown-nested-key",
        ),
        pytest.param(
            "  - path: acquisitions",
            "  - path: acquisitions\n    settle_seconds: ten",
            "acqharvest.yaml:5: watch[0].settle_seconds: Input should be a valid number, "
            "unable to parse string as a number",
            id="wrong-type",
        ),
        pytest.param(
            "  id: urn:test:instrument",
            "  name: no id here",
            "acqharvest.yaml:1: instrument.id: required key is missing",
            id="missing-instrument-id",
        ),
        pytest.param(
            "  id: urn:test:instrument",
            '  id: "  "',
            "acqharvest.yaml:2: instrument.id: must not be empty",
            id="blank-instrument-id",
        ),
        pytest.param(
            "state_dir: state",
            "state_dir: acquisitions/.acqharvest",
            "acqharvest.yaml:8: state_dir: /etc/acqharvest/acquisitions/.acqharvest is inside "
            "watch[0].path (/etc/acqharvest/acquisitions); the state folder must be outside "
            "every watched folder",
            id="state-dir-inside-watch",
        ),
        pytest.param(
            "state_dir: state",
            "state_dir: ./acquisitions/",
            "acqharvest.yaml:8: state_dir: /etc/acqharvest/acquisitions is the same folder as "
            "watch[0].path (/etc/acqharvest/acquisitions); the state folder must be outside "
            "every watched folder",
            id="state-dir-is-watch",
        ),
        pytest.param(
            "state_dir: state",
            "state_dir: /etc",
            "acqharvest.yaml:8: state_dir: /etc contains watch[0].path "
            "(/etc/acqharvest/acquisitions); the state folder must be outside every watched "
            "folder",
            id="state-dir-contains-watch",
        ),
        pytest.param(
            "  path: harvested",
            "  path: acquisitions/out",
            "acqharvest.yaml:7: endpoint.path: /etc/acqharvest/acquisitions/out is inside "
            "watch[0].path (/etc/acqharvest/acquisitions); delivered packages would be "
            "harvested again",
            id="endpoint-dir-inside-watch",
        ),
        pytest.param(
            "  type: directory\n  path: harvested",
            "  type: http\n  url: http://harvest.example.org/packages",
            "acqharvest.yaml:7: endpoint.url: plain http:// to a host other than loopback "
            "would send packages and the token unencrypted; use https:// or set "
            "endpoint.allow_plaintext: true",
            id="plaintext-http",
        ),
        pytest.param(
            "  type: directory\n  path: harvested",
            "  type: http\n  url: https://h.example.org\n  token_file: t\n  token_env: TOKEN",
            "acqharvest.yaml:9: endpoint.token_env: token_file and token_env are mutually "
            "exclusive; set only one",
            id="two-token-sources",
        ),
        pytest.param(
            "  type: directory\n  path: harvested",
            "  type: http",
            "acqharvest.yaml:5: endpoint.url: required when type is http",
            id="http-without-url",
        ),
        pytest.param(
            "  type: directory\n  path: harvested",
            "  type: http\n  url: ftp://h.example.org/in",
            "acqharvest.yaml:7: endpoint.url: must be an http:// or https:// URL with a host name",
            id="not-an-http-url",
        ),
        pytest.param(
            "  path: harvested",
            "  url: https://h.example.org",
            "acqharvest.yaml:5: endpoint.path: required when type is directory",
            id="directory-without-path",
        ),
        pytest.param(
            "  type: directory\n  path: harvested",
            "  type: http\n  url: https://ingest:pa55@h.example.org/in",
            "acqharvest.yaml:7: endpoint.url: must not carry a user name or password "
            "(user:pass@); put the credential in token_file or token_env",
            id="credentials-in-url",
        ),
        pytest.param(
            "  type: directory\n  path: harvested",
            "  type: http\n  url: https://h.example.org/in?project=b104&api_key=f00d",
            "acqharvest.yaml:7: endpoint.url: must not carry a credential in its query "
            "(api_key); put it in token_file or token_env",
            id="credential-in-url-query",
        ),
        pytest.param(
            "  type: directory\n  path: harvested",
            "  type: http\n  url: http://127.0.0.1:8080/in\n  proxy: http://proxy:3128",
            "acqharvest.yaml:8: endpoint.proxy: a proxy is only used for an https:// url "
            "(tunnelled, TLS end to end); with a plain http:// url it would see the packages "
            "and the token",
            id="proxy-for-plain-http",
        ),
        pytest.param(
            "  type: directory\n  path: harvested",
            "  type: http\n  url: https://h.example.org/in\n  proxy: socks5://proxy:1080",
            "acqharvest.yaml:8: endpoint.proxy: must be an http:// or https:// proxy URL with "
            "a host name",
            id="socks-proxy",
        ),
        pytest.param(
            "  - path: acquisitions",
            "  - path: acquisitions\n    mode: fast",
            "acqharvest.yaml:5: watch[0].mode: Input should be 'auto', 'native' or 'polling'",
            id="bad-mode",
        ),
        pytest.param(
            "  - path: acquisitions",
            "  - path: acquisitions\n    settle_seconds: -1",
            "acqharvest.yaml:5: watch[0].settle_seconds: Input should be greater than or "
            "equal to 0",
            id="negative-settle",
        ),
        pytest.param(
            "state_dir: state",
            "state_dir: state\nworkers: -2",
            "acqharvest.yaml:9: workers: Input should be greater than or equal to 0",
            id="negative-workers",
        ),
        pytest.param(
            "watch:\n  - path: acquisitions",
            "watch: []",
            "acqharvest.yaml:3: watch: must not be empty",
            id="no-watch-folder",
        ),
        pytest.param(
            "state_dir: state",
            "state_dir: state\nlog: info",
            "acqharvest.yaml:9: log: should be a mapping of keys to values",
            id="section-not-a-mapping",
        ),
        pytest.param(
            "  type: directory",
            "  type: directory\n  type: directory",
            "acqharvest.yaml:7: endpoint.type: duplicate key (first set on line 6)",
            id="duplicate-key",
        ),
    ],
)
def test_one_mistake_gives_one_message_with_line_and_key_path(
    old: str, new: str, expected: str
) -> None:
    assert old in MINIMAL
    assert errors_of(MINIMAL.replace(old, new)) == [expected]


@pytest.mark.parametrize(
    "url",
    ["http://localhost:8080/in", "http://127.0.0.1/in", "http://[::1]:9000/in"],
)
def test_plain_http_to_loopback_is_allowed(url: str) -> None:
    text = MINIMAL.replace("  type: directory\n  path: harvested", f"  type: http\n  url: {url}")

    assert parse(text).endpoint.url == url


def test_plain_http_to_a_remote_host_needs_the_opt_in() -> None:
    text = MINIMAL.replace(
        "  type: directory\n  path: harvested",
        "  type: http\n  url: http://lab-server/in\n  allow_plaintext: true",
    )

    endpoint = parse(text).endpoint
    assert (endpoint.url, endpoint.allow_plaintext) == ("http://lab-server/in", True)


def test_an_https_endpoint_may_go_through_a_proxy_with_credentials() -> None:
    text = MINIMAL.replace(
        "  type: directory\n  path: harvested",
        "  type: http\n  url: https://h.example.org/in\n  proxy: http://me:pw@proxy:3128",
    )

    assert parse(text).endpoint.proxy == "http://me:pw@proxy:3128"


def test_every_mistake_in_a_file_is_reported_at_once() -> None:
    text = """\
instrument:
  name: no id
watch:
  - path: data
    settle_seconds: soon
    colour: blue
endpoint:
  type: http
  url: http://remote.example.org/in
  token_file: token
  token_env: TOKEN
state_dir: data/state
workers: many
"""
    assert errors_of(text) == [
        "acqharvest.yaml:1: instrument.id: required key is missing",
        "acqharvest.yaml:5: watch[0].settle_seconds: Input should be a valid number, "
        "unable to parse string as a number",
        "acqharvest.yaml:6: watch[0].colour: unknown key (allowed: path, include, exclude, "
        "recursive, settle_seconds, settle_on_close, blank_head_wait_seconds, mode, "
        "path_template, group_quiet_seconds, group_timeout_seconds, adapters, "
        "defer_while_writing, defer_max_seconds)",
        "acqharvest.yaml:9: endpoint.url: plain http:// to a host other than loopback would "
        "send packages and the token unencrypted; use https:// or set "
        "endpoint.allow_plaintext: true",
        "acqharvest.yaml:11: endpoint.token_env: token_file and token_env are mutually "
        "exclusive; set only one",
        "acqharvest.yaml:12: state_dir: /etc/acqharvest/data/state is inside watch[0].path "
        "(/etc/acqharvest/data); the state folder must be outside every watched folder",
        "acqharvest.yaml:13: workers: Input should be a valid integer, unable to parse "
        "string as an integer",
    ]


def test_yaml_syntax_error_names_the_line() -> None:
    text = MINIMAL.replace("  type: directory", "  type: [directory")

    (message,) = errors_of(text)

    assert message.startswith("acqharvest.yaml:7: YAML syntax error: ")
    assert "flow sequence" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "acqharvest.yaml: the config file is empty"),
        ("# only a comment\n", "acqharvest.yaml: the config file is empty"),
        ("\n- a\n- b\n", "acqharvest.yaml:2: the config must be a mapping of keys to values"),
        ("just words\n", "acqharvest.yaml:1: the config must be a mapping of keys to values"),
    ],
)
def test_a_file_that_is_not_a_mapping_is_refused(text: str, expected: str) -> None:
    assert errors_of(text) == [expected]


def test_log_file_and_token_file_inside_a_watch_folder_are_refused(tmp_path: Path) -> None:
    watch = tmp_path / "watch"
    text = (
        "instrument: {id: x}\n"
        f"watch: [{{path: {watch}}}]\n"
        f"endpoint: {{type: http, url: 'https://h.example/p', token_file: {watch / 't'}}}\n"
        f"state_dir: {tmp_path / 'state'}\n"
        f"log: {{file: {watch / 'acq.log'}}}\n"
    )
    with pytest.raises(ConfigError) as raised:
        parse_settings(text, source="c.yaml", base_dir=tmp_path)
    joined = "\n".join(raised.value.messages)
    assert "c.yaml:3: endpoint.token_file:" in joined
    assert "c.yaml:5: log.file:" in joined
    assert "the log would be harvested as it grows" in joined


def _linked_config(tmp_path: Path, **paths: Path) -> str:
    """A config watching ``tmp_path/watch`` (or ``paths["watch"]``) with the paths given."""
    watch = paths.get("watch", tmp_path / "watch")
    state = paths.get("state", tmp_path / "state")
    log = f"log: {{file: {paths['log']}}}\n" if "log" in paths else ""
    out = paths.get("out", tmp_path / "out")
    return (
        "instrument: {id: x}\n"
        f"watch: [{{path: {watch}}}]\n"
        f"endpoint: {{type: directory, path: {out}}}\n"
        f"state_dir: {state}\n{log}"
    )


def test_a_state_dir_reached_through_a_link_into_a_watch_folder_is_refused(
    tmp_path: Path,
) -> None:
    watch = tmp_path / "watch"
    watch.mkdir()
    (tmp_path / "elsewhere").symlink_to(watch)
    state = tmp_path / "elsewhere" / "state"

    with pytest.raises(ConfigError) as raised:
        parse_settings(_linked_config(tmp_path, state=state), source="c.yaml", base_dir=tmp_path)

    assert raised.value.messages == [
        f"c.yaml:4: state_dir: {state} (really {watch / 'state'}) is inside watch[0].path "
        f"({watch}); the state folder must be outside every watched folder"
    ]


def test_a_watch_folder_linked_to_the_state_dirs_parent_is_refused(tmp_path: Path) -> None:
    site, link = tmp_path / "site", tmp_path / "instrument"
    (site / "state").mkdir(parents=True)
    link.symlink_to(site)

    with pytest.raises(ConfigError) as raised:
        parse_settings(
            _linked_config(tmp_path, watch=link, state=site / "state"),
            source="c.yaml",
            base_dir=tmp_path,
        )

    assert raised.value.messages == [
        f"c.yaml:4: state_dir: {site / 'state'} is inside watch[0].path ({link}, really {site}); "
        "the state folder must be outside every watched folder"
    ]


def test_a_log_file_and_endpoint_folder_reached_through_links_are_refused(
    tmp_path: Path,
) -> None:
    watch = tmp_path / "watch"
    watch.mkdir()
    (tmp_path / "logs").symlink_to(watch)
    (tmp_path / "out").symlink_to(watch / "sub")
    text = _linked_config(tmp_path, log=tmp_path / "logs" / "a.log")

    with pytest.raises(ConfigError) as raised:
        parse_settings(text, source="c.yaml", base_dir=tmp_path)

    assert raised.value.messages == [
        f"c.yaml:3: endpoint.path: {tmp_path / 'out'} (really {watch / 'sub'}) is inside "
        f"watch[0].path ({watch}); delivered packages would be harvested again",
        f"c.yaml:5: log.file: {tmp_path / 'logs' / 'a.log'} (really {watch / 'a.log'}) is "
        f"inside watch[0].path ({watch}); the log would be harvested as it grows",
    ]


def test_folders_apart_through_links_are_accepted(tmp_path: Path) -> None:
    # a link is no problem by itself: only where it leads
    (tmp_path / "real-watch").mkdir()
    (tmp_path / "real-state").mkdir()
    (tmp_path / "watch").symlink_to(tmp_path / "real-watch")
    (tmp_path / "state").symlink_to(tmp_path / "real-state")

    settings = parse_settings(_linked_config(tmp_path), source="c.yaml", base_dir=tmp_path)

    assert (settings.watch[0].path, settings.state_dir) == (
        tmp_path / "watch",
        tmp_path / "state",
    )


def _alias_bomb(levels: int) -> str:
    """The "billion laughs": each level a list of nine aliases of the level below."""
    lines = ['  l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "instrument:\n  id: x\n" + "\n".join(lines) + "\n" + MINIMAL.split("\n", 2)[2]


def test_a_yaml_alias_bomb_is_refused_at_once() -> None:
    started = time.monotonic()

    messages = errors_of(_alias_bomb(9))  # 9 ** 10 values: the walk used to never end

    assert time.monotonic() - started < 2
    (message,) = messages
    prefix, rest = message.split(" expand the config to ")
    count, suffix = rest.split(" ", 1)
    assert prefix == "acqharvest.yaml: YAML aliases (*name)"
    assert int(count) > 9**10
    assert suffix == f"values, more than {MAX_NODES}; write the values out"


def test_an_alias_inside_the_node_it_names_is_refused() -> None:
    text = MINIMAL.replace("- path: acquisitions", "- path: acquisitions\n    include: &a [*a]")

    assert errors_of(text) == [
        "acqharvest.yaml: a YAML alias (*name) refers to a node it is inside; write the value out"
    ]


def test_ordinary_anchors_and_aliases_still_work() -> None:
    text = MINIMAL.replace(
        "  - path: acquisitions",
        "  - path: acquisitions\n    exclude: &skip ['*.tmp']\n"
        "  - path: second\n    exclude: *skip",
    )

    assert [ws.exclude for ws in parse(text).watch] == [("*.tmp",), ("*.tmp",)]


def test_yaml_nested_too_deeply_is_a_config_error() -> None:
    text = MINIMAL + "deep: " + "[" * 1000 + "]" * 1000 + "\n"

    assert errors_of(text) == ["acqharvest.yaml: YAML nested too deeply to be a config"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param(
            "    settle_seconds: 1e309",
            "watch[0].settle_seconds: must be a finite number of at most 86400",
            id="infinite-settle",
        ),
        pytest.param(
            "    group_quiet_seconds: .nan",
            "watch[0].group_quiet_seconds: must be a finite number of at most 86400",
            id="nan-quiet",
        ),
        pytest.param(
            "    blank_head_wait_seconds: 86401",
            "watch[0].blank_head_wait_seconds: Input should be less than or equal to 86400",
            id="blank-wait",
        ),
        pytest.param(
            "    group_timeout_seconds: 604801",
            "watch[0].group_timeout_seconds: Input should be less than or equal to 604800",
            id="group-timeout",
        ),
        pytest.param(
            "workers: 10000",
            f"workers: Input should be less than or equal to {MAX_WORKERS}",
            id="workers",
        ),
        pytest.param(
            "rescan_seconds: .inf",
            "rescan_seconds: must be a finite number of at most 604800",
            id="rescan",
        ),
        pytest.param(
            "extract_timeout_seconds: 1e6",
            "extract_timeout_seconds: Input should be less than or equal to 86400",
            id="extract-timeout",
        ),
        pytest.param(
            "extract_memory_mb: 99999999999",
            f"extract_memory_mb: Input should be less than or equal to {MAX_MEMORY_MB}",
            id="memory",
        ),
        pytest.param(
            "endpoint: {type: directory, path: out, timeout_seconds: -.inf}",
            "endpoint.timeout_seconds: must be a finite number of at most 86400",
            id="endpoint-timeout",
        ),
        pytest.param(
            "endpoint: {type: directory, path: out, max_backoff_seconds: 1e12}",
            "endpoint.max_backoff_seconds: Input should be less than or equal to 86400",
            id="backoff",
        ),
    ],
)
def test_every_number_is_finite_and_bounded(line: str, expected: str) -> None:
    if line.startswith("endpoint:"):
        text = MINIMAL.replace("endpoint:\n  type: directory\n  path: harvested\n", "") + line
    elif line.startswith(" "):
        text = MINIMAL.replace("  - path: acquisitions", "  - path: acquisitions\n" + line)
    else:
        text = MINIMAL + line

    (message,) = errors_of(text)

    assert message.split(": ", 1)[1] == expected


def test_numbers_at_their_limits_are_accepted() -> None:
    text = MINIMAL.replace(
        "  - path: acquisitions",
        "  - path: acquisitions\n    settle_seconds: 86400\n    group_timeout_seconds: 604800",
    )
    text += f"workers: {MAX_WORKERS}\nrescan_seconds: 604800\n"

    settings = parse(text)

    assert (settings.watch[0].settle_seconds, settings.workers) == (86400, MAX_WORKERS)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            "  id: urn:test:instrument",
            '  id: "urn:test:a\\nb"',
            "acqharvest.yaml:2: instrument.id: must not contain control characters (found U+000A)",
            id="newline-in-id",
        ),
        pytest.param(
            "  id: urn:test:instrument",
            '  id: "urn:test:\\0"',
            "acqharvest.yaml:2: instrument.id: must not contain control characters (found U+0000)",
            id="nul-in-id",
        ),
        pytest.param(
            "  id: urn:test:instrument",
            '  id: x\n  name: "scope\\x85"',
            "acqharvest.yaml:3: instrument.name: must not contain control characters "
            "(found U+0085)",
            id="c1-in-name",
        ),
        pytest.param(
            "  id: urn:test:instrument",
            '  id: x\n  serial_number: "\\e[31m12"',
            "acqharvest.yaml:3: instrument.serial_number: must not contain control "
            "characters (found U+001B)",
            id="escape-in-serial",
        ),
        pytest.param(
            "state_dir: state",
            'state_dir: "st\\0ate"',
            "acqharvest.yaml:8: state_dir: must not contain control characters (found U+0000)",
            id="nul-in-path",
        ),
        pytest.param(
            "  - path: acquisitions",
            '  - path: "acqui\\tsitions"',
            "acqharvest.yaml:4: watch[0].path: must not contain control characters (found U+0009)",
            id="tab-in-watch-path",
        ),
    ],
)
def test_control_characters_are_refused_in_ids_names_and_paths(
    old: str, new: str, expected: str
) -> None:
    assert old in MINIMAL
    assert errors_of(MINIMAL.replace(old, new)) == [expected]


def test_validating_a_config_does_not_load_the_delivery_stage() -> None:
    # config checks URLs with acqharvest.urls; importing the delivery stage (and httpx
    # with it) made `acqharvest config`, and every worker process, pay for an HTTP client.
    probe = (
        "import sys, acqharvest.config; "
        "print(sorted({'httpx', 'acqharvest.deliver'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


PIDINST = """\
instrument:
  id: https://hdl.handle.net/21.11157/example-lsm980
  name: LSM 980
  manufacturer: Carl Zeiss Microscopy
  model: LSM 980
  serial_number: "2801000123"
  type: confocal microscope
  owner: Example Imaging Facility
  landing_page: https://imaging.example.org/instruments/lsm980
  description: Point-scanning confocal
  owners:
    - {name: Example Imaging Facility, identifier: https://ror.org/05abcde12,
       identifier_type: ROR, contact: imaging@example.org}
  manufacturer_identifier: {identifier: https://ror.org/01xnwqx93, identifier_type: ROR}
  model_identifier: {identifier: https://example.org/lsm980, identifier_type: URL}
  type_identifier:
    identifier: http://purl.obolibrary.org/obo/FBbi_00000251
    identifier_type: FBbi
  measured_variables: [fluorescence intensity]
  commissioned: 2021-03-01
  decommissioned: "2031-03-01"
  alternate_identifiers:
    - {identifier: 4711, identifier_type: InventoryNumber}
  related_identifiers:
    - {identifier: "https://example.org/det", identifier_type: URL,
       relation_type: HasComponent, name: detector}
watch:
  - path: acquisitions
endpoint:
  type: directory
  path: harvested
state_dir: state
people: lists/people.xlsx
people_include_email: true
facility: {name: Example Imaging Facility, ror: 05ABCDE12}
license: CC-BY-4.0
"""


def test_a_full_pidinst_config_becomes_these_settings() -> None:
    settings = parse(PIDINST)

    assert settings.instrument == InstrumentSettings(
        id="https://hdl.handle.net/21.11157/example-lsm980",
        name="LSM 980",
        manufacturer="Carl Zeiss Microscopy",
        model="LSM 980",
        serial_number="2801000123",
        type="confocal microscope",
        owner="Example Imaging Facility",
        landing_page="https://imaging.example.org/instruments/lsm980",
        description="Point-scanning confocal",
        owners=(
            OwnerSettings(
                "Example Imaging Facility",
                "https://ror.org/05abcde12",
                "ROR",
                "imaging@example.org",
            ),
        ),
        manufacturer_identifier=TypedIdentifier("https://ror.org/01xnwqx93", "ROR"),
        model_identifier=TypedIdentifier("https://example.org/lsm980", "URL"),
        type_identifier=TypedIdentifier("http://purl.obolibrary.org/obo/FBbi_00000251", "FBbi"),
        measured_variables=("fluorescence intensity",),
        commissioned=date(2021, 3, 1),
        decommissioned=date(2031, 3, 1),
        # an inventory number written as a YAML number is text, like serial_number
        alternate_identifiers=(AlternateIdentifier("4711", "InventoryNumber"),),
        related_identifiers=(
            RelatedIdentifier("https://example.org/det", "URL", "HasComponent", "detector"),
        ),
    )
    # relative to the config file's folder, like every path
    assert settings.people == Path("/etc/acqharvest/lists/people.xlsx")
    assert settings.people_include_email is True
    # a bare ROR id becomes its URI
    assert settings.facility == FacilitySettings(
        "Example Imaging Facility", "https://ror.org/05abcde12"
    )
    assert settings.license == "CC-BY-4.0"


def test_the_flat_instrument_keys_of_older_configs_stay_valid() -> None:
    settings = parse(FULL)
    assert settings.instrument.owner == "Imaging facility"
    assert settings.instrument.owners == ()
    assert (settings.people, settings.facility, settings.license) == (None, None, None)
    assert settings.people_include_email is False


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            "  landing_page: https://imaging.example.org/instruments/lsm980",
            "  landing_page: imaging.example.org/lsm980",
            "acqharvest.yaml:9: instrument.landing_page: must be an http:// or https:// URL "
            "with a host name",
            id="landing-page-not-a-url",
        ),
        pytest.param(
            "       identifier_type: ROR, contact: imaging@example.org}",
            "       contact: imaging@example.org}",
            "acqharvest.yaml:12: instrument.owners[0].identifier_type: set identifier and "
            "identifier_type together",
            id="owner-identifier-without-type",
        ),
        pytest.param(
            "  model: LSM 980\n",
            "",
            "acqharvest.yaml:14: instrument.model_identifier: needs instrument.model set too",
            id="model-identifier-without-model",
        ),
        pytest.param(
            '  decommissioned: "2031-03-01"',
            "  decommissioned: 2020-01-01",
            "acqharvest.yaml:21: instrument.decommissioned: must not be before commissioned",
            id="decommissioned-before-commissioned",
        ),
        pytest.param(
            "  commissioned: 2021-03-01",
            "  commissioned: March 2021",
            "acqharvest.yaml:20: instrument.commissioned: Input should be a valid date or "
            "datetime, invalid character in year",
            id="commissioned-not-a-date",
        ),
        pytest.param(
            "identifier_type: InventoryNumber}",
            "identifier_type: Inventory}",
            "acqharvest.yaml:23: instrument.alternate_identifiers[0].identifier_type: Input "
            "should be 'SerialNumber', 'InventoryNumber' or 'Other'",
            id="alternate-identifier-type-not-pidinsts",
        ),
        pytest.param(
            "relation_type: HasComponent",
            "relation_type: Contains",
            "acqharvest.yaml:26: instrument.related_identifiers[0].relation_type: Input "
            "should be 'IsDescribedBy', 'IsNewVersionOf', 'IsPreviousVersionOf', "
            "'HasComponent', 'IsComponentOf', 'References', 'HasMetadata', 'WasUsedIn', "
            "'IsIdenticalTo' or 'IsAttachedTo'",
            id="relation-type-not-pidinsts",
        ),
        pytest.param(
            "ror: 05ABCDE12",
            "ror: https://ror.org/5abcde12",
            "acqharvest.yaml:35: facility.ror: must be a ROR id: https://ror.org/ and nine "
            "characters (0, six letters or digits, two digits), or those nine alone",
            id="ror-malformed",
        ),
        pytest.param(
            "license: CC-BY-4.0",
            "license: CC BY 4.0",
            "acqharvest.yaml:36: license: must be one license of the SPDX list such as "
            "CC-BY-4.0 or CC0-1.0 (https://spdx.org/licenses/), or an http(s) URL to the terms",
            id="license-with-spaces",
        ),
        pytest.param(
            "license: CC-BY-4.0",
            "license: proprietary",
            "acqharvest.yaml:36: license: must be one license of the SPDX list such as "
            "CC-BY-4.0 or CC0-1.0 (https://spdx.org/licenses/), or an http(s) URL to the terms",
            id="license-not-on-the-spdx-list",
        ),
        pytest.param(
            "license: CC-BY-4.0",
            "license: CC-BY-4.0 OR MIT",
            "acqharvest.yaml:36: license: must be one license of the SPDX list such as "
            "CC-BY-4.0 or CC0-1.0 (https://spdx.org/licenses/), or an http(s) URL to the terms",
            id="license-an-expression",
        ),
        pytest.param(
            "license: CC-BY-4.0",
            "license: https://",
            "acqharvest.yaml:36: license: must be an http:// or https:// license URL with a "
            "host name",
            id="license-url-without-host",
        ),
    ],
)
def test_a_pidinst_mistake_names_its_key(old: str, new: str, expected: str) -> None:
    assert old in PIDINST
    assert errors_of(PIDINST.replace(old, new)) == [expected]


def test_a_license_id_is_spelled_as_the_spdx_list_spells_it() -> None:
    assert parse(PIDINST.replace("license: CC-BY-4.0", "license: cc0-1.0")).license == "CC0-1.0"


def test_a_license_may_be_a_url() -> None:
    text = PIDINST.replace(
        "license: CC-BY-4.0", "license: https://creativecommons.org/licenses/by/4.0/"
    )
    assert parse(text).license == "https://creativecommons.org/licenses/by/4.0/"


def test_a_people_file_inside_a_watch_folder_is_refused(tmp_path: Path) -> None:
    text = _linked_config(tmp_path) + f"people: {tmp_path / 'watch' / 'people.csv'}\n"
    with pytest.raises(ConfigError) as raised:
        parse_settings(text, source="c.yaml", base_dir=tmp_path)
    (message,) = raised.value.messages
    assert message.startswith("c.yaml:5: people: ")
    assert message.endswith("; the people file would be harvested")


def test_the_deprecated_retain_dates_reads_as_dates_keep_and_never_contradicts_it() -> None:
    assert parse(MINIMAL).deidentify.date_policy == "shift"
    kept = parse(MINIMAL + "deidentify: {retain_dates: true}\n").deidentify
    assert (kept.dates, kept.date_policy) == ("keep", "keep")
    assert parse(MINIMAL + "deidentify: {dates: remove}\n").deidentify.date_policy == "remove"
    assert errors_of(MINIMAL + "deidentify: {retain_dates: true, dates: shift}\n") == [
        "acqharvest.yaml:9: deidentify: retain_dates: true (deprecated) means dates: keep, "
        "which contradicts dates: shift; remove retain_dates"
    ]
    # built by hand (tools, tests), the dataclass checks nothing: the policy reads it alike
    assert DeidentifySettings(retain_dates=True).date_policy == "keep"
