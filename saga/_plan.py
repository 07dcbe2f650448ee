"""Plan validation: every problem found before any side effect, each naming its step."""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from typing import Any

from pydantic import ValidationError

from saga._catalog import WAIT, ActionKind, ActionSpec, Catalog
from saga._errors import PlanRejected, PolicyBreached
from saga._models import Plan, PlanOptions, Retry, Step, StepSpec
from saga._policy import Policy, check_policy

MAX_STEPS = 20
"""The engine's hard limit on plan length (settings and policy may lower it)."""
STEP_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
"""A step id, matched in full (``fullmatch``: no trailing newline slips through)."""
_STEP_KEYS = {"id", "action", "args"}
_PLAN_KEYS = {"steps", "options"}


_JSON_TYPES = {
    bool: "true/false",
    int: "a number",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


def _errors(exc: ValidationError) -> list[str]:
    """One line per problem; a wrong type says what was given, never the value itself."""
    out = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "args"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"].endswith("_type") and "input" in err:
            msg += f", got {_JSON_TYPES.get(type(err['input']), type(err['input']).__name__)}"
        out.append(f"{where}: {msg}")
    return out


def canonical_args(spec: ActionSpec, args: dict[str, Any]) -> dict[str, Any]:
    """``args`` validated strictly against the action's input model, as JSON again.

    Strict as JSON is: an integer field takes a JSON integer only (not ``"5000"``,
    ``5000.0`` or ``true``), a string field a string only. What comes back is what the
    model parsed (defaults left out, values normalised, e.g. a currency in lower case):
    the args the policy checks, a person approves, the hash covers and the activity
    receives are this one object. Raises ``ValueError`` (``ValidationError``) otherwise.
    """
    try:
        text = json.dumps(args, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"args must be plain JSON: {exc}") from None
    model = spec.input_model.model_validate_json(text, strict=True)
    canonical: dict[str, Any] = model.model_dump(mode="json", exclude_unset=True)
    return canonical


def validate_plan(
    raw: Any,
    catalog: Catalog,
    *,
    max_steps: int = MAX_STEPS,
    available: Collection[str] | None = None,
) -> Plan:
    """Return the plan as a typed :class:`Plan`, or raise :class:`PlanRejected`.

    Each step's args are replaced by their :func:`canonical_args`. ``available`` names
    the actions the workers can run (``None``: the whole catalog); a step using another
    one is refused here, before anything runs. Pure and deterministic: the workflow calls
    it too.
    """
    if isinstance(raw, Plan):
        raw = raw.model_dump(mode="json")
    if not isinstance(raw, dict):
        raise PlanRejected([f"plan: must be an object, got {type(raw).__name__}"])
    problems: list[str] = []
    for key in sorted(set(raw) - _PLAN_KEYS):
        problems.append(f"plan: unknown field {key!r} (allowed: steps, options)")
    options = PlanOptions()
    try:
        options = PlanOptions.model_validate(raw.get("options") or {})
    except ValidationError as exc:
        problems += [f"plan options: {e}" for e in _errors(exc)]
    steps_raw = raw.get("steps")
    if not isinstance(steps_raw, list):
        raise PlanRejected([*problems, "plan: `steps` must be a list of steps"])
    if not steps_raw:
        raise PlanRejected([*problems, "plan: has no steps"])
    if len(steps_raw) > max_steps:
        problems.append(f"plan: has {len(steps_raw)} steps, the limit is {max_steps}")

    steps: list[Step] = []
    seen: dict[str, int] = {}
    pivot_at: str | None = None
    for n, item in enumerate(steps_raw, start=1):
        if not isinstance(item, dict):
            problems.append(f"step {n}: must be an object with id, action and args")
            continue
        sid = item.get("id")
        valid_id = isinstance(sid, str) and STEP_ID.fullmatch(sid) is not None
        label = f"step {sid!r}" if valid_id else f"step {n}"
        for key in sorted(set(item) - _STEP_KEYS):
            problems.append(f"{label}: unknown field {key!r} (allowed: id, action, args)")
        if sid is None or sid == "":
            problems.append(f"{label}: missing id")
        elif not isinstance(sid, str) or not STEP_ID.fullmatch(sid):
            problems.append(f"{label}: id must match [a-z0-9][a-z0-9_-]* (at most 64 characters)")
        elif sid in seen:
            problems.append(f"{label}: duplicate id (also step {seen[sid]})")
        else:
            seen[sid] = n
        action = item.get("action")
        args = item.get("args", {})
        if not isinstance(action, str) or not action:
            problems.append(f"{label}: missing action")
            continue
        spec = catalog.get(action)
        if spec is None:
            problems.append(
                f"{label}: unknown action {action!r} (known: {', '.join(catalog.names())})"
            )
            continue
        if available is not None and not spec.builtin and action not in available:
            problems.append(
                f"{label}: action {action} is not available: no worker of this saga runs it "
                "(its system is not configured on the workers)"
            )
        if not isinstance(args, dict):
            problems.append(f"{label}: args must be an object")
            continue
        try:
            args = canonical_args(spec, args)
        except ValidationError as exc:
            problems += [f"{label} ({action}): args.{e}" for e in _errors(exc)]
        except ValueError as exc:
            problems.append(f"{label} ({action}): {exc}")
        if spec.kind is ActionKind.PIVOT:
            if pivot_at is not None:
                problems.append(
                    f"{label}: a second irreversible step ({action}) after pivot "
                    f"{pivot_at!r}; a plan may have one pivot"
                )
            else:
                pivot_at = sid if isinstance(sid, str) else str(n)
        elif spec.kind is ActionKind.COMPENSABLE and pivot_at is not None:
            problems.append(
                f"{label}: compensable action {action} comes after irreversible step "
                f"{pivot_at!r}; move it before the pivot"
            )
        if isinstance(sid, str):
            steps.append(Step(id=sid, action=action, args=args))
    if problems:
        raise PlanRejected(problems)
    return Plan(steps=steps, options=options)


def with_args(plan: Plan, step_id: str, args: dict[str, Any]) -> dict[str, Any]:
    """``plan`` as raw JSON with one step's args replaced (to be checked again whole).

    Raises ``KeyError`` when the plan has no such step.
    """
    raw = plan.model_dump(mode="json")
    for step in raw["steps"]:
        if step["id"] == step_id:
            step["args"] = args
            return raw
    raise KeyError(f"no step {step_id!r} in the plan")


def check_plan(
    raw: Any, catalog: Catalog, policy: Policy, *, available: Collection[str] | None = None
) -> Plan:
    """The one check every plan passes, wherever it comes from: the CLI, the workflow's
    start and an edit during approval, the planner's answer.

    Catalog validation (:func:`validate_plan`, at most ``min(MAX_STEPS,
    policy.max_steps)`` steps), then the policy (:func:`~saga.check_policy`) on the same
    validated plan. Raises :class:`PlanRejected`, or :class:`PolicyBreached` for a valid
    plan the policy does not allow.
    """
    plan = validate_plan(
        raw, catalog, max_steps=min(MAX_STEPS, policy.max_steps), available=available
    )
    problems = check_policy(plan, policy, catalog)
    if problems:
        raise PolicyBreached(problems)
    return plan


def step_spec(step_id: str, spec: ActionSpec) -> StepSpec:
    """What running step ``step_id`` of action ``spec`` and undoing it takes."""
    return StepSpec(
        step_id=step_id,
        action=spec.name,
        activity=spec.activity_name,
        kind=spec.kind,
        delivery=spec.delivery,
        timer=spec.name == WAIT.name,
        start_to_close_timeout=spec.start_to_close_timeout,
        heartbeat_timeout=spec.heartbeat_timeout,
        retry=Retry.of(spec.retry_policy),
        compensation=spec.compensation,
        compensation_timeout=spec.compensation_timeout,
        compensation_retry=Retry.of(spec.compensation_retry_policy),
    )


def step_specs(plan: Plan, catalog: Catalog) -> dict[str, StepSpec]:
    """Each step's :class:`StepSpec` by step id, for a plan ``catalog`` validated."""
    out: dict[str, StepSpec] = {}
    for step in plan.steps:
        spec = catalog.get(step.action)
        if spec is None:
            raise PlanRejected([f"step {step.id!r}: unknown action {step.action!r}"])
        out[step.id] = step_spec(step.id, spec)
    return out
