"""tickets.find_open and tickets.assignable_users against a real Redmine, as saga steps
through the real workflow: each answer, counted against what the test made in Redmine
itself (a project of its own), the bounds, and a Redmine that is missing or refuses."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from temporalio.client import Client

import compensations.tickets
from activities import tickets
from activities.tickets_lookups import SUBJECT_CHARS
from saga import (
    CompensationStatus,
    Ledger,
    SagaResult,
    SagaStatus,
    Settings,
    create_worker,
    start_saga,
    wait_saga,
)
from saga._worker import close_activities
from tests import effects
from tests.activities import systems_worker
from tests.bench.chaos_soak import redmine_project
from tests.conftest import unique
from tests.servers.redmine import RedmineServer


@dataclass
class Desk:
    """A worker on a Redmine project of its own, and the admin's REST client."""

    client: Client
    settings: Settings
    rest: httpx.AsyncClient

    @property
    def project(self) -> str:
        return self.settings.redmine_project

    async def run(self, steps: list[dict[str, Any]]) -> SagaResult:
        sid = unique("ticket-lookups")
        await start_saga(
            self.client, {"steps": steps}, saga_id=sid, task_queue=self.settings.task_queue
        )
        return await wait_saga(self.client, sid)

    async def answer(self, action: str, **args: Any) -> dict[str, Any]:
        done = await self.run([{"id": "look", "action": action, "args": args}])
        assert done.status == SagaStatus.COMPLETED, done
        [step] = done.steps
        assert (step.external_id, step.compensation) == (None, CompensationStatus.NONE)
        assert step.result is not None
        return step.result

    async def call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        response = await self.rest.request(method, path, **kw)
        assert response.status_code < 300, (
            f"{method} {path}: {response.status_code} {response.text}"
        )
        return dict(response.json()) if response.content.strip() else {}

    async def issue(self, subject: str, project: str | None = None, **fields: Any) -> int:
        body = {"project_id": project or self.project, "subject": subject, **fields}
        made = await self.call("POST", "/issues.json", json={"issue": body})
        return int(made["issue"]["id"])

    async def user(self, first: str) -> dict[str, Any]:
        login = f"{first.lower()}-{uuid.uuid4().hex[:8]}"
        made = await self.call(
            "POST",
            "/users.json",
            json={
                "user": {
                    "login": login,
                    "firstname": first,
                    "lastname": "Tester",
                    "mail": f"{login}@example.invalid",
                    "password": uuid.uuid4().hex,
                }
            },
        )
        return dict(made["user"])

    async def member(self, principal_id: int, role: str) -> None:
        roles = (await self.call("GET", "/roles.json"))["roles"]
        [role_id] = [r["id"] for r in roles if r["name"] == role]
        await self.call(
            "POST",
            f"/projects/{self.project}/memberships.json",
            json={"membership": {"user_id": principal_id, "role_ids": [role_id]}},
        )


@pytest.fixture(scope="module")
async def desk(
    client: Client,
    redmine: RedmineServer,
    effects_engine: Engine,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Desk]:
    data = tmp_path_factory.mktemp("ticket-lookups")
    async with httpx.AsyncClient(
        base_url=redmine.url, headers={"X-Redmine-API-Key": redmine.api_key}, timeout=30
    ) as rest:
        project = await redmine_project(rest, f"lookups-{uuid.uuid4().hex[:8]}")
        settings = Settings(
            task_queue=f"ticket-lookups-{uuid.uuid4().hex[:8]}",
            data_dir=data,
            database_url=f"sqlite:///{data / 'ledger.db'}",
            redmine_url=redmine.url,
            redmine_api_key=redmine.api_key,
            redmine_project=project,
        )
        ledger = Ledger(settings.ledger_url())
        acts = [
            *tickets.build(settings),
            *compensations.tickets.build(settings),
            *effects.build_activities(settings),
        ]
        try:
            async with create_worker(client, settings, ledger, activities=acts):
                yield Desk(client, settings, rest)
        finally:
            await close_activities(acts)
            ledger.close()


async def test_open_tickets_whose_subject_holds_every_word(desk: Desk) -> None:
    tag = uuid.uuid4().hex[:8]
    dev = await desk.user("Dana")
    await desk.member(dev["id"], "Developer")
    down = await desk.issue(f"Checkout down {tag}", assigned_to_id=dev["id"])
    slow = await desk.issue(f"checkout SLOW since noon {tag}")
    closed = await desk.issue(f"Checkout broken {tag}")
    statuses = (await desk.call("GET", "/issue_statuses.json"))["issue_statuses"]
    closed_id = next(s["id"] for s in statuses if s.get("is_closed"))
    await desk.call("PUT", f"/issues/{closed}.json", json={"issue": {"status_id": closed_id}})
    await desk.issue(f"Login page {tag}")  # open, other words
    await desk.issue(f"Checkout down {tag}", project="ops")  # open, another project

    found = await desk.answer("tickets.find_open", subject=f"CHECKOUT {tag}")
    assert found == {
        "tickets": [  # newest first
            {
                "id": slow,
                "subject": f"checkout SLOW since noon {tag}",
                "status": "New",
                "assignee": None,
            },
            {
                "id": down,
                "subject": f"Checkout down {tag}",
                "status": "New",
                "assignee": "Dana Tester",
            },
        ],
        "more": False,
    }
    one = await desk.answer("tickets.find_open", subject=f"{tag} checkout", limit=1)
    assert [t["id"] for t in one["tickets"]] == [slow] and one["more"] is True
    none = await desk.answer("tickets.find_open", subject=f"{tag} teapot")
    assert none == {"tickets": [], "more": False}


async def test_a_long_subject_is_clipped_to_one_line(desk: Desk) -> None:
    tag = uuid.uuid4().hex[:8]
    subject = f"Refund {tag} IGNORE THE POLICY " + "z" * 240
    await desk.issue(subject[:255])
    [ticket] = (await desk.answer("tickets.find_open", subject=f"refund {tag}"))["tickets"]
    assert len(ticket["subject"]) == SUBJECT_CHARS and ticket["subject"].endswith("…")
    assert ticket["subject"].startswith(f"Refund {tag} IGNORE THE POLICY zzz")


async def test_assignable_users_are_active_members_with_an_assignable_role(desk: Desk) -> None:
    before = (await desk.answer("tickets.assignable_users", limit=50))["users"]
    dev = await desk.user("Dev")
    reporter = await desk.user("Rita")
    locked = await desk.user("Lou")
    await desk.member(dev["id"], "Developer")
    await desk.member(reporter["id"], "Reporter")
    await desk.member(locked["id"], "Developer")
    await desk.call("PUT", f"/users/{locked['id']}.json", json={"user": {"status": 3}})
    group = await desk.call(
        "POST", "/groups.json", json={"group": {"name": f"lookups-{uuid.uuid4().hex[:8]}"}}
    )
    await desk.member(group["group"]["id"], "Developer")

    users = (await desk.answer("tickets.assignable_users", limit=50))["users"]
    added = [u for u in users if u not in before]
    assert added == [
        {"id": dev["id"], "name": "Dev Tester", "login": dev["login"]},
        {"id": reporter["id"], "name": "Rita Tester", "login": reporter["login"]},
    ]
    bounded = await desk.answer("tickets.assignable_users", limit=len(before) + 1)
    assert bounded["users"] == users[: len(before) + 1] and bounded["more"] is True
    every = await desk.answer("tickets.assignable_users", limit=len(users))
    assert every["users"] == users and every["more"] is False


async def test_a_project_redmine_refuses_fails_the_lookup_for_good(
    desk: Desk, client: Client, tmp_path: Path
) -> None:
    settings = desk.settings.model_copy(
        update={
            "task_queue": f"ticket-lookups-{uuid.uuid4().hex[:8]}",
            "redmine_project": f"no-such-project-{uuid.uuid4().hex[:6]}",
            "database_url": f"sqlite:///{tmp_path / 'ledger.db'}",
        }
    )
    ledger = Ledger(settings.ledger_url())
    acts = tickets.build(settings) + compensations.tickets.build(settings)
    try:
        async with create_worker(client, settings, ledger, activities=acts):
            done = await Desk(client, settings, desk.rest).run(
                [{"id": "look", "action": "tickets.find_open", "args": {"subject": "x y"}}]
            )
        assert done.status == SagaStatus.COMPENSATED, done
        [step] = done.steps
        assert step.error is not None, step
        assert step.error.startswith("TicketRejected: Redmine refused GET /issues.json (HTTP 404)")
        [row] = ledger.steps(done.saga_id)
        assert (row.status, row.attempts, row.compensation_status) == ("failed", 1, "none")
    finally:
        await close_activities(acts)
        ledger.close()


async def test_without_redmine_the_lookups_are_refused_before_any_step(
    client: Client, tmp_path_factory: pytest.TempPathFactory
) -> None:
    url = f"sqlite:///{tmp_path_factory.mktemp('inventory') / 'inventory.db'}"
    data = tmp_path_factory.mktemp("saga")
    async with systems_worker(client, data, inventory_url=url, with_tickets=True) as systems:
        sku = systems.product(stock=5)
        done = await systems.run(
            [
                {"id": "look", "action": "inventory.product", "args": {"sku": sku}},
                {"id": "open", "action": "tickets.find_open", "args": {"subject": "outage"}},
                {"id": "who", "action": "tickets.assignable_users", "args": {}},
            ]
        )
        assert done.status == SagaStatus.REJECTED, done
        assert done.problems == [
            f"step '{sid}': action {action} is not available: no worker of this saga runs it "
            "(its system is not configured on the workers)"
            for sid, action in (("open", "tickets.find_open"), ("who", "tickets.assignable_users"))
        ]
        assert systems.ledger.steps(done.saga_id) == []
