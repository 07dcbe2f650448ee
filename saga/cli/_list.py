"""`saga list`: each saga's own status, what it does, its amount, when and how long."""

from __future__ import annotations

import argparse
import json
from datetime import datetime

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from saga._client import connect_client
from saga._errors import SagaError
from saga._listing import SagaRow, list_sagas
from saga._settings import Settings
from saga.cli._loading import UsageError
from saga.cli._render import out

WHAT_CHARS = 120
"""What a saga does, cut to this many characters (a request can be long)."""
STYLE = {
    "completed": "green",
    "compensated": "yellow",
    "cancelled": "yellow",
    "needs_attention": "bold red",
    "awaiting_approval": "bold yellow",
    "rejected": "red",
    "running": "cyan",
    "compensating": "yellow",
    "planning": "cyan",
}


def duration(seconds: float | None) -> str:
    """``75.2`` -> ``1m 15s``."""
    if seconds is None:
        return ""
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def _when(moment: datetime | None) -> str:
    """Local time; with the date unless it is today."""
    if moment is None:
        return ""
    local = moment.astimezone()
    today = datetime.now().astimezone().date()
    return local.strftime("%H:%M:%S" if local.date() == today else "%Y-%m-%d %H:%M")


def row_json(row: SagaRow) -> dict[str, object]:
    out_row = row.model_dump(mode="json")
    out_row["took_seconds"] = row.took()
    return out_row


def list_table(rows: list[SagaRow], width: int = 200) -> Table:
    """The sagas as a table: id, own status (and what it means for the world), what it
    does, amount, started, how long (``…``: still running). Narrower than 110
    characters, the start time is left out."""
    started = width >= 110
    table = Table(box=box.SIMPLE_HEAD)
    # Ids, statuses and times stay whole; what a saga does wraps in the width left.
    for name in ("saga", "status"):
        table.add_column(name, no_wrap=True)
    table.add_column("what", overflow="fold", min_width=16)
    table.add_column("amount", no_wrap=True, justify="right")
    if started:
        table.add_column("started", no_wrap=True)
    table.add_column("took", no_wrap=True, min_width=7)
    for row in rows:
        status = row.status.value if row.status else f"({row.execution})"
        shown = Text(status.replace("_", " "), style=STYLE.get(status, "dim"))
        if row.world:
            shown.append(f"\n{row.world}", style="dim")
        took = duration(row.took())
        what = row.what if len(row.what) <= WHAT_CHARS else row.what[: WHAT_CHARS - 1] + "…"
        cells: list[str | Text] = [row.saga_id, shown, what, row.money]
        cells += [_when(row.started_at)] if started else []
        table.add_row(*cells, took if row.closed_at else f"{took}…")
    return table


async def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    client = await connect_client(settings)
    statuses = [s.strip() for group in args.status or [] for s in group.split(",") if s.strip()]
    try:
        rows = await list_sagas(
            client,
            statuses=statuses,
            words=args.search,
            min_amount=args.min_amount,
            limit=args.limit,
        )
    except SagaError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print(json.dumps([row_json(r) for r in rows], indent=2))
        return 0
    if not rows:
        out.print("no sagas" + (" match" if statuses or args.search or args.min_amount else ""))
        return 0
    # On a terminal the table fits its width; piped, every row is printed whole.
    wide = out if out.is_terminal else Console(markup=False, emoji=False, width=WHAT_CHARS + 200)
    wide.print(list_table(rows, wide.width))
    return 0
