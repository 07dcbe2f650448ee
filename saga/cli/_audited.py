"""The command line's mutations go to the audit trail (saga._audit), each with the
caller's user@host, what was asked and how it turned out, even when it was refused; and
`saga audit` reads the trail."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta

from rich import box
from rich.console import Console
from rich.table import Table

from saga._audit import AuditEntry, cli_identity, record, trail
from saga._ledger_schema import utcnow
from saga._settings import Settings
from saga.cli._loading import UsageError, open_ledger
from saga.cli._render import err, out

MUTATIONS = frozenset({"start", "cancel", "approve", "reject", "retry", "resolve", "people"})
_SAID = {  # what of the command line the trail keeps (free text is masked when written)
    "mode": "mode",
    "agent": "agent",
    "plan": "plan",
    "plan_hash": "plan hash",
    "reason": "reason",
    "note": "note",
    "by": "by",
    "name": "person",
    "role": "role",
}


def _detail(args: argparse.Namespace) -> str | None:
    given = [(label, getattr(args, key, None)) for key, label in _SAID.items()]
    # The default mode says nothing: only act mode is worth a word.
    parts = [f"{label} {value}" for label, value in given if value and value != "plan"]
    if getattr(args, "request", None):
        parts.append("request in words")
    return "; ".join(parts) or None


def _write(settings: Settings, args: argparse.Namespace, outcome: str) -> None:
    verb = getattr(args, "people_command", None)
    if verb == "list":
        return  # reading the list decides nothing
    entry = AuditEntry(
        at=utcnow(),
        who=cli_identity(),
        via="cli",
        action=f"people {verb}" if verb else args.command,
        saga_id=getattr(args, "id", None),
        step_id=getattr(args, "step", None),
        outcome=outcome,
        detail=_detail(args),
    )
    try:
        ledger = open_ledger(settings)
        try:
            record(ledger, entry)
        finally:
            ledger.close()
    except Exception as exc:  # the decision stands; say that its record is missing
        err.print(f"saga: audit: this {args.command} was not recorded: {exc}")


async def audited(args: argparse.Namespace, settings: Settings, run: Awaitable[int]) -> int:
    """Run a command; a mutation is recorded with its outcome (done, exit N, refused)."""
    if args.command not in MUTATIONS:
        return await run
    try:
        code = await run
    except Exception as exc:
        _write(settings, args, f"refused: {' '.join(str(exc).splitlines())}")
        raise
    _write(settings, args, "done" if code == 0 else f"exit {code}")
    return code


def since(text: str) -> datetime:
    """``2h``, ``30m``, ``7d``, ``90s`` ago, or an ISO date/time (UTC unless it says)."""
    match = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if match:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
        return utcnow() - timedelta(**{unit: int(match.group(1))})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"--since {text!r}: give 30m, 2h, 7d or an ISO date/time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def audit_table(entries: list[AuditEntry]) -> Table:
    table = Table(box=box.SIMPLE_HEAD)
    for name in ("when", "who", "via", "action", "saga", "step", "outcome", "detail"):
        table.add_column(name, overflow="fold", no_wrap=name in ("when", "via", "action"))
    for e in entries:
        table.add_row(
            e.at.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
            e.who,
            e.via,
            e.action,
            e.saga_id or "",
            e.step_id or "",
            e.outcome,
            e.detail or "",
        )
    return table


async def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    """`saga audit [--saga ID] [--since 2h] [--json]`: the decisions, oldest first."""
    moment = since(args.since) if args.since else None
    ledger = open_ledger(settings)
    try:
        entries = trail(ledger, saga_id=args.saga, since=moment, limit=args.limit)
    finally:
        ledger.close()
    if args.json:
        print(json.dumps([e.model_dump(mode="json") for e in entries], indent=2))
    elif not entries:
        out.print("no decisions recorded" + (" for that" if args.saga or moment else ""))
    else:  # piped: every row whole, however wide
        wide = out if out.is_terminal else Console(markup=False, emoji=False, width=300)
        wide.print(audit_table(entries))
    return 0


def decision_lines(settings: Settings, saga_id: str) -> list[str]:
    """The saga's decisions, a line each, for `saga status` (none when the ledger cannot
    be read from here: the state above is what Temporal says)."""
    try:
        ledger = open_ledger(settings)
    except Exception:
        return []
    try:
        entries = trail(ledger, saga_id=saga_id)
    finally:
        ledger.close()
    return (
        ["decisions:"]
        + [
            f"  {e.at.astimezone():%H:%M:%S} {e.who} ({e.via}): {e.action}"
            + (f" step {e.step_id}" if e.step_id else "")
            + f" -> {e.outcome}"
            + (f" ({e.detail})" if e.detail else "")
            for e in entries
        ]
        if entries
        else []
    )
