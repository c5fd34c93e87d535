"""The scripted student every integration runs: what it does on each attempt, independent of any framework.

A :class:`Student` is a list of :class:`Attempt` s. Each attempt is a sequence of model turns: one turn per tool
call (``lookup(order)``, the one tool every integration gives its agent), then one turn that gives the answer (or
raises, or first waits to be cancelled). The framework's model (a LangChain chat model, an Agents SDK ``Model``,
the body of a plain agent class or ``attempt`` function) asks the student for its next turn and passes the
instructions it was given for that model call; the student keeps them (:attr:`Student.seen`), so a test can tell
what guidance reached which attempt. Asking for more turns than scripted fails loudly: an integration that
retries more often than the core said is caught there.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

__all__ = ["ORDERS", "Attempt", "Student", "StudentFailure", "Turn", "lookup"]

ORDERS = {1: "shipped on May 2", 2: "waiting for stock"}


def lookup(order: int) -> str:
    """Look an order up by its number."""
    return f"order {order}: {ORDERS.get(order, 'unknown')}"


class StudentFailure(RuntimeError):
    """What the student's model raises when a scenario says it fails."""


@dataclass(frozen=True)
class Attempt:
    """One run of the agent: the orders it looks up (a model turn each), then its answer.

    ``raises``: the answer turn raises :class:`StudentFailure` with this text instead. ``hangs``: the first model
    call of the attempt waits (async models only) until the run is cancelled."""

    lookups: tuple[int, ...] = ()
    answer: str = ""
    raises: str | None = None
    hangs: bool = False


@dataclass(frozen=True)
class Turn:
    """One model call's outcome: a tool call (``order``) or the final answer (``text``)."""

    attempt: int
    index: int
    kind: Literal["tool", "answer", "raise"]
    order: int | None = None
    text: str = ""
    hangs: bool = False

    @property
    def tool_name(self) -> str:
        return "lookup"

    @property
    def args(self) -> dict[str, int]:
        assert self.order is not None
        return {"order": self.order}

    @property
    def call_id(self) -> str:
        return f"call_{self.index}"


@dataclass(frozen=True)
class ModelCall:
    """What one model call of the student was given: the attempt it belongs to (by the script) and the
    instructions (system prompt, instructions argument) it saw."""

    attempt: int
    instructions: str


class Student:
    """The scripted student of one scenario: ``Student(Attempt(...), Attempt(...))``, one per run of the agent."""

    def __init__(self, *attempts: Attempt) -> None:
        self.attempts = attempts
        #: What every model call was given, in order.
        self.seen: list[ModelCall] = []
        #: True once a ``hangs`` model call waits to be cancelled.
        self.hanging = False
        self._turns: list[Turn] = []
        for number, attempt in enumerate(attempts, 1):
            for position, order in enumerate(attempt.lookups):
                self._turns.append(Turn(number, len(self._turns), "tool", order=order, hangs=attempt.hangs and position == 0))
            kind: Literal["answer", "raise"] = "raise" if attempt.raises is not None else "answer"
            text = attempt.raises if attempt.raises is not None else attempt.answer
            self._turns.append(Turn(number, len(self._turns), kind, text=text, hangs=attempt.hangs and not attempt.lookups))
        self._position = 0

    def next(self, instructions: str) -> Turn:
        """The next model turn (recording the instructions this call was given); raises for a ``raises`` turn."""
        if self._position >= len(self._turns):
            raise AssertionError(f"the student's model was called {self._position + 1} times; the scenario scripts "
                                 f"{len(self._turns)} calls over {len(self.attempts)} attempt(s)")
        turn = self._turns[self._position]
        self._position += 1
        self.seen.append(ModelCall(turn.attempt, instructions or ""))
        if turn.kind == "raise":
            raise StudentFailure(turn.text)
        return turn

    async def anext(self, instructions: str) -> Turn:
        """:meth:`next` for async models: a ``hangs`` turn waits here until the run is cancelled."""
        turn = self.next(instructions)
        if turn.hangs:
            self.hanging = True
            await asyncio.sleep(60)
            raise AssertionError("the hanging model call was never cancelled")
        return turn

    def instructions(self, attempt: int) -> list[str]:
        """The instructions of every model call of one attempt, in order."""
        return [call.instructions for call in self.seen if call.attempt == attempt]

    @property
    def calls_per_attempt(self) -> list[int]:
        """How many model calls each attempt that ran made, by attempt number."""
        counts: dict[int, int] = {}
        for call in self.seen:
            counts[call.attempt] = counts.get(call.attempt, 0) + 1
        return [counts[n] for n in sorted(counts)]
