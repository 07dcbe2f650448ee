"""The plan that runs is the plan the policy checks: properties over every catalog action.

Whatever a plan, a model or a person editing a plan writes into a step's args, either
validation refuses it, or the values the policy reads (amounts, currencies) are exactly
the values the activity will receive, and nothing the policy cannot read gets through.
The activity's view is computed the way Temporal computes it: the step's args encoded
and decoded by the pydantic data converter into the action's input model.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field
from temporalio.contrib.pydantic import pydantic_data_converter

import compensations  # noqa: F401  (declares the real systems' actions and undo)
from saga import (
    ActionSpec,
    Amount,
    CatalogError,
    Currency,
    Plan,
    PlanRejected,
    Policy,
    catalog,
    check_policy,
    validate_plan,
)
from saga._catalog import Catalog
from saga._money import CURRENCIES
from saga._plan import check_plan, with_args
from saga._policy import ApprovalMode, needs_approval, plan_hash, stricter
from tests import effects  # noqa: F401  (test actions: effects.*)
from tests.agent import money  # noqa: F401  (a second action that moves money)

ACTIONS = [spec.name for spec in catalog]
MONEY_ACTIONS = [spec.name for spec in catalog if "amount" in spec.money.values()]

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=6,
)
MONEYISH = st.one_of(
    st.integers(min_value=-5, max_value=10**9),
    st.integers(min_value=0, max_value=10**9).map(str),
    st.integers(min_value=0, max_value=10**9).map(float),
    st.integers(min_value=0, max_value=10**9).map(lambda n: f"{n}.0"),
    st.booleans(),
    st.sampled_from(["eur", "EUR", "Usd", "jpy", "xyz", "eur\n", " eur", "€", "", "EURO"]),
    JSON,
)
VALID = {
    "payments.charge": {
        "amount": 1999,
        "currency": "eur",
        "customer_email": "ana@example.com",
        "payment_method": "pm_card_visa",
    },
    "money.charge": {"name": "mugs", "amount": 500, "currency": "eur"},
}


def spec_of(name: str) -> ActionSpec:
    spec = catalog.get(name)
    assert spec is not None
    return spec


def from_field(prop: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values a field's JSON schema describes (enough of JSON schema for action inputs)."""
    if "anyOf" in prop:
        return st.one_of([from_field(p) for p in prop["anyOf"]])
    if "enum" in prop:
        return st.sampled_from(prop["enum"])
    if "const" in prop:
        return st.just(prop["const"])
    kind = prop.get("type")
    if kind == "integer":
        low = prop.get("minimum", prop.get("exclusiveMinimum", -(10**9) - 1) + 1)
        high = prop.get("maximum", prop.get("exclusiveMaximum", 10**9 + 1) - 1)
        return st.integers(min_value=low, max_value=high)
    if kind == "number":
        return st.floats(
            min_value=prop.get("minimum", prop.get("exclusiveMinimum")),
            max_value=prop.get("maximum", prop.get("exclusiveMaximum")),
            exclude_min="exclusiveMinimum" in prop,
            allow_nan=False,
            allow_infinity=False,
        )
    if kind == "string":
        if "pattern" in prop:
            return st.from_regex(prop["pattern"], fullmatch=True)
        if prop.get("format") == "email":
            return st.emails()
        return st.text(min_size=prop.get("minLength", 0), max_size=prop.get("maxLength", 30))
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return JSON


@st.composite
def schema_args(draw: st.DrawFn, spec: ActionSpec) -> dict[str, Any]:
    schema = spec.input_model.model_json_schema()
    required = set(schema.get("required", []))
    args = {}
    for name, prop in schema.get("properties", {}).items():
        if name in required or draw(st.booleans()):
            args[name] = draw(from_field(prop))
    return args


@st.composite
def step_args(draw: st.DrawFn, spec: ActionSpec) -> dict[str, Any]:
    """Args an action's schema allows, or a valid example, then some fields made hostile."""
    bases = [schema_args(spec)]
    if spec.name in VALID:
        bases.append(st.just(VALID[spec.name]))
    args = dict(draw(st.one_of(bases)))
    for name in spec.input_model.model_fields:
        if draw(st.integers(0, 3)) == 0:
            args[name] = draw(MONEYISH)
    return args


async def activity_view(spec: ActionSpec, args: dict[str, Any]) -> BaseModel:
    """What the activity receives: the args through Temporal's pydantic converter."""
    payloads = await pydantic_data_converter.encode([args])
    [decoded] = await pydantic_data_converter.decode(payloads, [spec.input_model])
    assert isinstance(decoded, spec.input_model)
    return decoded


async def assert_policy_sees_what_runs(
    spec: ActionSpec, raw: dict[str, Any], plan: Plan, limit: int
) -> None:
    [step] = plan.steps
    seen = await activity_view(spec, step.args)
    # The policy's amounts and currencies are the activity's, value for value.
    assert spec.amounts(step.args) == [
        getattr(seen, f) for f, k in spec.money.items() if k == "amount" and f in step.args
    ]
    assert spec.currencies(step.args) == [
        getattr(seen, f) for f, k in spec.money.items() if k == "currency" and f in step.args
    ]
    for field, kind in spec.money.items():
        value = getattr(seen, field)
        if value is None:
            continue
        if kind == "amount":
            # Only a JSON integer gets through as an amount: not "5000", 5000.0 or true.
            assert type(raw[field]) is int and type(value) is int and value == raw[field]
        else:
            assert value.upper() in CURRENCIES and value == value.lower()
    # The args are a fixed point: validating again changes nothing, nor the hash.
    again = validate_plan(plan.model_dump(mode="json"), catalog)
    assert again == plan and plan_hash(again) == plan_hash(plan)
    assert spec.input_model.model_validate(step.args) == seen
    # The per-step limit and the approval threshold judge the amount that will be charged.
    amounts = [getattr(seen, f) for f, k in spec.money.items() if k == "amount"]
    amounts = [a for a in amounts if a is not None]
    over = [
        p for p in check_policy(plan, Policy(max_amount_per_step=limit), catalog) if "over" in p
    ]
    assert bool(over) == any(a > limit for a in amounts)
    risky = Policy(approval=ApprovalMode.RISKY, approval_threshold=limit)
    if spec.kind != "pivot":
        assert needs_approval(plan, risky, catalog) == any(a > limit for a in amounts)


FAST = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.parametrize("action", ACTIONS)
@FAST
@given(data=st.data(), limit=st.integers(min_value=0, max_value=10**8))
async def test_whatever_a_plan_says_the_policy_sees_what_runs(
    action: str, data: st.DataObject, limit: int
) -> None:
    spec = spec_of(action)
    raw = data.draw(step_args(spec))
    try:
        plan = validate_plan({"steps": [{"id": "s", "action": action, "args": raw}]}, catalog)
    except PlanRejected:
        event("refused")
        return  # refused before anything runs
    event("accepted")
    await assert_policy_sees_what_runs(spec, raw, plan, limit)


@pytest.mark.parametrize("action", MONEY_ACTIONS)
@FAST
@given(data=st.data(), limit=st.integers(min_value=0, max_value=10**8))
async def test_a_plan_edited_during_approval_is_held_to_the_same_rules(
    action: str, data: st.DataObject, limit: int
) -> None:
    spec = spec_of(action)
    approved = validate_plan(
        {"steps": [{"id": "s", "action": action, "args": VALID[action]}]}, catalog
    )
    edit = data.draw(step_args(spec))
    try:
        plan = check_plan(with_args(approved, "s", edit), catalog, Policy())  # as edit_step
    except PlanRejected:
        event("refused")
        return
    event("accepted")
    assert plan_hash(plan) != plan_hash(approved) or plan == approved
    await assert_policy_sees_what_runs(spec, edit, plan, limit)


@pytest.mark.parametrize("action", MONEY_ACTIONS)
def test_the_properties_do_reach_accepted_money(action: str) -> None:
    """Not vacuous: valid args with an integer amount are accepted, and every way an
    amount was seen slipping through (string, decimal, true) is refused."""
    good = {"steps": [{"id": "s", "action": action, "args": VALID[action]}]}
    assert validate_plan(good, catalog).steps[0].args["amount"] == VALID[action]["amount"]
    for amount in ["5000", 5000.0, True, "99999999", "5e3", None, [5000]]:
        bad = json.loads(json.dumps(good))
        bad["steps"][0]["args"]["amount"] = amount
        with pytest.raises(PlanRejected) as caught:
            validate_plan(bad, catalog)
        assert caught.value.problems[0].startswith(f"step 's' ({action}): args.amount:")


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("amount", "5000", "args.amount: Input should be a valid integer, got a string"),
        ("amount", 5000.0, "args.amount: Input should be a valid integer, got a number"),
        ("amount", True, "args.amount: an amount is a whole number"),
        ("currency", "xyz", "args.currency: 'xyz' is not an ISO 4217 currency code"),
        ("currency", "eur\n", "is not an ISO 4217 currency code"),
    ],
)
def test_each_loophole_seen_is_named(field: str, value: Any, problem: str) -> None:
    args = {**VALID["payments.charge"], field: value}
    with pytest.raises(PlanRejected) as caught:
        validate_plan(
            {"steps": [{"id": "pay", "action": "payments.charge", "args": args}]}, catalog
        )
    assert len(caught.value.problems) == 1
    assert problem in caught.value.problems[0]


@pytest.mark.parametrize("sid", ["reserve\n", "reserve\r\n", "Reserve", "a" * 65, " a", "a b"])
def test_step_ids_match_in_full(sid: str) -> None:
    args = {"sku": "mug-blue", "quantity": 1}
    with pytest.raises(PlanRejected) as caught:
        validate_plan(
            {"steps": [{"id": sid, "action": "inventory.reserve", "args": args}]}, catalog
        )
    assert caught.value.problems == [
        "step 1: id must match [a-z0-9][a-z0-9_-]* (at most 64 characters)"
    ]


def test_canonical_args_are_what_is_hashed_and_approved() -> None:
    args = {**VALID["payments.charge"], "currency": "EUR"}
    plan = validate_plan(
        {"steps": [{"id": "pay", "action": "payments.charge", "args": args}]}, catalog
    )
    assert plan.steps[0].args["currency"] == "eur"
    lower = validate_plan(
        {"steps": [{"id": "pay", "action": "payments.charge", "args": VALID["payments.charge"]}]},
        catalog,
    )
    assert plan_hash(plan) == plan_hash(lower)


class _Sneaky(BaseModel):
    model_config = ConfigDict(extra="forbid")
    total_amount: int = Field(gt=0)


class _SneakyCurrency(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: Amount
    currency: str


class _Declared(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: Amount
    fee_amount: Amount | None = None
    currency: Currency


@pytest.mark.parametrize(
    ("model", "field"), [(_Sneaky, "total_amount"), (_SneakyCurrency, "currency")]
)
def test_the_catalog_refuses_money_the_policy_cannot_read(
    model: type[BaseModel], field: str
) -> None:
    spec = ActionSpec(
        name="sneaky.pay",
        activity_name="pay_sneakily",
        kind=catalog.get("payments.charge").kind,  # type: ignore[union-attr]
        description="",
        input_model=model,
        output_model=None,
    )
    with pytest.raises(CatalogError, match=f"{model.__name__}.{field} looks like money"):
        Catalog().register(spec)


def test_every_declared_amount_counts_towards_the_limits() -> None:
    spec = ActionSpec(
        name="fees.pay",
        activity_name="pay_fees",
        kind=catalog.get("payments.charge").kind,  # type: ignore[union-attr]
        description="",
        input_model=_Declared,
        output_model=None,
    )
    own = Catalog()
    own.register(spec)
    plan = validate_plan(
        {
            "steps": [
                {
                    "id": "p",
                    "action": "fees.pay",
                    "args": {"amount": 600, "fee_amount": 500, "currency": "EUR"},
                }
            ]
        },
        own,
    )
    assert check_policy(plan, Policy(max_amount_per_saga=1000), own) == [
        "plan: total amount 1100 is over the per-saga limit 1000"
    ]
    assert check_policy(plan, Policy(currencies=["USD"]), own) == [
        "step 'p': currency eur is not allowed by policy"
    ]


def test_policy_currencies_are_iso_4217() -> None:
    with pytest.raises(ValueError, match="not an ISO 4217 currency code"):
        Policy(currencies=["eur", "xyz"])


def test_check_policy_does_not_trust_an_unvalidated_plan() -> None:
    """A Plan built by hand (not by validate_plan) with a string amount is a problem."""
    plan = Plan.model_validate(
        {"steps": [{"id": "pay", "action": "payments.charge", "args": {"amount": "5000"}}]}
    )
    assert check_policy(plan, Policy(max_amount_per_step=1000), catalog) == [
        "step 'pay': amount '5000' is not an integer"
    ]
    assert needs_approval(plan, Policy(approval=ApprovalMode.RISKY), catalog)


def test_the_stricter_of_two_policies_allows_only_what_both_allow() -> None:
    starter = Policy(
        allowed_actions=["payments.charge", "inventory.reserve"],
        max_amount_per_step=5000,
        currencies=["eur", "usd"],
        approval=ApprovalMode.RISKY,
        approval_threshold=3000,
        max_steps=10,
    )
    floor = Policy(
        allowed_actions=["payments.charge", "notify.email"],
        max_amount_per_step=1000,
        max_amount_per_saga=2000,
        currencies=["usd"],
        approval=ApprovalMode.RISKY,
        approval_threshold=500,
        max_repairs=0,
    )
    both = stricter(starter, floor)
    assert both.allowed_actions == ["payments.charge"]
    assert (both.max_amount_per_step, both.max_amount_per_saga) == (1000, 2000)
    assert both.currencies == ["usd"]
    assert (both.approval, both.approval_threshold) == (ApprovalMode.RISKY, 500)
    assert (both.max_steps, both.max_repairs) == (10, 0)
    assert stricter(Policy(), floor) == stricter(floor, Policy())
    assert stricter(starter, Policy(approval=ApprovalMode.ALWAYS)).approval == ApprovalMode.ALWAYS
