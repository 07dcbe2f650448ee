"""Client and worker assembly: the agents plugin, the ledger interceptor, the activities.

The OpenAI Agents plugin rides on the client: it makes every model call of the planner a
Temporal activity, registers those activities on the worker, and installs its own
pydantic-capable payload converter (so no other converter is given here). The payload
codec that encrypts what Temporal stores is ours; the plugin keeps it.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.converter import DataConverter, DefaultPayloadConverter
from temporalio.openai_agents import OpenAIAgentsPlugin, OpenAIPayloadConverter
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from saga._alerts import alerting_plugin
from saga._catalog import activity_name, catalog
from saga._codec import converter_keys, data_converter, payload_keys
from saga._errors import SagaError
from saga._faults import Faults
from saga._index import Availability
from saga._ledger import Ledger
from saga._metrics import SagaMetrics, serving_plugin
from saga._models import CheckedPlan, CheckInput, SagaOutcome, WorkerCapabilities
from saga._plan_check import CHECK_PLAN, answer_check
from saga._planning import WORKER_CAPABILITIES
from saga._policy import Policy
from saga._problems import read_policy_file
from saga._settings import Settings
from saga._step import LedgerInterceptor
from saga._systems import activity_sources
from saga._tracing import tracing_interceptors, worker_tracing_interceptors
from saga._workflow import RECORD_SAGA, SagaWorkflow
from saga.planner._agent_settings import AgentSettings, agents_plugin
from saga.planner._agents import AgentFactory, offer


class LedgerActivities:
    """The saga's own bookkeeping, run as a local activity."""

    def __init__(self, ledger: Ledger, metrics: SagaMetrics | None = None) -> None:
        self._ledger = ledger
        self._metrics = metrics

    @activity.defn(name=RECORD_SAGA)
    async def record_saga_outcome(self, outcome: SagaOutcome) -> None:
        changed = await self._ledger.call(
            functools.partial(
                self._ledger.record_saga,
                outcome.saga_id,
                outcome.status.value,
                error=outcome.error,
                request=outcome.request,
                plan=outcome.plan,
            )
        )
        # Counted once per saga: a retried record of the same status changes nothing.
        if changed and outcome.status.final and self._metrics is not None:
            self._metrics.saga_closed(outcome)


class Capabilities:
    """Answers the workflow's questions (local activities): which actions can this worker
    run, under what policy of its own; and is this plan valid here (``saga_check_plan``:
    the check, the step specs and the approval question, answered from this worker's
    catalog and recorded in history, so the workflow reads no catalog of its own)?

    An action is available when its activity and its compensation are registered and
    their owner does not say ``configured = False``.
    """

    def __init__(
        self,
        activities: Sequence[Callable[..., Any]] | None,
        policy: Policy | None,
        client: Client | None = None,
    ) -> None:
        self._client = client
        self._index = Availability()
        actions = None
        if activities is not None:
            # An owner may say its system is not configured (``configured`` is False).
            registered = {
                activity_name(fn)
                for fn in activities
                if getattr(getattr(fn, "__self__", None), "configured", True)
            }
            actions = sorted(
                spec.name
                for spec in catalog
                if not spec.builtin
                and spec.activity_name in registered
                and (spec.compensation is None or spec.compensation in registered)
            )
        self._caps = WorkerCapabilities(actions=actions, policy=policy)

    @activity.defn(name=WORKER_CAPABILITIES)
    async def worker_capabilities(self) -> WorkerCapabilities:
        """Asked by sagas started before ``saga_check_plan`` existed (replays)."""
        return self._caps

    @activity.defn(name=CHECK_PLAN)
    async def check_plan(self, inp: CheckInput) -> CheckedPlan:
        answer = answer_check(inp, catalog, self._caps)
        if self._client is not None:
            answer.search_attributes = await self._index.names(self._client)
        return answer


def workflow_runner(settings: Settings) -> WorkflowRunner:
    """How the worker (and a replayer) runs saga workflow code: in Temporal's sandbox
    with ``saga`` passed through, or directly (``SAGA_WORKFLOW_SANDBOX=false``)."""
    if not settings.workflow_sandbox:
        return UnsandboxedWorkflowRunner()
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules("saga")
    )


def worker_policy(settings: Settings) -> Policy | None:
    """The workers' own policy from ``SAGA_POLICY_FILE``, or None."""
    return None if settings.policy_file is None else read_policy_file(settings.policy_file)


async def connect(
    settings: Settings | None = None, agent_settings: AgentSettings | None = None
) -> Client:
    """A Temporal client with the agents plugin (and its pydantic payload converter) and
    the payload codec (the keys of ``settings``)."""
    settings = settings or Settings()
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.namespace,
        data_converter=data_converter(payload_keys(settings), DataConverter.default),
        plugins=[agents_plugin(agent_settings)],
        interceptors=tracing_interceptors(settings),
    )


def with_agents_plugin(client: Client, agent_settings: AgentSettings | None = None) -> Client:
    """``client`` itself when it has the agents plugin; else a copy that has it.

    The copy shares the connection. A converter other than the plugin's (for instance
    temporalio's pydantic one) is swapped for the plugin's, which also speaks pydantic;
    codecs and failure converters are kept.
    """
    config = client.config()
    if any(isinstance(p, OpenAIAgentsPlugin) for p in config["plugins"]):
        return client
    converter: DataConverter = config["data_converter"]
    if not issubclass(converter.payload_converter_class, OpenAIPayloadConverter):
        converter = dataclasses.replace(converter, payload_converter_class=DefaultPayloadConverter)
    config["data_converter"] = converter
    config["plugins"] = [*config["plugins"], agents_plugin(agent_settings)]
    return Client(**config)


async def close_activities(activities: Sequence[Callable[..., Any]]) -> None:
    """Close the clients of class-based activities: each object that owns bound
    activities and has an ``aclose()`` is closed once (the worker calls it when it stops)."""
    owners: dict[int, Any] = {}
    for fn in activities:
        owner = getattr(fn, "__self__", None)
        if owner is not None and callable(getattr(owner, "aclose", None)):
            owners.setdefault(id(owner), owner)
    for owner in owners.values():
        try:
            await owner.aclose()
        except Exception:  # one failing close must not keep the others open
            logging.getLogger(__name__).exception("closing %r failed", owner)


def load_activities(settings: Settings) -> list[Callable[..., Any]]:
    """Import each configured `module:function` and ask it for its activities (the
    default builds the systems' forward activities, then their compensations)."""
    acts: list[Callable[..., Any]] = []
    for module_name, func_name in activity_sources(settings):
        build = getattr(importlib.import_module(module_name), func_name)
        acts += build(settings)
    return acts


def load_agents(settings: Settings) -> dict[str, AgentFactory]:
    """The agents ``settings.agents`` names (``name=module:function``), imported."""
    found: dict[str, AgentFactory] = {}
    for part in filter(None, (p.strip() for p in settings.agents.split(","))):
        name, _, source = part.partition("=")
        module_name, _, func_name = source.strip().partition(":")
        if not name.strip() or not module_name or not func_name:
            raise SagaError(f"SAGA_AGENTS: {part!r} is not name=module:function")
        found[name.strip()] = getattr(importlib.import_module(module_name), func_name)
    return found


def create_worker(
    client: Client,
    settings: Settings,
    ledger: Ledger,
    activities: Sequence[Callable[..., Any]] | None = None,
    *,
    workflows: bool = True,
    agent_settings: AgentSettings | None = None,
    extra_workflows: Sequence[type] = (),
    agents: Mapping[str, AgentFactory] | None = None,
    metrics: SagaMetrics | None = None,
    **worker_options: Any,
) -> Worker:
    """A worker for the saga workflow, the catalog's activities, the ledger and the model.

    The model activities come from the client's agents plugin; a client without one gets
    it here (configured by ``agent_settings``, default: the environment).

    The client must encrypt payloads (:func:`connect`, or ``data_converter=``
    :func:`saga.data_converter`): a worker writes no plaintext history. The ledger seals
    its personal columns with the client's keys unless it was given keys of its own.

    ``extra_workflows``: workflows of your own to run here too, e.g. one whose agent uses
    :class:`saga.SagaSteps` tools (they get the ledger and the plan check of this worker).

    ``agents``: agents of your own by name (default: ``settings.agents``), for act-mode
    sagas started with ``agent=<name>`` (``saga start --mode act --agent NAME``): each a
    factory ``(tools, instructions) -> Agent`` given the saga's tools (see
    :mod:`saga.planner._agents`). Every worker of the task queue offers the same ones.

    ``metrics``: where this worker counts (default: a registry of its own); with
    ``SAGA_METRICS_PORT`` set they are served on ``/metrics`` while the worker runs.

    ``activities=[]`` makes a workflow-only worker: it polls no activity tasks (its saga
    outcome record runs as a local activity), so steps, compensations and model calls go
    to the queue's activity workers (``workflows=False``).
    """
    keys = converter_keys(client.data_converter)
    if keys is None:
        raise SagaError(
            "the worker's client has no payload codec, so history would hold plaintext: "
            "connect with saga.connect(settings), or give Client.connect "
            "data_converter=saga.data_converter(saga.payload_keys(settings))"
        )
    if ledger.keys is None:
        ledger.keys = keys
    offer(settings.task_queue, load_agents(settings) if agents is None else agents)
    acts = list(load_activities(settings) if activities is None else activities)
    # A compensable action this worker runs must have its undo declared.
    catalog.check_compensations(activity_name(fn) for fn in acts)
    if workflows and activities is not None and not acts:
        # A workflow-only worker: its one activity runs locally, so it must not poll the
        # queue's activity tasks, or it would take (and fail) steps it cannot run.
        worker_options.setdefault("no_remote_activities", True)
    # Asked as a local activity by the workflow; a workflow-only worker cannot say which
    # actions the queue's activity workers run (None), only its own policy.
    caps = Capabilities(acts if acts or not workflows else None, worker_policy(settings), client)
    acts.append(caps.worker_capabilities)
    acts.append(caps.check_plan)
    metrics = metrics or SagaMetrics()
    acts.append(LedgerActivities(ledger, metrics).record_saga_outcome)
    if settings.metrics_port is not None:
        worker_options["plugins"] = [
            *worker_options.get("plugins", ()),
            serving_plugin(
                metrics,
                client,
                host=settings.metrics_host,
                port=settings.metrics_port,
                task_queue=settings.task_queue,
                refresh_every=settings.metrics_refresh_seconds,
            ),
        ]
    if settings.alert_webhook_url or settings.alert_email:
        worker_options["plugins"] = [
            *worker_options.get("plugins", ()),
            alerting_plugin(client, ledger, settings),
        ]
    # Steps beat every heartbeat time-out / 4 (see saga._step); send them at that pace
    # rather than at 80% of the time-out, so a loaded worker keeps a wide margin.
    worker_options.setdefault("max_heartbeat_throttle_interval", timedelta(seconds=1))
    worker_options.setdefault("default_heartbeat_throttle_interval", timedelta(seconds=1))
    worker_options.setdefault(
        "graceful_shutdown_timeout", timedelta(seconds=settings.graceful_shutdown_seconds)
    )
    worker_options.setdefault("max_concurrent_activities", settings.max_concurrent_activities)
    # A saga whose worker died has its next workflow task on that worker's sticky queue;
    # after this long it goes to the shared queue (default 10 s).
    worker_options.setdefault("sticky_queue_schedule_to_start_timeout", timedelta(seconds=4))
    return Worker(
        with_agents_plugin(client, agent_settings),
        task_queue=settings.task_queue,
        workflows=[*([SagaWorkflow] if workflows else []), *extra_workflows],
        activities=acts,
        interceptors=[
            # Tracing first, so an activity's span includes its ledger writes.
            *worker_tracing_interceptors(client, settings),
            LedgerInterceptor(ledger, faults=Faults.parse(settings.faults), metrics=metrics),
        ],
        # For synchronous actions; its threads start only when needed.
        activity_executor=ThreadPoolExecutor(worker_options["max_concurrent_activities"]),
        workflow_runner=workflow_runner(settings),
        **worker_options,
    )
