"""The saga keeps its search attributes (saga._index) in step with its state.

A part of :class:`saga.SagaWorkflow` (a base class). Workflow code only. The worker's
check answer says which attributes the server has; from then on a small task upserts
status, summary, request (masked) and amount whenever they change, and the saga's end
upserts its final status before it closes. A saga whose server has none of them, or
one started before the check said so (a replay), upserts nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from saga._index import KEYS, MAX_REQUEST_CHARS
    from saga._models import CheckedPlan, SagaInput, SagaResult
    from saga._redact import mask_text


class Indexing:
    """Upserts the saga's search attributes as its state changes."""

    _state: SagaResult
    _input: SagaInput
    _indexed: dict[str, Any] | None = None
    """What was last upserted; None: the saga is not indexed."""
    _index_names: frozenset[str] = frozenset()
    _indexer: asyncio.Task[None] | None = None

    def _take_check(self, answer: CheckedPlan) -> None:
        """Take the summary and amount of a checked plan, and start indexing once the
        worker says the server has the attributes."""
        if answer.plan is not None:
            self._state.summary = answer.summary
            self._state.amount = answer.amount
            self._state.currency = answer.currency
        if self._indexed is None and answer.search_attributes:
            self._index_names = frozenset(answer.search_attributes) & KEYS.keys()
            self._indexed = {}
            self._index()
            self._indexer = asyncio.create_task(self._keep_indexed())

    def _index_values(self) -> dict[str, Any]:
        state = self._state
        values: dict[str, Any] = {"SagaStatus": state.status.value, "SagaAmount": state.amount}
        if state.summary:
            values["SagaSummary"] = state.summary
        if state.currency:
            values["SagaCurrency"] = state.currency.upper()
        if self._input.request:
            values["SagaRequest"] = mask_text(self._input.request)[:MAX_REQUEST_CHARS]
        return {k: v for k, v in values.items() if k in self._index_names}

    def _stale(self) -> bool:
        indexed = self._indexed
        return indexed is not None and any(
            indexed.get(k) != v for k, v in self._index_values().items()
        )

    def _index(self) -> None:
        """Upsert what changed since the last upsert (no command when nothing did)."""
        if self._indexed is None:
            return
        changed = {k: v for k, v in self._index_values().items() if self._indexed.get(k) != v}
        if changed:
            workflow.upsert_search_attributes([KEYS[k].value_set(v) for k, v in changed.items()])
            self._indexed.update(changed)

    async def _keep_indexed(self) -> None:
        while True:
            await workflow.wait_condition(self._stale)
            self._index()
