"""notify.email against a real SMTP server (aiosmtpd), through the real saga workflow."""

from __future__ import annotations

from collections.abc import AsyncIterator
from email.message import EmailMessage

import pytest
from temporalio.client import Client

from activities.inventory import ReservationStatus, reservations_of, stock_of
from activities.notify import message_id
from saga import (
    OperatorAction,
    SagaStatus,
    SagaWorkflow,
    StepStatus,
    free_port,
    idempotency_key,
)
from saga.dev._devstack import MailServer
from tests.activities import Systems, systems_worker
from tests.conftest import eventually
from tests.servers.smtp import REFUSED_DOMAIN, ControlledMailServer
from tests.test_saga import state_is


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
    """Refused connections delivered nothing: retried as usual, sent once, not parked."""
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
        row = late.ledger.step(key)
        assert row is not None and row.delivering_attempt is None  # never got that far
        async with MailServer(port, tmp_path_factory.mktemp("late-mail")) as server:
            result = await late.wait(sid)
            assert result.status == SagaStatus.COMPLETED, result
            assert len(mail_of(server, sid)) == 1
        step = late.ledger.step(key)
        assert step is not None and step.attempts >= 2
        # The attempt that sent is the one that claimed the delivery.
        assert step.delivering_attempt == step.attempts
        assert result.steps[0].status is StepStatus.SUCCEEDED
        assert result.steps[0].evidence is None


async def test_a_message_the_server_defers_is_sent_again_once(
    client: Client, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A 451 answer to the message itself: the server kept nothing, so the step says so
    (nothing_delivered) and the retry sends; one email, no operator needed."""
    url = f"sqlite:///{tmp_path_factory.mktemp('inventory') / 'inventory.db'}"
    async with ControlledMailServer(free_port(), tmp_path_factory.mktemp("mail")) as server:
        server.deferrals = 2
        async with systems_worker(
            client, tmp_path_factory.mktemp("saga"), inventory_url=url, smtp_port=server.port
        ) as systems:
            result = await systems.run([email_step()])
            row = systems.ledger.step(idempotency_key(result.saga_id, "email"))
        assert server.deferrals == 0
    assert result.status == SagaStatus.COMPLETED, result
    assert len(mail_of(server, result.saga_id)) == 1
    assert row is not None and row.attempts == 3 and row.delivering_attempt == 3


async def test_lost_response_parks_the_email_instead_of_sending_it_again(
    client: Client, smtp_server: MailServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The server took the email, then the attempt failed before recording it (a reset
    connection): SMTP cannot be asked whether it has the message, so the retry does not
    send it a second time; the operator confirms, and the saga completes."""
    url = f"sqlite:///{tmp_path_factory.mktemp('inventory') / 'inventory.db'}"
    async with systems_worker(
        client,
        tmp_path_factory.mktemp("saga"),
        inventory_url=url,
        smtp_port=smtp_server.port,
        faults="notify.email=1",
    ) as faulty:
        sku = faulty.product(4)
        reserve = {"sku": sku, "quantity": 1}
        sid = await faulty.start(
            [{"id": "reserve", "action": "inventory.reserve", "args": reserve}, email_step()]
        )
        parked = await eventually(
            lambda: state_is(client, sid, SagaStatus.NEEDS_ATTENTION), timeout=30
        )
        [sent] = mail_of(smtp_server, sid)
        email = parked.steps[1]
        assert email.status is StepStatus.UNCERTAIN
        assert email.external_id == sent["Message-ID"]
        assert email.evidence is not None
        assert email.evidence["message_id"] == sent["Message-ID"]
        assert email.evidence["attempt"] == 1
        assert "LostResponse" in email.evidence["ended"], email.evidence
        assert email.error is not None and email.error.startswith("DeliveryUncertain: ")
        handle = client.get_workflow_handle_for(SagaWorkflow.run, sid)
        answer = await handle.execute_update(
            SagaWorkflow.resolve_compensation, OperatorAction(step_id="email", note="it arrived")
        )
        assert answer.steps[1].status is StepStatus.SUCCEEDED
        assert answer.steps[1].operator_note == "it arrived"
        result = await faulty.wait(sid)
    assert result.status == SagaStatus.COMPLETED, result
    assert len(mail_of(smtp_server, sid)) == 1
    assert [r.status for r in reservations_of(faulty.engine, sid)] == [ReservationStatus.RESERVED]


def test_message_id_is_derived_from_the_idempotency_key() -> None:
    """The same key gives the same Message-ID on every attempt and worker; another key
    another one; the sender's domain names it."""
    first = message_id("saga-1/confirm", "shop@example.com")
    assert first == message_id("saga-1/confirm", "shop@example.com")
    assert first != message_id("saga-2/confirm", "shop@example.com")
    assert first.startswith("<saga-") and first.endswith("@example.com>")
    assert "saga-1" not in first  # a hash of the key, not the key itself


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
