"""Saga: durable plans of real-world actions that end fully done or fully undone.

Names load on first use, so the command line starts without importing the agents SDK.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from saga._catalog import (
        ActionKind,
        ActionSpec,
        Catalog,
        Delivery,
        StepResult,
        catalog,
    )
    from saga._client import saga_state, start_saga, wait_saga
    from saga._codec import PayloadKeyError, PayloadKeys, data_converter, payload_keys
    from saga._declare import (
        StepOptions,
        compensable,
        compensated_by,
        compensates,
        pivot,
        read_only,
    )
    from saga._errors import (
        CatalogError,
        InputRejected,
        PlanRejected,
        SagaError,
        StepAlreadyCompensated,
    )
    from saga._faults import Faults
    from saga._ledger import Ledger, StepSnapshot, make_engine, migrate
    from saga._models import (
        CompensationStatus,
        OperatorAction,
        SagaInput,
        SagaMode,
        SagaResult,
        SagaStatus,
        StepState,
        StepStatus,
    )
    from saga._money import Amount, Currency
    from saga._plan import check_plan, validate_plan
    from saga._plan_model import Plan, PlanOptions, Step
    from saga._policy import Policy, check_policy
    from saga._settings import Settings
    from saga._step import LedgerInterceptor, StepContext, current_step, idempotency_key
    from saga._systems import Effect, Reconciler, Seed, SystemUnavailable
    from saga._tools import CompensationFailed, SagaSteps
    from saga._worker import connect, create_worker, load_activities
    from saga._workflow import SagaWorkflow
    from saga.dev._devserver import DevServer, free_port, temporal_binary, test_server_binary
    from saga.planner._act import ActOutput
    from saga.planner._agents import AgentFactory

_EXPORTS = {
    "ActionKind": "saga._catalog",
    "ActOutput": "saga.planner._act",
    "AgentFactory": "saga.planner._agents",
    "Amount": "saga._money",
    "Currency": "saga._money",
    "Policy": "saga._policy",
    "check_plan": "saga._plan",
    "check_policy": "saga._policy",
    "PolicyBreached": "saga._errors",
    "ActionSpec": "saga._catalog",
    "Catalog": "saga._catalog",
    "CatalogError": "saga._errors",
    "CompensationStatus": "saga._models",
    "Delivery": "saga._catalog",
    "DevServer": "saga.dev._devserver",
    "Faults": "saga._faults",
    "InputRejected": "saga._errors",
    "Ledger": "saga._ledger",
    "LedgerInterceptor": "saga._step",
    "OperatorAction": "saga._models",
    "PayloadKeyError": "saga._codec",
    "PayloadKeys": "saga._codec",
    "Plan": "saga._plan_model",
    "PlanOptions": "saga._plan_model",
    "PlanRejected": "saga._errors",
    "SagaError": "saga._errors",
    "SagaInput": "saga._models",
    "SagaMode": "saga._models",
    "SagaSteps": "saga._tools",
    "CompensationFailed": "saga._tools",
    "SagaResult": "saga._models",
    "SagaStatus": "saga._models",
    "SagaWorkflow": "saga._workflow",
    "Settings": "saga._settings",
    "Step": "saga._plan_model",
    "StepAlreadyCompensated": "saga._errors",
    "StepContext": "saga._step",
    "StepSnapshot": "saga._ledger",
    "StepState": "saga._models",
    "StepStatus": "saga._models",
    "catalog": "saga._catalog",
    "compensable": "saga._declare",
    "Effect": "saga._systems",
    "Reconciler": "saga._systems",
    "Seed": "saga._systems",
    "SystemUnavailable": "saga._systems",
    "compensated_by": "saga._declare",
    "compensates": "saga._declare",
    "StepOptions": "saga._declare",
    "StepResult": "saga._catalog",
    "connect": "saga._worker",
    "create_worker": "saga._worker",
    "current_step": "saga._step",
    "data_converter": "saga._codec",
    "free_port": "saga.dev._devserver",
    "idempotency_key": "saga._step",
    "load_activities": "saga._worker",
    "make_engine": "saga._ledger",
    "migrate": "saga._ledger",
    "payload_keys": "saga._codec",
    "pivot": "saga._declare",
    "read_only": "saga._declare",
    "saga_state": "saga._client",
    "start_saga": "saga._client",
    "temporal_binary": "saga.dev._devserver",
    "test_server_binary": "saga.dev._devserver",
    "validate_plan": "saga._plan",
    "wait_saga": "saga._client",
}

__all__ = [
    "ActOutput",
    "ActionKind",
    "ActionSpec",
    "AgentFactory",
    "Amount",
    "Catalog",
    "CatalogError",
    "CompensationFailed",
    "CompensationStatus",
    "Currency",
    "Delivery",
    "DevServer",
    "Effect",
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
    "Policy",
    "PolicyBreached",
    "Reconciler",
    "SagaError",
    "SagaInput",
    "SagaMode",
    "SagaResult",
    "SagaStatus",
    "SagaSteps",
    "SagaWorkflow",
    "Seed",
    "Settings",
    "Step",
    "StepAlreadyCompensated",
    "StepContext",
    "StepOptions",
    "StepResult",
    "StepSnapshot",
    "StepState",
    "StepStatus",
    "SystemUnavailable",
    "catalog",
    "check_plan",
    "check_policy",
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
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'saga' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
