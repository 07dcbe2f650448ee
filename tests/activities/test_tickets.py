"""tickets.create / tickets.close through the real saga workflow, against a real Redmine.

Every assertion counts in Redmine itself (REST, with the admin key), never in our code.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from temporalio.client import Client

import activities.tickets as tickets
import compensations.tickets
from saga import Ledger, SagaResult, SagaStatus, Settings, create_worker, start_saga, wait_saga
from tests import effects
from tests.conftest import eventually, unique
from tests.history import history_text
from tests.servers.redmine import RedmineServer


@dataclass
class TicketStack:
    client: Client
    settings: Settings
    ledger: Ledger
    create_ticket: Any

    async def run(self, steps: list[dict[str, Any]]) -> SagaResult:
        sid = unique("tickets")
        await start_saga(
            self.client, {"steps": steps}, saga_id=sid, task_queue=self.settings.task_queue
        )
        return await wait_saga(self.client, sid)


@contextlib.asynccontextmanager
async def _worker(
    client: Client, redmine: RedmineServer, data: Path, **overrides: Any
) -> AsyncIterator[TicketStack]:
    settings = Settings(
        task_queue=f"tickets-{uuid.uuid4().hex[:8]}",
        data_dir=data,
        database_url=f"sqlite:///{data / 'ledger.db'}",
        redmine_url=redmine.url,
        redmine_api_key=redmine.api_key,
        **overrides,
    )
    ledger = Ledger(settings.ledger_url())
    ticket_acts = tickets.build(settings) + compensations.tickets.build(settings)
    acts = ticket_acts + effects.build_activities(settings)
    async with create_worker(client, settings, ledger, activities=acts):
        yield TicketStack(client, settings, ledger, ticket_acts[0])
    for act in ticket_acts:
        await act.__self__.redmine.aclose()  # type: ignore[attr-defined]
    ledger.close()


@pytest.fixture(scope="module")
async def close_stack(
    client: Client,
    redmine: RedmineServer,
    effects_engine: Engine,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[TicketStack]:
    async with _worker(client, redmine, tmp_path_factory.mktemp("tickets")) as stack:
        yield stack


@pytest.fixture
async def rest(redmine: RedmineServer) -> AsyncIterator[httpx.AsyncClient]:
    """Redmine's REST API, with the admin key: what the tests count with."""
    async with httpx.AsyncClient(
        base_url=redmine.url, headers={"X-Redmine-API-Key": redmine.api_key}, timeout=15
    ) as http:
        yield http


async def issue(rest: httpx.AsyncClient, issue_id: str) -> dict[str, Any] | None:
    response = await rest.get(f"/issues/{issue_id}.json", params={"include": "journals"})
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return dict(response.json()["issue"])


async def issues_marked(rest: httpx.AsyncClient, saga_id: str, step_id: str) -> list[int]:
    """Ids of every issue, open or closed, in any project, whose description has the
    step's marker line."""
    line = f"saga-key: {saga_id}/{step_id}"
    response = await rest.get(
        "/issues.json",
        params=[
            ("f[]", "status_id"),
            ("op[status_id]", "*"),
            ("f[]", "description"),
            ("op[description]", "~"),
            ("v[description][]", line),
            ("limit", "100"),
        ],
    )
    response.raise_for_status()
    return sorted(
        i["id"]
        for i in response.json()["issues"]
        if line in [part.strip() for part in (i.get("description") or "").splitlines()]
    )


def ticket_step(step_id: str = "t", **args: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "action": "tickets.create",
        "args": {"subject": f"Check order {step_id}", **args},
    }


FAIL = {"id": "x", "action": "effects.apply", "args": {"name": "x", "fail": "before"}}


async def test_ticket_is_created_in_redmine(
    close_stack: TicketStack, redmine: RedmineServer, rest: httpx.AsyncClient
) -> None:
    result = await close_stack.run(
        [ticket_step(description="Customer asked for a refund.", priority="High", assignee="ops")]
    )
    assert result.status == SagaStatus.COMPLETED, result
    step = result.steps[0]
    assert step.external_id is not None
    assert step.result == {
        "external_id": step.external_id,
        "url": f"{redmine.url}/issues/{step.external_id}",
    }
    found = await issue(rest, step.external_id)
    assert found is not None
    assert found["project"]["name"] == "Ops"
    assert found["subject"] == "Check order t"
    assert found["priority"]["name"] == "High"
    assert found["assigned_to"]["name"] == "Ops Team"
    assert found["status"]["is_closed"] is False
    lines = found["description"].splitlines()
    assert lines[0] == "Customer asked for a refund."
    assert lines[-1] == f"saga-key: {result.saga_id}/t"
    assert await issues_marked(rest, result.saga_id, "t") == [int(step.external_id)]


async def test_saga_failing_after_the_ticket_closes_it_with_a_note(
    close_stack: TicketStack, rest: httpx.AsyncClient
) -> None:
    result = await close_stack.run([ticket_step(), FAIL])
    assert result.status == SagaStatus.COMPENSATED, result
    ticket = result.steps[0]
    assert {s.id for s in result.compensated_steps} == {"x", "t"}
    assert ticket.external_id is not None
    found = await issue(rest, ticket.external_id)
    assert found is not None
    assert found["status"]["name"] == "Closed"
    notes = [j["notes"] for j in found["journals"] if j.get("notes")]
    assert len(notes) == 1
    assert result.saga_id in notes[0]
    assert "compensated" in notes[0]
    assert "'x' (effects.apply) failed" in notes[0]
    assert "injected business failure" in notes[0]
    assert await issues_marked(rest, result.saga_id, "t") == [int(ticket.external_id)]


async def test_delete_mode_deletes_the_ticket(
    client: Client,
    redmine: RedmineServer,
    effects_engine: Engine,
    rest: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    async with _worker(client, redmine, tmp_path, ticket_compensation="delete") as stack:
        result = await stack.run([ticket_step(), FAIL])
    assert result.status == SagaStatus.COMPENSATED, result
    ticket = result.steps[0]
    assert ticket.external_id is not None
    assert await issue(rest, ticket.external_id) is None
    assert await issues_marked(rest, result.saga_id, "t") == []


async def test_lost_response_creates_exactly_one_ticket(
    client: Client,
    redmine: RedmineServer,
    effects_engine: Engine,
    rest: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    async with _worker(client, redmine, tmp_path, faults="tickets.create=1") as stack:
        done = await stack.run([ticket_step()])
        undone = await stack.run([ticket_step(), FAIL])
        attempts = [
            stack.ledger.step(f"{r.saga_id}/t").attempts  # type: ignore[union-attr]
            for r in (done, undone)
        ]
    assert attempts == [2, 2]  # the first attempt's response was lost each time

    assert done.status == SagaStatus.COMPLETED, done
    assert done.steps[0].external_id is not None
    assert await issues_marked(rest, done.saga_id, "t") == [int(done.steps[0].external_id)]

    # The same, and the saga then fails: the one ticket is the one closed.
    assert undone.status == SagaStatus.COMPENSATED, undone
    marked = await issues_marked(rest, undone.saga_id, "t")
    assert len(marked) == 1
    found = await issue(rest, str(marked[0]))
    assert found is not None and found["status"]["name"] == "Closed"


async def test_redmine_validation_error_is_not_retried_and_compensates(
    close_stack: TicketStack, rest: httpx.AsyncClient
) -> None:
    first = {"id": "a", "action": "effects.apply", "args": {"name": "a"}}
    result = await close_stack.run([first, ticket_step(project="no-such-project")])
    assert result.status == SagaStatus.COMPENSATED, result
    ticket = result.steps[1]
    assert ticket.error is not None
    assert ticket.error.startswith("TicketRejected: ")
    assert "Project cannot be blank" in ticket.error  # Redmine's own words
    assert result.error == ticket.error
    step = close_stack.ledger.step(f"{result.saga_id}/t")
    assert step is not None and step.attempts == 1  # non-retryable
    assert {s.id for s in result.compensated_steps} == {"t", "a"}
    assert await issues_marked(rest, result.saga_id, "t") == []


async def test_api_key_never_reaches_the_workflow_history(
    close_stack: TicketStack, redmine: RedmineServer
) -> None:
    result = await close_stack.run([ticket_step(assignee="Ops Team"), FAIL])
    assert result.status == SagaStatus.COMPENSATED, result
    handle = close_stack.client.get_workflow_handle(result.saga_id)
    history = history_text(await handle.fetch_history())
    assert "tickets.create" in history or "create_ticket" in history
    # Payloads are decoded: the ticket id in the step's result proves the search sees them.
    assert f'"external_id":"{result.steps[0].external_id}"' in history.replace(" ", "")
    assert redmine.api_key not in history
    for step in close_stack.ledger.steps(result.saga_id):
        assert redmine.api_key not in repr(step)


async def test_tickets_known_only_by_their_marker_are_found_and_closed(
    close_stack: TicketStack, rest: httpx.AsyncClient
) -> None:
    """Creates took effect but neither their responses nor their ids reached the
    ledger: the compensation finds the tickets by the step's marker line alone, and
    closes every one of them."""
    sid = unique("tickets")
    orphans = []
    for _ in range(2):
        made = await rest.post(
            "/issues.json",
            json={
                "issue": {
                    "project_id": "ops",
                    "subject": "made by a lost attempt",
                    "description": f"saga-key: {sid}/t",
                }
            },
        )
        assert made.status_code == 201, made.text
        orphans.append(made.json()["issue"]["id"])
    # The step itself is rejected by Redmine, so the ledger never holds an id for it.
    await start_saga(
        close_stack.client,
        {"steps": [ticket_step(project="no-such-project")]},
        saga_id=sid,
        task_queue=close_stack.settings.task_queue,
    )
    result = await wait_saga(close_stack.client, sid)
    assert result.status == SagaStatus.COMPENSATED, result
    assert result.steps[0].external_id is None
    for orphan in orphans:
        found = await issue(rest, str(orphan))
        assert found is not None and found["status"]["name"] == "Closed", orphan
        notes = [j["notes"] for j in found["journals"] if j.get("notes")]
        assert len(notes) == 1 and sid in notes[0], notes
    assert await issues_marked(rest, sid, "t") == orphans


class LateCopyRedmine(tickets.Redmine):
    """Redmine, where an earlier attempt's create lands just before this attempt's own:
    the earlier request was still being processed when this attempt looked for it."""

    def __init__(self, http: httpx.AsyncClient | None, public_url: str) -> None:
        super().__init__(http, public_url)
        self.made: list[int] = []

    async def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any] | None:
        if method == "POST" and path == "/issues.json":
            if not self.made:  # the earlier attempt's create, landing now
                self.made.append(await self._create(path, **kwargs))
            made = await self._create(path, **kwargs)
            self.made.append(made)
            return {"issue": {"id": made}}
        return await super().call(method, path, **kwargs)

    async def _create(self, path: str, **kwargs: Any) -> int:
        return int((await super().call("POST", path, **kwargs) or {})["issue"]["id"])


async def test_a_copy_landing_late_from_an_earlier_attempt_is_removed(
    close_stack: TicketStack, rest: httpx.AsyncClient
) -> None:
    forward = close_stack.create_ticket.__self__  # type: ignore[attr-defined]
    real = forward.redmine
    forward.redmine = late = LateCopyRedmine(real.http, real.public_url)
    try:
        result = await close_stack.run([ticket_step()])
    finally:
        forward.redmine = real
    assert result.status == SagaStatus.COMPLETED, result
    # Two tickets were made; the step keeps the oldest and deletes its own later copy.
    assert len(late.made) == 2
    earlier, copy = late.made
    assert result.steps[0].external_id == str(earlier)
    assert await issues_marked(rest, result.saga_id, "t") == [earlier]
    assert await issue(rest, str(copy)) is None
    step = close_stack.ledger.step(f"{result.saga_id}/t")
    assert step is not None and step.external_id == str(earlier)


async def test_unknown_assignee_is_rejected_before_anything_is_created(
    close_stack: TicketStack, rest: httpx.AsyncClient
) -> None:
    result = await close_stack.run([ticket_step(assignee="nobody-here")])
    assert result.status == SagaStatus.COMPENSATED, result
    assert result.error is not None
    assert result.error.startswith("TicketRejected: unknown assignee 'nobody-here'")
    step = close_stack.ledger.step(f"{result.saga_id}/t")
    assert step is not None and step.attempts == 1
    assert await issues_marked(rest, result.saga_id, "t") == []


async def test_ticket_edited_by_a_person_is_still_closed_by_its_recorded_id(
    close_stack: TicketStack, rest: httpx.AsyncClient
) -> None:
    sid = unique("tickets")
    slow = {"id": "w", "action": "effects.apply", "args": {"name": "w", "delay": 4}}
    await start_saga(
        close_stack.client,
        {"steps": [ticket_step(), slow, FAIL]},
        saga_id=sid,
        task_queue=close_stack.settings.task_queue,
    )
    step = await eventually(
        lambda: (s := close_stack.ledger.step(f"{sid}/t")) and s.external_id and s
    )
    # Someone rewrites the description (and the marker line with it) meanwhile.
    edited = await rest.put(
        f"/issues/{step.external_id}.json",
        json={"issue": {"description": "Rewritten by a person."}},
    )
    assert edited.status_code == 204, edited.text
    result = await wait_saga(close_stack.client, sid)
    assert result.status == SagaStatus.COMPENSATED, result
    found = await issue(rest, step.external_id)
    assert found is not None and found["status"]["name"] == "Closed"
