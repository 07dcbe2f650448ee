"""One error root for the package."""

from __future__ import annotations


class SagaError(Exception):
    """Root of every error this package raises on purpose."""


class PlanRejected(SagaError):
    """A plan failed validation; nothing was executed.

    ``problems`` holds one line per problem, each naming the step and the reason.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class CatalogError(SagaError):
    """An action was declared wrongly (a programming error, raised at import time)."""


class StepAlreadyCompensated(SagaError):
    """A forward step was asked to run again after an earlier run compensated it."""
