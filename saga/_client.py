"""Operations on sagas shared by the CLI and the web app.

They name the workflow, its query and its updates by string, so a command like
`saga status` needs neither the workflow code nor the agents SDK.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.runtime import Runtime
from temporalio.service import RPCError

from saga._cards import tokenize_cards
from saga._catalog import catalog
from saga._codec import data_converter, payload_keys
from saga._errors import SagaError
from saga._limits import check_saga_input
from saga._models import SagaInput, SagaResult, SagaStatus
from saga._plan import check_plan
from saga._settings import Settings

WORKFLOW = "SagaWorkflow"
STATE_QUERY = "state"


async def connect_client(settings: Settings, runtime: Runtime | None = None) -> Client:
    """A light client for operating on sagas (no worker plugins); speaks pydantic, and
    encrypts and decrypts payloads with the payload keys. ``runtime``: the Temporal
    runtime (default: the SDK's own)."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.namespace,
        data_converter=data_converter(payload_keys(settings)),
        runtime=runtime,
    )


WORKFLOW_TASK_TIMEOUT = timedelta(seconds=5)


def check_start(inp: SagaInput) -> None:
    """What every starter (the CLI, the MCP server) checks before anything is sent: the
    input's sizes, and a plan against the catalog and the input's policy. Raises
    :class:`~saga.InputRejected`, :class:`~saga.PlanRejected` or
    :class:`~saga.PolicyBreached`; the worker checks again, with its own floor."""
    check_saga_input(inp)
    if inp.plan is not None:
        check_plan(inp.plan, catalog, inp.policy)


async def start_saga(
    client: Client,
    plan: Any,
    *,
    saga_id: str,
    task_queue: str,
    request: str | None = None,
    input: SagaInput | None = None,
    settings: Settings | None = None,
) -> WorkflowHandle[Any, SagaResult]:
    """Start a saga; a saga id runs once (re-using it is refused).

    An empty request, or an input over the limits of :mod:`saga._limits`, raises
    :class:`~saga._limits.InputRejected` and starts nothing. Card numbers in the plan or
    the request become Stripe PaymentMethod ids first (:func:`saga._cards.tokenize_cards`,
    with ``settings``' Stripe; default: the environment's), so the workflow never holds
    one.
    """
    inp = input or SagaInput(plan=plan, request=request)
    check_saga_input(inp)  # before anything is sent to Stripe
    tokenized = await tokenize_cards(inp, settings)
    if tokenized is not inp:  # a pm_ id is longer than the number it replaced
        check_saga_input(tokenized)
    return await client.start_workflow(
        WORKFLOW,
        tokenized,
        id=saga_id,
        task_queue=task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        # A worker that dies holding a workflow task costs this long before another
        # worker takes the task (Temporal's default is 10 s); a saga's tasks take
        # milliseconds.
        task_timeout=WORKFLOW_TASK_TIMEOUT,
        result_type=SagaResult,
    )


async def saga_state(client: Client, saga_id: str) -> SagaResult:
    """Live state of a running saga, or the final state of a closed one."""
    handle = client.get_workflow_handle(saga_id, result_type=SagaResult)
    try:
        desc = await handle.describe()
    except RPCError as exc:
        raise SagaError(f"no saga {saga_id!r}: {exc.message}") from None
    try:
        state: SagaResult = await handle.query(STATE_QUERY, result_type=SagaResult)
        return state
    except Exception:
        if desc.status == WorkflowExecutionStatus.RUNNING:
            # Not picked up by a worker yet: nothing has run.
            return SagaResult(saga_id=saga_id, status=SagaStatus.PENDING)
        raise


async def wait_saga(client: Client, saga_id: str) -> SagaResult:
    """Wait until the saga closes and return its final state (cancelled ones too)."""
    handle = client.get_workflow_handle(saga_id, result_type=SagaResult)
    try:
        result: SagaResult = await handle.result()
        return result
    except Exception:
        desc = await handle.describe()
        if desc.status == WorkflowExecutionStatus.CANCELED:
            return await saga_state(client, saga_id)
        raise


async def update_saga(client: Client, saga_id: str, update: str, arg: Any) -> SagaResult:
    """Run one of the saga's updates (approve, reject, edit_step, retry/resolve_compensation)."""
    handle = client.get_workflow_handle(saga_id, result_type=SagaResult)
    result: SagaResult = await handle.execute_update(update, arg, result_type=SagaResult)
    return result
