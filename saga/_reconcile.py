"""Reconciliation: the ledger against the world it claims to describe.

:func:`reconcile` reads every step the ledger holds and every effect the external
systems hold that carries a saga idempotency key (a PaymentIntent's metadata, a
reservation row, the ``saga-key:`` line of a Redmine issue in the configured project),
and reports where they disagree:

* an effect with no ledger record: no step for its key, more than one effect for one
  key, or an effect still standing whose step never succeeded;
* a ledger record with no effect: a succeeded step whose external id the system does
  not have;
* an undo that did not hold: a compensated step whose effect still stands, or a
  compensated or cancelled saga that left an effect standing;

plus the sagas waiting for an operator (``needs_attention``). Sagas still running are
listed, and their unfinished steps are not judged; read-only steps (look-ups) never are:
they have no effect to find. The systems are reached only through
settings; the report names them without credentials. Each system brings its reader
(:class:`saga.Reconciler`, registered with ``catalog.add_reader``): the configured
systems' modules are imported when :func:`reconcile` runs, and the engine imports none.
"""

from __future__ import annotations

import asyncio
import enum
import io
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field, computed_field
from rich.console import Console
from rich.table import Table as RichTable

from saga._catalog import ActionKind, catalog
from saga._codec import payload_keys
from saga._ledger import Ledger, StepSnapshot
from saga._models import CompensationStatus, SagaStatus, StepStatus
from saga._settings import Settings
from saga._systems import Effect, ReaderFactory, Reconciler, SystemUnavailable

FINAL = frozenset(s for s in SagaStatus if s.final)
UNDONE = frozenset({SagaStatus.COMPENSATED, SagaStatus.CANCELLED})
NEEDS_ATTENTION = SagaStatus.NEEDS_ATTENTION


class DriftKind(enum.StrEnum):
    UNRECORDED_EFFECT = "unrecorded_effect"
    """An effect carries an idempotency key the ledger has no step for."""
    DUPLICATE_EFFECT = "duplicate_effect"
    """More than one effect carries the same idempotency key: it happened twice."""
    EFFECT_WITHOUT_SUCCESS = "effect_without_success"
    """An effect stands, its step did not succeed, and its saga is over."""
    MISSING_EFFECT = "missing_effect"
    """A succeeded step's external id is unknown to its system."""
    COMPENSATED_BUT_STANDING = "compensated_but_standing"
    """The ledger says the step was compensated; its effect still stands."""
    NOT_COMPENSATED = "not_compensated"
    """The saga was compensated or cancelled; this step's effect stands, never undone."""


class Drift(BaseModel):
    """One disagreement between the ledger and a system."""

    kind: DriftKind
    system: str
    idempotency_key: str
    saga_id: str
    step_id: str
    external_id: str | None = Field(None, description="What the ledger or the system names.")
    ledger: str = Field(description="What the ledger says, e.g. `succeeded, compensated`.")
    found: str = Field(description="What the system holds, e.g. `pi_1 succeeded, refunded 0/1250`.")


class StuckStep(BaseModel):
    step_id: str
    action: str
    external_id: str | None


class AttentionSaga(BaseModel):
    """A saga whose compensation is out of retries and waits for an operator."""

    saga_id: str
    error: str | None
    stuck_steps: list[StuckStep]


class SystemCheck(BaseModel):
    system: str
    where: str = Field(description="Which system was read (no credentials).")
    checked: bool
    effects: int = Field(0, description="Effects found that carry a saga idempotency key.")
    steps: int = Field(0, description="Ledger steps of this system.")
    note: str | None = None


class DriftReport(BaseModel):
    """What :func:`reconcile` found; ``clean`` when the ledger and the world agree."""

    checked_at: datetime
    saga_prefix: str = Field("", description="Only sagas whose id starts with this.")
    sagas: int
    steps: int
    systems: list[SystemCheck]
    drift: list[Drift]
    needs_attention: list[AttentionSaga]
    in_flight: list[str] = Field(description="Sagas still running (not judged yet).")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def clean(self) -> bool:
        """No drift (sagas needing attention are listed, not counted as drift)."""
        return not self.drift

    def of_kind(self, kind: DriftKind) -> list[Drift]:
        return [d for d in self.drift if d.kind is kind]


# -- what a system holds -----------------------------------------------------------------
@dataclass
class Holdings:
    """Effects found in one system: those with a saga key, and every one by id."""

    check: SystemCheck
    keyed: list[Effect] = field(default_factory=list)
    by_id: dict[str, Effect] = field(default_factory=dict)


async def _holdings(reader: Reconciler, prefix: str) -> Holdings:
    held = Holdings(SystemCheck(system=reader.system, where=reader.where, checked=True))
    try:
        effects = await reader.effects(prefix)
    except SystemUnavailable as exc:
        held.check.checked = False
        held.check.note = str(exc)
        return held
    for effect in effects:
        held.by_id[effect.external_id] = effect
        if effect.key and effect.key.startswith(prefix):
            held.keyed.append(effect)
    return held


# -- judging -----------------------------------------------------------------------------
def _ledger_view(step: StepSnapshot) -> str:
    return f"{step.status}, compensation {step.compensation_status}"


def judge(
    system: str,
    steps: list[StepSnapshot],
    held: Holdings,
    saga_status: dict[str, str],
) -> list[Drift]:
    """The drift between one system's ledger steps and the effects it holds."""
    drift: list[Drift] = []
    by_key: dict[str, list[Effect]] = defaultdict(list)
    for effect in held.keyed:
        by_key[effect.key].append(effect)
    step_of = {s.idempotency_key: s for s in steps}

    def add(kind: DriftKind, key: str, ext: str | None, ledger: str, found: str) -> None:
        saga_id, _, step_id = key.rpartition("/")
        drift.append(
            Drift(
                kind=kind,
                system=system,
                idempotency_key=key,
                saga_id=saga_id,
                step_id=step_id,
                external_id=ext,
                ledger=ledger,
                found=found,
            )
        )

    for key, effects in sorted(by_key.items()):
        if len(effects) > 1:
            add(
                DriftKind.DUPLICATE_EFFECT,
                key,
                ", ".join(e.external_id for e in effects),
                _ledger_view(step_of[key]) if key in step_of else "no step",
                "; ".join(e.state for e in effects),
            )
        if key not in step_of:
            for e in effects:
                add(DriftKind.UNRECORDED_EFFECT, key, e.external_id, "no step", e.state)

    for step in steps:
        key = step.idempotency_key
        effects = list(by_key.get(key, []))
        recorded = held.by_id.get(step.external_id or "")
        if recorded is not None and recorded not in effects:
            effects.append(recorded)
        standing = [e for e in effects if e.standing]
        status = saga_status.get(step.saga_id, SagaStatus.RUNNING)
        view = _ledger_view(step)
        if step.status == StepStatus.SUCCEEDED and recorded is None:
            found = "; ".join(e.state for e in effects) or "nothing"
            add(
                DriftKind.MISSING_EFFECT,
                key,
                step.external_id,
                view,
                f"no {step.external_id or 'external id'} ({found})",
            )
        comp = step.compensation_status
        if comp == CompensationStatus.COMPENSATED:
            for e in standing:
                add(DriftKind.COMPENSATED_BUT_STANDING, key, e.external_id, view, e.state)
            continue
        if comp == CompensationStatus.FAILED or status not in FINAL:
            continue  # waiting for an operator, resolved by hand, or still running
        for e in standing:
            if step.status != StepStatus.SUCCEEDED:
                add(
                    DriftKind.EFFECT_WITHOUT_SUCCESS,
                    key,
                    e.external_id,
                    f"{view}; saga {status}",
                    e.state,
                )
            elif status in UNDONE:
                add(
                    DriftKind.NOT_COMPENSATED, key, e.external_id, f"{view}; saga {status}", e.state
                )
    return drift


# -- the whole reconciliation -----------------------------------------------------------
def _read_ledger(settings: Settings) -> tuple[list[StepSnapshot], list[dict[str, Any]]]:
    ledger = Ledger(settings.ledger_url(), keys=payload_keys(settings))
    try:
        return ledger.all_steps(), ledger.sagas()
    finally:
        ledger.close()


async def reconcile(
    settings: Settings, *, saga_prefix: str = "", actions: Iterable[str] | None = None
) -> DriftReport:
    """Compare the ledger with every system that registered a reader (Stripe, the
    inventory database and Redmine, if configured, for the bundled ones).

    ``saga_prefix`` narrows both sides to sagas whose id starts with it (an environment's
    or a test run's sagas on shared systems); ``actions`` to the readers of these
    actions. Read-only towards the systems.
    """
    all_steps, all_sagas = await asyncio.to_thread(_read_ledger, settings)
    steps = [s for s in all_steps if s.saga_id.startswith(saga_prefix)]
    sagas = {str(s["saga_id"]): s for s in all_sagas if str(s["saga_id"]).startswith(saga_prefix)}
    saga_status = {sid: str(s["status"]) for sid, s in sagas.items()}
    catalog.load_systems(settings)
    # A look-up changes nothing: there is no effect to find for it, whatever reads its system.
    read_only = {spec.name for spec in catalog if spec.kind is ActionKind.READ_ONLY}
    actions_of: dict[ReaderFactory, list[str]] = defaultdict(list)
    wanted = None if actions is None else set(actions)
    for action, factory in catalog.readers().items():
        if wanted is None or action in wanted:
            actions_of[factory].append(action)
    drift: list[Drift] = []
    checks: list[SystemCheck] = []
    for factory, actions in actions_of.items():
        reader = factory(settings)
        try:
            held = await _holdings(reader, saga_prefix)
            mine = [s for s in steps if s.action in actions and s.action not in read_only]
            held.check.steps = len(mine)
            held.check.effects = len(held.keyed)
            checks.append(held.check)
            if not held.check.checked:
                if mine:
                    held.check.note = f"{held.check.note}; {len(mine)} ledger steps not verified"
                continue
            for step in mine:  # recorded ids the listing did not show (e.g. other project)
                ext = step.external_id
                if ext and ext not in held.by_id and step.status == StepStatus.SUCCEEDED:
                    found = await reader.lookup(ext)
                    if found is not None:
                        held.by_id[ext] = found
            drift += judge(reader.system, mine, held, saga_status)
        finally:
            await reader.aclose()

    stuck_steps: dict[str, list[StuckStep]] = defaultdict(list)
    for step in steps:
        if step.compensation_status == CompensationStatus.FAILED:
            stuck_steps[step.saga_id].append(
                StuckStep(step_id=step.step_id, action=step.action, external_id=step.external_id)
            )
    attention = [
        AttentionSaga(saga_id=sid, error=s.get("error"), stuck_steps=stuck_steps.get(sid, []))
        for sid, s in sorted(sagas.items())
        if s["status"] == NEEDS_ATTENTION
    ]
    in_flight = sorted(
        sid for sid, st in saga_status.items() if st not in FINAL and st != NEEDS_ATTENTION
    )
    return DriftReport(
        checked_at=datetime.now(UTC),
        saga_prefix=saga_prefix,
        sagas=len(sagas),
        steps=len(steps),
        systems=checks,
        drift=drift,
        needs_attention=attention,
        in_flight=in_flight,
    )


# -- rendering ----------------------------------------------------------------------------
def render(report: DriftReport, *, width: int = 140) -> str:
    """The report as text tables (what `saga reconcile` prints)."""
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=width,
        force_terminal=False,
        color_system=None,
        markup=False,  # ids, notes and messages from the systems are printed as they are
        emoji=False,
    )
    scope = f" (sagas {report.saga_prefix}*)" if report.saga_prefix else ""
    verdict = "no drift" if report.clean else f"{len(report.drift)} drift"
    console.print(
        f"reconciled {report.sagas} sagas, {report.steps} steps{scope} at "
        f"{report.checked_at:%Y-%m-%d %H:%M:%S} UTC: {verdict}, "
        f"{len(report.needs_attention)} needing attention, {len(report.in_flight)} in flight"
    )
    systems = RichTable(
        "system",
        "where",
        "checked",
        "ledger steps",
        "effects",
        "note",
        title="systems",
        title_justify="left",
    )
    for c in report.systems:
        systems.add_row(
            c.system,
            c.where,
            "yes" if c.checked else "no",
            str(c.steps),
            str(c.effects),
            c.note or "",
        )
    console.print(systems)
    if report.drift:
        table = RichTable(
            "kind",
            "system",
            "saga",
            "step",
            "external id",
            "ledger",
            "found",
            title="drift",
            title_justify="left",
        )
        for d in report.drift:
            table.add_row(
                d.kind.value,
                d.system,
                d.saga_id,
                d.step_id,
                d.external_id or "-",
                d.ledger,
                d.found,
            )
        console.print(table)
    if report.needs_attention:
        table = RichTable(
            "saga", "stuck steps", "error", title="needs attention", title_justify="left"
        )
        for a in report.needs_attention:
            stuck = ", ".join(
                f"{s.step_id} ({s.action} {s.external_id or '-'})" for s in a.stuck_steps
            )
            table.add_row(a.saga_id, stuck or "-", a.error or "")
        console.print(table)
    return buffer.getvalue()
