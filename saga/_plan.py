"""Plan validation: every problem found before any side effect, each naming its step."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from saga._catalog import ActionKind, Catalog
from saga._errors import PlanRejected
from saga._models import Plan, PlanOptions, Step

MAX_STEPS = 20
"""The engine's hard limit on plan length (settings and policy may lower it)."""
STEP_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_STEP_KEYS = {"id", "action", "args"}
_PLAN_KEYS = {"steps", "options"}


def _errors(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "args"
        out.append(f"{where}: {err['msg']}")
    return out


def validate_plan(raw: Any, catalog: Catalog, *, max_steps: int = 20) -> Plan:
    """Return the plan as a typed :class:`Plan`, or raise :class:`PlanRejected`.

    Pure and deterministic: the workflow calls it too.
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
        label = f"step {n}" if not isinstance(sid, str) or not sid else f"step {sid!r}"
        for key in sorted(set(item) - _STEP_KEYS):
            problems.append(f"{label}: unknown field {key!r} (allowed: id, action, args)")
        if sid is None or sid == "":
            problems.append(f"{label}: missing id")
        elif not isinstance(sid, str) or not STEP_ID.match(sid):
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
        if not isinstance(args, dict):
            problems.append(f"{label}: args must be an object")
            continue
        try:
            spec.input_model.model_validate(args)
        except ValidationError as exc:
            problems += [f"{label} ({action}): args.{e}" for e in _errors(exc)]
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
