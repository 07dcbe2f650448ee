"""Traces of a saga reach a real OTLP/HTTP endpoint; with no endpoint, tracing is off.

The collector is a real HTTP server that decodes the exporter's protobuf
(`ExportTraceServiceRequest`), as an OpenTelemetry collector's OTLP/HTTP receiver does.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor

from saga import SagaStatus, Settings, create_worker, free_port, start_saga, wait_saga
from saga._tracing import (
    tracer_provider,
    traces_url,
    tracing_interceptors,
    worker_tracing_interceptors,
)
from tests.conftest import Stack, eventually, unique


@dataclass
class ReceivedSpan:
    name: str
    trace_id: str
    attributes: dict[str, str]
    service: str


@dataclass
class Collector:
    endpoint: str
    spans: list[ReceivedSpan] = field(default_factory=list)
    content_types: set[str] = field(default_factory=set)

    def names_for(self, workflow_id: str) -> set[str]:
        return {s.name for s in self.spans if s.attributes.get("temporalWorkflowID") == workflow_id}


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    port = free_port()
    received = Collector(endpoint=f"http://127.0.0.1:{port}")

    async def traces(request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        received.content_types.add(request.content_type)
        export = ExportTraceServiceRequest.FromString(body)
        for resource_spans in export.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.spans.append(
                        ReceivedSpan(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            attributes={a.key: a.value.string_value for a in span.attributes},
                            service=resource.get("service.name", ""),
                        )
                    )
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield received
    finally:
        await runner.cleanup()


def step(sid: str, **args: object) -> dict[str, object]:
    return {"id": sid, "action": "effects.apply", "args": {"name": sid, **args}}


async def test_saga_workflow_and_activities_are_traced_over_otlp(
    client: Client, stack: Stack, collector: Collector
) -> None:
    settings = stack.settings.model_copy(
        update={"task_queue": unique("traced"), "otel_endpoint": collector.endpoint}
    )
    interceptors = tracing_interceptors(settings)
    assert [type(i) for i in interceptors] == [TracingInterceptor]
    # What `connect` does with tracing on: the interceptor rides on the client ...
    traced = await Client.connect(
        client.service_client.config.target_host,
        data_converter=client.data_converter,
        interceptors=interceptors,
    )
    # ... and the worker built on that client inherits it.
    worker = create_worker(traced, settings, stack.ledger)
    assert any(
        isinstance(i, TracingInterceptor)
        for i in worker.config()["client"].config()["interceptors"]
    )
    sid = unique("traced")
    plan = {"steps": [step("a"), step("b"), step("c", fail="before")]}
    async with worker:
        await start_saga(traced, plan, saga_id=sid, task_queue=settings.task_queue)
        result = await wait_saga(traced, sid)
    assert result.status == SagaStatus.COMPENSATED

    provider = tracer_provider(collector.endpoint)

    async def arrived() -> bool:
        await asyncio.to_thread(provider.force_flush)
        names = collector.names_for(sid)
        return {"RunActivity:revert_effect", "CompleteWorkflow:SagaWorkflow"} <= names

    await eventually(arrived, timeout=30, interval=0.5)
    names = collector.names_for(sid)
    assert {
        "StartWorkflow:SagaWorkflow",
        "RunWorkflow:SagaWorkflow",
        "StartActivity:apply_effect",
        "RunActivity:apply_effect",
        "StartActivity:revert_effect",
        "RunActivity:revert_effect",
        "RunActivity:record_saga_outcome",
        "CompleteWorkflow:SagaWorkflow",
    } <= names, names
    mine = [s for s in collector.spans if s.attributes.get("temporalWorkflowID") == sid]
    # One trace from `start_saga` through every step and its compensation.
    assert len({s.trace_id for s in mine}) == 1
    assert {s.service for s in mine} == {"saga"}
    activity_ids = {
        s.attributes.get("temporalActivityID") for s in mine if s.name.startswith("RunActivity:")
    }
    assert {"a", "b", "c"} <= activity_ids
    assert collector.content_types == {"application/x-protobuf"}


async def test_no_endpoint_no_tracing(
    client: Client, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SAGA_OTEL_ENDPOINT", raising=False)
    settings = stack.settings.model_copy(update={"task_queue": unique("untraced")})
    assert settings.otel_endpoint is None and Settings().otel_endpoint is None
    assert tracing_interceptors(settings) == []
    untraced = await Client.connect(
        client.service_client.config.target_host,
        data_converter=client.data_converter,
        interceptors=tracing_interceptors(settings),
    )
    worker = create_worker(untraced, settings, stack.ledger)
    installed = [
        *worker.config()["interceptors"],
        *worker.config()["client"].config()["interceptors"],
    ]
    assert not any(isinstance(i, TracingInterceptor) for i in installed), installed
    sid = unique("untraced")
    async with worker:
        await start_saga(
            untraced, {"steps": [step("a")]}, saga_id=sid, task_queue=settings.task_queue
        )
        assert (await wait_saga(untraced, sid)).status == SagaStatus.COMPLETED


async def test_worker_tracing_only_where_the_client_has_none(client: Client) -> None:
    on = Settings(otel_endpoint="http://127.0.0.1:4318")
    off = Settings()
    traced = await Client.connect(
        client.service_client.config.target_host,
        data_converter=client.data_converter,
        interceptors=tracing_interceptors(on),
    )
    assert worker_tracing_interceptors(traced, on) == []  # inherited from the client
    assert [type(i) for i in worker_tracing_interceptors(client, on)] == [TracingInterceptor]
    assert worker_tracing_interceptors(client, off) == []


def test_endpoint_forms() -> None:
    assert traces_url("http://otel:4318") == "http://otel:4318/v1/traces"
    assert traces_url("http://otel:4318/") == "http://otel:4318/v1/traces"
    assert traces_url("otel:4318") == "http://otel:4318/v1/traces"
    assert traces_url("https://otel.example/v1/traces") == "https://otel.example/v1/traces"
