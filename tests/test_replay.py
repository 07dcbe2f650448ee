"""Every recorded saga history replays against today's workflow code.

A history stands for a saga in flight when new code is deployed: if today's code would
issue other commands than the recorded ones (an activity or timer added, removed or
moved...), the replay raises ``NondeterminismError`` and the test fails. Change workflow
code behind ``workflow.patched`` instead (README, "Changing workflow code safely");
``python -m tests.histories.record`` records the histories.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import Client

from saga import Ledger, PayloadKeys, Settings, create_worker
from tests.conftest import unique
from tests.histories import FOLDER, HISTORY_KEYS, history_files, load, replayer
from tests.histories.record import SCENARIOS
from tests.history import history_text, raw_history_text

# Every saga the recorder knows has a file (a missing one fails, it is not skipped), and
# every file is replayed, older releases' subfolders included.
CASES = sorted({FOLDER / f"{name}.json" for name in SCENARIOS} | set(history_files()))


@pytest.mark.parametrize("path", CASES, ids=[str(p.relative_to(FOLDER)) for p in CASES])
async def test_recorded_saga_replays_on_todays_code(path: Path) -> None:
    history = load(path)
    assert len(history.events) > 10, "not a whole saga"
    await replayer().replay_workflow(history)


@pytest.mark.parametrize("path", CASES, ids=[str(p.relative_to(FOLDER)) for p in CASES])
async def test_recorded_saga_replays_without_the_sandbox(path: Path) -> None:
    """SAGA_WORKFLOW_SANDBOX=false runs the same workflow code directly: it must make the
    same commands (no state shared between runs, nothing that differs outside it)."""
    await replayer(sandbox=False).replay_workflow(load(path))


async def test_the_replayer_runs_workflow_code_as_the_worker_does(
    client: Client, tmp_path: Path
) -> None:
    """Same workflows, sandbox, payload converter and failure types as create_worker's."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    settings = Settings(task_queue=unique("replay"), data_dir=tmp_path)
    try:
        worker = create_worker(client, settings, ledger, activities=[])
    finally:
        ledger.close()
    theirs = worker.config(active_config=True)
    ours = replayer(sandbox=settings.workflow_sandbox).config(active_config=True)
    assert theirs["workflows"] == ours["workflows"]
    assert type(theirs["workflow_runner"]) is type(ours["workflow_runner"])
    if settings.workflow_sandbox:
        assert theirs["workflow_runner"].restrictions == ours["workflow_runner"].restrictions
    assert (
        worker.client.data_converter.payload_converter_class
        is ours["data_converter"].payload_converter_class
    )
    assert theirs["workflow_failure_exception_types"] == ours["workflow_failure_exception_types"]


async def test_encrypted_histories_replay_with_their_key_only() -> None:
    """The recorded histories under encrypted/ hold ciphertext (and an encoded failure);
    the replayer reads them through the codec, and cannot without the key."""
    history = load(FOLDER / "encrypted" / "compensated_card_declined.json")
    raw = raw_history_text(history)
    assert '"encryption-key-id"' in raw and '"Encoded failure"' in raw
    assert "4000000000000002" not in raw and "ana@example.com" not in raw
    assert "Your card was declined" in history_text(history, HISTORY_KEYS)
    await replayer().replay_workflow(history)
    stranger = PayloadKeys.parse(PayloadKeys.new_entry("histories"))  # same id, other key
    with pytest.raises(Exception, match="PayloadKeyError"):
        await replayer(keys=stranger).replay_workflow(history)
