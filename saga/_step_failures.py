"""How a step's attempt failed, for the ledger interceptor (saga._step): lost or failed,
whether it spends the retry budget, and the final error once the budget is spent."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import activity
from temporalio.exceptions import ApplicationError

from saga._models import Retry
from saga._step_header import DELIVERY_UNCERTAIN, OUT_OF_RETRIES, TIMED_OUT

IN_FLIGHT = "InFlight"
"""A compensation still waiting for a forward request that may land (no budget spent)."""


def message(exc: BaseException) -> str:
    kind = exc.type if isinstance(exc, ApplicationError) and exc.type else type(exc).__name__
    return f"{kind}: {exc}" if str(exc) else kind


def lost(exc: BaseException) -> bool:
    """Whether the attempt is lost rather than failed, and so leaves the ledger as it is.

    Lost: the server gave the attempt up (a time-out: the next attempt finds this one
    still running and counts it against the retry budget if it ran out its start-to-close
    time-out); the worker shuts down and hands the step back. A cancel the workflow asked
    for is a failure, but one that spends no budget. (An injected lost response is a
    failure: in the world it is a read time-out or a reset connection.)
    """
    if isinstance(exc, asyncio.CancelledError):
        details = activity.cancellation_details()
        return details is None or not details.cancel_requested
    return False


def counts(exc: BaseException) -> bool:
    """Whether a failed attempt spends the retry budget (a cancel the workflow asked for
    does not, nor does an attempt that stopped short of repeating a delivery)."""
    if isinstance(exc, ApplicationError) and exc.type in (DELIVERY_UNCERTAIN, IN_FLIGHT):
        return False
    return not isinstance(exc, asyncio.CancelledError)


def given_up(exc: BaseException, failures: int | None, retry: Retry) -> ApplicationError | None:
    """The final, non-retryable error once a retryable failure used the last attempt."""
    budget = retry.maximum_attempts
    if failures is None or budget <= 0 or failures < budget or not counts(exc):
        return None
    if isinstance(exc, ApplicationError):
        if exc.non_retryable or exc.type in (retry.non_retryable_error_types or ()):
            return None
        kind = exc.type or type(exc).__name__
    else:
        kind = type(exc).__name__
    return ApplicationError(
        f"{exc} (failed {failures} times; {OUT_OF_RETRIES})", type=kind, non_retryable=True
    )


def timed_out(what: str, failures: int, timeout: timedelta) -> ApplicationError:
    return ApplicationError(
        f"{what} timed out (start-to-close {timeout.total_seconds():g}s); "
        f"failed {failures} times, {OUT_OF_RETRIES}",
        type=TIMED_OUT,
        non_retryable=True,
    )


def recorded(error: str) -> ApplicationError:
    """A failure the ledger recorded (``Kind: message``, see :func:`message`), raised
    again, for good."""
    kind, sep, message = error.partition(": ")
    if not sep or " " in kind:
        kind, message = "", error
    return ApplicationError(message, type=kind or None, non_retryable=True)
