"""The bounded background worker that finishes sessions off the user's call.

Once the agent has answered, what is left of a session (judging, drift, review status, learning, the final store
write) is handed to :class:`BackgroundFinisher`: a few daemon threads and a bounded queue. A full queue makes the
next hand-off wait for room (backpressure) instead of dropping work. :meth:`BackgroundFinisher.drain` waits for
everything handed off so far; the owning supervisor calls it at interpreter exit and on ``close()``.

:class:`PendingSession` is what a hand-off returns: the session id at once, the :class:`SessionResult` by waiting
(``result(timeout)``) or by awaiting it.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Generator
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .supervisor import SessionResult

__all__ = ["BackgroundFinisher", "DeadlinePassed", "PendingSession", "as_session_result", "run_with_deadline"]

log = logging.getLogger("atlas_learning")


class PendingSession:
    """A session whose finish runs in the background: ``session_id`` and ``final_answer`` now, the
    :class:`~atlas_learning.SessionResult` by waiting (:meth:`result`) or awaiting.

    Reading any other SessionResult field (``reward``, ``lane``, ``review_status``...) waits for the result, so
    code written against a SessionResult keeps working; it waits only where it reads. ``result()`` re-raises
    what the finish raised (that never reaches the agent's own call)."""

    def __init__(self, session_id: str, final_answer: str, future: Future[SessionResult]) -> None:
        self.session_id = session_id
        self.final_answer = final_answer
        self._future = future
        #: The result as soon as the finish has built it (its last events are still being published then).
        self._ready: SessionResult | None = None
        #: The thread running this session's finish: an event subscriber there must not wait for it.
        self._finishing: int | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.result(), name)

    def done(self) -> bool:
        """Whether the session's result is ready."""
        return self._future.done()

    def result(self, timeout: float | None = None) -> SessionResult:
        """The finished session; waits up to ``timeout`` seconds (None: as long as it takes).

        Raises ``TimeoutError`` when it is not ready in time (the finish goes on), and ``RuntimeError`` when
        called from the session's own finish before its result exists (an event subscriber of its ``reward``
        or ``lesson_*`` events: use the event's payload; from ``session_finished`` on, the result is there)."""
        in_finish = self._finishing is not None and self._finishing == threading.get_ident()
        if in_finish and self._ready is not None:
            return self._ready  # elsewhere the future is waited for: once it is set, the session is stored
        if in_finish and not self._future.done():
            raise RuntimeError(f"session {self.session_id} is still finishing in this thread: its result does not exist "
                               "yet (read the event's payload, or wait for session_finished)")
        return self._future.result(timeout)

    async def aresult(self) -> SessionResult:
        """Await the finished session without blocking the event loop."""
        return await asyncio.wrap_future(self._future)

    def __await__(self) -> Generator[Any, None, SessionResult]:
        return self.aresult().__await__()

    def __repr__(self) -> str:
        return f"PendingSession({self.session_id!r}, done={self.done()})"


def as_session_result(value: SessionResult | PendingSession | None, timeout: float | None = None) -> SessionResult | None:
    """The SessionResult of a result or a pending one (waiting for it); None stays None."""
    return value.result(timeout) if isinstance(value, PendingSession) else value


class BackgroundFinisher:
    """``workers`` daemon threads running hand-offs in order of arrival; at most ``max_pending`` wait at once."""

    def __init__(self, *, workers: int, max_pending: int, name: str = "atlas-finish") -> None:
        self._queue: queue.Queue[tuple[Callable[[], Any], Future[Any]] | None] = queue.Queue(maxsize=max_pending)
        self._pending = 0
        self._idle = threading.Condition()
        self._closed = False
        self._warned_full = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    @property
    def pending(self) -> int:
        """Hand-offs not finished yet (queued or running)."""
        with self._idle:
            return self._pending

    @property
    def has_room(self) -> bool:
        """Whether a hand-off now would not wait."""
        return not self._queue.full()

    def try_submit(self, job: Callable[[], Any], future: Future[Any]) -> bool:
        """Queue ``job`` only if that does not wait: False when the queue is full (nothing was queued)."""
        with self._idle:
            if self._closed:
                closed = True
            else:
                closed = False
                try:
                    self._queue.put_nowait((job, future))
                except queue.Full:
                    return False
                self._pending += 1
        if closed:
            _run(job, future)
        return True

    def submit(self, job: Callable[[], Any], future: Future[Any] | None = None) -> Future[Any]:
        """Queue ``job`` (its result goes to ``future``, a new one by default); waits for room when ``max_pending``
        jobs are already waiting. After :meth:`close` the job runs in the caller's thread (nothing is dropped)."""
        future = future if future is not None else Future()
        with self._idle:  # the closed check and the count are one step with close()'s: nothing lands after the stop
            closed = self._closed
            if not closed:
                self._pending += 1
        if closed:
            _run(job, future)
            return future
        try:
            self._queue.put_nowait((job, future))
        except queue.Full:
            if not self._warned_full:
                self._warned_full = True
                log.warning("%d session finishes are waiting; the next one waits for room (the judges or the store are "
                            "slower than sessions arrive)", self._queue.maxsize)
            self._queue.put((job, future))
        return future

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every hand-off so far has finished; False when ``timeout`` ran out first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Drain (up to ``timeout``), then stop the threads. Safe to call twice."""
        drained = self.drain(timeout)
        with self._idle:
            if self._closed:
                return drained
            self._closed = True
            pending = self._pending
        if pending:  # handed off between the drain and the flag: let them run before the stop
            self.drain(timeout)
        for _ in self._threads:
            self._queue.put(None)
        return drained

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            job, future = item
            try:
                _run(job, future)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()


def _run(job: Callable[[], Any], future: Future[Any]) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(job())
    except BaseException as exc:  # noqa: BLE001 - handed to whoever waits for the result
        log.exception("a background session finish failed")
        future.set_exception(exc)


class DeadlinePassed(TimeoutError):
    """A call given to :func:`run_with_deadline` did not answer in time (it goes on in its own thread)."""


def run_with_deadline(seconds: float, call: Callable[..., Any], *args: Any) -> Any:
    """``call(*args)`` in a daemon thread of its own, waited for at most ``seconds`` from when it starts
    (:class:`DeadlinePassed`; the abandoned call finishes there and holds no shared worker, nor the interpreter's
    exit). When no thread can start (interpreter exit), it runs in the caller's thread."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append((True, call(*args)))
        except BaseException as exc:  # noqa: BLE001 - handed back to the waiting caller
            outcome.append((False, exc))

    thread = threading.Thread(target=target, name="atlas-call", daemon=True)
    try:
        thread.start()
    except RuntimeError:
        return call(*args)
    thread.join(seconds)
    if not outcome:
        raise DeadlinePassed(f"no answer within {seconds:.1f}s")
    ok, value = outcome[0]
    if not ok:
        raise value
    return value
