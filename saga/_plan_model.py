"""A plan as data: its steps and options (imported by the policy and the models alike)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class PlanOptions(BaseModel):
    """How the saga runs its plan."""

    model_config = ConfigDict(extra="forbid")
    parallel_compensation: bool = Field(
        False,
        description="Run the compensations of independent steps at the same time "
        "instead of one by one in reverse order.",
    )


class Step(BaseModel):
    """One step of a plan: an action from the catalog and its arguments."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(description="Unique within the plan: [a-z0-9][a-z0-9_-]*, at most 64.")
    action: str = Field(description="Catalog action, `system.verb`.")
    args: dict[str, Any] = Field(default_factory=dict)


class Plan(BaseModel):
    """An ordered list of steps; validated against the catalog before anything runs."""

    model_config = ConfigDict(extra="forbid")
    steps: list[Step]
    options: PlanOptions = Field(default_factory=PlanOptions)
