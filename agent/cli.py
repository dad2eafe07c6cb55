"""Command-line interface: argument parsing and output only; the work happens in the stages.

Exit codes: 0 success, 1 something failed or stayed undelivered, 2 bad configuration.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import signal
import sys
import threading
from collections.abc import Sequence
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
        help="YAML config whose instrument and de-identification apply (default: the "
        "embedded demo default, never $ACQHARVEST_CONFIG)",
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
    retry = commands.add_parser(
        "retry", help="send rejected packages again (after the endpoint was fixed)"
    )
    with_config(retry)
    retry.add_argument("package_ids", nargs="*", metavar="PACKAGE_ID")
    retry.add_argument("--all", action="store_true", help="every rejected package")
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
    outbox = commands.add_parser("outbox", help="act on packages in the outbox")
    outbox_commands = outbox.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    release = outbox_commands.add_parser(
        "release", help="deliver held packages (held for burned-in annotation, after a look)"
    )
    with_config(release)
    release.add_argument("package_ids", nargs="+", metavar="PACKAGE_ID")
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
        "status": _status,
        "retry": _retry,
        "outbox": lambda args: {"release": _release}[args.outbox_command](args),
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
        settings.log.level, settings.log.format, log_file_of(settings), stream=log_stream
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
    if once and (report.failures or report.undelivered or report.rejected):
        print(
            f"acqharvest: {report.packaged} packaged, {len(report.failures)} failed, "
            f"{report.rejected} rejected by the endpoint, {report.undelivered} undelivered "
            "(see acqharvest status)",
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
    settings = _load(args)
    if settings is None:
        return EXIT_CONFIG
    from acqharvest.commands import check_installation
    from acqharvest.deliver import DeliveryConfigError

    problems = 0
    try:
        for verdict, message in check_installation(settings):
            print(f"{_VERDICT_LABELS[verdict]}  {message}")
            problems += verdict == "fail"
    except DeliveryConfigError as error:
        print(f"FAIL  endpoint: {error}")
        return EXIT_CONFIG
    return EXIT_FAILED if problems else EXIT_OK


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


def _retry(args: argparse.Namespace) -> int:
    settings = _load(args)
    if settings is None:
        return EXIT_CONFIG
    from acqharvest.outbox import Outbox, OutboxError
    from acqharvest.statedir import state_paths

    outbox = Outbox.open(state_paths(settings)[0], recover=False)
    wanted = outbox.rejected() if args.all else args.package_ids
    if not wanted:
        message = "no rejected packages" if args.all else "name package ids, or pass --all"
        print(f"nothing to retry: {message}", file=sys.stderr)
        return EXIT_OK if args.all else EXIT_FAILED
    failed = 0
    for package_id in wanted:
        try:
            moved = outbox.retry_rejected(package_id)
        except OutboxError as error:
            moved, failed = False, failed + 1
            print(f"{package_id}: {error}", file=sys.stderr)
            continue
        state = outbox.state_of(package_id) if not moved else None
        if moved:
            print(f"{package_id}: queued again")
        elif state is None:
            print(f"{package_id}: no such package in the outbox")
        else:
            print(f"{package_id}: {state}, not rejected; left alone")
        failed += not moved
    return EXIT_FAILED if failed else EXIT_OK


def _release(args: argparse.Namespace) -> int:
    """``outbox release``: held packages join the delivery queue (a running daemon sends
    them within a second; otherwise the next start does)."""
    settings = _load(args)
    if settings is None:
        return EXIT_CONFIG
    from acqharvest.outbox import Outbox, OutboxError
    from acqharvest.statedir import state_paths

    outbox = Outbox.open(state_paths(settings)[0], recover=False)
    failed = 0
    for package_id in args.package_ids:
        try:
            released = outbox.release(package_id)
            state = None if released else outbox.state_of(package_id)
        except OutboxError as error:
            print(f"{package_id}: {error}", file=sys.stderr)
            failed += 1
            continue
        if released:
            print(f"{package_id}: released, queued for delivery")
        elif state is None:
            print(f"{package_id}: no such package in the outbox", file=sys.stderr)
        else:
            print(f"{package_id}: {state}, not held; left alone", file=sys.stderr)
        failed += not released
    return EXIT_FAILED if failed else EXIT_OK


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
