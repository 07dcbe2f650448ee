"""The saga list, for `saga list` and the web list: each saga's own status, what it does,
its amount, when it started and how long it took, found through Temporal's visibility.

A saga indexes itself (saga._index), so one visibility call answers the list and its
filters (status, words of the request or summary, least amount) with no worker up. A
saga that is not indexed (started before the attributes existed, or on a server without
them) is asked for its state instead, a few at a time.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from datetime import UTC, datetime

from pydantic import BaseModel, Field, computed_field
from temporalio.client import Client, WorkflowExecution
from temporalio.service import RPCError

from saga._client import saga_state
from saga._errors import SagaError
from saga._index import AMOUNT, CURRENCY, REQUEST, STATUS, SUMMARY, create_commands
from saga._models import SagaStatus
from saga._summary import money_text

_WORD = re.compile(r"[\w@.+-]+")
MAX_WORDS = 8


WORLD = {
    SagaStatus.COMPLETED: "done",
    SagaStatus.COMPENSATED: "undone",
    SagaStatus.CANCELLED: "undone",
    SagaStatus.REJECTED: "nothing ran",
    SagaStatus.NEEDS_ATTENTION: "needs a person",
    SagaStatus.COMPENSATING: "being undone",
    SagaStatus.AWAITING_APPROVAL: "not started",
    SagaStatus.PLANNING: "not started",
    SagaStatus.PENDING: "not started",
    SagaStatus.RUNNING: "in progress",
}
"""What a saga's status means for the world outside, in a few words."""


class SagaRow(BaseModel):
    """One saga of the list."""

    saga_id: str
    status: SagaStatus | None = Field(
        None, description="The saga's own status (None: it could not be told)."
    )
    execution: str = Field(description="Temporal's workflow status: running, completed, ...")
    summary: str | None = Field(None, description="What it does, in one line (masked).")
    request: str | None = Field(None, description="The request in words (masked).")
    amount: int = Field(0, description="The plan's total amount, in minor units.")
    currency: str | None = None
    started_at: datetime | None = None
    closed_at: datetime | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def world(self) -> str:
        """What the status means for the systems the saga touched."""
        return WORLD.get(self.status, "") if self.status is not None else ""

    @property
    def what(self) -> str:
        return self.summary or self.request or ""

    @property
    def money(self) -> str:
        return money_text(self.amount, self.currency) if self.amount else ""

    def took(self, now: datetime | None = None) -> float | None:
        """Seconds from start to close (to ``now`` while it runs)."""
        if self.started_at is None:
            return None
        end = self.closed_at or now or datetime.now(UTC)
        return max((end - self.started_at).total_seconds(), 0.0)


def list_query(
    statuses: Sequence[str] = (), words: str | None = None, min_amount: int | None = None
) -> str:
    """The visibility query for the filters: any of the statuses (each a saga status),
    every word (letters, digits and ``@.+-``; at most 8) in the request or the summary,
    and the least amount."""
    parts = ['WorkflowType="SagaWorkflow"']
    if statuses:
        known = {s.value for s in SagaStatus}
        bad = [s for s in statuses if s not in known]
        if bad:
            raise SagaError(f"unknown status {bad[0]!r}; one of: {', '.join(sorted(known))}")
        parts.append("(" + " OR ".join(f'SagaStatus="{s}"' for s in statuses) + ")")
    for word in _WORD.findall(words or "")[:MAX_WORDS]:  # every word, in either
        parts.append(f'(SagaRequest="{word}" OR SagaSummary="{word}")')
    if min_amount is not None:
        parts.append(f"SagaAmount >= {int(min_amount)}")
    return " AND ".join(parts)


def _row(wf: WorkflowExecution) -> SagaRow:
    attrs = wf.typed_search_attributes
    status = attrs.get(STATUS)
    return SagaRow(
        saga_id=wf.id,
        status=SagaStatus(status) if status in {s.value for s in SagaStatus} else None,
        execution=wf.status.name.lower() if wf.status is not None else "unknown",
        summary=attrs.get(SUMMARY),
        request=attrs.get(REQUEST),
        amount=attrs.get(AMOUNT) or 0,
        currency=(attrs.get(CURRENCY) or "").lower() or None,
        started_at=wf.start_time,
        closed_at=wf.close_time,
    )


async def list_sagas(
    client: Client,
    *,
    statuses: Sequence[str] = (),
    words: str | None = None,
    min_amount: int | None = None,
    limit: int = 50,
) -> list[SagaRow]:
    """Sagas newest first, filtered; raises :class:`SagaError` when the server cannot
    filter (the saga search attributes are not registered)."""
    query = list_query(statuses, words, min_amount)
    rows: list[SagaRow] = []
    try:
        async for wf in client.list_workflows(query, limit=limit):
            rows.append(_row(wf))
    except RPCError as exc:
        if "Saga" in exc.message and query != list_query():
            raise SagaError(
                f"this Temporal namespace cannot filter sagas ({exc.message}); register "
                f"the saga search attributes: {'; '.join(create_commands(client.namespace))}"
            ) from None
        raise
    rows.sort(key=lambda r: r.started_at or datetime.min.replace(tzinfo=UTC), reverse=True)
    await _ask_unindexed(client, [r for r in rows if r.status is None])
    return rows


async def _ask_unindexed(client: Client, rows: list[SagaRow]) -> None:
    """Fill in a saga's status, summary and amount from its own state."""
    gate = asyncio.Semaphore(8)

    async def ask(row: SagaRow) -> None:
        try:
            async with gate, asyncio.timeout(3):
                state = await saga_state(client, row.saga_id)
        except Exception:  # not picked up by a worker yet, or no worker to answer
            return
        row.status = state.status
        row.summary = row.summary or state.summary
        row.amount = row.amount or state.amount
        row.currency = row.currency or state.currency

    await asyncio.gather(*(ask(r) for r in rows))
