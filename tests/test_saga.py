"""The saga engine against the real Temporal dev server, effects counted in SQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from saga import (
    CompensationStatus,
    Ledger,
    OperatorAction,
    SagaInput,
    SagaResult,
    SagaStatus,
    SagaWorkflow,
    StepStatus,
    create_worker,
    saga_state,
    start_saga,
    wait_saga,
)
from tests import effects
from tests.conftest import Stack, eventually, unique


def step(sid: str, **args: Any) -> dict[str, Any]:
    return {"id": sid, "action": "effects.apply", "args": {"name": sid, **args}}


async def run_plan(stack: Stack, plan: dict[str, Any], saga_id: str | None = None) -> SagaResult:
    sid = saga_id or unique()
    await start_saga(stack.client, plan, saga_id=sid, task_queue=stack.settings.task_queue)
    return await wait_saga(stack.client, sid)


async def state_is(client: Client, sid: str, *statuses: SagaStatus) -> SagaResult | None:
    state = await saga_state(client, sid)
    return state if state.status in statuses else None


async def step_running(client: Client, sid: str, step_id: str) -> bool:
    state = await saga_state(client, sid)
    return any(s.id == step_id and s.status == StepStatus.RUNNING for s in state.steps)


def assert_all_undone(stack: Stack, sid: str) -> None:
    rows = effects.effects_of(stack.effects, sid)
    assert all(r["reverted"] == 1 for r in rows), rows


@pytest.mark.parametrize("n", [4])
async def test_failure_at_every_step_compensates_prior_steps_in_reverse(
    any_stack: Stack, n: int
) -> None:
    stack = any_stack
    names = [f"s{i}" for i in range(1, n + 1)]
    sagas = {}
    for k in range(1, n + 1):
        plan = {
            "steps": [
                step(name, fail="before" if i == k else "none")
                for i, name in enumerate(names, start=1)
            ]
        }
        sagas[k] = unique(f"fail-at-{k}")
        await start_saga(stack.client, plan, saga_id=sagas[k], task_queue=stack.settings.task_queue)
    for k, sid in sagas.items():
        result = await wait_saga(stack.client, sid)
        assert result.status == SagaStatus.COMPENSATED
        assert "Declined: injected business failure" in (result.error or "")
        before = names[: k - 1]
        # Forward effects exactly once, then reverse-order reverts exactly once; the
        # failing step's compensation ran and found nothing (registered before it ran).
        expected = (
            [("apply", x) for x in before]
            + [("noop-revert", names[k - 1])]
            + [("revert", x) for x in reversed(before)]
        )
        assert effects.log_of(stack.effects, sid) == expected
        rows = effects.effects_of(stack.effects, sid)
        assert [r["name"] for r in rows] == before
        assert all(r["reverted"] == 1 for r in rows)
        statuses = [s.status for s in result.steps]
        assert statuses == (
            [StepStatus.SUCCEEDED] * (k - 1) + [StepStatus.FAILED] + [StepStatus.SKIPPED] * (n - k)
        )
        # The ledger holds one row per started step, with key, status and compensation.
        ledger_steps = {s.step_id: s for s in stack.ledger.steps(sid)}
        assert set(ledger_steps) == set(names[:k])
        for name in before:
            rec = ledger_steps[name]
            assert rec.idempotency_key == f"{sid}/{name}"
            assert rec.status == "succeeded" and rec.compensation_status == "compensated"
            assert rec.external_id and rec.external_id.startswith("eff-")
        assert ledger_steps[names[k - 1]].status == "failed"
        saga_row = stack.ledger.saga(sid)
        assert saga_row is not None and saga_row["status"] == "compensated"


async def test_completed_saga_records_everything(any_stack: Stack) -> None:
    sid = unique()
    result = await run_plan(any_stack, {"steps": [step("a"), step("b")]}, sid)
    assert result.status == SagaStatus.COMPLETED
    assert [s.external_id for s in result.steps] == [
        f"eff-{r['id']}" for r in effects.effects_of(any_stack.effects, sid)
    ]
    saga_row = any_stack.ledger.saga(sid)
    assert saga_row is not None and saga_row["status"] == "completed"
    assert saga_row["plan"]["steps"][0]["id"] == "a"
    assert [r.status for r in any_stack.ledger.steps(sid)] == ["succeeded", "succeeded"]


@pytest.mark.parametrize(
    "action,fail", [("effects.apply", "after"), ("effects.slow", "hang_after")]
)
async def test_step_that_took_effect_then_failed_is_compensated(
    stack: Stack, action: str, fail: str
) -> None:
    sid = unique()
    plan = {
        "steps": [step("a"), {"id": "b", "action": action, "args": {"name": "b", "fail": fail}}]
    }
    result = await run_plan(stack, plan, sid)
    assert result.status == SagaStatus.COMPENSATED
    assert result.steps[1].status == StepStatus.FAILED
    assert effects.log_of(stack.effects, sid) == [
        ("apply", "a"),
        ("apply", "b"),
        ("revert", "b"),
        ("revert", "a"),
    ]
    if fail == "hang_after":
        assert "timed out" in (result.error or "")


async def test_steps_record_when_they_ran_and_what_their_undo_answered(stack: Stack) -> None:
    sid = unique()
    result = await run_plan(stack, {"steps": [step("a"), step("b", fail="after")]}, sid)
    assert result.status == SagaStatus.COMPENSATED
    reverts = [e for e in effects.log_of(stack.effects, sid) if e[0] == "revert"]
    assert len(reverts) == 2
    for state in result.steps:
        assert state.started_at and state.ended_at and state.compensated_at
        assert state.started_at <= state.ended_at <= state.compensated_at
        undo = state.compensation_result
        assert undo is not None and undo["reverted"] is True
        assert str(undo["revert_id"]).startswith("rev-")
    assert result.steps[0].compensation_result != result.steps[1].compensation_result
    assert result.approval_deadline is None  # no approval asked


async def test_transient_errors_retry_without_duplicating(stack: Stack) -> None:
    sid = unique()
    result = await run_plan(stack, {"steps": [step("a", transient_failures=2)]}, sid)
    assert result.status == SagaStatus.COMPLETED
    assert len(effects.effects_of(stack.effects, sid)) == 1
    assert stack.ledger.steps(sid)[0].attempts == 3


async def test_lost_response_is_adopted_not_repeated(client: Client, stack: Stack) -> None:
    settings = stack.settings.model_copy(
        update={"task_queue": unique("lost"), "faults": "effects.apply=1"}
    )
    sid = unique()
    async with create_worker(client, settings, stack.ledger):
        await start_saga(
            client, {"steps": [step("a"), step("b")]}, saga_id=sid, task_queue=settings.task_queue
        )
        result = await wait_saga(client, sid)
    assert result.status == SagaStatus.COMPLETED
    # Each step ran twice (the first response was lost) but took effect once.
    assert effects.log_of(stack.effects, sid) == [
        ("apply", "a"),
        ("apply", "a"),
        ("apply", "b"),
        ("apply", "b"),
    ]
    assert len(effects.effects_of(stack.effects, sid)) == 2


async def test_a_compensation_whose_answer_was_lost_is_not_run_again(
    client: Client, stack: Stack
) -> None:
    """Its outcome is in the ledger: the retry of the same round returns it."""
    settings = stack.settings.model_copy(
        update={"task_queue": unique("lost-undo"), "faults": "undo:effects.apply=1"}
    )
    sid = unique()
    async with create_worker(client, settings, stack.ledger):
        await start_saga(
            client,
            {"steps": [step("a"), step("b", fail="before")]},
            saga_id=sid,
            task_queue=settings.task_queue,
        )
        result = await wait_saga(client, sid)
    assert result.status == SagaStatus.COMPENSATED
    assert effects.log_of(stack.effects, sid) == [
        ("apply", "a"),
        ("noop-revert", "b"),
        ("revert", "a"),
    ]
    row = stack.ledger.step(f"{sid}/a")
    assert row is not None and row.compensation_status == "compensated"
    # Two attempts of the undo of a: the first's answer lost, the second found it done.
    history = await client.get_workflow_handle(sid).fetch_history()
    scheduled = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    }
    attempts = {
        scheduled[e.activity_task_started_event_attributes.scheduled_event_id]: (
            e.activity_task_started_event_attributes.attempt
        )
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    }
    assert attempts["a:compensate:1"] == 2, attempts


async def test_same_idempotency_key_twice_returns_recorded_result(stack: Stack) -> None:
    sid = unique()
    plan = {"steps": [step("a"), step("b")]}
    first = await run_plan(stack, plan, sid)
    # A saga id runs once through the public API ...
    with pytest.raises(WorkflowAlreadyStartedError):
        await start_saga(stack.client, plan, saga_id=sid, task_queue=stack.settings.task_queue)
    # ... and even a forced second run of the same id replays the ledger, not the world.
    second = await stack.client.execute_workflow(
        SagaWorkflow.run,
        SagaInput(plan=plan),
        id=sid,
        task_queue=stack.settings.task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
    )
    assert second.status == SagaStatus.COMPLETED
    assert [s.external_id for s in second.steps] == [s.external_id for s in first.steps]
    assert effects.log_of(stack.effects, sid) == [("apply", "a"), ("apply", "b")]


async def test_live_state_query_shows_steps(stack: Stack) -> None:
    sid = unique()
    plan = {"steps": [step("a"), step("b", delay=30), step("c")]}
    await start_saga(stack.client, plan, saga_id=sid, task_queue=stack.settings.task_queue)
    await eventually(lambda: step_running(stack.client, sid, "b"))
    state = await saga_state(stack.client, sid)
    assert state.status == SagaStatus.RUNNING
    a, b, c = state.steps
    assert a.status == StepStatus.SUCCEEDED and a.external_id
    assert a.compensation == CompensationStatus.REGISTERED
    assert b.status == StepStatus.RUNNING and b.compensation == CompensationStatus.REGISTERED
    assert c.status == StepStatus.PENDING and c.compensation == CompensationStatus.NONE
    await stack.client.get_workflow_handle(sid).cancel()
    final = await wait_saga(stack.client, sid)
    assert final.status == SagaStatus.CANCELLED


async def test_parallel_compensation(stack: Stack) -> None:
    sid = unique()
    plan = {
        "steps": [
            step("a", revert_delay=1),
            step("b", revert_delay=1),
            step("c", revert_delay=1),
            step("d", fail="before"),
        ],
        "options": {"parallel_compensation": True},
    }
    loop = asyncio.get_running_loop()
    result = await run_plan(stack, plan, sid)
    assert result.status == SagaStatus.COMPENSATED
    assert_all_undone(stack, sid)
    log = effects.log_of(stack.effects, sid)
    assert sorted(x for x in log if x[0] == "revert") == [("revert", n) for n in "abc"]
    assert loop.time() > 0


# -- cancellation ------------------------------------------------------------------------
async def test_cancel_while_queued(client: Client, stack: Stack) -> None:
    settings = stack.settings.model_copy(update={"task_queue": unique("queued")})
    sid = unique()
    await start_saga(
        client, {"steps": [step("a"), step("b")]}, saga_id=sid, task_queue=settings.task_queue
    )
    handle = client.get_workflow_handle(sid)
    await handle.cancel()  # no worker polls this queue yet
    async with create_worker(client, settings, stack.ledger):
        final = await wait_saga(client, sid)
    assert final.status == SagaStatus.CANCELLED
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    # Nothing ran: at most the first step's registered compensation found nothing to undo.
    assert effects.effects_of(stack.effects, sid) == []
    assert set(effects.log_of(stack.effects, sid)) <= {("noop-revert", "a")}


@pytest.mark.parametrize("k", [1, 3])
async def test_cancel_during_step_k(stack: Stack, k: int) -> None:
    sid = unique()
    names = ["a", "b", "c"]
    plan = {"steps": [step(n, delay=30 if i == k else 0) for i, n in enumerate(names, 1)]}
    await start_saga(stack.client, plan, saga_id=sid, task_queue=stack.settings.task_queue)
    await eventually(lambda: step_running(stack.client, sid, names[k - 1]))
    handle = stack.client.get_workflow_handle(sid)
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    final = await saga_state(stack.client, sid)
    assert final.status == SagaStatus.CANCELLED
    assert final.steps[k - 1].status == StepStatus.CANCELLED
    before = names[: k - 1]
    assert effects.log_of(stack.effects, sid) == (
        [("apply", x) for x in before]
        + [("noop-revert", names[k - 1])]
        + [("revert", x) for x in reversed(before)]
    )
    assert_all_undone(stack, sid)


async def test_cancel_during_a_wait(stack: Stack) -> None:
    sid = unique()
    plan = {
        "steps": [
            step("a"),
            {"id": "pause", "action": "saga.wait", "args": {"seconds": 600}},
            step("b"),
        ]
    }
    await start_saga(stack.client, plan, saga_id=sid, task_queue=stack.settings.task_queue)
    await eventually(lambda: step_running(stack.client, sid, "pause"))
    await stack.client.get_workflow_handle(sid).cancel()
    final = await wait_saga(stack.client, sid)
    assert final.status == SagaStatus.CANCELLED
    assert effects.log_of(stack.effects, sid) == [("apply", "a"), ("revert", "a")]


async def test_cancel_during_compensation_finishes_unwinding(stack: Stack) -> None:
    sid = unique()
    plan = {
        "steps": [
            step("a", revert_delay=1.5),
            step("b", revert_delay=1.5),
            step("c", fail="before"),
        ]
    }
    await start_saga(stack.client, plan, saga_id=sid, task_queue=stack.settings.task_queue)
    await eventually(lambda: state_is(stack.client, sid, SagaStatus.COMPENSATING), interval=0.05)
    handle = stack.client.get_workflow_handle(sid)
    await handle.cancel()
    final = await wait_saga(stack.client, sid)
    assert final.status == SagaStatus.CANCELLED
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    assert effects.log_of(stack.effects, sid) == [
        ("apply", "a"),
        ("apply", "b"),
        ("noop-revert", "c"),
        ("revert", "b"),
        ("revert", "a"),
    ]


async def test_cancel_arriving_with_an_activity_completion_is_not_swallowed(
    client: Client, stack: Stack
) -> None:
    """sdk-python #620/#1224: cancel and completion delivered in one workflow task."""
    settings = stack.settings.model_copy(update={"task_queue": unique("swallow")})
    sid = unique()
    plan = {"steps": [step("a"), step("b", delay=2), step("c")]}
    # A second connection: one client may not hold two workers of one queue.
    other = await Client.connect(
        client.service_client.config.target_host, data_converter=client.data_converter
    )
    activity_worker = create_worker(
        other, settings, stack.ledger, workflows=False, identity=f"activities-{sid}"
    )
    async with activity_worker:
        workflow_worker = create_worker(
            client, settings, stack.ledger, activities=[], max_cached_workflows=0
        )
        async with workflow_worker:
            await start_saga(client, plan, saga_id=sid, task_queue=settings.task_queue)
            await eventually(lambda: step_running(client, sid, "b"))
        # No workflow worker now: b completes, then the cancel lands in the same task.
        await eventually(
            lambda: (r := stack.ledger.step(f"{sid}/b")) is not None and r.status == "succeeded"
        )
        await client.get_workflow_handle(sid).cancel()
        async with create_worker(client, settings, stack.ledger, activities=[]):
            final = await wait_saga(client, sid)
    assert final.status == SagaStatus.CANCELLED
    assert effects.log_of(stack.effects, sid) == [
        ("apply", "a"),
        ("apply", "b"),
        ("revert", "b"),
        ("revert", "a"),
    ]
    # The workflow-only workers took no activity task: every step and compensation ran,
    # at its first attempt, on the activity worker.
    history = await client.get_workflow_handle(sid).fetch_history()
    started = [
        e.activity_task_started_event_attributes
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]
    assert len(started) == 4
    assert {(a.identity, a.attempt) for a in started} == {(f"activities-{sid}", 1)}


# -- compensations that fail -------------------------------------------------------------
async def test_compensation_failing_then_succeeding(stack: Stack) -> None:
    sid = unique()
    result = await run_plan(
        stack, {"steps": [step("a", revert_failures=2), step("b", fail="before")]}, sid
    )
    assert result.status == SagaStatus.COMPENSATED
    log = effects.log_of(stack.effects, sid)
    assert log.count(("revert-failed", "a")) == 2 and log.count(("revert", "a")) == 1


async def test_stuck_compensation_needs_attention_then_operator_retry(stack: Stack) -> None:
    sid = unique()
    # Each compensation round has 4 attempts: 5 failures outlast the first round.
    plan = {"steps": [step("a"), step("b", revert_failures=5), step("c", fail="before")]}
    await start_saga(stack.client, plan, saga_id=sid, task_queue=stack.settings.task_queue)
    state = await eventually(
        lambda: state_is(stack.client, sid, SagaStatus.NEEDS_ATTENTION), timeout=30
    )
    stuck = state.stuck_steps
    assert [s.id for s in stuck] == ["b"] and stuck[0].external_id
    assert "injected compensation failure" in (stuck[0].compensation_error or "")
    assert (stack.ledger.saga(sid) or {})["status"] == "needs_attention"
    # Not yet compensated: a (earlier) waits behind b in reverse order.
    assert effects.log_of(stack.effects, sid).count(("revert", "a")) == 0
    handle = stack.client.get_workflow_handle_for(SagaWorkflow.run, sid)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(SagaWorkflow.retry_compensation, OperatorAction(step_id="a"))
    assert "not waiting for an operator" in str(refused.value.cause)
    await handle.execute_update(SagaWorkflow.retry_compensation, OperatorAction(step_id="b"))
    final = await wait_saga(stack.client, sid)
    assert final.status == SagaStatus.COMPENSATED
    assert [s.compensation for s in final.steps[:2]] == [CompensationStatus.COMPENSATED] * 2
    assert_all_undone(stack, sid)
    log = effects.log_of(stack.effects, sid)
    assert log.count(("revert", "b")) == 1 and log.count(("revert-failed", "b")) == 5


async def test_stuck_compensation_resolved_by_hand(stack: Stack) -> None:
    sid = unique()
    plan = {"steps": [step("a"), step("b", revert_failures=1000), step("c", fail="before")]}
    await start_saga(stack.client, plan, saga_id=sid, task_queue=stack.settings.task_queue)
    await eventually(lambda: state_is(stack.client, sid, SagaStatus.NEEDS_ATTENTION), timeout=30)
    handle = stack.client.get_workflow_handle_for(SagaWorkflow.run, sid)
    await handle.execute_update(
        SagaWorkflow.resolve_compensation,
        OperatorAction(step_id="b", note="refunded by hand in the back office"),
    )
    final = await wait_saga(stack.client, sid)
    assert final.status == SagaStatus.COMPENSATED
    assert final.steps[1].compensation == CompensationStatus.RESOLVED
    assert final.steps[1].operator_note == "refunded by hand in the back office"
    assert final.steps[0].compensation == CompensationStatus.COMPENSATED


# -- plans that must be rejected ---------------------------------------------------------
BAD_PLANS: list[tuple[Any, str]] = [
    ([], "plan: must be an object"),
    ({"steps": []}, "plan: has no steps"),
    ({"steps": "a"}, "`steps` must be a list"),
    ({"steps": [step(f"s{i}") for i in range(21)]}, "has 21 steps, the limit is 20"),
    ({"steps": [{"action": "effects.apply", "args": {"name": "x"}}]}, "step 1: missing id"),
    ({"steps": [step("a"), step("a")]}, "step 'a': duplicate id (also step 1)"),
    (
        {"steps": [{"id": "Bad Id", "action": "effects.apply", "args": {"name": "x"}}]},
        "id must match",
    ),
    (
        {"steps": [{"id": "a", "action": "payments.steal", "args": {}}]},
        "step 'a': unknown action 'payments.steal'",
    ),
    ({"steps": [{"id": "a", "args": {}}]}, "step 'a': missing action"),
    (
        {"steps": [{"id": "a", "action": "effects.apply", "args": {"name": ""}}]},
        "step 'a' (effects.apply): args.name: String should have at least 1 character",
    ),
    (
        {"steps": [{"id": "a", "action": "effects.apply", "args": {"name": "x", "colour": 1}}]},
        "args.colour: Extra inputs are not permitted",
    ),
    (
        {"steps": [{"id": "a", "action": "effects.apply", "args": "name=x"}]},
        "step 'a': args must be an object",
    ),
    (
        {"steps": [{"id": "n", "action": "effects.notify", "args": {"name": "x"}}, step("a")]},
        "step 'a': compensable action effects.apply comes after irreversible step 'n'",
    ),
    (
        {
            "steps": [
                {"id": "n", "action": "effects.notify", "args": {"name": "x"}},
                {"id": "m", "action": "effects.notify", "args": {"name": "y"}},
            ]
        },
        "a second irreversible step",
    ),
    ({"steps": [step("a", extra_field=1)]}, "args.extra_field"),
    (
        {"steps": [{"id": "a", "action": "effects.apply", "args": {"name": "x"}, "when": "now"}]},
        "step 'a': unknown field 'when'",
    ),
    ({"steps": [step("a")], "options": {"parallel": True}}, "plan options: parallel"),
    (
        {"steps": [{"id": "w", "action": "saga.wait", "args": {"seconds": -1}}]},
        "args.seconds: Input should be greater than 0",
    ),
]


async def test_invalid_plans_are_rejected_with_no_effects(stack: Stack) -> None:
    ids = []
    for raw, _ in BAD_PLANS:
        sid = unique("bad")
        ids.append(sid)
        await stack.client.start_workflow(
            SagaWorkflow.run,
            SagaInput.model_construct(plan=raw, request=None),
            id=sid,
            task_queue=stack.settings.task_queue,
        )
    for sid, (_raw, message) in zip(ids, BAD_PLANS, strict=True):
        result = await wait_saga(stack.client, sid)
        assert result.status == SagaStatus.REJECTED, (sid, result)
        assert any(message in p for p in result.problems), (message, result.problems)
        assert effects.log_of(stack.effects, sid) == []
        assert stack.ledger.steps(sid) == []
        assert (stack.ledger.saga(sid) or {})["status"] == "rejected"


def test_ledger_migrates_idempotently(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    Ledger(url).close()
    ledger = Ledger(url)  # second migrate is a no-op
    assert ledger.steps("nothing") == []
    ledger.close()


def test_a_stale_failing_attempt_cannot_undo_a_recorded_success(tmp_path: Any) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    assert ledger.begin_step("s/a", "s", "a", "effects.apply", 1) is None
    ledger.finish_step("s/a", {"external_id": "eff-1"}, "eff-1")
    ledger.fail_step("s/a", "late failure of an attempt retried after a heartbeat timeout")
    row = ledger.step("s/a")
    assert row is not None and row.status == "succeeded" and row.external_id == "eff-1"
    again = ledger.begin_step("s/a", "s", "a", "effects.apply", 2)
    assert again is not None and again.result == {"external_id": "eff-1"}
    ledger.close()


async def test_a_worker_runs_at_most_its_share_of_steps_at_once(
    client: Client, stack: Stack
) -> None:
    """SAGA_MAX_CONCURRENT_ACTIVITIES: the tasks beyond it wait on the server, not in a
    worker that cannot start them (where their heartbeat clock would already run)."""
    settings = stack.settings.model_copy(
        update={"task_queue": unique("one-at-a-time"), "max_concurrent_activities": 1}
    )
    sids = [unique(), unique()]
    started = asyncio.get_running_loop().time()
    async with create_worker(client, settings, stack.ledger):
        for sid in sids:
            await start_saga(
                client,
                {"steps": [step("a", delay=1.5)]},
                saga_id=sid,
                task_queue=settings.task_queue,
            )
        results = [await wait_saga(client, sid) for sid in sids]
    assert [r.status for r in results] == [SagaStatus.COMPLETED] * 2
    # One at a time: the two 1.5 s steps cannot have overlapped.
    assert asyncio.get_running_loop().time() - started >= 3.0
