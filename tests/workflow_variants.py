"""SagaWorkflow as a later release might change it, for the deploy and update tests.

Every variant is registered under the name ``SagaWorkflow``, as a new release of the same
workflow is. The workflow sandbox imports this module: it imports temporalio and saga only.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from saga._models import OperatorAction, SagaInput, SagaResult
    from saga._workflow import SagaWorkflow

ANNOUNCE = "announce-start"
"""The patch id of the change below."""
ANNOUNCEMENT = "saga started"


async def _announce() -> None:
    """The change: before anything else, say that the saga started (an effects.notify)."""
    await workflow.execute_activity(
        "notify_effect",
        {"name": ANNOUNCEMENT},
        activity_id="announce",
        start_to_close_timeout=timedelta(seconds=30),
    )


@workflow.defn(name="SagaWorkflow")
class AnnouncingSagaWorkflow(SagaWorkflow):
    """The change behind ``workflow.patched``: sagas started before it skip it on replay."""

    @workflow.run
    async def run(self, inp: SagaInput) -> SagaResult:
        if workflow.patched(ANNOUNCE):
            await _announce()
        return await super().run(inp)


@workflow.defn(name="SagaWorkflow")
class UnguardedAnnouncingSagaWorkflow(SagaWorkflow):
    """The same change without the guard: replaying an older saga schedules a command
    its history does not have."""

    @workflow.run
    async def run(self, inp: SagaInput) -> SagaResult:
        await _announce()
        return await super().run(inp)


AUDIT_SECONDS = 2.0


@workflow.defn(name="SagaWorkflow")
class AuditedResolveSagaWorkflow(SagaWorkflow):
    """Its resolve update keeps working after the saga has moved on (a durable timer
    stands in for, say, an audit record), so it is still running when the saga ends."""

    @workflow.run
    async def run(self, inp: SagaInput) -> SagaResult:
        return await super().run(inp)

    @workflow.update
    async def resolve_compensation(self, action: OperatorAction) -> SagaResult:
        await super().resolve_compensation(action)
        await workflow.sleep(AUDIT_SECONDS)
        return self._state

    @resolve_compensation.validator
    def _validate_audited_resolve(self, action: OperatorAction) -> None:
        self._waits_for_operator(action)
