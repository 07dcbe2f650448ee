"""Record the event histories that ``tests/test_replay.py`` replays against today's code.

    .venv/bin/python -m tests.histories.record              # every saga below
    .venv/bin/python -m tests.histories.record approved     # only the ones named

It starts what the tests start: a Temporal dev server, localstripe, an SMTP server and
SQLite ledger, inventory and effects databases in a temporary directory. Each saga runs
on a real worker of today's code (built by ``saga.create_worker``; the planner's model is
a scripted stand-in, as in ``tests/agent``), is checked to have ended as intended, and
its history is written to ``tests/histories/<name>.json``, overwriting the file. Saga
ids, task queues and identities are fixed and the sagas run one at a time, so a rerun
changes timestamps and Stripe's ids, not the shape of a history. ``SAGA_*`` and
``OPENAI_*`` variables of the caller are ignored. It takes about half a minute.

When to run it: these files stand for sagas in flight when new code is deployed, so do
not re-record them to make a failing replay test pass. After an intentional change
guarded by ``workflow.patched``, first move the current files into a subfolder named
for the release that wrote them (``tests/histories/<release>/``, still replayed), then
record; delete that subfolder once no saga started by that release is open.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents import ModelResponse
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowHistory, WorkflowUpdateFailedError
from temporalio.openai_agents.testing import ResponseBuilders
from temporalio.testing import WorkflowEnvironment

import activities
import compensations
from saga import (
    CompensationStatus,
    Ledger,
    OperatorAction,
    SagaInput,
    SagaResult,
    SagaStatus,
    SagaWorkflow,
    Settings,
    StepStatus,
    create_worker,
    data_converter,
    saga_state,
    temporal_binary,
    wait_saga,
)
from saga._models import ApprovalDecision, ApprovalState, SagaMode, StepEdit
from saga._policy import ApprovalMode, Policy
from saga.dev._devstack import dev_stack
from tests.agent import money
from tests.agent.conftest import ScriptedModel, client_with, plan_response, plugin_for
from tests.histories import FOLDER, HISTORY_KEYS, replayer

REPO = Path(__file__).parents[2]
EXAMPLES = REPO / "saga" / "examples"  # installed with the package
IDENTITY = "histories-recorder"
Handle = WorkflowHandle[SagaWorkflow, SagaResult]


def saga_id(name: str) -> str:
    return f"history-{name}"


@dataclass
class Run:
    """One saga being recorded: its worker's client and task queue."""

    name: str
    client: Client

    @property
    def saga_id(self) -> str:
        return saga_id(self.name)

    @property
    def task_queue(self) -> str:
        return f"histories-{self.name}"

    async def plan(self, plan: Any) -> Handle:
        return await self.client.start_workflow(
            SagaWorkflow.run, SagaInput(plan=plan), id=self.saga_id, task_queue=self.task_queue
        )

    async def request(self, text: str, policy: Policy, mode: SagaMode = SagaMode.PLAN) -> Handle:
        return await self.client.start_workflow(
            SagaWorkflow.run,
            SagaInput(request=text, policy=policy, mode=mode),
            id=self.saga_id,
            task_queue=self.task_queue,
        )

    async def until(self, check: Callable[[SagaResult], bool], timeout: float = 60) -> SagaResult:
        """Poll the saga's live state until ``check`` holds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            state = await saga_state(self.client, self.saga_id)
            if check(state):
                return state
            if loop.time() > deadline:
                raise RuntimeError(f"{self.name}: not reached in {timeout} s: {state}")
            await asyncio.sleep(0.05)


def _example(name: str) -> Any:
    return json.loads((EXAMPLES / name).read_text())


def _effect(sid: str, **args: Any) -> dict[str, Any]:
    return {"id": sid, "action": "effects.apply", "args": {"name": sid, **args}}


def _running(step_id: str) -> Callable[[SagaResult], bool]:
    return lambda s: any(x.id == step_id and x.status is StepStatus.RUNNING for x in s.steps)


def _status(*statuses: SagaStatus) -> Callable[[SagaResult], bool]:
    return lambda s: s.status in statuses


# -- the sagas -----------------------------------------------------------------------------
async def completed(run: Run) -> None:
    """examples/order.json on the inventory, localstripe and SMTP: every step done."""
    await run.plan(_example("order.json"))


async def compensated_card_declined(run: Run) -> None:
    """examples/order_declined.json: the card is declined, the reservation released."""
    await run.plan(_example("order_declined.json"))


async def cancelled_during_wait(run: Run) -> None:
    """examples/order_cancel.json cancelled on its cooling-off timer."""
    handle = await run.plan(_example("order_cancel.json"))
    await run.until(_running("cooling-off"))
    await handle.cancel()


async def cancelled_mid_step(run: Run) -> None:
    """Cancelled while its second step's activity runs: that step and the first undone."""
    handle = await run.plan({"steps": [_effect("a"), _effect("b", delay=60), _effect("c")]})
    await run.until(_running("b"))
    await handle.cancel()


async def cancelled_mid_compensation(run: Run) -> None:
    """Its third step fails; cancelled while b's compensation runs (they all still finish)."""
    plan = {
        "steps": [
            _effect("a", revert_delay=1.5),
            _effect("b", revert_delay=1.5),
            _effect("c", fail="before"),
        ]
    }
    handle = await run.plan(plan)
    await run.until(lambda s: s.steps[1].compensation is CompensationStatus.RUNNING)
    await handle.cancel()


async def needs_attention_retried(run: Run) -> None:
    """A compensation outlasts its retries (needs_attention); an operator retries it."""
    plan = {"steps": [_effect("a"), _effect("b", revert_failures=5), _effect("c", fail="before")]}
    handle = await run.plan(plan)
    await run.until(_status(SagaStatus.NEEDS_ATTENTION))
    await handle.execute_update(SagaWorkflow.retry_compensation, OperatorAction(step_id="b"))


async def needs_attention_resolved(run: Run) -> None:
    """A compensation that never works; an operator marks it resolved by hand."""
    plan = {
        "steps": [_effect("a"), _effect("b", revert_failures=1000), _effect("c", fail="before")]
    }
    handle = await run.plan(plan)
    await run.until(_status(SagaStatus.NEEDS_ATTENTION))
    await handle.execute_update(
        SagaWorkflow.resolve_compensation,
        OperatorAction(step_id="b", note="reverted by hand in the back office"),
    )


def _parked() -> dict[str, Any]:
    """a, then an at-most-once delivery whose answer is lost after it delivered."""
    deliver = {"name": "tell", "lose_response": True}
    return {"steps": [_effect("a"), {"id": "tell", "action": "effects.deliver", "args": deliver}]}


async def parked_resent(run: Run) -> None:
    """The delivery may have happened: parked, not repeated; an operator has it done again."""
    handle = await run.plan(_parked())
    await run.until(_status(SagaStatus.NEEDS_ATTENTION))
    await handle.execute_update(SagaWorkflow.retry_compensation, OperatorAction(step_id="tell"))


async def parked_confirmed(run: Run) -> None:
    """The delivery may have happened: parked; an operator confirms it did."""
    handle = await run.plan(_parked())
    await run.until(_status(SagaStatus.NEEDS_ATTENTION))
    await handle.execute_update(
        SagaWorkflow.resolve_compensation,
        OperatorAction(step_id="tell", note="the receiver has it"),
    )


async def parked_cancelled(run: Run) -> None:
    """The delivery may have happened: parked; an operator cancels, a is undone."""
    handle = await run.plan(_parked())
    await run.until(_status(SagaStatus.NEEDS_ATTENTION))
    await handle.cancel()


ALWAYS = Policy(approval=ApprovalMode.ALWAYS)
GATED_REQUEST = "apply a, charge 7 eur, then tell me"


def _gated_plan() -> list[ModelResponse]:
    return [
        plan_response(
            ("a", "effects.apply", {"name": "a"}),
            ("pay", "money.charge", {"name": "pay", "amount": 700, "currency": "eur"}),
            ("tell", "effects.notify", {"name": "told"}),
        )
    ]


async def approved(run: Run) -> None:
    """The agent plans; the plan waits at the approval gate; a person approves it."""
    handle = await run.request(GATED_REQUEST, ALWAYS)
    state = await run.until(_status(SagaStatus.AWAITING_APPROVAL))
    await handle.execute_update(
        SagaWorkflow.approve, ApprovalDecision(plan_hash=state.plan_hash, by="ana")
    )


async def rejected(run: Run) -> None:
    """The agent plans; a person rejects the plan at the approval gate."""
    handle = await run.request(GATED_REQUEST, ALWAYS)
    await run.until(_status(SagaStatus.AWAITING_APPROVAL))
    await handle.execute_update(
        SagaWorkflow.reject, ApprovalDecision(by="bo", reason="too expensive")
    )


async def edited(run: Run) -> None:
    """The agent plans; at the approval gate a person's edit is refused by the worker's
    check, another is accepted, and the edited plan is approved."""
    handle = await run.request(GATED_REQUEST, ALWAYS)
    state = await run.until(_status(SagaStatus.AWAITING_APPROVAL))
    try:
        await handle.execute_update(
            SagaWorkflow.edit_step,
            StepEdit(plan_hash=state.plan_hash or "", step_id="pay", args={"amount": "7"}),
        )
    except WorkflowUpdateFailedError:
        pass
    else:
        raise AssertionError("the bad edit was accepted")
    state = await handle.execute_update(
        SagaWorkflow.edit_step,
        StepEdit(plan_hash=state.plan_hash or "", step_id="a", args={"name": "edited"}),
    )
    await handle.execute_update(
        SagaWorkflow.approve, ApprovalDecision(plan_hash=state.plan_hash, by="ana")
    )


async def planned_with_repairs(run: Run) -> None:
    """The model's first plan names an unknown action, its second answer is a tool call
    to no tool; each time the problems go back to it; its third plan runs."""
    policy = Policy(max_repairs=2, max_amount_per_step=1000)
    await run.request("apply a and charge 9 eur", policy)


def _repairs() -> list[ModelResponse]:
    return [
        plan_response(("a", "effects.apply", {"name": "a"}), ("b", "effects.explode", {})),
        ResponseBuilders.tool_call('{"name": "a"}', "effects_apply", call_id="call-repair-1"),
        plan_response(
            ("a", "effects.apply", {"name": "a"}),
            ("pay", "money.charge", {"name": "pay", "amount": 900, "currency": "eur"}),
        ),
    ]


async def looked_up_and_replanned(run: Run) -> None:
    """The model looks up a balance, plans a then b; b is declined, and its re-plan (c)
    runs after a."""
    await run.request("apply a and b, or c if b is declined", Policy())


def _lookup_and_replan() -> list[ModelResponse]:
    return [
        ResponseBuilders.tool_call('{"name": "ana"}', "money__balance", call_id="call-look-1"),
        plan_response(
            ("a", "effects.apply", {"name": "a"}),
            ("b", "effects.apply", {"name": "b", "fail": "before"}),
        ),
        plan_response(("c", "effects.apply", {"name": "c"})),
    ]


async def acted(run: Run) -> None:
    """Act mode: the agent looks up a balance, applies a, b is declined, applies c."""
    await run.request("apply a and b, or c if b is declined", Policy(), mode=SagaMode.ACT)


def _acting() -> list[ModelResponse]:
    def call(tool: str, args: str, n: int) -> ModelResponse:
        return ResponseBuilders.tool_call(args, tool, call_id=f"call-act-{n}")

    return [
        call("money__balance", '{"name": "ana"}', 1),
        call("effects__apply", '{"name": "a"}', 2),
        call("effects__apply", '{"name": "b", "fail": "before"}', 3),
        call("effects__apply", '{"name": "c"}', 4),
        ResponseBuilders.output_message('{"done": true, "answer": "a and c"}'),
    ]


# -- what each saga must have done ---------------------------------------------------------
def _events(history: WorkflowHistory, kind: EventType.ValueType) -> int:
    return sum(e.event_type == kind for e in history.events)


def _model_calls(history: WorkflowHistory) -> int:
    return sum(
        e.activity_task_scheduled_event_attributes.activity_type.name == "invoke_model_activity"
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    )


Check = Callable[[SagaResult, WorkflowHistory], bool]
UPDATE = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED
CANCELED = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED


@dataclass(frozen=True)
class Scenario:
    run: Callable[[Run], Awaitable[None]]
    status: SagaStatus
    check: Check = lambda result, history: True
    script: Callable[[], list[ModelResponse]] = list


SCENARIOS: dict[str, Scenario] = {
    "completed": Scenario(completed, SagaStatus.COMPLETED),
    "compensated_card_declined": Scenario(
        compensated_card_declined,
        SagaStatus.COMPENSATED,
        lambda r, h: "CardDeclined" in (r.error or "") and len(r.compensated_steps) == 2,
    ),
    "cancelled_during_wait": Scenario(
        cancelled_during_wait,
        SagaStatus.CANCELLED,
        lambda r, h: _events(h, CANCELED) == 1 and len(r.compensated_steps) == 2,
    ),
    "cancelled_mid_step": Scenario(
        cancelled_mid_step,
        SagaStatus.CANCELLED,
        lambda r, h: (
            _events(h, CANCELED) == 1
            and _events(h, EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED) == 1
            and r.steps[1].status is StepStatus.CANCELLED
        ),
    ),
    "cancelled_mid_compensation": Scenario(
        cancelled_mid_compensation,
        SagaStatus.CANCELLED,
        lambda r, h: _events(h, CANCELED) == 1 and len(r.compensated_steps) == 3,
    ),
    "needs_attention_retried": Scenario(
        needs_attention_retried,
        SagaStatus.COMPENSATED,
        lambda r, h: _events(h, UPDATE) == 1 and len(r.compensated_steps) == 3,
    ),
    "needs_attention_resolved": Scenario(
        needs_attention_resolved,
        SagaStatus.COMPENSATED,
        lambda r, h: _events(h, UPDATE) == 1 and r.steps[1].operator_note is not None,
    ),
    "parked_resent": Scenario(
        parked_resent,
        SagaStatus.COMPLETED,
        lambda r, h: _events(h, UPDATE) == 1 and r.steps[1].status is StepStatus.SUCCEEDED,
    ),
    "parked_confirmed": Scenario(
        parked_confirmed,
        SagaStatus.COMPLETED,
        lambda r, h: _events(h, UPDATE) == 1 and r.steps[1].operator_note is not None,
    ),
    "parked_cancelled": Scenario(
        parked_cancelled,
        SagaStatus.CANCELLED,
        lambda r, h: (
            _events(h, CANCELED) == 1
            and r.steps[1].status is StepStatus.UNCERTAIN
            and len(r.compensated_steps) == 1
        ),
    ),
    "approved": Scenario(
        approved,
        SagaStatus.COMPLETED,
        lambda r, h: r.approval is ApprovalState.APPROVED and _events(h, UPDATE) == 1,
        _gated_plan,
    ),
    "rejected": Scenario(
        rejected,
        SagaStatus.REJECTED,
        lambda r, h: r.approval is ApprovalState.REJECTED and _events(h, UPDATE) == 1,
        _gated_plan,
    ),
    "edited": Scenario(
        edited,
        SagaStatus.COMPLETED,
        lambda r, h: (
            r.approval is ApprovalState.APPROVED
            and _events(h, UPDATE) == 3
            and r.steps[0].args == {"name": "edited"}
        ),
        _gated_plan,
    ),
    "planned_with_repairs": Scenario(
        planned_with_repairs,
        SagaStatus.COMPLETED,
        lambda r, h: _model_calls(h) == 3,
        _repairs,
    ),
    "looked_up_and_replanned": Scenario(
        looked_up_and_replanned,
        SagaStatus.COMPLETED,
        lambda r, h: (
            _model_calls(h) == 3
            and len(r.lookups) == 1
            and r.lookups[0].result is not None
            and len(r.replans) == 1
            and [s.id for s in r.plan.steps] == ["a", "c"]
            if r.plan is not None
            else False
        ),
        _lookup_and_replan,
    ),
    "acted": Scenario(
        acted,
        SagaStatus.COMPLETED,
        lambda r, h: (
            _model_calls(h) == 5
            and r.answer == "a and c"
            and [s.status.value for s in r.steps] == ["succeeded", "failed", "succeeded"]
        ),
        _acting,
    ),
}
"""Every recorded saga, by the name of its file."""


def build_activities(settings: Settings) -> list[Callable[..., Any]]:
    """The production systems' activities and their compensations, and the test
    systems' (effects, money)."""
    return [
        *activities.build_activities(settings),
        *compensations.build_compensations(settings),
        *money.build_activities(settings),
    ]


async def record(names: Sequence[str], folder: Path = FOLDER) -> None:
    for var in [v for v in os.environ if v.startswith(("SAGA_", "OPENAI_"))]:
        del os.environ[var]
    with tempfile.TemporaryDirectory(prefix="saga-histories-") as tmp:
        data = Path(tmp)
        os.environ["SAGA_TEST_EFFECTS_URL"] = f"sqlite:///{data / 'effects.db'}"
        async with (
            await WorkflowEnvironment.start_local(
                dev_server_existing_path=temporal_binary(),
                data_converter=data_converter(HISTORY_KEYS),
            ) as env,
            dev_stack(Settings(data_dir=data)) as settings,
        ):
            base = await Client.connect(
                env.client.service_client.config.target_host,
                identity=IDENTITY,
                data_converter=data_converter(HISTORY_KEYS),
            )
            ledger = Ledger(settings.ledger_url())
            acts = build_activities(settings)
            try:
                for name in names:
                    await _record_one(name, base, settings, ledger, acts, folder)
            finally:
                ledger.close()


async def _record_one(
    name: str,
    base: Client,
    settings: Settings,
    ledger: Ledger,
    acts: list[Callable[..., Any]],
    folder: Path,
) -> None:
    scenario = SCENARIOS[name]
    client = client_with(base, plugin_for(ScriptedModel(scenario.script())))
    run = Run(name, client)
    worker_settings = settings.model_copy(update={"task_queue": run.task_queue})
    async with create_worker(client, worker_settings, ledger, acts, identity=IDENTITY):
        await scenario.run(run)
        result = await wait_saga(client, run.saga_id)
    history = await client.get_workflow_handle(run.saga_id).fetch_history()
    if result.status is not scenario.status or not scenario.check(result, history):
        raise SystemExit(f"{name}: the saga did not end as intended: {result}")
    await replayer().replay_workflow(history)
    path = folder / f"{name}.json"
    path.write_text(history.to_json() + "\n")
    shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    print(f"{name}: {result.status.value}, {len(history.events)} events -> {shown}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.histories.record", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(SCENARIOS))
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown saga {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    # Failing steps and compensations are the point of several sagas: no tracebacks.
    logging.getLogger("temporalio").setLevel(logging.ERROR)
    asyncio.run(record(args.names or list(SCENARIOS)))


if __name__ == "__main__":
    main()
