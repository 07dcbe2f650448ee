"""The offline model in act mode: a careful agent without an LLM.

It works from the offline plan of the request (saga.planner._offline_model) and, like a
careful agent, looks before it writes: the stock and price of each product it is to
reserve (``inventory.product``), and the saved cards of the customer it is to charge
(``payments.customer``), when the catalog has those look-ups. A product short of stock is
replaced by the alternative the request allows ("2 blue mugs or red ones"); the charge
uses the looked-up price and the customer's first saved card. Then it makes the writes,
one per turn, and gives up at the first error a tool answers.

Everything it decides follows from the request and the answers so far, so each turn is a
pure function of the conversation: replay and retries see the same calls.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

PAYMENT_METHOD = re.compile(r"\bpm_[A-Za-z0-9_]+")
"""A payment method id in a request: a card number the edge tokenized."""
ALTERNATIVE = re.compile(r"\bor\s+(?P<alt>[a-z0-9-]+)(?:\s+ones?)?\b", re.IGNORECASE)


class GiveUp(Exception):
    """The request cannot be done as the look-ups show; the message says why."""


@dataclass(frozen=True)
class Call:
    action: str
    args: dict[str, Any]


def alternative_sku(request: str, sku: str) -> str | None:
    """``mug-red`` for ``mug-blue`` when the request says "... or red ones"."""
    found = ALTERNATIVE.search(request)
    if not found:
        return None
    product = sku.split("-", 1)[0]
    alt = f"{product}-{found['alt'].lower()}"
    return alt if alt != sku else None


def _result(answer: dict[str, Any] | None) -> dict[str, Any]:
    result = (answer or {}).get("result")
    return result if isinstance(result, dict) else {}


def _short(answer: dict[str, Any] | None, quantity: int) -> bool:
    product = _result(answer)
    return not product.get("found") or int(product.get("stock") or 0) < quantity


def lookups(
    steps: list[dict[str, Any]],
    cat: dict[str, Any],
    request: str,
    answers: list[dict[str, Any]],
) -> list[Call]:
    """The look-ups to make before writing, given the look-up ``answers`` so far."""
    wanted: list[Call] = []
    for step in steps:
        args = json.loads(step["args_json"])
        if step["action"] == "inventory.reserve" and "inventory.product" in cat:
            wanted.append(Call("inventory.product", {"sku": args["sku"]}))
            seen = answers[len(wanted) - 1] if len(answers) >= len(wanted) else None
            alt = alternative_sku(request, args["sku"])
            if seen is not None and alt and _short(seen, int(args["quantity"])):
                wanted.append(Call("inventory.product", {"sku": alt}))
        email = args.get("customer_email")
        if step["action"] == "payments.charge" and "payments.customer" in cat and email:
            wanted.append(Call("payments.customer", {"email": email}))
    return wanted


def adjusted(
    steps: list[dict[str, Any]], looked: list[tuple[Call, dict[str, Any]]], request: str = ""
) -> list[Call]:
    """The writes, as the look-ups' answers change them; :class:`GiveUp` if they cannot
    be done."""
    products = {
        call.args["sku"]: _result(answer)
        for call, answer in looked
        if call.action == "inventory.product"
    }
    cards = [
        card.get("payment_method")
        for call, answer in looked
        if call.action == "payments.customer"
        for customer in _result(answer).get("customers") or []
        for card in customer.get("cards") or []
    ]
    given = PAYMENT_METHOD.search(request)  # a card the request gave wins over a saved one
    writes: list[Call] = []
    chosen: dict[str, tuple[str, int]] = {}  # the sku asked for -> reserved, how many
    for step in steps:
        args = json.loads(step["args_json"])
        if step["action"] == "inventory.reserve" and products:
            sku, quantity = args["sku"], int(args["quantity"])
            options = [s for s in products if s == sku] + [s for s in products if s != sku]
            fit = [s for s in options if int(products[s].get("stock") or 0) >= quantity]
            if not fit:
                left = ", ".join(f"{s}: {products[s].get('stock') or 0}" for s in options)
                raise GiveUp(f"not enough stock for {quantity} x {sku} ({left} left)")
            chosen[sku] = (fit[0], quantity)
            args["sku"] = fit[0]
        if step["action"] == "payments.charge":
            for asked, (got, quantity) in chosen.items():
                price = products[got].get("unit_price_cents")
                if price:
                    args["amount"] = quantity * int(price)
                args["description"] = str(args.get("description", "")).replace(asked, got)
            if cards and cards[0] and not given:  # the customer's saved card, not a test one
                args.pop("card_number", None)
                args["payment_method"] = cards[0]
        if step["action"] == "notify.email":
            for asked, (got, _) in chosen.items():
                for key in ("subject", "body"):
                    if key in args:
                        args[key] = str(args[key]).replace(asked, got)
        writes.append(Call(step["action"], args))
    return writes


def next_turn(
    steps: list[dict[str, Any]],
    cat: dict[str, Any],
    request: str,
    answers: list[dict[str, Any]],
) -> Call | tuple[bool, str]:
    """The next tool call, or ``(done, answer)``."""
    for answer in answers:
        if "error" in answer:
            return (
                False,
                f"{answer.get('action') or answer.get('lookup')} failed: {answer['error']}",
            )
    looked = [a for a in answers if "lookup" in a]
    wrote = [a for a in answers if "action" in a]
    wanted = lookups(steps, cat, request, looked)
    if len(looked) < len(wanted):
        return wanted[len(looked)]
    try:
        writes = adjusted(steps, list(zip(wanted, looked, strict=True)), request)
    except GiveUp as exc:
        return False, str(exc)
    if len(wrote) < len(writes):
        return writes[len(wrote)]
    return True, "did " + ", ".join(w.action for w in writes)
