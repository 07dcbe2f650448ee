"""The hot path's statements, built once with bind parameters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    JSON,
    String,
    Table,
    and_,
    bindparam,
    case,
    func,
    not_,
    null,
    select,
    update,
)

from saga._ledger_schema import SAGAS, STEPS, StepRow


class Writes:
    """The statements of the hot path, built once with bind parameters.

    Each step costs two of these transactions; building and compiling a statement per
    call cost more than the database itself (about 0.7 ms against 0.1 ms a step on
    SQLite), so they are built here once and SQLAlchemy's compiled cache does the rest.
    """

    def __init__(self, insert: Callable[[Table], Any]) -> None:
        s, sagas = STEPS, SAGAS
        by_key = s.c.idempotency_key == bindparam("k")
        self.open_saga = (
            insert(sagas)
            .values(
                saga_id=bindparam("sid"),
                status="running",
                created_at=bindparam("now"),
                updated_at=bindparam("now"),
            )
            .on_conflict_do_nothing()
        )
        self.claim_step = (
            insert(s)
            .values(
                idempotency_key=bindparam("k"),
                saga_id=bindparam("sid"),
                step_id=bindparam("step"),
                action=bindparam("act"),
                status=StepRow.RUNNING.value,
                attempts=bindparam("attempt"),
                compensation_status="none",
                compensation_attempts=0,
                started_at=bindparam("now"),
                attempt_started_at=bindparam("now"),
                failures=0,
                compensation_failures=0,
                compensation_round=0,
                delivery_round=bindparam("round"),
            )
            .on_conflict_do_nothing()
            .returning(s.c.idempotency_key)
        )
        self.read_step = select(s).where(by_key)
        # An operator's "do it again" starts a round: a fresh retry budget, and no
        # attempt of the new round has delivered yet.
        new_round = s.c.delivery_round < bindparam("round")
        self.retry_step = (
            update(s)
            .where(by_key)
            .values(
                status=StepRow.RUNNING.value,
                attempts=s.c.attempts + 1,
                failures=case((new_round, 0), else_=s.c.failures + bindparam("lost")),
                attempt_started_at=bindparam("now"),
                delivery_round=case((new_round, bindparam("round")), else_=s.c.delivery_round),
                delivering_attempt=case((new_round, null()), else_=s.c.delivering_attempt),
            )
        )
        delivery = {
            "delivering_attempt": bindparam("attempt"),
            "delivering_since": bindparam("now"),
            "delivery_evidence": bindparam("ev", type_=JSON(none_as_null=True)),
            "external_id": func.coalesce(bindparam("ext", type_=String()), s.c.external_id),
        }
        # One attempt per round passes the point of no return of an at-most-once step:
        # a second one (a retry, or a stale attempt still running after its heartbeat
        # timed out) finds the first one's mark and must not deliver.
        self.claim_delivery = (
            update(s)
            .where(
                by_key,
                s.c.delivery_round == bindparam("round"),
                s.c.delivering_attempt.is_(None),
                s.c.status == StepRow.RUNNING.value,
                s.c.compensation_status == "none",
            )
            .values(**delivery)
            .returning(s.c.idempotency_key)
        )
        self.note_delivery = update(s).where(by_key).values(**delivery)
        # A request that may land unanswered: the latest deadline wins; a second attempt
        # sending while an earlier one's request may still land makes it "several" (0),
        # which only time clears. Refused once the compensation began.
        earlier_in_flight = and_(
            s.c.in_flight_attempt.is_not(None),
            s.c.in_flight_attempt != bindparam("attempt"),
            s.c.in_flight_until > bindparam("now"),
        )
        self.sending = (
            update(s)
            .where(by_key, s.c.compensation_status == "none")
            .values(
                in_flight_attempt=case((earlier_in_flight, 0), else_=bindparam("attempt")),
                in_flight_until=case(
                    (
                        and_(earlier_in_flight, s.c.in_flight_until > bindparam("until")),
                        s.c.in_flight_until,
                    ),
                    else_=bindparam("until"),
                ),
            )
            .returning(s.c.idempotency_key)
        )
        self.answered = (
            update(s)
            .where(by_key, s.c.in_flight_attempt == bindparam("attempt"))
            .values(in_flight_attempt=None, in_flight_until=None)
        )
        self.read_in_flight = select(s.c.in_flight_until).where(by_key)
        self.release_delivery = (
            update(s)
            .where(
                by_key,
                s.c.delivery_round == bindparam("round"),
                s.c.delivering_attempt == bindparam("attempt"),
            )
            .values(delivering_attempt=None)
        )
        self.finish_step = (
            update(s)
            .where(by_key)
            .values(
                status=StepRow.SUCCEEDED.value,
                result=bindparam("res"),
                external_id=bindparam("ext"),
                error=None,
                finished_at=bindparam("now"),
            )
        )
        self.external_id = update(s).where(by_key).values(external_id=bindparam("ext"))
        self.fail_step = (
            update(s)
            .where(by_key, s.c.status != StepRow.SUCCEEDED.value)
            .values(
                status=StepRow.FAILED.value,
                error=bindparam("err"),
                finished_at=bindparam("now"),
                failures=s.c.failures + bindparam("n"),
            )
            .returning(s.c.failures)
        )
        # An attempt of this round still marked running was lost; it spends the budget
        # only if it ran out its start-to-close time-out (began before the cutoff).
        same_round = s.c.compensation_round == bindparam("round")
        lost_timed_out = case(
            (
                and_(
                    s.c.compensation_status == "running",
                    same_round,
                    s.c.compensation_started_at <= bindparam("cutoff"),
                ),
                1,
            ),
            else_=0,
        )
        # A retry of a round already compensated (its answer was lost) changes nothing;
        # the attempt finds that out from read_compensation and returns the recorded outcome.
        done_this_round = and_(s.c.compensation_status == "compensated", same_round)
        self.begin_compensation = (
            update(s)
            .where(by_key, not_(done_this_round))
            .values(
                compensation_status="running",
                compensation_attempts=s.c.compensation_attempts + 1,
                compensation_failures=case(
                    (same_round, s.c.compensation_failures + lost_timed_out), else_=0
                ),
                compensation_round=bindparam("round"),
                compensation_started_at=bindparam("now"),
            )
            .returning(s.c.compensation_failures, s.c.external_id, s.c.result, s.c.in_flight_until)
        )
        self.read_compensation = select(
            s.c.compensation_status,
            s.c.compensation_round,
            s.c.compensation_result,
            s.c.external_id,
        ).where(by_key)
        self.compensated = (
            update(s)
            .where(by_key)
            .values(
                compensation_status="compensated",
                compensation_error=bindparam("err"),
                compensation_result=bindparam("res"),
                compensated_at=bindparam("now"),
            )
        )
        self.compensation_failed = (
            update(s)
            .where(by_key)
            .values(
                compensation_status=bindparam("st"),
                compensation_error=bindparam("err"),
                compensation_failures=s.c.compensation_failures + bindparam("n"),
            )
            .returning(s.c.compensation_failures)
        )
        upsert = insert(sagas).values(
            saga_id=bindparam("sid"),
            status=bindparam("st"),
            error=bindparam("err"),
            request=bindparam("req"),
            plan=bindparam("pln", type_=JSON(none_as_null=True)),
            created_at=bindparam("now"),
            updated_at=bindparam("now"),
        )
        # A saga's record, in steps that tell whether its status changed (a retried record
        # changes nothing): the update of another status, else the insert of a new row,
        # else the update of the same status. A request or plan not given (None) keeps
        # the one already recorded.
        # RETURNING tells what was written (an insert's rowcount is -1 on PostgreSQL).
        self.insert_saga = upsert.on_conflict_do_nothing().returning(sagas.c.saga_id)
        saga_update = (
            update(sagas)
            .where(sagas.c.saga_id == bindparam("sid"))
            .values(
                status=bindparam("st"),
                error=bindparam("err"),
                updated_at=bindparam("now"),
                request=func.coalesce(bindparam("req"), sagas.c.request),
                plan=func.coalesce(bindparam("pln", type_=JSON(none_as_null=True)), sagas.c.plan),
            )
        )
        self.change_saga_status = saga_update.where(sagas.c.status != bindparam("st")).returning(
            sagas.c.saga_id
        )
        self.update_saga = saga_update
