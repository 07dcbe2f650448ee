"""A stopping worker closes what its activities own (look-ups included): Stripe's and
Redmine's HTTP clients and the inventory's database connections (`saga worker` calls
this after draining)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from activities.inventory import InventoryActivities
from activities.payments import PaymentActivities
from activities.payments_lookups import PaymentLookups
from activities.tickets import TicketActivities
from activities.tickets_lookups import TicketLookups
from compensations.inventory import InventoryCompensations
from compensations.payments import PaymentCompensations
from compensations.tickets import TicketCompensations
from saga import Settings
from saga._worker import close_activities, load_activities


async def test_close_activities_closes_every_client_once(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        stripe_api_base="http://127.0.0.1:9",
        redmine_url="http://127.0.0.1:9",
        redmine_api_key="not-used",
    )
    acts = load_activities(settings)  # forward activities and compensations
    owners = {type(fn.__self__): fn.__self__ for fn in acts if hasattr(fn, "__self__")}
    payments = owners[PaymentActivities]
    tickets = owners[TicketActivities]
    inventory = owners[InventoryActivities]
    with inventory.engine.connect() as conn:  # one pooled connection, checked back in
        conn.execute(text("select 1"))
    assert inventory.engine.pool.checkedin() == 1  # type: ignore[attr-defined]
    stripe_http = payments._http._client_async  # type: ignore[union-attr]
    redmine_http = tickets.redmine.http
    # The look-ups have clients of their own (the inventory's share its engine).
    lookup_stripe = owners[PaymentLookups]._http._client_async  # type: ignore[union-attr]
    lookup_redmine = owners[TicketLookups].redmine.http
    assert redmine_http is not None and lookup_redmine is not None
    assert lookup_stripe is not stripe_http and lookup_redmine is not redmine_http
    https = (stripe_http, redmine_http, lookup_stripe, lookup_redmine)
    assert not any(http.is_closed for http in https)

    await close_activities(acts)

    assert all(http.is_closed for http in https)
    assert inventory.engine.pool.checkedin() == 0  # type: ignore[attr-defined]
    await close_activities(acts)  # a second close is harmless


async def test_the_compensations_clients_are_their_own_and_closed_too(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        stripe_api_base="http://127.0.0.1:9",
        redmine_url="http://127.0.0.1:9",
        redmine_api_key="not-used",
    )
    acts = load_activities(settings)
    owners = {type(fn.__self__): fn.__self__ for fn in acts if hasattr(fn, "__self__")}
    refunds = owners[PaymentCompensations]
    closing = owners[TicketCompensations]
    releases = owners[InventoryCompensations]
    assert refunds._http is not owners[PaymentActivities]._http
    assert closing.redmine is not owners[TicketActivities].redmine
    assert releases.engine is not owners[InventoryActivities].engine
    with releases.engine.connect() as conn:
        conn.execute(text("select 1"))
    stripe_http = refunds._http._client_async  # type: ignore[union-attr]
    redmine_http = closing.redmine.http
    assert redmine_http is not None
    assert not stripe_http.is_closed and not redmine_http.is_closed

    await close_activities(acts)

    assert stripe_http.is_closed and redmine_http.is_closed
    assert releases.engine.pool.checkedin() == 0  # type: ignore[attr-defined]
