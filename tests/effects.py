"""A small real external system for the engine's tests: effects counted in SQL.

`effects.apply` writes a row per effect (no unique key: a duplicate effect would show as
a second row); `revert_effect` marks it reverted. Every call is logged in order, so tests
assert exactly-once and reverse order by counting rows. Fault knobs ride in the args.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    exists,
    func,
    insert,
    literal,
    select,
    update,
)
from temporalio import activity
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

from saga import Delivery, Settings, compensated_by, current_step, pivot

metadata = MetaData()
effect = Table(
    "effect",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(300), index=True, nullable=False),
    Column("name", String(100), nullable=False),
    Column("reverted", Integer, nullable=False, default=0),
)
call_log = Table(
    "call_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(20), nullable=False),  # apply | revert | noop-revert | notify
    Column("key", String(300), nullable=False),
    Column("name", String(100), nullable=False),
)


def effects_url() -> str:
    return os.environ["SAGA_TEST_EFFECTS_URL"]


def make_engine(url: str) -> Engine:
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
    engine = create_engine(url, **kwargs)
    metadata.create_all(engine)
    return engine


class ApplyInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    fail: Literal["none", "before", "after", "hang_after"] = "none"
    transient_failures: int = Field(0, ge=0, le=10)
    delay: float = Field(0, ge=0, le=600)
    revert_failures: int = Field(
        0, ge=0, description="The compensation fails this many times in all, then works."
    )
    revert_delay: float = Field(0, ge=0, le=600, description="Seconds the compensation takes.")


class ApplyResult(BaseModel):
    external_id: str
    name: str


class RevertResult(BaseModel):
    reverted: bool
    revert_id: str | None = Field(None, description="The undo's own id (its call log row).")


class NotifyInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


class DeliverInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    lose_response: bool = Field(
        False,
        description="The step's first delivery is made, then its attempt fails as if the "
        "receiver's answer was lost.",
    )


class DeliverResult(BaseModel):
    external_id: str


FAST_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=100),
    backoff_coefficient=1.5,
    maximum_interval=timedelta(seconds=1),
    maximum_attempts=5,
)


class EffectCompensations:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @activity.defn
    async def revert_effect(self, inp: ApplyInput, result: ApplyResult | None) -> RevertResult:
        step = current_step()
        if inp.revert_delay:
            await asyncio.sleep(inp.revert_delay)
        failed = await asyncio.to_thread(
            self._failures, step.idempotency_key, inp.name, inp.revert_failures
        )
        if failed < inp.revert_failures:
            raise RuntimeError(f"injected compensation failure {failed + 1}")
        return await asyncio.to_thread(self._revert, step.idempotency_key, inp.name)

    def _failures(self, key: str, name: str, limit: int) -> int:
        """Earlier failed reverts of this key; logs this one when it is going to fail
        (a flaky system's own memory, across operator retry rounds)."""
        with self.engine.begin() as conn:
            count = int(
                conn.execute(
                    select(func.count())
                    .select_from(call_log)
                    .where(call_log.c.key == key, call_log.c.kind == "revert-failed")
                ).scalar_one()
            )
            if count < limit:
                conn.execute(insert(call_log).values(kind="revert-failed", key=key, name=name))
            return count

    @activity.defn
    async def revert_slow_effect(self, inp: ApplyInput, result: ApplyResult | None) -> RevertResult:
        return await self.revert_effect(inp, result)

    def _revert(self, key: str, name: str) -> RevertResult:
        with self.engine.begin() as conn:
            row = conn.execute(
                select(effect.c.id).where(effect.c.key == key, effect.c.reverted == 0)
            ).first()
            if row is None:
                conn.execute(insert(call_log).values(kind="noop-revert", key=key, name=name))
                return RevertResult(reverted=False)
            conn.execute(update(effect).where(effect.c.id == row.id).values(reverted=1))
            logged = conn.execute(insert(call_log).values(kind="revert", key=key, name=name))
            return RevertResult(reverted=True, revert_id=f"rev-{logged.inserted_primary_key[0]}")


class EffectActivities:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @compensated_by(
        EffectCompensations.revert_effect,
        retry_policy=FAST_RETRY,
        compensation_retry_policy=RetryPolicy(
            initial_interval=timedelta(milliseconds=100),
            backoff_coefficient=1.5,
            maximum_interval=timedelta(seconds=1),
            maximum_attempts=4,
        ),
        start_to_close_timeout=timedelta(seconds=30),
        heartbeat_timeout=timedelta(seconds=2),
    )
    @activity.defn
    async def apply_effect(self, inp: ApplyInput) -> ApplyResult:
        """Apply a named effect to the test system (counted in SQL)."""
        step = current_step()
        if step.attempt <= inp.transient_failures:
            raise RuntimeError(f"injected transient failure {step.attempt}")
        if inp.fail == "before":
            raise ApplicationError("injected business failure", type="Declined", non_retryable=True)
        if inp.delay:
            await asyncio.sleep(inp.delay)
        external_id = await asyncio.to_thread(self._apply, step.idempotency_key, inp.name)
        if inp.fail == "after":
            raise ApplicationError(
                "injected failure after the effect", type="Broken", non_retryable=True
            )
        if inp.fail == "hang_after":
            await asyncio.sleep(3600)
        return ApplyResult(external_id=external_id, name=inp.name)

    def _apply(self, key: str, name: str) -> str:
        with self.engine.begin() as conn:
            # Reconciliation, as a real system's client does: adopt an existing effect.
            # One statement, so two attempts racing (a zombie attempt after a heartbeat
            # timeout and its retry) cannot both insert.
            conn.execute(
                insert(effect).from_select(
                    ["key", "name", "reverted"],
                    select(literal(key), literal(name), literal(0)).where(
                        ~exists().where(effect.c.key == key)
                    ),
                )
            )
            conn.execute(insert(call_log).values(kind="apply", key=key, name=name))
            first = conn.execute(select(func.min(effect.c.id)).where(effect.c.key == key))
            return f"eff-{first.scalar_one()}"

    @compensated_by(
        EffectCompensations.revert_slow_effect,
        action="effects.slow",
        retry_policy=RetryPolicy(maximum_attempts=1),
        start_to_close_timeout=timedelta(seconds=2),
    )
    @activity.defn
    async def apply_slow_effect(self, inp: ApplyInput) -> ApplyResult:
        """Like effects.apply, with a 2 s timeout and no retries (for timeouts)."""
        return await self.apply_effect(inp)

    @pivot(retry_policy=FAST_RETRY)
    @activity.defn
    async def notify_effect(self, inp: NotifyInput) -> None:
        """An irreversible notification (test pivot)."""
        key = current_step().idempotency_key
        await asyncio.to_thread(self._notify, key, inp.name)

    def _notify(self, key: str, name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(call_log).values(kind="notify", key=key, name=name))

    @pivot(
        delivery=Delivery.AT_MOST_ONCE,
        retry_policy=FAST_RETRY,
        heartbeat_timeout=timedelta(seconds=2),
    )
    @activity.defn
    async def deliver_effect(self, inp: DeliverInput) -> DeliverResult:
        """Deliver a message no receiver de-duplicates (test at-most-once pivot)."""
        step = current_step()
        external_id = f"dlv-{step.idempotency_key}"
        await step.delivering(external_id, receiver="the effects test system")
        delivered = await asyncio.to_thread(self._deliver, step.idempotency_key, inp.name)
        if inp.lose_response and delivered == 1:
            raise ConnectionResetError("injected: delivered, then the answer was lost")
        return DeliverResult(external_id=external_id)

    def _deliver(self, key: str, name: str) -> int:
        """Log a delivery; returns how many this key has had."""
        with self.engine.begin() as conn:
            conn.execute(insert(call_log).values(kind="deliver", key=key, name=name))
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(call_log)
                    .where(call_log.c.key == key, call_log.c.kind == "deliver")
                ).scalar_one()
            )


def build_activities(settings: Settings) -> list[Callable[..., Any]]:
    engine = make_engine(effects_url())
    fwd, comp = EffectActivities(engine), EffectCompensations(engine)
    return [
        fwd.apply_effect,
        fwd.apply_slow_effect,
        fwd.notify_effect,
        fwd.deliver_effect,
        comp.revert_effect,
        comp.revert_slow_effect,
    ]


# -- what tests count -------------------------------------------------------------------
def effects_of(engine: Engine, saga_id: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(effect).where(effect.c.key.like(f"{saga_id}/%")).order_by(effect.c.id)
        ).all()
    return [dict(r._mapping) for r in rows]


def log_of(engine: Engine, saga_id: str) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(call_log.c.kind, call_log.c.name)
            .where(call_log.c.key.like(f"{saga_id}/%"))
            .order_by(call_log.c.seq)
        ).all()
    return [(r.kind, r.name) for r in rows]


def count_effects(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(effect)).scalar_one())
