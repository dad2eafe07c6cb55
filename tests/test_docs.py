"""Drift checks: committed docs and generated files must match the code (the datasette pattern)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from acqharvest.config import (
    DEFAULT_EXCLUDE,
    ConfigError,
    json_schema,
    json_schema_text,
    load_settings,
    parse_settings,
)

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config" / "acqharvest.example.yaml"
SCHEMA = REPO / "config" / "acqharvest.schema.json"
DEMO = REPO / "agent" / "demo.yaml"

# In the example, "## text" is prose and "# key: value" an optional setting shown at its
# default, with the "#" where the key would start.
_KEY = re.compile(r"(?P<indent> *)(?P<dash>- )?(?P<key>[a-z_]+):(?: |$)")


def test_committed_schema_is_generated_from_the_config_models() -> None:
    assert SCHEMA.read_text(encoding="utf-8") == json_schema_text(), (
        f"{SCHEMA.relative_to(REPO)} is stale; regenerate it with\n"
        "  acqharvest config schema > config/acqharvest.schema.json\n"
        "or\n"
        '  python -c "import sys; from acqharvest.config import json_schema_text; '
        'sys.stdout.write(json_schema_text())" > config/acqharvest.schema.json'
    )


def test_every_schema_key_is_documented_in_the_example() -> None:
    documented = {path for path, _, _ in _example_keys(EXAMPLE.read_text(encoding="utf-8"))}
    in_schema = {path for path, _ in _schema_properties(json_schema())}

    assert len(in_schema) > 30
    assert sorted(in_schema - documented) == [], "add these keys to acqharvest.example.yaml"
    assert sorted(documented - in_schema) == [], "the example documents keys that do not exist"


def test_every_optional_setting_is_shown_commented_out_at_its_real_default() -> None:
    defaults = {
        path: prop["default"]
        for path, prop in _schema_properties(json_schema())
        # sections are compared key by key; their keys without a default (null, or an
        # empty list) may show an example
        if prop.get("default") not in (None, []) and "$ref" not in prop
    }
    shown = {
        path: value
        for path, commented, value in _example_keys(EXAMPLE.read_text(encoding="utf-8"))
        if commented and path in defaults
    }

    assert defaults["watch.exclude"] == list(DEFAULT_EXCLUDE)
    assert shown == defaults


def test_example_and_demo_load_and_match_the_committed_schema() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    for config in (EXAMPLE, DEMO):
        jsonschema.validate(
            yaml.safe_load(config.read_text(encoding="utf-8")),
            schema,
            cls=jsonschema.Draft202012Validator,
        )
        assert load_settings(config).source == str(config)


@pytest.mark.parametrize(
    "endpoint",
    [
        {"type": "http"},
        {"type": "directory"},
        {"type": "http", "url": "https://h.example.org", "token_file": "t", "token_env": "T"},
    ],
)
def test_committed_schema_carries_the_endpoint_rules(endpoint: dict[str, str]) -> None:
    data = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    data["endpoint"] = endpoint

    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert not jsonschema.Draft202012Validator(schema).is_valid(data)
    with pytest.raises(ConfigError):
        parse_settings(yaml.safe_dump(data), source="x.yaml", base_dir=REPO)


def _schema_properties(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every key path in the schema ("watch.path": list items add no segment) and its property."""

    def walk(node: dict[str, Any], prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
        if "$ref" in node:
            node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
        # an optional section (status_server: null by default) is one of a section or null
        sections = [option for option in node.get("anyOf", ()) if "$ref" in option]
        if len(sections) == 1:
            node = schema["$defs"][sections[0]["$ref"].rsplit("/", 1)[-1]]
        if node.get("type") == "array":
            yield from walk(node["items"], prefix)
            return
        for key, prop in node.get("properties", {}).items():
            path = f"{prefix}.{key}" if prefix else key
            yield path, prop
            yield from walk(prop, path)

    yield from walk(schema, "")


def _uncomment(line: str) -> tuple[bool, str] | None:
    """(commented out, line without its "# "), or None for prose and blank lines."""
    stripped = line.lstrip(" ")
    if not stripped or stripped.startswith("##"):
        return None
    if stripped.startswith("# "):
        return True, line[: len(line) - len(stripped)] + stripped[2:]
    return False, line


def _example_keys(text: str) -> Iterator[tuple[str, bool, Any]]:
    """(key path, commented out, value) for every key, commented out or not."""
    lines = [_uncomment(line) for line in text.splitlines()]
    stack: list[tuple[int, str]] = []
    for index, parsed in enumerate(lines):
        match = _KEY.match(parsed[1]) if parsed else None
        if parsed is None or match is None:
            continue
        indent = len(match["indent"]) + (2 if match["dash"] else 0)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        # the value is this line plus the more-indented lines under it
        block = [parsed[1][match.start("key") :]]
        for later in lines[index + 1 :]:
            if later is None:
                continue
            if later[0] != parsed[0] or _indent(later[1]) <= indent:
                break
            block.append(later[1])
        value = yaml.safe_load("\n".join(block))[match["key"]]
        yield ".".join(key for _, key in stack), parsed[0], value


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


# --------------------------------------------------------------------------- README

DOCS = REPO / "docs"


def _readme_commands() -> list[str]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    before_prose = readme.split("---", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", before_prose)


def test_readme_opens_with_the_demo_and_the_test_command() -> None:
    demo, tests = _readme_commands()
    assert demo.endswith("acqharvest run"), "first command: install and run the demo daemon"
    assert "pip install" in demo
    assert "pytest" in tests
    assert "pip install" in tests


def test_ci_runs_the_readmes_test_command() -> None:
    _, tests = _readme_commands()
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert tests in ci


def _nav_pages() -> set[str]:
    """Every page the site's navigation lists, as a path below docs/."""

    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, str):
            yield node
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)
        elif isinstance(node, dict):
            for value in node.values():
                yield from walk(value)

    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    return set(walk(config["nav"]))


def test_readme_fits_on_two_screens_and_ends_with_links_into_the_site() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    # the quick start, the service lines and the FAIR summary with its mapping (issue 11)
    assert len(readme.splitlines()) <= 120, "the README is the quick start; move the rest to docs/"
    last_section = readme.rsplit("\n## ", 1)[1]
    assert last_section.startswith("Documentation\n")
    assert len(re.findall(r"\]\(docs/[\w/-]+\.md\)", last_section)) >= 10


def test_readme_links_point_at_existing_files_and_site_pages() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    targets = [t for t in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme) if "://" not in t]
    in_nav = _nav_pages()
    assert len(targets) >= 12
    for target in targets:
        assert (REPO / target).is_file(), f"README links to {target}, which does not exist"
        if target.startswith("docs/"):
            page = target.removeprefix("docs/")
            assert page in in_nav, f"README links to {target}, which the site's nav lacks"


def test_docs_document_every_top_level_config_key_and_command() -> None:
    configuration = (DOCS / "admin" / "configuration.md").read_text(encoding="utf-8")
    for key in json_schema()["properties"]:
        assert f"`{key}" in configuration, f"the configuration table lacks {key}"
    commands = (DOCS / "admin" / "commands.md").read_text(encoding="utf-8")
    for command in (
        "run",
        "run --once",
        "extract",
        "check",
        "doctor",
        "status",
        "outbox list",
        "adapters",
        "service install",
    ):
        assert f"`acqharvest {command}" in commands, f"the command table lacks {command}"


@pytest.mark.parametrize(
    "page", ["README.md", "docs/admin/index.md", "docs/admin/configuration.md"]
)
def test_the_configs_the_docs_show_are_valid(page: str) -> None:
    text = (REPO / page).read_text(encoding="utf-8")
    configs = [
        textwrap.dedent(block)
        for block in re.findall(r"```yaml\n(.*?)```", text, re.S)
        if "instrument:" in block
    ]
    assert configs, f"{page} shows no config"
    for config in configs:
        assert parse_settings(config, source=page, base_dir=REPO).watch


def test_every_test_the_guarantees_name_exists() -> None:
    section = (DOCS / "guarantees.md").read_text(encoding="utf-8")
    named = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", section)
    assert len(named) >= 20, "the Guarantees table should name the tests that prove it"
    for path, name in named:
        source = (REPO / path).read_text(encoding="utf-8")
        if name:
            assert re.search(rf"^def {name}\(", source, re.M), f"{path} has no test {name}"


def test_every_builtin_adapter_has_a_page_showing_its_readme() -> None:
    in_nav = _nav_pages()
    names = [f.name for f in sorted((REPO / "adapters").iterdir()) if (f / "__init__.py").is_file()]
    assert len(names) >= 8
    for name in names:
        page = DOCS / "adapters" / f"{name}.md"
        assert f'--8<-- "adapters/{name}/README.md"' in page.read_text(encoding="utf-8")
        assert f"adapters/{name}.md" in in_nav, f"the site's nav lacks adapters/{name}.md"


def test_the_docs_site_builds_strictly(tmp_path: Path) -> None:
    """A real strict build: a broken link, anchor or included file fails it."""
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # the included repository files are in the pages, not the include lines
    tiff = (site / "adapters" / "tiff" / "index.html").read_text(encoding="utf-8")
    assert "Patient data" in tiff
    assert "--8&lt;--" not in tiff
    guarantees = (site / "guarantees" / "index.html").read_text(encoding="utf-8")
    assert "test_kill9_at_chosen_points_loses_and_duplicates_nothing" in guarantees


def test_every_builtin_adapter_has_a_readme_with_the_required_sections() -> None:
    for folder in sorted((REPO / "adapters").iterdir()):
        if not (folder / "__init__.py").is_file():
            continue
        text = (folder / "README.md").read_text(encoding="utf-8")
        for section in ("## Formats and variants", "## Fields", "## Limitations"):
            assert section in text, f"adapters/{folder.name}/README.md lacks {section}"


def test_http_contract_names_the_headers_the_sender_sends(endpoint: Any) -> None:
    """The documented request headers are the ones a real endpoint receives."""
    from acqharvest.deliver import HttpSender
    from acqharvest.model import EndpointSettings

    contract = (DOCS / "endpoint.md").read_text(encoding="utf-8")
    sender = HttpSender(EndpointSettings(type="http", url=endpoint.url), "t0ken")
    try:
        assert sender.send("a" * 64, b"{}").outcome == "confirmed"
    finally:
        sender.close()
    (request,) = endpoint.received
    for header in ("Content-Type", "Idempotency-Key", "Authorization", "User-Agent"):
        assert header.lower() in request.headers
        assert f"{header}: " in contract


@pytest.mark.parametrize("name", ["zarr", "nifti", "imzml"])
def test_readme_field_table_is_the_declared_fields_of_the_new_adapters(name: str) -> None:
    """Every declared field is in the adapter README's table with its source, nothing else."""
    from acqharvest.registry import load_registry

    adapter = load_registry(enabled={name}).adapters[name]
    readme = (REPO / "adapters" / name / "README.md").read_text(encoding="utf-8")
    rows = [f"| `{s.key}` | {s.source} | {s.unit or ''} |" for s in adapter.info.fields]
    table = "\n".join(["| field | source | unit |", "| --- | --- | --- |", *rows])
    assert f"{table}\n\n" in readme, f"regenerate the README's field table:\n{table}"


def test_the_examples_full_pidinst_instrument_is_valid_when_uncommented() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    start, end = text.index("\ninstrument:"), text.index("\nwatch:")
    uncommented = [
        parsed[1] for line in text[start:end].splitlines() if (parsed := _uncomment(line))
    ]
    settings = parse_settings(
        "\n".join(uncommented) + text[end:], source=str(EXAMPLE), base_dir=REPO
    )
    shown = {
        field.name
        for field in dataclasses.fields(settings.instrument)
        if getattr(settings.instrument, field.name) not in (None, ())
    }
    assert shown == {field.name for field in dataclasses.fields(settings.instrument)}


def test_the_package_page_lists_the_field_catalogue_exactly() -> None:
    """docs/package.md shows NORMALIZED_FIELDS and CHANNEL_FIELDS, every key, nothing else."""
    from acqharvest.adapter_api import CHANNEL_FIELDS, NORMALIZED_FIELDS

    page = (DOCS / "package.md").read_text(encoding="utf-8")
    for specs in (NORMALIZED_FIELDS, CHANNEL_FIELDS):
        rows = [
            f"| `{s.key}` | {s.type} | {s.unit or ''} | {s.description} |" for s in specs.values()
        ]
        table = "\n".join(["| field | type | unit | meaning |", "| --- | --- | --- | --- |", *rows])
        assert f"\n{table}\n\n" in page, f"regenerate the catalogue table:\n{table}"
