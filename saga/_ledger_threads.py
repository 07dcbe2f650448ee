"""The ledger's own threads, which run its calls in order and hand results back to the
event loop in batches."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


class Writers:
    """The ledger's own threads: calls run in arrival order, and each thread wakes the
    event loop once per batch of finished calls instead of once per call.

    Under load (hundreds of steps in flight) the per-call hand-off between the loop and
    a thread cost more CPU than the SQLite write itself; each call still runs in its own
    transaction, and its caller resumes only after that transaction committed.
    """

    BATCH = 32

    def __init__(self, threads: int, name: str) -> None:
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{n}", daemon=True)
            for n in range(threads)
        ]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[..., T], args: tuple[Any, ...]) -> asyncio.Future[T]:
        if self._closed:
            raise _closed()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Call(loop, fut, fn, args))
        return fut

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # for this thread's next turn
                    break
                batch.append(more)
            done: dict[asyncio.AbstractEventLoop, list[tuple[_Call, bool, Any]]] = {}
            for call in batch:
                try:
                    outcome: tuple[_Call, bool, Any] = (call, True, call.fn(*call.args))
                except BaseException as exc:  # handed to the caller, as an executor would
                    outcome = (call, False, exc)
                done.setdefault(call.loop, []).append(outcome)
            for loop, outcomes in done.items():
                with contextlib.suppress(RuntimeError):  # that loop is closed
                    loop.call_soon_threadsafe(_settle, outcomes)

    def close(self) -> None:
        self._closed = True
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join()
        while True:  # calls submitted while closing
            try:
                call = self._queue.get_nowait()
            except queue.Empty:
                return
            if call is not None:
                with contextlib.suppress(RuntimeError):
                    call.loop.call_soon_threadsafe(_settle, [(call, False, _closed())])


def _closed() -> RuntimeError:
    return RuntimeError("the ledger is closed")


@dataclass(frozen=True)
class _Call:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    fn: Callable[..., Any]
    args: tuple[Any, ...]


def _settle(outcomes: list[tuple[_Call, bool, Any]]) -> None:
    for call, ok, value in outcomes:
        if call.future.cancelled():
            continue
        if ok:
            call.future.set_result(value)
        else:
            call.future.set_exception(value)
