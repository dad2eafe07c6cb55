"""Command-line interface: argument parsing and output only; the work happens in the stages.

Exit codes: 0 success, 1 something failed or stayed undelivered, 2 bad configuration.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import secrets
import signal
import sys
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from acqharvest import __version__, logs

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="acqharvest",
        description="Harvest acquisition metadata from instrument output folders.",
    )
    parser.add_argument("--version", action="version", version=f"acqharvest {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--config",
            "-c",
            type=Path,
            help="YAML config (default: $ACQHARVEST_CONFIG, else the embedded demo default)",
        )

    run = commands.add_parser("run", help="run the daemon in the foreground")
    with_config(run)
    run.add_argument(
        "--once",
        action="store_true",
        help="harvest what is there now, deliver, and exit (non-zero if anything failed)",
    )
    extract = commands.add_parser(
        "extract", help="print what the adapters read from files (nothing written or sent)"
    )
    extract.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    extract.add_argument("--json", action="store_true", help="one package JSON per line")
    extract.add_argument(
        "--config",
        "-c",
        type=Path,
        help="YAML config whose instrument, people and de-identification apply, and for "
        "files in its watch folders their path_template (default: the embedded demo "
        "default, never $ACQHARVEST_CONFIG)",
    )
    extract.add_argument(
        "--format",
        choices=["package", "ro-crate"],
        default="package",
        help="ro-crate prints each package as its RO-Crate metadata document (JSON-LD)",
    )
    check = commands.add_parser(
        "check", help="validate the config, the folders and the endpoint, then exit"
    )
    with_config(check)
    status = commands.add_parser("status", help="show the outbox by state and the last errors")
    with_config(status)
    doctor = commands.add_parser(
        "doctor", help="check everything the daemon needs, with a verdict and a hint each"
    )
    with_config(doctor)
    doctor.add_argument("--json", action="store_true", help="a JSON list, for fleet tooling")

    from acqharvest.outbox_commands import add_parsers

    add_parsers(commands, with_config)
    service = commands.add_parser(
        "service", help="install, uninstall, start, stop the system service, or show its state"
    )
    service.add_argument("action", choices=["install", "uninstall", "start", "stop", "status"])
    service.add_argument(
        "--config",
        "-c",
        type=Path,
        help="the config the service runs with (default: /etc/acqharvest/acqharvest.yaml; "
        r"C:\ProgramData\acqharvest\acqharvest.yaml on Windows; "
        "/Library/Application Support/acqharvest/acqharvest.yaml on macOS)",
    )
    service.add_argument(
        "--user", help=r"account it runs as (default: acqharvest; NT SERVICE\acqharvest)"
    )
    service.add_argument("--dry-run", action="store_true", help="print every step, do nothing")
    service.add_argument(
        "--purge", action="store_true", help="uninstall: also remove the state dir and config"
    )
    commands.add_parser("adapters", help="list installed adapters and load errors")
    config = commands.add_parser("config", help="print the config's JSON Schema")
    config.add_argument("what", choices=["schema"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command != "run":
        logs.configure("warning", "auto")  # one-shot commands print results, not notices
    handlers = {
        "run": _run,
        "extract": _extract,
        "check": _check,
        "doctor": _doctor,
        "status": _status,
        "retry": _outbox,
        "outbox": _outbox,
        "adapters": _adapters,
        "config": _config,
        "service": _service,
    }
    result: int = handlers[args.command](args)
    return result


def _load(args: argparse.Namespace) -> Any:
    """Settings or None (after printing every config error)."""
    from acqharvest.config import ConfigError, load_settings

    try:
        return load_settings(args.config)
    except ConfigError as error:
        for message in error.messages:
            print(f"config error: {message}", file=sys.stderr)
        return None


def _run(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        logs.get_logger().info("stop_requested", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return run_daemon(args.config, stop, once=args.once)


def run_daemon(
    config: Path | None,
    stop: threading.Event,
    *,
    once: bool = False,
    log_stream: TextIO | None = None,
) -> int:
    """Run the daemon until ``stop`` is set; its exit status (the Windows service runs this)."""
    settings = _load(argparse.Namespace(config=config))
    if settings is None:
        return EXIT_CONFIG
    from acqharvest.config import is_embedded_default
    from acqharvest.runtime import Daemon
    from acqharvest.statedir import log_file_of

    if is_embedded_default(settings):
        for folder in (settings.watch[0].path, settings.endpoint.path):
            folder.mkdir(parents=True, exist_ok=True)
        print(
            "acqharvest: no config given, using the embedded default: watching "
            f"{settings.watch[0].path}, delivering packages to {settings.endpoint.path} "
            f"(state in {settings.state_dir}). Copy files into the watch folder to try it; "
            "Ctrl-C stops.",
            file=sys.stderr,
        )
    logs.configure(
        settings.log.level,
        settings.log.format,
        log_file_of(settings),
        stream=log_stream,
        max_bytes=settings.log.max_bytes,
        backups=settings.log.backups,
    )
    from acqharvest.deliver import DeliveryConfigError
    from acqharvest.people import PeopleError

    try:
        report = Daemon(settings, once=once).run(stop)
    except DeliveryConfigError as error:
        # the same at every start: exit 2, so a service manager does not restart in a loop
        print(f"config error: {error.key}: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except PeopleError as error:
        print(f"config error: people: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as error:  # noqa: BLE001 - report any start-up failure in one clear line
        print(f"acqharvest: cannot run: {error}", file=sys.stderr)
        return EXIT_FAILED
    # a held package needs a person before it goes out: a scheduled one-shot run must say so
    if once and (report.failures or report.undelivered or report.rejected or report.held):
        print(
            f"acqharvest: {report.packaged} packaged, {len(report.failures)} failed, "
            f"{report.rejected} rejected by the endpoint, {report.undelivered} undelivered, "
            f"{report.held} held for review (see acqharvest status)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK


def _extract(args: argparse.Namespace) -> int:
    from acqharvest.commands import preview
    from acqharvest.config import embedded_settings
    from acqharvest.deidentify import Deidentifier

    logs.configure("error", "auto")  # the errors are printed below, one line each
    # Format libraries (tifffile) log about bad files through the root logger, which would
    # print raw lines beside ours; the one error line per file already says it.
    logging.getLogger().addHandler(logging.NullHandler())
    # The default policy unless a config is named: extract shows what adapters read.
    settings = embedded_settings() if args.config is None else _load(args)
    if settings is None:
        return EXIT_CONFIG
    deidentifier = Deidentifier(settings.deidentify, secrets.token_bytes(32))
    results, errors = preview(args.paths, settings, deidentifier)
    for package in results:
        if package["harvester"]["adapter"] == "none":
            # the daemon still packages such a file (nothing is lost); here it is the answer
            first = package["files"][0]
            errors.append(
                f"{first['path']}: no installed adapter reads this file ({first['size']} bytes); "
                "`acqharvest adapters` lists the installed ones"
            )
            continue
        if args.format == "ro-crate":
            from acqharvest.rocrate import render_crate

            crate = render_crate(package)
            print(json.dumps(crate, ensure_ascii=False, indent=None if args.json else 1))
        elif args.json:
            print(json.dumps(package, ensure_ascii=False, sort_keys=True))
        else:
            _print_summary(package)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return EXIT_FAILED if errors else EXIT_OK


def _print_summary(package: dict[str, Any]) -> None:
    files = [entry for entry in package["files"] if "role" not in entry]  # not sidecars
    harvester = package["harvester"]
    acquisition = package["acquisition"]
    print(f"{files[0]['path']}" + (f" (+{len(files) - 1} files)" if len(files) > 1 else ""))
    print(f"  adapter: {harvester['adapter']}  format: {acquisition['format']}")
    if "annotations" in acquisition:
        # what the sidecars above it say: a microscopist checks a new one this way
        print(f"  annotations: {json.dumps(acquisition['annotations'], ensure_ascii=False)}")
    for key, value in sorted(package["metadata"].items()):
        print(f"  {key}: {json.dumps(value, ensure_ascii=False)}")
    for warning in package["provenance"]["warnings"]:
        print(f"  warning: {warning}")


_VERDICT_LABELS = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


def _check(args: argparse.Namespace) -> int:
    """``doctor``'s basic checks, printed as ``check`` always did (warnings count as ok)."""
    settings = _load(args)
    if settings is None:
        return EXIT_CONFIG
    from acqharvest.doctor import diagnose

    problems = 0
    for finding in diagnose(settings, thorough=False):
        print(f"{_VERDICT_LABELS[finding.status]}  {finding.detail}")
        if finding.check == "endpoint_config":
            return EXIT_CONFIG
        problems += finding.status == "fail"
    return EXIT_FAILED if problems else EXIT_OK


def _doctor(args: argparse.Namespace) -> int:
    from acqharvest.config import ConfigError, load_settings
    from acqharvest.doctor import Finding, config_failures, diagnose

    findings: Iterable[Finding]
    try:
        settings = load_settings(args.config)
    except ConfigError as error:
        findings, code = config_failures(error.messages), EXIT_CONFIG
    else:
        # printed as each check ends: the endpoint's probe may take a while
        findings, code = diagnose(settings), EXIT_OK
    printed: list[Finding] = []
    for finding in findings:
        printed.append(finding)
        if not args.json:
            print(f"{finding.status:<4}  {finding.check:<15}  {finding.detail}", flush=True)
            if finding.hint:
                print(f"{'':23}hint: {finding.hint}")
    if args.json:
        print(json.dumps([dataclasses.asdict(f) for f in printed], indent=2, ensure_ascii=False))
    else:
        counts = {v: sum(f.status == v for f in printed) for v in ("ok", "warn", "fail")}
        print(f"{counts['ok']} ok, {counts['warn']} warning(s), {counts['fail']} failure(s)")
    failed = any(finding.status == "fail" for finding in printed)
    return code if code != EXIT_OK else (EXIT_FAILED if failed else EXIT_OK)


def _status(args: argparse.Namespace) -> int:
    settings = _load(args)
    if settings is None:
        return EXIT_CONFIG
    from acqharvest.commands import read_status

    status = read_status(settings)
    print(f"config: {settings.source}")
    print(f"state:  {settings.state_dir}")
    print("outbox: " + ", ".join(f"{state} {count}" for state, count in status.outbox.items()))
    print("harvested: " + ", ".join(f"{name} {count}" for name, count in status.registry.items()))
    if status.readers_missing:
        print("readers missing:")
        for line in status.readers_missing:
            print(f"  {line}")
    if status.identity_mismatches:
        print("instrument identity mismatches (the file reports another instrument):")
        for line in status.identity_mismatches:
            print(f"  {line}")
    if status.problems:
        print("last problems:")
        for line in status.problems:
            print(f"  {line}")
    return EXIT_OK


def _outbox(args: argparse.Namespace) -> int:
    """``outbox ACTION`` and ``retry``, on the outbox as the running daemon leaves it."""
    settings = _load(args)
    if settings is None:
        return EXIT_CONFIG
    from acqharvest.outbox import Outbox
    from acqharvest.outbox_commands import ACTIONS
    from acqharvest.statedir import state_paths

    # no recovery (that is the daemon's) and nothing created where no daemon ran
    outbox = Outbox.open(state_paths(settings)[0], recover=False, create=False)
    return EXIT_OK if ACTIONS[args.action](args, outbox) else EXIT_FAILED


def _adapters(_: argparse.Namespace) -> int:
    from acqharvest.registry import load_registry

    registry = load_registry()
    rows = registry.listing()
    if rows:
        columns = list(rows[0])
        widths = {c: max(len(c), *(len(str(row[c])) for row in rows)) for c in columns}
        print("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
        for row in rows:
            print("  ".join(str(row[c]).ljust(widths[c]) for c in columns).rstrip())
    for error in registry.errors:
        print(f"load error: {error.name} ({error.distribution}): {error.error}", file=sys.stderr)
    return EXIT_OK


def _service(args: argparse.Namespace) -> int:
    from acqharvest.service_install import command

    return command(args.action, args.config, args.user, dry_run=args.dry_run, purge=args.purge)


def _config(_: argparse.Namespace) -> int:
    from acqharvest.config import json_schema_text

    sys.stdout.write(json_schema_text())
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
