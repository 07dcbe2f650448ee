"""Event histories of representative sagas, replayed against today's code.

Each ``*.json`` here (in this folder or a subfolder) is one saga's history as
``WorkflowHistory.to_json()`` writes it (the format of ``temporal workflow show -o json``
and of the Temporal UI's download). ``tests/test_replay.py`` replays every one of them;
``python -m tests.histories.record`` records the ones named in
:data:`tests.histories.record.SCENARIOS` again.

Histories recorded before the payload codec hold plaintext payloads; those recorded since
are encrypted with :data:`HISTORY_KEYS`, a key that is public on purpose (it protects
nothing but test fixtures). The replayer decodes both, as a worker does after an upgrade.
"""

from __future__ import annotations

import json
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.worker import Replayer

import activities  # noqa: F401  (declares the production actions in the catalog)
from saga import PayloadKeys, SagaWorkflow, Settings, data_converter
from saga._step_header import StepHeaders
from saga._worker import workflow_runner
from saga.planner._agent_settings import AgentSettings, agents_plugin
from tests.agent import money  # noqa: F401  (declares effects.* and money.charge)

FOLDER = Path(__file__).parent
HISTORY_KEYS = PayloadKeys.parse(
    "histories:PetaPa4MmioZRNaAdVji0YyVtmc4xEw55St5xGC34ao=", "tests.histories"
)


def history_files() -> list[Path]:
    """Every recorded history, old releases' subfolders included."""
    return sorted(FOLDER.rglob("*.json"))


def load(path: Path) -> WorkflowHistory:
    """A history file, with the workflow id its start event names."""
    text = path.read_text()
    started = json.loads(text)["events"][0]["workflowExecutionStartedEventAttributes"]
    return WorkflowHistory.from_json(started["workflowId"], text)


def replayer(*workflows: type, keys: PayloadKeys = HISTORY_KEYS, sandbox: bool = True) -> Replayer:
    """A replayer that runs workflow code as ``saga.create_worker``'s worker runs it.

    Same agents plugin (its payload converter, and its runner that makes model calls
    activities), the payload codec (:data:`HISTORY_KEYS`; plaintext payloads pass), same
    runner (``sandbox``: Temporal's sandbox with ``saga`` passed through, or none, as
    ``SAGA_WORKFLOW_SANDBOX=false`` runs it). ``workflows`` defaults to today's
    ``SagaWorkflow``; ``keys`` decrypt the histories (default: the recorded ones').
    """
    return Replayer(
        workflows=list(workflows) or [SagaWorkflow],
        data_converter=data_converter(keys, DataConverter.default),
        plugins=[agents_plugin(AgentSettings(openai_api_key=None))],
        # As a worker does: the step header goes out (replay compares no headers).
        interceptors=[StepHeaders()],
        workflow_runner=workflow_runner(Settings(workflow_sandbox=sandbox)),
    )
