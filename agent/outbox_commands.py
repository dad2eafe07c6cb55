"""``acqharvest outbox list | show | retry | release | purge`` (and ``retry``, the same
command as ``outbox retry``): their arguments and what they print.

``cli`` loads the config and opens the outbox without recovery (that is the running
daemon's), then calls the action, which returns whether it succeeded. Every change goes
through the outbox's own moves (single renames), so the actions are safe beside a running
daemon. A pending package is never purged: it is the only copy of metadata not delivered.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable

from acqharvest.outbox import Outbox, OutboxError

Action = Callable[[argparse.Namespace, Outbox], bool]
_RETRY_HELP = "send rejected packages again (after the endpoint was fixed)"


def add_parsers(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    with_config: Callable[[argparse.ArgumentParser], None],
) -> None:
    """``retry`` and ``outbox ACTION`` among the commands; ``args.action`` names the action."""

    def with_ids(sub: argparse.ArgumentParser, every: str) -> argparse.ArgumentParser:
        with_config(sub)
        sub.add_argument("package_ids", nargs="*", metavar="PACKAGE_ID")
        sub.add_argument(every, dest="every", action="store_true", help="every rejected package")
        return sub

    with_ids(commands.add_parser("retry", help=_RETRY_HELP), "--all").set_defaults(action="retry")
    outbox = commands.add_parser(
        "outbox", help="list, show, retry, release or purge undelivered packages"
    )
    actions = outbox.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="undelivered packages: state, attempts, reason")
    with_config(listing)
    listing.add_argument("--json", action="store_true", help="a JSON list")
    show = actions.add_parser("show", help="one package's record and body")
    with_config(show)
    show.add_argument("package_id", metavar="PACKAGE_ID")
    with_ids(actions.add_parser("retry", help=_RETRY_HELP), "--all")
    release = actions.add_parser(
        "release", help="deliver held packages (held for burned-in annotation, after a look)"
    )
    with_config(release)
    release.add_argument("package_ids", nargs="+", metavar="PACKAGE_ID")
    purge = with_ids(
        actions.add_parser("purge", help="delete rejected or held packages for good"),
        "--rejected",
    )
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def _list(args: argparse.Namespace, outbox: Outbox) -> bool:
    entries = outbox.entries()
    if args.json:
        rows = [dataclasses.asdict(entry) for entry in entries]
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return True
    if not entries:
        print("no undelivered packages")
        return True
    now = time.time_ns()
    print(f"{'ID':<16}  {'STATE':<8}  {'ATTEMPTS':>8}  {'AGE':>6}  REASON")
    for entry in entries:
        age = "-" if entry.queued_ns is None else _age((now - entry.queued_ns) / 1e9)
        reason = (entry.last_error or "").replace("\n", " ")[:100]
        print(
            f"{entry.package_id[:16]:<16}  {entry.state:<8}  {entry.attempts:>8}  {age:>6}  "
            f"{reason}".rstrip()
        )
    return True


def _age(seconds: float) -> str:
    for unit, scale in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= scale:
            return f"{seconds // scale:.0f}{unit}"
    return f"{max(seconds, 0):.0f}s"


def _show(args: argparse.Namespace, outbox: Outbox) -> bool:
    try:
        package_id = _full_id(outbox, args.package_id)
        entry = outbox.entry(package_id)
        body = outbox.body(package_id) if entry is not None else None
    except OutboxError as error:
        print(f"{args.package_id}: {error}", file=sys.stderr)
        return False
    if entry is None or body is None:
        state = outbox.state_of(package_id)
        print(f"{package_id}: {state or 'no such package in the outbox'}", file=sys.stderr)
        return state is not None
    record = {k: v for k, v in dataclasses.asdict(entry).items() if k != "queued_ns"}
    print(json.dumps(record, indent=2, ensure_ascii=False))
    print(json.dumps(json.loads(body), indent=2, ensure_ascii=False, sort_keys=True))
    return True


def _full_id(outbox: Outbox, given: str) -> str:
    """``given``, or the one undelivered package id it is the start of (as ``list`` shows)."""
    if outbox.state_of(given) is not None:
        return given
    matches = [e.package_id for e in outbox.entries() if e.package_id.startswith(given)]
    return matches[0] if len(matches) == 1 else given


def _retry(args: argparse.Namespace, outbox: Outbox) -> bool:
    args.package_ids = [_full_id(outbox, package_id) for package_id in args.package_ids]
    return _each_rejected(args, outbox, "retry", outbox.retry_rejected, "queued again")


def _release(args: argparse.Namespace, outbox: Outbox) -> bool:
    """Held packages join the delivery queue: a running daemon sends them within a second,
    otherwise the next start does."""
    failed = 0
    for given in args.package_ids:
        package_id = _full_id(outbox, given)
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
    return not failed


def _purge(args: argparse.Namespace, outbox: Outbox) -> bool:
    """Rejected packages (every one with ``--rejected``) or held ones, named by id."""
    wanted = outbox.rejected() if args.every else [_full_id(outbox, i) for i in args.package_ids]
    doomed = [p for p in wanted if outbox.state_of(p) in ("rejected", "held")]
    if doomed and not args.yes:
        if not sys.stdin.isatty():
            print("purge deletes packages for good: pass --yes to confirm", file=sys.stderr)
            return False
        answer = input(f"delete {len(doomed)} rejected or held package(s) for good? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing purged", file=sys.stderr)
            return False
    args.package_ids = wanted
    return _each_rejected(args, outbox, "purge", outbox.purge, "deleted")


def _each_rejected(
    args: argparse.Namespace, outbox: Outbox, verb: str, act: Callable[[str], bool], done: str
) -> bool:
    """Apply ``act`` to each package named (or every rejected one); report each."""
    wanted = outbox.rejected() if args.every else args.package_ids
    if not wanted:
        flag = "--all" if verb == "retry" else "--rejected"
        message = "no rejected packages" if args.every else f"name package ids, or pass {flag}"
        print(f"nothing to {verb}: {message}", file=sys.stderr)
        return bool(args.every)
    failed = 0
    for package_id in wanted:
        try:
            acted = act(package_id)
        except OutboxError as error:
            print(f"{package_id}: {error}", file=sys.stderr)
            failed += 1
            continue
        state = None if acted else outbox.state_of(package_id)
        if acted:
            print(f"{package_id}: {done}")
        elif state is None:
            print(f"{package_id}: no such package in the outbox")
        elif state == "pending" and verb == "purge":
            print(
                f"{package_id}: pending, not purged: it is not delivered yet and deleting it "
                "would lose its metadata; it is sent until the endpoint takes or rejects it"
            )
        else:
            print(f"{package_id}: {state}, not rejected; left alone")
        failed += not acted
    return not failed


ACTIONS: dict[str, Action] = {
    "list": _list,
    "show": _show,
    "retry": _retry,
    "release": _release,
    "purge": _purge,
}
