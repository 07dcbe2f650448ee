"""No card number and no customer email at rest or on screen, and the order still runs.

A real `temporal server start-dev` with its own SQLite file, a `saga worker` process with
the production activities, real localstripe and SMTP, the real ledger. Two orders go in
through the command line: one from a plan file with a Stripe test card number and a
customer email, one from a request in words holding both (planned by the offline
planner). Then every place they could land is searched byte by byte: the raw history
from the server, the server's database file (with its WAL), the ledger, the worker's log,
every CLI output and the web API. A control saga started without the codec (as one in
flight before the upgrade) proves the search would see a plaintext payload.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import stripe
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from saga import (
    DevServer,
    SagaInput,
    SagaStatus,
    Settings,
    data_converter,
    free_port,
    payload_keys,
    wait_saga,
)
from saga._codec import KEY_FILE
from saga.dev._devstack import MailServer, prepare_inventory
from saga.dev._localstripe import LocalStripe
from saga.web import create_app
from tests.conftest import eventually, unique
from tests.history import raw_history_text
from tests.servers.smtp import REFUSED_DOMAIN
from tests.test_cli import ROOT

CARD = "4242424242424242"
CARD_SPACED = "4242 4242 4242 4242"
EMAIL = "zoe.quartermain@example.com"
REFUSED_EMAIL = f"zoe.quartermain@{REFUSED_DOMAIN}"
SECRETS = (CARD, CARD_SPACED, "4242-4242-4242-4242", EMAIL, "zoe.quartermain")
STRIPE_KEY = f"sk_test_{uuid.uuid4().hex}"
TOKEN = "personal-data-operator-token"


def hits(blob: bytes | str) -> list[str]:
    data = blob.encode() if isinstance(blob, str) else blob
    return [s for s in SECRETS if s.encode() in data]


def files_bytes(folder: Path, pattern: str) -> bytes:
    found = sorted(folder.glob(pattern))
    assert found, f"no {pattern} in {folder}"
    return b"".join(p.read_bytes() for p in found)


async def test_card_number_and_email_are_nowhere_in_plaintext(
    tmp_path: Path, localstripe: LocalStripe, smtp_server: MailServer
) -> None:
    data = tmp_path / "data"
    server = DevServer(free_port(), data / "temporal.db")
    await server.start()
    queue = unique("pii")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAGA_", "OPENAI_"))}
    env.update(
        SAGA_TEMPORAL_ADDRESS=server.address,
        SAGA_TASK_QUEUE=queue,
        SAGA_DATA_DIR=str(data),
        SAGA_STRIPE_API_KEY=STRIPE_KEY,
        SAGA_STRIPE_API_BASE=localstripe.url,
        SAGA_SMTP_PORT=str(smtp_server.port),
    )  # no SAGA_PAYLOAD_KEYS: the worker makes the key file, the CLI reads it
    settings = Settings(
        **{k[5:].lower(): v for k, v in env.items() if k.startswith("SAGA_")},
        payload_keys=None,
    )
    await asyncio.to_thread(prepare_inventory, settings)
    worker_log = tmp_path / "worker.out"
    worker = subprocess.Popen(
        [sys.executable, "-m", "saga", "worker"],
        env=env,
        cwd=ROOT,
        stdout=worker_log.open("wb"),
        stderr=subprocess.STDOUT,
    )

    async def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "saga", *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )

    outputs: dict[str, str] = {}
    try:
        await eventually(lambda: b"worker polling" in worker_log.read_bytes(), timeout=90)
        key_file = data / KEY_FILE
        assert oct(key_file.stat().st_mode & 0o777) == "0o600"
        keys = payload_keys(settings)

        def order(to: str) -> str:
            path = tmp_path / f"order-{to}.json"
            steps = [
                {"id": "reserve", "action": "inventory.reserve",
                 "args": {"sku": "mug-blue", "quantity": 2}},
                {"id": "charge", "action": "payments.charge",
                 "args": {"amount": 2500, "currency": "eur", "customer_email": EMAIL,
                          "card_number": CARD, "description": "2 blue mugs"}},
                {"id": "confirm", "action": "notify.email",
                 "args": {"to": to, "subject": "Your order: 2 blue mugs"}},
            ]  # fmt: skip
            path.write_text(json.dumps({"steps": steps}))
            return str(path)

        planned, worded, refused = unique("pii-plan"), unique("pii-words"), unique("pii-refused")
        request = f"order 2 blue mugs for {EMAIL} and charge her card {CARD_SPACED}"
        for sid, how, code in (
            (planned, ["--plan", order(EMAIL)], 0),
            (worded, [request], 0),
            # The SMTP server refuses this address: the error quoting it reaches the ledger,
            # the failure in history and the worker's log, and is undone (code 1).
            (refused, ["--plan", order(REFUSED_EMAIL)], 1),
        ):
            run = await cli("start", *how, "--id", sid, "--wait", "--json")
            assert run.returncode == code, run.stdout + run.stderr
            outputs[f"start {sid}"] = run.stdout + run.stderr
            for args in (["status", sid, "--json"], ["status", sid]):
                shown = await cli(*args)
                assert shown.returncode == code, shown.stderr
                outputs[" ".join(args)] = shown.stdout + shown.stderr
        assert "z***@refused.invalid (550" in outputs[f"status {refused}"]
        for args in (["list"], ["list", "--json"]):
            listed = await cli(*args)
            assert listed.returncode == 0, listed.stderr
            assert planned in listed.stdout
            outputs[" ".join(args)] = listed.stdout + listed.stderr
        # Masked, not dropped: the operator still sees whose order and which card.
        assert "z***@example.com" in outputs[f"status {planned} --json"]
        assert "z***@example.com" in outputs[f"status {worded} --json"]

        # The codec's view: both completed, and the plans carry payment method ids.
        reader = await Client.connect(server.address, data_converter=data_converter(keys))
        for sid in (planned, worded):
            result = await wait_saga(reader, sid)
            assert result.status == SagaStatus.COMPLETED, result
            assert result.plan is not None
            charge = next(s for s in result.plan.steps if s.action == "payments.charge")
            assert "card_number" not in charge.args, charge.args
            assert charge.args["payment_method"].startswith("pm_"), charge.args
            assert charge.args["customer_email"] == EMAIL
        assert result.request is not None and CARD_SPACED not in result.request
        assert "pm_" in result.request and EMAIL in result.request
        undone = await wait_saga(reader, refused)
        assert undone.status == SagaStatus.COMPENSATED, undone
        assert undone.error is not None and REFUSED_EMAIL in undone.error  # what is at stake

        # localstripe holds both charges.
        counter = stripe.StripeClient(
            STRIPE_KEY, base_addresses={"api": localstripe.url}, max_network_retries=0
        )
        page = await counter.v1.payment_intents.list_async({"limit": 100})
        charged = {
            pi.metadata["saga_id"]: (pi.status, pi.amount)
            async for pi in page.auto_paging_iter()
            if "saga_id" in pi.metadata
        }
        assert charged[planned] == ("succeeded", 2500)
        assert charged[worded] == ("succeeded", 2500)

        # A saga started by a client without the codec, as one in flight before the
        # upgrade: the worker still runs it, and its plaintext input is what the
        # searches below must be able to see.
        marker = f"plaintext-control-{uuid.uuid4().hex}"
        legacy = await Client.connect(server.address, data_converter=pydantic_data_converter)
        control = unique("pii-control")
        await legacy.start_workflow(
            "SagaWorkflow",
            SagaInput(
                plan={"steps": [{"id": "w", "action": "saga.wait", "args": {"seconds": 0.1}}]},
                request=marker,
            ),
            id=control,
            task_queue=queue,
        )
        assert (await wait_saga(reader, control)).status == SagaStatus.COMPLETED

        # The web app: API JSON (what the page renders) and the page itself.
        app = create_app(settings, token=TOKEN)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://testserver",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as web:
            for path in (f"/api/sagas/{planned}", f"/api/sagas/{worded}", "/api/sagas"):
                response = await web.get(path)
                assert response.status_code == 200, response.text
                outputs[f"web {path}"] = response.text
            view = (await web.get(f"/api/sagas/{planned}")).json()
            assert view["state"]["plan"]["steps"][1]["args"]["customer_email"] == (
                "z***@example.com"
            )
            outputs["web page"] = (await web.get(f"/sagas/{planned}")).text

        # The raw history, as the server hands it out, without decoding.
        raw = {
            sid: raw_history_text(await legacy.get_workflow_handle(sid).fetch_history())
            for sid in (planned, worded, refused, control)
        }
    finally:
        worker.send_signal(signal.SIGINT)
        try:
            worker.wait(timeout=60)
        finally:
            if worker.poll() is None:
                worker.kill()
            server.stop()  # flushes the database file

    for where, text in outputs.items():
        assert hits(text) == [], f"{where}: {text}"
    assert '"Encoded failure"' in raw[refused]
    for sid in (planned, worded, refused):
        assert hits(raw[sid]) == [], sid
        assert '"encryption-key-id"' in raw[sid] and "charge_payment" in raw[sid]
    assert marker in raw[control]  # the search sees a plaintext payload

    temporal_db = files_bytes(data, "temporal.db*")
    assert hits(temporal_db) == []
    assert marker.encode() in temporal_db and planned.encode() in temporal_db

    ledger_db = files_bytes(data, "ledger.db*")
    assert hits(ledger_db) == []
    assert planned.encode() in ledger_db and b"enc:v1:" in ledger_db
    assert marker.encode() not in ledger_db  # the worker sealed the control's request too

    logs = worker_log.read_bytes() + files_bytes(data, "saga.log")
    assert hits(logs) == [], logs.decode(errors="replace")[-3000:]
    assert planned.encode() in logs  # the log does mention the sagas it ran
    assert b"z***@refused.invalid" in logs  # ... and the refusal, masked
