"""The model calls and tokens of a saga, counted in the worker's metrics.

A scripted model behind the real plugin acts in one saga (act mode) on a worker started
with SAGA_METRICS_PORT in its environment; its /metrics is scraped over HTTP.
"""

from __future__ import annotations

import pytest

from saga import SagaStatus
from saga._models import SagaMode
from saga.dev._devserver import free_port
from tests.agent.conftest import RunWorker, ScriptedModel
from tests.agent.test_act_mode import call, finish, used
from tests.test_metrics import scrape, value


async def test_a_scrape_counts_the_model_calls_and_tokens_of_closed_sagas(
    run_worker: RunWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("SAGA_METRICS_PORT", str(port))
    url = f"http://127.0.0.1:{port}/metrics"
    model = ScriptedModel(
        [
            used(call("effects.apply", {"name": "metered"}, "met-1"), 100),
            used(finish(True, "applied it"), 150),
        ]
    )
    async with run_worker(model) as stack:
        before = await scrape(url)
        handle = await stack.start("apply an effect", mode=SagaMode.ACT)
        result = await handle.result()
        after = await scrape(url)
    assert result.status == SagaStatus.COMPLETED
    assert (result.model_calls, result.tokens) == (2, 250)
    assert value(before, "saga_model_calls_total") == 0
    assert value(after, "saga_model_calls_total") == 2
    assert value(after, "saga_model_tokens_total") == 250
    assert value(after, "saga_sagas_total", status="completed") == 1
    step = "saga_step_duration_seconds_count"
    assert value(after, step, action="effects.apply", outcome="succeeded") == 1
