"""The payload codec and its keys: what Temporal stores is ciphertext, keyed by id."""

from __future__ import annotations

import base64
import os
import re
import stat
import threading
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError

from saga import (
    Ledger,
    PayloadKeyError,
    PayloadKeys,
    SagaError,
    SagaInput,
    Settings,
    create_worker,
    data_converter,
    payload_keys,
)
from saga._codec import ENCODING, KEY_FILE, KEY_ID, EncryptionCodec, converter_keys

CARD = "4242424242424242"
EMAIL = "ana.secret@example.com"
INPUT = SagaInput(
    plan={
        "steps": [
            {
                "id": "charge",
                "action": "payments.charge",
                "args": {"amount": 100, "currency": "eur", "customer_email": EMAIL},
            }
        ]
    },
    request=f"charge {EMAIL} with card {CARD}",
)


def keys(*ids: str) -> PayloadKeys:
    return PayloadKeys.parse(",".join(PayloadKeys.new_entry(i) for i in ids))


async def encode(k: PayloadKeys, value: object) -> Payload:
    (payload,) = await data_converter(k).encode([value])
    return payload


async def decode(k: PayloadKeys, payload: Payload) -> SagaInput:
    (value,) = await data_converter(k).decode([payload], [SagaInput])
    assert isinstance(value, SagaInput)
    return value


async def test_round_trip_leaves_no_plaintext_and_names_the_key() -> None:
    k = keys("k1")
    payload = await encode(k, INPUT)
    assert payload.metadata["encoding"] == ENCODING
    assert payload.metadata[KEY_ID] == b"k1"
    stored = payload.SerializeToString()
    for secret in (CARD, EMAIL, "payments.charge", "json/plain"):
        assert secret.encode() not in stored
    assert await decode(k, payload) == INPUT
    # A fresh nonce each time: the same value never encrypts the same way twice.
    assert (await encode(k, INPUT)).data != payload.data


async def test_rotation_old_payloads_decode_new_ones_use_the_new_key() -> None:
    old = keys("2024-old")
    written_before = await encode(old, INPUT)
    rotated = PayloadKeys.parse(f"{PayloadKeys.new_entry('2025-new')},{_entry(old)}")
    assert rotated.current == "2025-new" and rotated.ids == ["2025-new", "2024-old"]
    assert await decode(rotated, written_before) == INPUT
    written_after = await encode(rotated, INPUT)
    assert written_after.metadata[KEY_ID] == b"2025-new"
    assert await decode(rotated, written_after) == INPUT
    # A process still on the old keys names the key it lacks.
    with pytest.raises(PayloadKeyError, match=r"key '2025-new', which is not among .*2024-old"):
        await decode(old, written_after)


def _entry(k: PayloadKeys) -> str:
    """The key's entry (tests only: the key material otherwise never leaves PayloadKeys)."""
    ((key_id, key),) = k.keys
    return f"{key_id}:{base64.b64encode(key).decode()}"


async def test_unknown_key_id_is_named_in_the_error() -> None:
    payload = await encode(keys("prod-7"), INPUT)
    with pytest.raises(PayloadKeyError) as caught:
        await decode(keys("dev-1"), payload)
    assert "'prod-7'" in str(caught.value) and "SAGA_PAYLOAD_KEYS" in str(caught.value)


@pytest.mark.parametrize("where", ["ciphertext", "nonce", "tag", "key id", "truncated"])
async def test_tampered_payload_is_refused(where: str) -> None:
    k = PayloadKeys.parse(f"{PayloadKeys.new_entry('a')},{PayloadKeys.new_entry('b')}")
    payload = await encode(k, INPUT)
    data = bytearray(payload.data)
    if where == "ciphertext":
        data[20] ^= 1
    elif where == "nonce":
        data[0] ^= 1
    elif where == "tag":
        data[-1] ^= 1
    elif where == "truncated":
        del data[5:]
    else:  # claim the other (known) key: the id is bound to the ciphertext
        payload.metadata[KEY_ID] = b"b"
    payload.data = bytes(data)
    with pytest.raises(PayloadKeyError, match="does not authenticate: it was altered"):
        await decode(k, payload)


async def test_plaintext_payloads_from_before_the_codec_pass_through() -> None:
    (plain,) = await DataConverter.default.encode(["written before the codec"])
    (value,) = await data_converter(keys("k")).decode([plain], [str])
    assert value == "written before the codec"
    assert EncryptionCodec(keys("k")).decode_payload(plain) is plain


async def test_failure_messages_and_stack_traces_are_encrypted() -> None:
    k = keys("k")
    converter = data_converter(k)
    failure = Failure()
    try:
        raise ApplicationError(f"customer {EMAIL} declined card {CARD}", type="CardDeclined")
    except ApplicationError as exc:
        await converter.encode_failure(exc, failure)
    stored = failure.SerializeToString()
    assert EMAIL.encode() not in stored and CARD.encode() not in stored
    assert failure.message == "Encoded failure"
    decoded = await converter.decode_failure(failure)
    assert isinstance(decoded, ApplicationError)
    assert decoded.message == f"customer {EMAIL} declined card {CARD}"
    assert decoded.type == "CardDeclined"


def test_nonces_are_read_in_bulk_never_repeat_and_a_fork_takes_fresh_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each os.urandom call gives up the GIL, which a busy event loop then waits for: the
    # codec reads its nonces a few KiB at a time. A forked child must not reuse the
    # parent's unread ones.
    k = keys("k")
    calls: list[int] = []
    real = os.urandom

    def counted(n: int) -> bytes:
        calls.append(n)
        return real(n)

    monkeypatch.setattr(os, "urandom", counted)
    nonces = [k.encrypt(b"x")[1][:12] for _ in range(1000)]
    assert len(set(nonces)) == 1000
    assert 1 <= len(calls) <= 4, calls

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next nonce, to the parent
        try:
            os.write(write, k.encrypt(b"x")[1][:12])
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 12)
    os.close(read)
    os.waitpid(pid, 0)
    parent = k.encrypt(b"x")[1][:12]
    assert len(child) == 12 and child != parent and child not in nonces


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no key"),
        ("k1", "entry 1 is not `id:base64key`"),
        ("k1:not base64!", "key 'k1' is not base64"),
        ("k1:AAAA", "key 'k1' is 3 bytes; AES-256 needs 32"),
        ("bad id:" + "A" * 43 + "=", "key id 'bad id'"),
    ],
)
def test_unusable_keys_are_refused_without_showing_them(text: str, message: str) -> None:
    with pytest.raises(PayloadKeyError, match="SAGA_PAYLOAD_KEYS: .*" + re.escape(message)):
        PayloadKeys.parse(text)


def test_duplicate_ids_are_refused_and_keys_never_printed() -> None:
    entry = PayloadKeys.new_entry("same")
    with pytest.raises(PayloadKeyError, match="key id 'same' appears twice"):
        PayloadKeys.parse(f"{entry},{entry}")
    k = PayloadKeys.parse(entry)
    assert entry.split(":", 1)[1] not in repr(k) and "same" in repr(k)
    # URL-safe base64 and comments in a key file are fine.
    urlsafe = entry.replace("+", "-").replace("/", "_")
    assert PayloadKeys.parse(f"# rotated yearly\n{urlsafe}  # current\n").keys == k.keys


def test_key_file_is_made_once_owner_only_and_shared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SAGA_PAYLOAD_KEYS", raising=False)
    settings = Settings(data_dir=tmp_path / "data")
    with pytest.raises(PayloadKeyError, match="no payload keys: set SAGA_PAYLOAD_KEYS") as e:
        payload_keys(settings)  # a client never makes one
    assert str(tmp_path / "data" / KEY_FILE) in str(e.value)
    assert not (tmp_path / "data").exists()

    made: list[PayloadKeys] = []
    threads = [
        threading.Thread(target=lambda: made.append(payload_keys(settings, create=True)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    path = tmp_path / "data" / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len({m.keys for m in made}) == 1, "processes starting at once share one key"
    assert payload_keys(settings) == made[0]  # the CLI reads the same file
    assert [p.name for p in path.parent.iterdir()] == [KEY_FILE]  # no leftovers

    os.chmod(path, 0o644)
    with pytest.raises(PayloadKeyError, match=r"open to other users \(mode 0644\).*chmod 600"):
        payload_keys(settings)


def test_the_environment_wins_over_the_key_file(tmp_path: Path) -> None:
    entry = PayloadKeys.new_entry("from-env")
    settings = Settings(data_dir=tmp_path, payload_keys=entry)
    assert payload_keys(settings, create=True).ids == ["from-env"]
    assert not (tmp_path / KEY_FILE).exists()


async def test_a_worker_refuses_a_client_that_would_write_plaintext(
    client: Client, tmp_path: Path
) -> None:
    settings = Settings(task_queue="never-polled", data_dir=tmp_path)
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        config = client.config()
        config["data_converter"] = pydantic_data_converter  # no codec
        with pytest.raises(SagaError, match="no payload codec, so history would hold plaintext"):
            create_worker(Client(**config), settings, ledger, activities=[])
        assert ledger.keys is None
        worker = create_worker(client, settings, ledger, activities=[])
        # The ledger seals with the worker's keys; the plugin kept the codec.
        assert ledger.keys is not None and ledger.keys == converter_keys(client.data_converter)
        assert converter_keys(worker.client.data_converter) == ledger.keys
        assert isinstance(worker.client.data_converter.payload_codec, EncryptionCodec)
    finally:
        ledger.close()
