"""Tests of `saga web` and the live table: real Temporal dev server, real worker."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from temporalio.client import Client

from saga import SagaInput, SagaWorkflow
from saga._policy import Policy
from saga.web import create_app
from tests.conftest import Stack, unique

TOKEN = "test-operator-token-0123456789"
CARD = "4242 4242 4242 4242"


def apply(step_id: str, **args: Any) -> dict[str, Any]:
    return {"id": step_id, "action": "effects.apply", "args": {"name": step_id, **args}}


def deliver(step_id: str, **args: Any) -> dict[str, Any]:
    """An at-most-once pivot (effects.deliver); ``lose_response=True`` parks it."""
    return {"id": step_id, "action": "effects.deliver", "args": {"name": step_id, **args}}


def wait(step_id: str, seconds: float) -> dict[str, Any]:
    return {"id": step_id, "action": "saga.wait", "args": {"seconds": seconds}}


async def start(
    stack: Stack,
    *steps: dict[str, Any],
    approval: bool = False,
    request: str | None = None,
    prefix: str = "web",
) -> str:
    """Start a saga on the test worker; with approval it waits for a person first."""
    sid = unique(prefix)
    await stack.client.start_workflow(
        SagaWorkflow.run,
        SagaInput(
            plan={"steps": list(steps)},
            request=request,
            policy=Policy(approval="always" if approval else "never"),
        ),
        id=sid,
        task_queue=stack.settings.task_queue,
    )
    return sid


def web_app(stack: Stack, client: Client | None = None) -> FastAPI:
    """The app over the session's Temporal client (or the one given)."""
    temporal = client or stack.client

    async def factory() -> Client:
        return temporal

    return create_app(stack.settings, factory, token=TOKEN)
