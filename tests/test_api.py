"""The public surface: names pinned, catalog described as JSON schema."""

from __future__ import annotations

from pydantic import BaseModel
from temporalio import activity

import saga
from saga import ActionKind, catalog
from tests import effects  # noqa: F401  (declares the effects.* actions)

PUBLIC = {
    "ActionKind",
    "Amount",
    "Currency",
    "Policy",
    "PolicyBreached",
    "check_plan",
    "check_policy",
    "ActionSpec",
    "Catalog",
    "CatalogError",
    "CompensationStatus",
    "Delivery",
    "DevServer",
    "Faults",
    "InputRejected",
    "Ledger",
    "LedgerInterceptor",
    "OperatorAction",
    "PayloadKeyError",
    "PayloadKeys",
    "Plan",
    "PlanOptions",
    "PlanRejected",
    "SagaError",
    "SagaInput",
    "SagaResult",
    "SagaStatus",
    "SagaWorkflow",
    "Settings",
    "Step",
    "StepAlreadyCompensated",
    "StepContext",
    "StepOptions",
    "StepResult",
    "StepSnapshot",
    "StepState",
    "StepStatus",
    "catalog",
    "compensable",
    "compensated_by",
    "compensates",
    "connect",
    "create_worker",
    "current_step",
    "data_converter",
    "free_port",
    "idempotency_key",
    "load_activities",
    "make_engine",
    "migrate",
    "payload_keys",
    "pivot",
    "read_only",
    "saga_state",
    "start_saga",
    "temporal_binary",
    "test_server_binary",
    "validate_plan",
    "wait_saga",
}


def test_public_names_are_pinned() -> None:
    assert set(saga.__all__) >= PUBLIC, PUBLIC - set(saga.__all__)
    for name in saga.__all__:
        assert hasattr(saga, name), name


def test_errors_share_one_root() -> None:
    for err in (
        saga.PlanRejected,
        saga.InputRejected,
        saga.CatalogError,
        saga.StepAlreadyCompensated,
        saga.PayloadKeyError,
    ):
        assert issubclass(err, saga.SagaError)


def test_catalog_describes_itself_as_json_schema() -> None:
    import compensations  # noqa: F401  (declares the real systems' actions and undo)

    described = {a["action"]: a for a in catalog.json_schema()["actions"]}
    charge = described["payments.charge"]
    assert charge["kind"] == "compensable"
    assert charge["compensation"] == "refund_payment"
    assert {"amount", "currency"} <= set(charge["args_schema"]["properties"])
    assert described["notify.email"]["kind"] == "pivot"
    # What a retry after a lost outcome does, per action (README: "What happens once").
    assert {name: described[name]["delivery"] for name in described}.items() >= {
        "payments.charge": "exactly_once",
        "inventory.reserve": "exactly_once",
        "tickets.create": "exactly_once",
        "notify.email": "at_most_once",
    }.items()
    assert described["saga.wait"]["kind"] == "read_only"
    assert described["effects.apply"]["args_schema"]["properties"]["name"]["type"] == "string"
    spec = catalog.get("inventory.reserve")
    assert spec is not None and spec.kind is ActionKind.COMPENSABLE
    assert spec.activity_name == "reserve_inventory"


class LookInput(BaseModel):
    sku: str


def test_pivot_and_read_only_work_bare_and_with_options() -> None:
    try:

        @saga.read_only
        @activity.defn(name="api_test_look_bare")
        async def look_bare(inp: LookInput) -> None: ...

        @saga.pivot(action="apitest.tell", delivery=saga.Delivery.AT_MOST_ONCE)
        @activity.defn(name="api_test_tell")
        async def tell(inp: LookInput) -> None: ...

        bare = catalog.by_activity("api_test_look_bare")
        assert bare is not None and bare.name == "test_api.look"
        assert bare.kind == saga.ActionKind.READ_ONLY and bare.input_model is LookInput
        told = catalog.get("apitest.tell")
        assert told is not None and told.kind == saga.ActionKind.PIVOT
        assert told.delivery == saga.Delivery.AT_MOST_ONCE
    finally:  # the catalog is process-wide: leave it as the other tests know it
        for name, act in [
            ("test_api.look", "api_test_look_bare"),
            ("apitest.tell", "api_test_tell"),
        ]:
            catalog._by_name.pop(name, None)
            catalog._by_activity.pop(act, None)
