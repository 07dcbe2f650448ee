"""The commands that talk to sagas through Temporal: start, status, watch, cancel,
list, approve, reject, retry, resolve; and reconcile and catalog.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from typing import Any

from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError

from saga._audit import cli_identity
from saga._catalog import catalog
from saga._client import check_start, connect_client, saga_state, start_saga, update_saga
from saga._models import (
    ApprovalDecision,
    OperatorAction,
    SagaInput,
    SagaMode,
    SagaResult,
    SagaStatus,
)
from saga._problems import read_json_file, system_problem
from saga._settings import Settings
from saga.cli._audited import decision_lines
from saga.cli._loading import UsageError, load_catalog, load_policy, open_ledger, plan_source
from saga.cli._render import err, exit_code, out, show


async def cmd_start(args: argparse.Namespace, settings: Settings) -> int:
    """Everything is checked (input, sizes, plan, policy) before a workflow is started."""
    if args.plan is not None and args.request:
        raise UsageError("give a plan (--plan) or a request in words, not both")
    mode = SagaMode(args.mode)
    if mode is SagaMode.ACT and args.plan is not None:
        raise UsageError("--mode act takes a request in words, not a plan")
    if args.id is not None and not args.id.strip():
        raise UsageError("--id is empty")
    load_catalog(settings)
    saga_id = args.id = args.id or f"saga-{uuid.uuid4().hex[:12]}"
    policy = load_policy(settings)
    plan: Any = None
    request: str | None = None
    if args.plan is not None:
        plan = read_json_file(plan_source(args.plan), "plan")
    elif args.request:
        request = " ".join(args.request)
    else:
        raise UsageError("give a plan (--plan FILE) or a request in words")
    saga_input = SagaInput(
        plan=plan,
        request=request,
        policy=policy,
        mode=mode,
        agent=args.agent,
        started_by=cli_identity(),
    )
    check_start(saga_input)
    client = await connect_client(settings)
    try:
        await start_saga(
            client,
            plan,
            saga_id=saga_id,
            task_queue=settings.task_queue,
            input=saga_input,
            settings=settings,
        )
    except WorkflowAlreadyStartedError:
        raise UsageError(f"saga {saga_id} already exists; `saga status {saga_id}`") from None
    if not args.wait:
        if args.json:
            print(json.dumps({"saga_id": saga_id, "status": "started"}))
        else:
            out.print(f"started saga {saga_id}")
        return 0
    result = await follow(client, saga_id, live=not args.json)
    show(result, args.json)
    return exit_code(result)


async def follow(
    client: Client, saga_id: str, *, live: bool, cancelling: bool = False
) -> SagaResult:
    """Wait until the saga ends or needs a person, with a live table of its steps when
    ``live`` and on a terminal. Ctrl-C stops the waiting, not the saga: say so, and how
    to go on (exit code 130)."""
    from saga.cli._live import watch

    if not (live and out.is_terminal):
        err.print(f"waiting for saga {saga_id} to end (Ctrl-C stops the waiting, not the saga)")
    try:
        return await watch(client, saga_id, out if live else None, cancelling=cancelling)
    except (asyncio.CancelledError, KeyboardInterrupt):
        if cancelling:
            err.print(f"saga {saga_id} is still being cancelled; Ctrl-C stopped only the waiting")
        else:
            err.print(f"saga {saga_id} keeps running; Ctrl-C stopped only the waiting")
        err.print(f"  watch it:  saga watch {saga_id}")
        if not cancelling:
            err.print(f"  cancel it: saga cancel {saga_id}")
        raise


async def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    client = await connect_client(settings)
    result = await saga_state(client, args.id)
    show(result, args.json)
    if not args.json:
        for line in decision_lines(settings, args.id):
            out.print(line, style="dim", soft_wrap=True)
    return exit_code(result)


async def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    client = await connect_client(settings)
    before = await saga_state(client, args.id)
    if before.status.final:
        out.print(f"saga {args.id} already {before.status.value}: nothing was cancelled")
        return 1
    await client.get_workflow_handle(args.id).cancel()
    out.print(f"cancel requested for saga {args.id}; compensating what ran")
    if not args.wait:
        return 0
    result = await follow(client, args.id, live=True, cancelling=True)
    show(result, False, cancel_requested=True)
    # 0: cancelled, everything undone. 1: it completed first, or an undo needs a person.
    return 0 if result.status is SagaStatus.CANCELLED else 1


async def _update(settings: Settings, saga_id: str, update: str, arg: Any) -> SagaResult:
    client = await connect_client(settings)
    try:
        return await update_saga(client, saga_id, update, arg)
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError) and cause.type == "ValueError":
            raise UsageError(cause.message) from None  # the saga's own words
        raise UsageError(str(cause or exc)) from None


async def cmd_approve(args: argparse.Namespace, settings: Settings) -> int:
    client = await connect_client(settings)
    state = await saga_state(client, args.id)
    plan_hash = args.plan_hash or state.plan_hash
    result = await _update(
        settings, args.id, "approve", ApprovalDecision(plan_hash=plan_hash, by=cli_identity())
    )
    out.print(f"approved plan {plan_hash} of saga {args.id}")
    show(result, args.json)
    return 0


async def cmd_reject(args: argparse.Namespace, settings: Settings) -> int:
    decision = ApprovalDecision(reason=args.reason, by=cli_identity())
    await _update(settings, args.id, "reject", decision)
    out.print(f"rejected the plan of saga {args.id}: {args.reason}")
    return 0


async def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    result = await _update(
        settings, args.id, "retry_compensation", OperatorAction(step_id=args.step)
    )
    show(result, args.json)
    return 0


async def cmd_resolve(args: argparse.Namespace, settings: Settings) -> int:
    result = await _update(
        settings,
        args.id,
        "resolve_compensation",
        OperatorAction(step_id=args.step, note=args.note),
    )
    show(result, args.json)
    return 0


async def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    """Compare the ledger with Stripe, the inventory and Redmine; non-zero on drift."""
    from saga._reconcile import reconcile
    from saga._reconcile import render as render_report

    open_ledger(settings).close()  # a ledger that cannot be read is one line, not a dump
    try:
        report = await reconcile(settings, saga_prefix=args.prefix)
    except Exception as exc:
        problem = system_problem(settings, exc)
        if problem is None:
            raise
        raise UsageError(problem) from None
    if args.json:
        print(report.model_dump_json(indent=2))
    else:
        print(render_report(report))
    return 0 if report.clean else 1


async def cmd_catalog(args: argparse.Namespace, settings: Settings) -> int:
    load_catalog(settings)
    print(json.dumps(catalog.json_schema(), indent=2))
    return 0


async def cmd_watch(args: argparse.Namespace, settings: Settings) -> int:
    client = await connect_client(settings)
    result = await follow(client, args.id, live=True)
    show(result, False)
    return exit_code(result)
