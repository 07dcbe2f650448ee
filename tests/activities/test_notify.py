"""notify.email against a real SMTP server (aiosmtpd), through the real saga workflow."""

from __future__ import annotations

from collections.abc import AsyncIterator
from email.message import EmailMessage

import pytest
from temporalio.client import Client

from activities.inventory import reservations_of, stock_of
from activities.notify import message_id
from compensations.inventory import ReservationStatus
from saga import SagaStatus, free_port, idempotency_key
from saga._devstack import MailServer
from tests.activities import Systems, systems_worker
from tests.conftest import eventually
from tests.servers.smtp import REFUSED_DOMAIN


@pytest.fixture(scope="module")
async def systems(
    client: Client, smtp_server: MailServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Systems]:
    url = f"sqlite:///{tmp_path_factory.mktemp('inventory') / 'inventory.db'}"
    async with systems_worker(
        client, tmp_path_factory.mktemp("saga"), inventory_url=url, smtp_port=smtp_server.port
    ) as s:
        yield s


def mail_of(server: MailServer, saga_id: str) -> list[EmailMessage]:
    return [m for m in server.messages if m["X-Saga-Id"] == saga_id]


def email_step(to: str = "ops@example.com", **args: str) -> dict[str, object]:
    return {
        "id": "email",
        "action": "notify.email",
        "args": {"to": to, "subject": "Order confirmed", **args},
    }


async def test_email_arrives_naming_the_saga(systems: Systems, smtp_server: MailServer) -> None:
    sku = systems.product(5)
    result = await systems.run(
        [
            {"id": "reserve", "action": "inventory.reserve", "args": {"sku": sku, "quantity": 2}},
            email_step(body="Two mugs are on hold for you."),
        ]
    )
    assert result.status == SagaStatus.COMPLETED, result
    [msg] = mail_of(smtp_server, result.saga_id)
    assert msg["To"] == "ops@example.com"
    assert msg["From"] == systems.settings.mail_from
    assert msg["Subject"] == "Order confirmed"
    key = idempotency_key(result.saga_id, "email")
    assert msg["Message-ID"] == message_id(key, systems.settings.mail_from)
    assert result.steps[1].external_id == msg["Message-ID"]
    body = msg.get_content()
    assert body.startswith("Two mugs are on hold for you.")
    assert f"Saga {result.saga_id}" in body
    [held] = reservations_of(systems.engine, result.saga_id)
    assert f"reserve: inventory.reserve succeeded ({held.id})" in body
    # The server also saved it as a file.
    saved = [p for p in smtp_server.folder.iterdir() if msg["Message-ID"].strip("<>") in p.name]
    assert len(saved) == 1 and result.saga_id.encode() in saved[0].read_bytes()


async def test_permanent_rejection_is_not_retried_and_unwinds(
    systems: Systems, smtp_server: MailServer
) -> None:
    sku = systems.product(3)
    result = await systems.run(
        [
            {"id": "reserve", "action": "inventory.reserve", "args": {"sku": sku, "quantity": 3}},
            email_step(to=f"nobody@{REFUSED_DOMAIN}"),
        ]
    )
    assert result.status == SagaStatus.COMPENSATED, result
    assert result.error is not None and "EmailRejected" in result.error and "550" in result.error
    step = systems.ledger.step(idempotency_key(result.saga_id, "email"))
    assert step is not None and step.attempts == 1
    assert mail_of(smtp_server, result.saga_id) == []
    assert stock_of(systems.engine, sku) == 3
    assert [r.status for r in reservations_of(systems.engine, result.saga_id)] == [
        ReservationStatus.RELEASED
    ]


async def test_unreachable_server_is_retried_until_it_answers(
    client: Client, tmp_path_factory: pytest.TempPathFactory
) -> None:
    port = free_port()  # nothing listens here yet
    url = f"sqlite:///{tmp_path_factory.mktemp('inventory') / 'inventory.db'}"
    async with systems_worker(
        client, tmp_path_factory.mktemp("saga"), inventory_url=url, smtp_port=port
    ) as late:
        sid = await late.start([email_step()])
        key = idempotency_key(sid, "email")

        def refused() -> bool:
            step = late.ledger.step(key)
            return step is not None and step.status == "failed" and "refused" in (step.error or "")

        await eventually(refused)
        async with MailServer(port, tmp_path_factory.mktemp("late-mail")) as server:
            result = await late.wait(sid)
            assert result.status == SagaStatus.COMPLETED, result
            assert len(mail_of(server, sid)) == 1
        step = late.ledger.step(key)
        assert step is not None and step.attempts >= 2


async def test_lost_response_resends_with_the_same_message_id(
    client: Client, smtp_server: MailServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    url = f"sqlite:///{tmp_path_factory.mktemp('inventory') / 'inventory.db'}"
    async with systems_worker(
        client,
        tmp_path_factory.mktemp("saga"),
        inventory_url=url,
        smtp_port=smtp_server.port,
        faults="notify.email=1",
    ) as faulty:
        result = await faulty.run([email_step()])
    assert result.status == SagaStatus.COMPLETED, result
    sent = mail_of(smtp_server, result.saga_id)
    # SMTP has no idempotency: the email went out twice, and the receiver can tell.
    assert len(sent) == 2
    assert len({m["Message-ID"] for m in sent}) == 1


async def test_email_before_a_compensable_step_is_rejected(
    systems: Systems, smtp_server: MailServer
) -> None:
    sku = systems.product(5)
    result = await systems.run(
        [
            email_step(),
            {"id": "reserve", "action": "inventory.reserve", "args": {"sku": sku, "quantity": 1}},
        ]
    )
    assert result.status == SagaStatus.REJECTED, result
    assert any(
        "compensable action inventory.reserve comes after irreversible step 'email'" in p
        for p in result.problems
    ), result.problems
    assert mail_of(smtp_server, result.saga_id) == []
    assert reservations_of(systems.engine, result.saga_id) == []
    assert stock_of(systems.engine, sku) == 5


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ({"to": "not-an-address", "subject": "Hi"}, "args.to"),
        ({"to": "ops@example.com", "subject": "Hi\r\nBcc: all@example.com"}, "args.subject"),
        ({"to": "ops@example.com"}, "args.subject"),
    ],
)
async def test_bad_email_args_are_rejected_before_anything_runs(
    systems: Systems, smtp_server: MailServer, args: dict[str, str], problem: str
) -> None:
    result = await systems.run([{"id": "email", "action": "notify.email", "args": args}])
    assert result.status == SagaStatus.REJECTED, result
    assert any(problem in p for p in result.problems), result.problems
    assert mail_of(smtp_server, result.saga_id) == []
