"""The ledger's reads: steps and sagas as recorded, for the CLI, the web page, reconcile
and a waiting compensation. A base of :class:`saga.Ledger`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from saga._codec import PayloadKeys
from saga._ledger_schema import SAGAS, STEPS, StepSnapshot, as_utc, open_json, open_text, snapshot
from saga._ledger_writes import Writes


class LedgerReads:
    """Reads take a connection from the pool; personal columns are opened with ``keys``."""

    engine: Engine
    keys: PayloadKeys | None
    _w: Writes

    def in_flight_until(self, key: str) -> datetime | None:
        """Until when a forward request of the step may still land (None: nothing on its way)."""
        with self.engine.connect() as conn:
            value = conn.execute(self._w.read_in_flight, {"k": key}).scalar()
        return as_utc(value)

    def steps(self, saga_id: str) -> list[StepSnapshot]:
        steps = STEPS
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(steps).where(steps.c.saga_id == saga_id).order_by(steps.c.started_at)
            ).all()
        return [snapshot(r, self.keys) for r in rows]

    def step(self, key: str) -> StepSnapshot | None:
        with self.engine.connect() as conn:
            row = conn.execute(self._w.read_step, {"k": key}).first()
        return snapshot(row, self.keys) if row is not None else None

    def saga(self, saga_id: str) -> dict[str, Any] | None:
        table = SAGAS
        with self.engine.connect() as conn:
            row = conn.execute(select(table).where(table.c.saga_id == saga_id)).first()
        return self._saga_row(row) if row is not None else None

    def sagas(self) -> list[dict[str, Any]]:
        """Every saga row, oldest first (request, plan and error in the clear)."""
        table = SAGAS
        with self.engine.connect() as conn:
            rows = conn.execute(select(table).order_by(table.c.created_at)).all()
        return [self._saga_row(r) for r in rows]

    def _saga_row(self, row: Any) -> dict[str, Any]:
        out = dict(row._mapping)
        sid = out["saga_id"]
        out["request"] = open_text(self.keys, out["request"], "request", sid)
        out["plan"] = open_json(self.keys, out["plan"], "plan", sid)
        out["error"] = open_text(self.keys, out["error"], "error", sid)
        return out

    def all_steps(self) -> list[StepSnapshot]:
        steps = STEPS
        with self.engine.connect() as conn:
            rows = conn.execute(select(steps).order_by(steps.c.started_at)).all()
        return [snapshot(r, self.keys) for r in rows]
