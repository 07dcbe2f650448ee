"""OpenTelemetry traces of sagas: a span per workflow run, activity and client call.

Temporal's own tracing interceptor does the work; this module only decides whether it is
on (``SAGA_OTEL_ENDPOINT`` set) and where its spans go (OTLP over HTTP, protobuf). The
interceptor belongs on the client: workers built on that client inherit it, and the trace
context travels in Temporal headers from `saga start` to the workflow and its activities.

Workflow spans are created even when the saga was started by a client without tracing
(the web app, a schedule): such a trace then starts at ``RunWorkflow:SagaWorkflow``.
The OpenTelemetry SDK and exporter are imported only when tracing is on.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import temporalio.worker
from temporalio.client import Client, Interceptor

from saga._settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

TRACES_PATH = "/v1/traces"
DEFAULT_SERVICE_NAME = "saga"


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL: ``http://collector:4318`` gets ``/v1/traces`` appended."""
    endpoint = endpoint.strip()
    if "://" not in endpoint:
        endpoint = f"http://{endpoint}"
    if urlsplit(endpoint).path in ("", "/"):
        return endpoint.rstrip("/") + TRACES_PATH
    return endpoint


@functools.cache
def tracer_provider(endpoint: str, service_name: str = DEFAULT_SERVICE_NAME) -> TracerProvider:
    """One provider per endpoint and process, batching spans to the OTLP/HTTP collector.

    Its batch processor is flushed when the process exits (the SDK's atexit hook); call
    ``force_flush()`` on it to send what is buffered now. The batch delay and size follow
    the standard ``OTEL_BSP_*`` variables.
    """
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url(endpoint))))
    return provider


def tracing_interceptors(settings: Settings) -> list[Interceptor]:
    """``[TracingInterceptor]`` exporting to ``settings.otel_endpoint``; ``[]`` when unset.

    Give the result to ``Client.connect(interceptors=...)``: the interceptor is both a
    client and a worker interceptor, and a worker takes it from its client.
    """
    if not settings.otel_endpoint:
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    service = os.environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME
    tracer = tracer_provider(settings.otel_endpoint, service).get_tracer("saga")
    return [TracingInterceptor(tracer, always_create_workflow_spans=True)]


def worker_tracing_interceptors(
    client: Client, settings: Settings
) -> list[temporalio.worker.Interceptor]:
    """Tracing for a worker whose client has none (a client not made by ``connect``).

    ``[]`` when tracing is off or the client already traces (its worker inherits that).
    """
    if not settings.otel_endpoint:
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    if any(isinstance(i, TracingInterceptor) for i in client.config()["interceptors"]):
        return []
    service = os.environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME
    tracer = tracer_provider(settings.otel_endpoint, service).get_tracer("saga")
    return [TracingInterceptor(tracer, always_create_workflow_spans=True)]
