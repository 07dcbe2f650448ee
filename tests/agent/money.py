"""A test action that moves money, so plans carry amounts the policy checks.

`money.charge` records an effect in the session's effects database, like
`effects.apply`, and its compensation marks it reverted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine, insert, select, update
from temporalio import activity

from saga import Amount, Currency, Settings, compensated_by, current_step, read_only
from tests import effects


class ChargeInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100, description="What the charge is for.")
    amount: Amount = Field(gt=0, description="Amount in cents.")
    currency: Currency = Field(description="ISO 4217 code.")


class ChargeResult(BaseModel):
    external_id: str


class BalanceInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100, description="Whose balance.")
    delay: float = Field(0, ge=0, le=60, description="Seconds to think first (tests).")


class BalanceResult(BaseModel):
    external_id: str | None = None
    name: str
    balance: Amount
    currency: Currency


BALANCES = {"ana": 1234, "bo": 50}


@read_only
@activity.defn
async def balance_money(inp: BalanceInput) -> BalanceResult:
    """Look up what someone may spend (a read-only look-up); unknown names have none."""
    if inp.delay:
        await asyncio.sleep(inp.delay)
    return BalanceResult(name=inp.name, balance=BALANCES.get(inp.name, 0), currency="EUR")


class MoneyCompensations:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @activity.defn
    async def refund_money(self, inp: ChargeInput, result: ChargeResult | None) -> None:
        key = current_step().idempotency_key
        await asyncio.to_thread(self._refund, key)

    def _refund(self, key: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(effects.effect).where(effects.effect.c.key == key).values(reverted=1)
            )


class MoneyActivities:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @compensated_by(MoneyCompensations.refund_money, retry_policy=effects.FAST_RETRY)
    @activity.defn
    async def charge_money(self, inp: ChargeInput) -> ChargeResult:
        """Charge an amount (test payments, counted in SQL)."""
        key = current_step().idempotency_key
        return ChargeResult(external_id=await asyncio.to_thread(self._charge, key, inp.name))

    def _charge(self, key: str, name: str) -> str:
        with self.engine.begin() as conn:
            row = conn.execute(select(effects.effect.c.id).where(effects.effect.c.key == key))
            found = row.first()
            if found is not None:
                return f"chg-{found.id}"
            new = conn.execute(insert(effects.effect).values(key=key, name=name, reverted=0))
            return f"chg-{new.inserted_primary_key[0]}"


def build_activities(settings: Settings) -> list[Callable[..., Any]]:
    engine = effects.make_engine(effects.effects_url())
    return [
        *effects.build_activities(settings),
        MoneyActivities(engine).charge_money,
        MoneyCompensations(engine).refund_money,
        balance_money,
    ]
