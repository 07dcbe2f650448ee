"""The inventory system's read-only look-ups: `inventory.product` (one product's name,
stock and unit price, by SKU) and `inventory.search` (the products whose name or SKU
holds every word given).

Part of the inventory system (`activities/inventory.py` is its home and lists these in
its `build()`); kept apart only for size. A look-up changes nothing and has no undo: in a
plan it is a step like any other (recorded in the ledger, its answer kept in history, so
never repeated on replay) and is never compensated. It has no effect, so no external id.

What the database holds is written by people and other programs: names are clipped to
one line of ``NAME_CHARS`` before a model reads them (``activities/_bounded.py``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Engine, and_, or_, select
from temporalio import activity

from activities._bounded import MAX_LIMIT, Limit, clip
from activities._inventory_schema import SKU_PATTERN, Product
from saga import StepResult, read_only

NAME_CHARS = 120
"""A product name as a look-up returns it: one line, at most this long."""
MAX_WORDS = 8


# -- inventory.product -------------------------------------------------------------------
class ProductInput(BaseModel):
    """Look up one product by SKU: its name, units in stock and unit price."""

    model_config = ConfigDict(extra="forbid")
    sku: str = Field(pattern=SKU_PATTERN, description="Product SKU, e.g. `mug-blue`.")


class ProductResult(StepResult):
    """The product; ``found`` is false (and the other fields empty) when the inventory has
    no product with that SKU: not an error, so a plan or an agent can go on."""

    sku: str
    found: bool
    name: str | None = Field(None, max_length=NAME_CHARS)
    stock: int | None = Field(None, description="Units in stock now.")
    unit_price_cents: int | None = Field(None, description="In the currency's minor unit.")
    currency: str | None = Field(None, max_length=3)


# -- inventory.search --------------------------------------------------------------------
class ProductSearchInput(BaseModel):
    """Find products by words: each word must appear in the product's name or SKU."""

    model_config = ConfigDict(extra="forbid")
    words: str = Field(
        min_length=1,
        max_length=200,
        description=f"Up to {MAX_WORDS} words, e.g. `blue mug`; any case.",
    )
    limit: Limit = 10

    @field_validator("words")
    @classmethod
    def _some_words(cls, value: str) -> str:
        words = value.split()
        if not words:
            raise ValueError("give at least one word")
        if len(words) > MAX_WORDS:
            raise ValueError(f"{len(words)} words, at most {MAX_WORDS}")
        return " ".join(words)


class ProductMatch(BaseModel):
    """One product that matched."""

    sku: str = Field(max_length=64)
    name: str = Field(max_length=NAME_CHARS)
    stock: int = Field(description="Units in stock now.")
    unit_price_cents: int = Field(description="In the currency's minor unit.")
    currency: str = Field(max_length=3)


class ProductSearchResult(StepResult):
    """The matching products in SKU order, at most ``limit``; ``more`` says that others
    matched too (narrow the words or raise the limit)."""

    products: list[ProductMatch] = Field(max_length=MAX_LIMIT)
    more: bool


# -- the look-ups ----------------------------------------------------------------------
class InventoryLookups:
    """Read-only activities of the inventory system, bound to its database engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def aclose(self) -> None:
        """Close the database connections (the worker calls it when it stops)."""
        await asyncio.to_thread(self.engine.dispose)

    @read_only(action="inventory.product")
    @activity.defn
    async def look_up_product(self, inp: ProductInput) -> ProductResult:
        """Name, units in stock and unit price of one product, by SKU (found: false if none)."""
        return await asyncio.to_thread(product, self.engine, inp.sku)

    @read_only(action="inventory.search")
    @activity.defn
    async def search_products(self, inp: ProductSearchInput) -> ProductSearchResult:
        """Products whose name or SKU holds every word given, with stock and unit price."""
        return await asyncio.to_thread(search, self.engine, inp.words.split(), inp.limit)


_COLUMNS = (Product.sku, Product.name, Product.stock, Product.price_cents, Product.currency)


def _match(row: Any) -> ProductMatch:
    return ProductMatch(
        sku=clip(row.sku, 64),
        name=clip(row.name, NAME_CHARS),
        stock=int(row.stock),
        unit_price_cents=int(row.price_cents),
        currency=clip(row.currency, 3).upper(),
    )


def product(engine: Engine, sku: str) -> ProductResult:
    """One product by SKU, or ``found=False``."""
    with engine.connect() as conn:
        row = conn.execute(select(*_COLUMNS).where(Product.sku == sku)).first()
    if row is None:
        return ProductResult(sku=sku, found=False)
    found = _match(row)
    return ProductResult(
        sku=sku,
        found=True,
        name=found.name,
        stock=found.stock,
        unit_price_cents=found.unit_price_cents,
        currency=found.currency,
    )


def search(engine: Engine, words: list[str], limit: int) -> ProductSearchResult:
    """The products whose name or SKU contains every word (any case; ``%`` and ``_`` are
    plain characters), in SKU order: at most ``limit``, and whether more matched."""
    every_word = and_(
        *(
            or_(
                Product.name.icontains(word, autoescape=True),
                Product.sku.icontains(word, autoescape=True),
            )
            for word in words
        )
    )
    with engine.connect() as conn:
        rows = conn.execute(
            select(*_COLUMNS).where(every_word).order_by(Product.sku).limit(limit + 1)
        ).all()
    return ProductSearchResult(products=[_match(r) for r in rows[:limit]], more=len(rows) > limit)
