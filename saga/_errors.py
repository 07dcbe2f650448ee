"""One error root for the package."""

from __future__ import annotations


class SagaError(Exception):
    """Root of every error this package raises on purpose."""


class Refused(SagaError):
    """Something given was refused before anything ran; one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class PlanRejected(Refused):
    """A plan failed validation; nothing was executed.

    ``problems`` holds one line per problem, each naming the step and the reason.
    """


class PolicyBreached(PlanRejected):
    """A valid plan that the policy does not allow; nothing was executed."""


class InputRejected(Refused):
    """What would start a saga is empty, or over a size limit; nothing was started.

    ``problems`` holds one line per problem, each naming the limit and the actual size.
    """


class CatalogError(SagaError):
    """An action was declared wrongly (a programming error, raised at import time)."""


class StepAlreadyCompensated(SagaError):
    """A forward step was asked to run again after an earlier run compensated it."""
