"""The offline planner: an Agents SDK ``Model`` that plans without any LLM.

Used when no ``OPENAI_API_KEY`` is configured, so the demo and the tests run the whole
agent path (agent, plugin, model activity, validation, repair) with no endpoint. It reads
the catalog and the policy from the planner's system instructions, like a real model
would, and understands a few kinds of requests:

- orders: ``order 2 blue mugs for ana@example.com and charge her card`` ->
  ``inventory.reserve``, ``payments.charge`` (when asked to charge), ``notify.email``;
- tickets: ``open a ticket for the outage and assign it to ops`` -> ``tickets.create``;
- explicit steps: ``effects.apply name=a; effects.notify name=done`` (any catalog action,
  ``key=value`` arguments typed by the action's schema).

Anything else gets a plain "cannot plan" answer naming what it understands. It cannot
repair a rejected plan: on a repair turn it gives up with the engine's reasons.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import AsyncIterator
from typing import Any

from agents import (
    AgentOutputSchemaBase,
    Handoff,
    Model,
    ModelResponse,
    ModelSettings,
    ModelTracing,
    Tool,
    TResponseInputItem,
    Usage,
)
from agents.items import TResponseStreamEvent
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

from saga.planner._agent import (
    CATALOG_CLOSE,
    CATALOG_OPEN,
    OFFLINE_LABEL,
    OFFLINE_RESPONSE_ID,
    POLICY_CLOSE,
    POLICY_OPEN,
)
from saga.planner._lookups import tool_name
from saga.planner._offline_act import ALTERNATIVE, PAYMENT_METHOD, Call, next_turn

ACTOR_OPENING = "You are the agent of a saga engine."
"""How the act-mode agent's instructions begin (saga.planner._act.ACT_RULES)."""

# Unit prices of the bundled sample products (activities/inventory.py SAMPLE_PRODUCTS),
# in cents: the offline planner has no inventory access to look them up.
SAMPLE_PRICES = {"mug-blue": 1250, "mug-red": 1250, "tshirt-m": 2200, "poster-a2": 900}
TEST_CARD = "4242424242424242"
TEST_PAYMENT_METHOD = "pm_card_visa"
UNDERSTOOD = (
    "it understands orders ('order 2 blue mugs for ana@example.com and charge her card'), "
    "tickets ('open a ticket for the outage and assign it to ops') and explicit steps "
    "('effects.apply name=a; effects.notify name=done'); set OPENAI_API_KEY for a real model"
)
_NUMBERS = {
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}
_EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"
_ORDER = re.compile(
    r"\b(?:order|buy|purchase)\s+(?P<qty>\d+|an?|one|two|three|four|five|six|seven|eight"
    r"|nine|ten)\s+(?P<item>[a-z0-9][a-z0-9 -]*?)\s+for\s+(?P<email>" + _EMAIL + ")",
    re.IGNORECASE,
)
_TICKET = re.compile(r"\b(?:open|create|file|raise|log)\b.*?\bticket\b", re.IGNORECASE)
_TICKET_ABOUT = re.compile(
    r"\bticket\s+(?:for|about|on|regarding)\s+(?:the\s+|an?\s+)?(?P<what>.+?)"
    r"(?:\s+and\b|\s+assign|[.,;]|$)",
    re.IGNORECASE,
)
_ASSIGNEE = re.compile(
    r"\bassign(?:ed)?\s+(?:it\s+|this\s+|them\s+)?to\s+(?P<who>[\w.@-]+)", re.IGNORECASE
)
_CHARGE = re.compile(r"\b(?:charge|pay|bill)", re.IGNORECASE)
_INJECTION = re.compile(
    r"\b(?:ignore|disregard|forget)\b.{0,40}\b(?:instructions|rules|prompt|policy)\b",
    re.IGNORECASE,
)

# Argument names the planner fills, by what they mean (first match in the schema wins).
_SYNONYMS: dict[str, tuple[str, ...]] = {
    "email": ("customer_email", "email", "customer", "to", "recipient"),
    "title": ("title", "subject", "summary", "name"),
    "text": ("description", "body", "details", "text", "notes"),
    "assignee": ("assignee", "assign_to", "assigned_to", "owner", "team", "group", "queue"),
}


class CannotPlan(Exception):
    """The offline planner's reason for giving no plan."""


def _step(
    cat: dict[str, dict[str, Any]], action: str, sid: str, args: dict[str, Any]
) -> dict[str, Any]:
    spec = cat.get(action)
    if spec is None:
        raise CannotPlan(f"the catalog has no {action} action (it has: {', '.join(sorted(cat))})")
    schema = spec.get("args_schema", {})
    props = schema.get("properties", {})
    kept = {k: v for k, v in args.items() if k in props}
    missing = [r for r in schema.get("required", []) if r not in kept]
    if missing:
        raise CannotPlan(
            f"cannot fill the required argument(s) {', '.join(missing)} of {action} "
            "from the request"
        )
    return {"id": sid, "action": action, "args_json": json.dumps(kept, sort_keys=True)}


def _by_meaning(props: dict[str, Any], **values: Any) -> dict[str, Any]:
    """Put each value under the first argument name the schema has for its meaning."""
    out: dict[str, Any] = {}
    for meaning, value in values.items():
        for name in _SYNONYMS.get(meaning, (meaning,)):
            if name in props and name not in out:
                out[name] = value
                break
    return out


def _props(cat: dict[str, dict[str, Any]], action: str) -> dict[str, Any]:
    props = cat.get(action, {}).get("args_schema", {}).get("properties", {})
    return props if isinstance(props, dict) else {}


def _singular(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _plan_order(
    match: re.Match[str], request: str, cat: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    qty_text = match["qty"].lower()
    quantity = int(qty_text) if qty_text.isdigit() else _NUMBERS[qty_text]
    item = ALTERNATIVE.sub("", match["item"]).lower()  # "blue mugs or red ones": see _offline_act
    words = [w.replace("-", "") for w in item.split()]
    product, modifiers = _singular(words[-1]), words[:-1]
    sku = "-".join([product, *modifiers])
    email = match["email"]
    steps = [_step(cat, "inventory.reserve", "reserve", {"sku": sku, "quantity": quantity})]
    if _CHARGE.search(request):
        price = SAMPLE_PRICES.get(sku)
        if price is None:
            raise CannotPlan(
                f"no price known for {sku!r} (known: {', '.join(sorted(SAMPLE_PRICES))})"
            )
        props = _props(cat, "payments.charge")
        args: dict[str, Any] = {
            "amount": quantity * price,
            "currency": "eur",
            "description": f"{quantity} x {sku}",
            **_by_meaning(props, email=email),
        }
        given = PAYMENT_METHOD.search(request)  # a card number the edge tokenized
        if given and "payment_method" in props:
            args["payment_method"] = given.group(0)
        elif "card_number" in props:
            args["card_number"] = TEST_CARD
        elif "payment_method" in props:
            args["payment_method"] = TEST_PAYMENT_METHOD
        steps.append(_step(cat, "payments.charge", "charge", args))
    if "notify.email" in cat:
        what = f"{quantity} x {sku}"
        steps.append(
            _step(
                cat,
                "notify.email",
                "confirm",
                {
                    "to": email,
                    "subject": f"Your order: {what}",
                    "body": f"Thank you for your order of {what}.",
                },
            )
        )
    return steps


def _plan_ticket(request: str, cat: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    about = _TICKET_ABOUT.search(request)
    what = about["what"].strip() if about else request.strip()
    who = _ASSIGNEE.search(request)
    props = _props(cat, "tickets.create")
    values: dict[str, Any] = {
        "title": what[:1].upper() + what[1:],
        "text": f"Opened by the saga planner for the request: {request.strip()}",
    }
    if who:
        values["assignee"] = who["who"]
    steps = [_step(cat, "tickets.create", "ticket", _by_meaning(props, **values))]
    email = re.search(_EMAIL, request)
    if email and "notify.email" in cat and re.search(r"\b(?:email|notify|tell)\b", request, re.I):
        steps.append(
            _step(
                cat,
                "notify.email",
                "notify",
                {"to": email[0], "subject": f"Ticket opened: {values['title']}"},
            )
        )
    return steps


def _coerce(value: str, schema: dict[str, Any]) -> Any:
    types = {schema.get("type")} | {s.get("type") for s in schema.get("anyOf", [])}
    if "integer" in types and re.fullmatch(r"-?\d+", value):
        return int(value)
    if "number" in types and re.fullmatch(r"-?\d+(?:\.\d+)?", value):
        return float(value)
    if "boolean" in types and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if types & {"object", "array"}:
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _plan_explicit(segments: list[str], cat: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    for segment in segments:
        action, *pairs = shlex.split(segment)
        if action not in cat:
            raise CannotPlan(f"{action!r} is not a catalog action")
        props = _props(cat, action)
        args: dict[str, Any] = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep:
                raise CannotPlan(f"{pair!r}: write arguments as key=value")
            args[key] = _coerce(value, props.get(key, {}))
        base = re.sub(r"[^a-z0-9_-]", "-", action.split(".")[-1].lower()) or "step"
        counts[base] = counts.get(base, 0) + 1
        sid = base if counts[base] == 1 else f"{base}-{counts[base]}"
        steps.append({"id": sid, "action": action, "args_json": json.dumps(args)})
    return steps


def plan_offline(request: str, cat: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Steps for ``request`` from the catalog (action name -> description), or CannotPlan."""
    if _INJECTION.search(request):
        raise CannotPlan("the request tries to change the planner's instructions")
    segments = [s for s in re.split(r"\s*(?:;|\n|\bthen\b)\s*", request.strip()) if s]
    if any(s.split()[0] in cat for s in segments):
        return _plan_explicit(segments, cat)
    order = _ORDER.search(request)
    if order:
        return _plan_order(order, request, cat)
    if _TICKET.search(request):
        return _plan_ticket(request, cat)
    raise CannotPlan(f"it does not understand {request.strip()!r}; {UNDERSTOOD}")


def _between(text: str, start: str, end: str) -> Any:
    _, sep, rest = text.partition(start)
    body, sep2, _rest = rest.partition(end)
    if not sep or not sep2:
        raise CannotPlan(f"the instructions carry no {start} section")
    return json.loads(body)


def _user_texts(items: str | list[TResponseInputItem]) -> list[str]:
    if isinstance(items, str):
        return [items]
    texts: list[str] = []
    for item in items:
        if not isinstance(item, dict) or item.get("role") != "user":
            continue
        content = item.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.append("".join(str(p.get("text", "")) for p in content if isinstance(p, dict)))
    return texts


def _message(text: str) -> ModelResponse:
    return ModelResponse(
        output=[
            ResponseOutputMessage(
                id="msg-offline",
                content=[ResponseOutputText(text=text, annotations=[], type="output_text")],
                role="assistant",
                status="completed",
                type="message",
            )
        ],
        usage=Usage(),
        response_id=OFFLINE_RESPONSE_ID,
    )


class OfflinePlanner(Model):
    """A deterministic planner behind the Agents SDK ``Model`` interface."""

    def answer(
        self, system_instructions: str | None, input: str | list[TResponseInputItem]
    ) -> dict[str, Any]:
        """The planner's structured output, as the model would write it."""
        texts = _user_texts(input)
        try:
            if not texts:
                raise CannotPlan("there is no request")
            if len(texts) > 1:
                raise CannotPlan(f"it cannot repair a rejected plan. {texts[-1]}")
            instructions = system_instructions or ""
            cat = {
                a["action"]: a
                for a in _between(instructions, CATALOG_OPEN, CATALOG_CLOSE)["actions"]
            }
            _between(instructions, POLICY_OPEN, POLICY_CLOSE)  # present, as for a model
            return {"steps": plan_offline(texts[0], cat), "cannot_plan": None}
        except CannotPlan as exc:
            return {"steps": [], "cannot_plan": f"{OFFLINE_LABEL}: {exc}"}

    def act(self, system_instructions: str, input: str | list[TResponseInputItem]) -> ModelResponse:
        """Act mode: look-ups first, then the writes, one tool call per turn (see
        saga.planner._offline_act); it gives up at the first error a tool answers."""
        planned = self.answer(system_instructions, input)
        if planned["cannot_plan"]:
            return _message(json.dumps({"done": False, "answer": planned["cannot_plan"]}))
        items = input if isinstance(input, list) else []
        answers = [
            json.loads(str(i.get("output")))
            for i in items
            if isinstance(i, dict) and i.get("type") == "function_call_output"
        ]
        cat = {
            a["action"]: a
            for a in _between(system_instructions, CATALOG_OPEN, CATALOG_CLOSE)["actions"]
        }
        turn = next_turn(planned["steps"], cat, _user_texts(input)[0], answers)
        if isinstance(turn, Call):
            n = len(answers) + 1
            call = ResponseFunctionToolCall(
                arguments=json.dumps(turn.args, sort_keys=True),
                call_id=f"offline-call-{n}",
                name=tool_name(turn.action),
                type="function_call",
                id=f"fc-offline-{n}",
                status="completed",
            )
            return ModelResponse(output=[call], usage=Usage(), response_id=OFFLINE_RESPONSE_ID)
        done, text = turn
        return _message(json.dumps({"done": done, "answer": f"{OFFLINE_LABEL}: {text}"}))

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        **kwargs: Any,
    ) -> ModelResponse:
        if system_instructions and system_instructions.startswith(ACTOR_OPENING):
            return self.act(system_instructions, input)
        return _message(json.dumps(self.answer(system_instructions, input)))

    def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        **kwargs: Any,
    ) -> AsyncIterator[TResponseStreamEvent]:
        raise NotImplementedError("the offline planner does not stream")
