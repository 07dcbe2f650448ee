"""`saga mcp` over stdio, through the official MCP client, against `saga dev`: what a
desktop client does. Effects are counted in localstripe and the inventory."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from mcp import Client, StdioServerParameters

from tests.conftest import eventually, unique
from tests.mcp import answer, over_stdio, text
from tests.mcp.conftest import ROOT, Dev, order_plan

TOOLS = {
    "list_actions",
    "validate_plan",
    "start_saga",
    "saga_status",
    "wait_saga",
    "cancel_saga",
    "list_sagas",
}


async def test_tools_and_the_catalog_with_its_undo(dev: Dev) -> None:
    async with over_stdio(dev) as client:
        listed = await client.list_tools()
        assert {t.name for t in listed.tools} == TOOLS
        by_name = {t.name: t for t in listed.tools}
        assert by_name["cancel_saga"].annotations is not None
        assert by_name["cancel_saga"].annotations.destructive_hint is True
        assert by_name["saga_status"].annotations is not None
        assert by_name["saga_status"].annotations.read_only_hint is True
        assert client.server_capabilities is not None
        resources = client.server_capabilities.resources
        assert resources is not None and resources.subscribe is True

        actions = {a["action"]: a for a in answer(await client.call_tool("list_actions"))["result"]}
        charge = actions["payments.charge"]
        assert charge["kind"] == "compensable" and charge["pivot"] is False
        assert charge["undo"].startswith("Refund the charge in full")
        assert "amount" in charge["args_schema"]["properties"]
        assert actions["inventory.reserve"]["undo"].startswith("Put the step's reserved stock back")
        email = actions["notify.email"]
        assert email["pivot"] is True and email["undo"].startswith("cannot be undone")
        assert actions["inventory.product"]["undo"] == "nothing to undo: it changes nothing"


async def test_a_bad_plan_is_refused_line_by_line_with_no_effect(dev: Dev) -> None:
    sku = dev.product(stock=5)
    plan = order_plan(sku)
    plan["steps"][1]["args"]["amount"] = "2500"  # a string amount: never money
    plan["steps"].append({"id": "x", "action": "payments.teleport", "args": {}})
    intents_before = await dev.payment_intents()
    saga_id = unique("mcp-bad")
    async with over_stdio(dev) as client:
        checked = answer(await client.call_tool("validate_plan", {"plan": plan}))
        assert checked["valid"] is False
        assert checked["problems"] == [
            "plan rejected: step 'charge' (payments.charge): args.amount: Input should be a "
            "valid integer, got a string",
            "plan rejected: step 'x': unknown action 'payments.teleport' (known: "
            "inventory.product, inventory.reserve, inventory.search, notify.email, "
            "payments.charge, payments.customer, saga.wait, tickets.assignable_users, "
            "tickets.create, tickets.find_open)",
        ]
        started = await client.call_tool("start_saga", {"plan": plan, "saga_id": saga_id})
        assert started.is_error
        assert text(started).splitlines() == checked["problems"]
        # Arguments that are not even the tool's shape: one line, the value not echoed.
        wrong = await client.call_tool("start_saga", {"plan": "4242424242424242"})
        assert wrong.is_error
        assert text(wrong) == "start_saga: plan: Input should be a valid dictionary"
        nobody = await client.call_tool("saga_status", {"saga_id": saga_id})
        assert nobody.is_error and text(nobody) == f"no saga {saga_id!r}"
    assert await dev.payment_intents() == intents_before
    assert dev.stock(sku) == 5
    # The refusal is in the audit trail, under the local user, via mcp.
    [entry] = dev.trail(saga_id)
    assert (entry.action, entry.via) == ("start", "mcp")
    assert entry.outcome.startswith("refused: step 'charge'")


async def test_an_order_saga_starts_at_once_and_is_waited_for(dev: Dev) -> None:
    sku = dev.product(stock=5)
    saga_id = unique("mcp-order")
    async with over_stdio(dev) as client:
        checked = answer(await client.call_tool("validate_plan", {"plan": order_plan(sku)}))
        assert checked["valid"] and not checked["needs_approval"]
        assert (checked["amount"], checked["currency"]) == (2500, "eur")
        started = answer(
            await client.call_tool("start_saga", {"plan": order_plan(sku), "saga_id": saga_id})
        )
        assert started["saga_id"] == saga_id and started["status"] == "started"
        assert started["resource"] == f"saga://{saga_id}"
        progress: list[tuple[float, float | None, str | None]] = []

        async def seen(done: float, total: float | None, message: str | None) -> None:
            progress.append((done, total, message))

        waited = answer(
            await client.call_tool(
                "wait_saga", {"saga_id": saga_id, "timeout_seconds": 60}, progress_callback=seen
            )
        )
        assert waited["status"] == "completed" and waited["finished"] is True, waited
        assert waited["world"] == "done"
        assert waited["message"] == "completed: 3 steps done"
        assert progress and progress[-1][0] == 3, progress
        steps = {s["id"]: s for s in waited["steps"]}
        assert steps["charge"]["external_id"].startswith("pi_")
        # The live state as a resource (card numbers never appear: a payment method did).
        read = await client.read_resource(f"saga://{saga_id}")
        [content] = read.contents
        state = json.loads(getattr(content, "text", "{}"))
        assert state["state"]["status"] == "completed"
        assert "4242424242424242" not in getattr(content, "text", "")
        listed = answer(await client.call_tool("list_sagas", {"search": sku}))["result"]
        assert [row["saga_id"] for row in listed] == [saga_id]
    [intent] = await dev.charges(saga_id)
    assert (intent.id, intent.status, intent.amount) == (
        steps["charge"]["external_id"],
        "succeeded",
        2500,
    )
    assert dev.stock(sku) == 3


async def _updates(sub: Any, into: list[str]) -> None:
    async for event in sub:
        into.append(str(event.uri))


async def test_cancel_undoes_in_reverse_and_subscribers_hear_it(dev: Dev) -> None:
    sku = dev.product(stock=5)
    saga_id = unique("mcp-cancel")
    uri = f"saga://{saga_id}"
    async with over_stdio(dev) as client:
        answer(
            await client.call_tool(
                "start_saga", {"plan": order_plan(sku, wait=120), "saga_id": saga_id}
            )
        )

        async def pausing() -> bool:
            status = answer(await client.call_tool("saga_status", {"saga_id": saga_id}))
            return any(s["id"] == "pause" and s["status"] == "running" for s in status["steps"])

        await eventually(pausing, timeout=60, interval=0.5)
        assert dev.stock(sku) == 3
        heard: list[str] = []
        async with (
            client.listen(resource_subscriptions=[uri]) as sub,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(_updates, sub, heard)
            cancelled = answer(
                await client.call_tool("cancel_saga", {"saga_id": saga_id, "wait_seconds": 60})
            )
            await eventually(lambda: heard, timeout=10)
            tg.cancel_scope.cancel()
        assert set(heard) == {uri}
        assert cancelled["status"] == "cancelled" and cancelled["finished"], cancelled
        assert cancelled["world"] == "undone"
        assert cancelled["message"] == "cancelled: 2 steps compensated"
        undo = {s["id"]: s["undo"] for s in cancelled["steps"]}
        assert undo["reserve"] == undo["charge"] == "compensated"
        # A second cancel changes nothing, and says so.
        again = answer(await client.call_tool("cancel_saga", {"saga_id": saga_id}))
        assert again["message"] == "already cancelled: 2 steps compensated"
    [intent] = await dev.charges(saga_id)
    [refund] = await dev.refunds(intent.id)
    assert (refund.amount, refund.status) == (2500, "succeeded")
    assert dev.stock(sku) == 5


async def test_subscribers_of_the_older_protocol_hear_changes_too(dev: Dev) -> None:
    sku = dev.product(stock=5)
    saga_id = unique("mcp-legacy")
    heard: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            heard.append(str(message.params.uri))

    params = StdioServerParameters(
        command=sys.executable, args=["-m", "saga", "mcp"], cwd=str(ROOT), env=dev.env()
    )
    async with Client(params, mode="legacy", message_handler=on_message, cache=None) as client:
        assert client.protocol_version == "2025-11-25"
        answer(
            await client.call_tool(
                "start_saga", {"plan": order_plan(sku, wait=30), "saga_id": saga_id}
            )
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # resources/subscribe is deprecated in 2026
            await client.subscribe_resource(f"saga://{saga_id}")
        answer(await client.call_tool("cancel_saga", {"saga_id": saga_id, "wait_seconds": 60}))
        await eventually(lambda: heard, timeout=10)
    assert set(heard) == {f"saga://{saga_id}"}


async def test_a_plan_needing_approval_comes_back_waiting(dev: Dev, tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"approval": "risky", "approval_threshold": 1000}))
    sku = dev.product(stock=5)
    saga_id = unique("mcp-approve")
    async with over_stdio(dev, SAGA_POLICY_FILE=str(policy)) as client:
        checked = answer(await client.call_tool("validate_plan", {"plan": order_plan(sku)}))
        assert checked["needs_approval"] is True
        assert checked["approval_steps"] == ["charge", "confirm"]
        answer(await client.call_tool("start_saga", {"plan": order_plan(sku), "saga_id": saga_id}))
        waited = answer(
            await client.call_tool("wait_saga", {"saga_id": saga_id, "timeout_seconds": 30})
        )
        assert waited["status"] == "awaiting_approval" and waited["finished"] is False
        assert waited["waiting_for"] == "approval"
        page = f"http://127.0.0.1:8080/sagas/{saga_id}"
        assert waited["page"] == page
        assert waited["message"] == (
            f"waiting for a person to approve the plan (hash {waited['plan_hash']}) at "
            f"{page}; nothing has run, and approving is not a tool"
        )
        answer(await client.call_tool("cancel_saga", {"saga_id": saga_id}))
    assert await dev.charges(saga_id) == []
    assert dev.stock(sku) == 5
