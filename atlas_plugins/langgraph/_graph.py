"""``with_atlas(graph)``: the user's own compiled LangGraph graph with Atlas supervision added in it.

The graph ``with_atlas`` returns **is the user's graph**: the same nodes under the same names, the same channels,
edges, compile options (checkpointer, store, cache, breakpoints, ``debug``, ``name``), bound config and stream
transformers. Nothing runs around it as an extra node, so every stream mode, ``get_state``, ``update_state``
(``as_node=`` included), interrupts and ``Command(resume=..., update=...)``, breakpoints, checkpoints, history,
replay and fork, reducers and the recursion limit behave as on the bare graph. Supervision is added in two places:

* **Around the run** (:meth:`AtlasGraph.stream` / ``astream``, which ``invoke``, ``ainvoke``, ``batch`` and a
  parent graph calling this one as a node all go through). A call with new input begins a session in the core
  (:meth:`Supervisor.begin`: lane, lessons) and reports its start (:meth:`SupervisedRun.start`: in coach the
  teacher reviews the empty plan). When the graph ends, its answer is reported (:meth:`SupervisedRun.final_answer`,
  in every lane): on ``retry`` the run is made again with the guidance in the student's instructions (with a
  checkpointer, as a fork from the run's input checkpoint, so the thread's state holds only the accepted attempt;
  without one, from the same input); then the session ends (:meth:`SupervisedRun.end`) and the call returns at
  once: judging, learning and storing finish in the background. A run that pauses (an ``interrupt()``, a
  breakpoint) keeps its session open, and the call that resumes it (``Command(resume=...)`` or ``None`` as the
  input, on the same thread) goes on with it: one session per run, however many calls it takes. A replay or
  fork (``checkpoint_id`` in the config) is a run of its own, with a session of its own. A run that raises ends
  its session as failed, a stream closed early or a cancelled task as cancelled.
* **Around each of the user's nodes** (the node keeps its name; only its runnable is wrapped): the session's
  instructions (lessons, plan, concerns, guidance, rendered once in the core) reach the node as a system message
  added to its *input* when it reads ``messages`` (never written to state), and from
  :func:`current_instructions` for nodes that build their own prompt; a callback handler
  records every model and tool call as a step and reports every tool step (:meth:`SupervisedRun.tool_call_done`;
  in coach the teacher validates it); a node that made no model or tool call is recorded as a node step.

In escalate, for a graph with a ``messages`` key, the teacher's or a human's answer is delivered in place of the
student's by a one-node graph on the same channels and checkpointer (``atlas_escalate``); a human answers through
``interrupt()`` there, and the run resumes with ``Command(resume=answer)``.

A finished run streamed with the ``custom`` mode ends with one event
``{"atlas_session": {"session_id": ..., "final_answer": ...}}``; ``app.session_result(config)`` is the session's
:class:`~atlas_learning.PendingSession`. ``app.get_graph()`` draws the probe, the lanes, the teacher and the judge
around the user's nodes (the drawing only: they run as described above).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler, BaseCallbackManager, CallbackManager
from langchain_core.runnables import RunnableConfig
from langgraph.callbacks import GraphCallbackHandler
from langgraph.errors import GraphBubbleUp
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, interrupt

try:  # LangGraph's own node wrapper: it inspects the function's signature once, not on every call
    from langgraph._internal._runnable import RunnableCallable as _NodeRunnable
except ImportError:  # pragma: no cover - a LangGraph that moved it
    from langchain_core.runnables import RunnableLambda as _NodeRunnable  # type: ignore[assignment]

from atlas_learning.background import PendingSession
from atlas_learning.config import AtlasConfig
from atlas_learning.judges import Check
from atlas_learning.supervisor import AnswerDecision, Start, SupervisedRun, Supervisor, as_text

from ._control_flow import is_control_flow, register_control_flow
from ._messages import (
    INSTRUCTIONS_ID,
    instructions_message,
    last_text,
    message_text,
    model_name_of,
    model_turn_of,
    state_get,
    system_text,
    to_jsonable,
    tool_schemas,
    usage_of,
)
from ._options import begin_options

__all__ = ["with_atlas", "AtlasGraph", "current_instructions"]

log = logging.getLogger("atlas_plugins.langgraph")

#: The nodes drawn around the user's (``app.get_graph()``); only ``atlas_escalate`` is a real node, of the
#: escalation graph.
PROBE, TEACHER, ESCALATE, JUDGE = "atlas_probe", "atlas_teacher", "atlas_escalate", "atlas_judge"
#: LangGraph's configurable keys: set for a graph run as a task of a parent graph.
_TASK_ID, _CHECKPOINT_NS = "__pregel_task_id", "checkpoint_ns"
_MISSING: Any = object()
_adapter_ids = itertools.count(1)
#: The supervised run of the node running now (set around each of the user's nodes, seen by what it calls).
_node_run: contextvars.ContextVar[SupervisedRun | None] = contextvars.ContextVar("atlas_node_run", default=None)
#: Set while the escalation graph's node asks the person: only there can ``interrupt()`` pause the run.
_in_escalation: contextvars.ContextVar[bool] = contextvars.ContextVar("atlas_in_escalation", default=False)


def current_instructions() -> str:
    """What Atlas tells the student now (lessons, plan, concerns, guidance), for a node of a wrapped graph that
    builds its own prompt instead of reading ``messages``; '' outside a supervised run. Call it inside the node,
    when the prompt is built: guidance can change between two model calls of one node."""
    run = _node_run.get()
    return run.instructions if run is not None else ""


class _HumanInGraph(GraphBubbleUp):
    """The human escalation was asked outside a node: the escalation graph runs, and its node asks."""


@dataclass
class _Session:
    """One run's supervised session and what the adapter must remember about it."""

    run: SupervisedRun
    recorder: _StepRecorder
    arecorder: _AsyncStepRecorder
    #: How a rejected answer is run again: "input" (the same input, no checkpointer), "checkpoint" (a fork from
    #: the run's input checkpoint), "same" (the same call again: a replay or fork), or None (it cannot be: a run
    #: resumed from a pause, one run as a parent graph's task, or one whose checkpoints are written at exit).
    rerun: str | None
    input: Any = None
    #: What the run's start decided; None until it returned (a human escalation may pause it).
    start: Start | None = None
    #: The start needs a person: the escalation graph's node asks (``interrupt()``).
    escalating: bool = False

    @property
    def escalates(self) -> bool:
        """Whether the escalation graph runs in place of the user's: a person must answer, or the teacher did."""
        return self.escalating or (self.start is not None and self.start.answer is not None)


class _RunWatcher(GraphCallbackHandler):
    """Sees one graph run's own callbacks (never its children's: it is not inherited): its final output, and
    whether it paused at an interrupt or a breakpoint."""

    run_inline = True
    raise_error = False

    def __init__(self) -> None:
        self.root: Any = None
        self.output: Any = _MISSING
        self.interrupted = False

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: Any, **kwargs: Any) -> None:
        if self.root is None:
            self.root = run_id

    def on_chain_end(self, outputs: Any, *, run_id: Any, **kwargs: Any) -> None:
        if run_id == self.root:
            self.output = outputs

    def on_interrupt(self, event: Any) -> None:
        self.interrupted = True


def _watched(config: RunnableConfig, watcher: _RunWatcher, recorder: BaseCallbackHandler) -> RunnableConfig:
    """``config`` with ``watcher`` as a handler of the graph run itself (not inherited by its nodes) and the
    step ``recorder`` as a handler of everything in it (every model and tool call, in any node or subgraph)."""
    callbacks = config.get("callbacks")
    if callbacks is None:
        manager: BaseCallbackManager = CallbackManager(handlers=[recorder, watcher], inheritable_handlers=[recorder])
    elif isinstance(callbacks, BaseCallbackManager):
        manager = callbacks.copy()
        manager.add_handler(recorder, inherit=True)
        manager.add_handler(watcher, inherit=False)
    else:
        handlers = list(callbacks)
        manager = CallbackManager(handlers=[*handlers, recorder, watcher], inheritable_handlers=[*handlers, recorder])
    return {**config, "callbacks": manager}  # type: ignore[typeddict-item]


class _Adapter:
    """What with_atlas's hooks share: the supervisor, the open sessions by run key, how to read the state."""

    def __init__(self, supervisor: Supervisor, *, agent_name: str, learning_key: str | None,
                 task_from: Callable[[Any], str] | None, answer_from: Callable[[Any], str] | None,
                 messages_key: str | None, output_keys: Sequence[str], checks: Sequence[Check] = ()) -> None:
        self.supervisor = supervisor
        self.checks = list(checks)
        self.agent_name = agent_name
        self.learning_key = learning_key
        self.task_from = task_from
        self.answer_from = answer_from
        self.messages_key = messages_key
        self.output_keys = list(output_keys)
        #: This adapter's key in ``configurable``: a wrapped graph inside another finds its own sessions. LangGraph
        #: leaves keys that start with ``__pregel_`` out of the configs it shows (checkpoints, debug events).
        self.config_key = f"__pregel_atlas_run_{next(_adapter_ids)}"
        self.sessions: dict[str, _Session] = {}
        #: The ended sessions by run key, and the last one: PendingSessions (the result by waiting).
        self.results: dict[str, PendingSession] = {}
        self.last_result: PendingSession | None = None
        self._lock = threading.Lock()
        self._escalation: CompiledStateGraph | None = None

    # ------------------------------------------------------------------------------------------ state
    def task(self, value: Any) -> str:
        """The task of a run: from its input (or, for a run that continues a checkpoint, the state there)."""
        if self.task_from is not None:
            return str(self.task_from(value))
        if self.messages_key:
            messages = state_get(value, self.messages_key)
            if messages is not None:
                return last_text(_as_messages(messages), "human")
        return as_text(to_jsonable(value))

    def answer(self, state: Any) -> str:
        """The answer of a run's final state: ``structured_response`` when the agent gave one, else the last
        AI message's text, else the JSON of the output keys."""
        if self.answer_from is not None:
            return str(self.answer_from(state))
        structured = state_get(state, "structured_response") if state is not None else None
        if structured is not None:
            return as_text(to_jsonable(structured))
        if self.messages_key:
            return last_text(state_get(state, self.messages_key) or [], "ai")
        values = {key: state_get(state, key) for key in self.output_keys} if not isinstance(state, Mapping) else state
        return as_text(to_jsonable(values))

    @property
    def can_take_answer(self) -> bool:
        """Whether the graph can deliver an escalation's answer in place of the student's: as an AI message."""
        return bool(self.messages_key)

    # --------------------------------------------------------------------------------------- sessions
    def session(self, config: RunnableConfig | None) -> _Session | None:
        key = ((config or {}).get("configurable") or {}).get(self.config_key)
        if key is None:
            return None
        with self._lock:
            return self.sessions.get(key)

    @staticmethod
    def run_key(configurable: Mapping[str, Any]) -> str:
        """The key a run's session is found by: its thread and checkpoint namespace (a resumed call finds it;
        each task of a parent graph has a namespace of its own), or a new one when there is no thread."""
        thread = configurable.get("thread_id")
        if thread is None:
            return uuid.uuid4().hex
        return f"thread:{thread}|{configurable.get(_CHECKPOINT_NS) or ''}"

    def prepare(self, graph: AtlasGraph, input: Any, config: RunnableConfig | None
                ) -> tuple[RunnableConfig, _Session | None, _Session | None, bool]:
        """(the call's config with its run key, the session it continues, a stale one to cancel, whether a new
        one begins)."""
        config = dict(config or {})  # type: ignore[assignment]
        configurable = dict(config.get("configurable") or {})
        key = configurable.get(self.config_key) or self.run_key(configurable)
        configurable[self.config_key] = key
        config["configurable"] = configurable
        nested = _TASK_ID in configurable
        continues = nested or ((input is None or isinstance(input, Command)) and not configurable.get("checkpoint_id"))
        with self._lock:
            existing = self.sessions.get(key)
            if existing is not None and not continues:
                self.sessions.pop(key, None)
        if existing is not None and continues:
            return config, existing, None, False  # type: ignore[return-value]
        return config, None, existing, True  # type: ignore[return-value]

    def _begin_arguments(self, graph: AtlasGraph, input: Any, config: RunnableConfig, writes_at_exit: bool
                         ) -> tuple[str, dict[str, Any], str | None] | None:
        """(the task, the begin options, how a retry reruns), or None when the call runs nothing (``None`` on a
        thread whose run is over): no session for it. With ``writes_at_exit`` (``durability="exit"``) no input
        checkpoint is written to fork a retry from: the answer stands."""
        configurable = config.get("configurable") or {}
        thread = configurable.get("thread_id")
        options = begin_options(configurable, learning_key=self.learning_key, checks=self.checks,
                                metadata={"thread_id": thread} if thread else {})
        fresh = not (input is None or isinstance(input, Command))
        if _TASK_ID in configurable:
            rerun = None
        elif not fresh:
            rerun = "same" if configurable.get("checkpoint_id") else None
        elif graph.checkpointer is None:
            rerun = "input"
        else:
            rerun = None if writes_at_exit else "checkpoint"
        if fresh:
            return self.task(input), {"agent_name": self.agent_name, **options}, rerun
        snapshot = self._snapshot(graph, config)
        if snapshot is not None and input is None and not snapshot.next and not configurable.get("checkpoint_id"):
            return None
        values = snapshot.values if snapshot is not None else (getattr(input, "update", None) or {})
        return self.task(values), {"agent_name": self.agent_name, **options}, rerun

    @staticmethod
    def _snapshot(graph: AtlasGraph, config: RunnableConfig) -> Any:
        """The state a continuing run starts from (its task is there); None without a readable checkpointer."""
        try:
            if graph.checkpointer is not None and not isinstance(graph.checkpointer, bool):
                return graph.get_state(config)
        except Exception:  # noqa: BLE001 - an async-only checkpointer, say
            pass
        return None

    def _open(self, run: SupervisedRun, config: RunnableConfig, input: Any, rerun: str | None) -> _Session:
        session = _Session(run, _StepRecorder(run), _AsyncStepRecorder(run), rerun=rerun, input=input)
        with self._lock:
            self.sessions[config["configurable"][self.config_key]] = session
        return session

    def begin(self, graph: AtlasGraph, input: Any, config: RunnableConfig | None, writes_at_exit: bool = False
              ) -> tuple[RunnableConfig, _Session | None]:
        """The call's config and the session of its run: the one it continues, else a new one (None when the call
        runs nothing, or supervision failed: the graph runs unsupervised)."""
        config, existing, stale, new = self.prepare(graph, input, config)
        if stale is not None:
            _safe(stale.run.cancelled)
        if not new:
            return config, existing
        try:
            arguments = self._begin_arguments(graph, input, config, writes_at_exit)
            if arguments is None:
                return config, None
            task, options, rerun = arguments
            return config, self._open(self.supervisor.begin(task, **options), config, input, rerun)
        except Exception:  # noqa: BLE001 - supervision never fails the user's run
            log.exception("atlas could not begin a session; the graph runs unsupervised")
            return config, None

    async def abegin(self, graph: AtlasGraph, input: Any, config: RunnableConfig | None, writes_at_exit: bool = False
                     ) -> tuple[RunnableConfig, _Session | None]:
        config, existing, stale, new = self.prepare(graph, input, config)
        if stale is not None:
            await _asafe(stale.run.acancelled)
        if not new:
            return config, existing
        try:
            arguments = await asyncio.to_thread(self._begin_arguments, graph, input, config, writes_at_exit) \
                if input is None or isinstance(input, Command) else self._begin_arguments(graph, input, config, writes_at_exit)
            if arguments is None:
                return config, None
            task, options, rerun = arguments
            return config, self._open(await self.supervisor.abegin(task, **options), config, input, rerun)
        except Exception:  # noqa: BLE001
            log.exception("atlas could not begin a session; the graph runs unsupervised")
            return config, None

    def start(self, session: _Session) -> None:
        """Report the start once; what it decided is kept on the session. A human escalation asked here is
        asked again by the escalation graph's node, where ``interrupt()`` can pause the run."""
        if session.start is not None or (session.escalating and not _in_escalation.get()):
            return
        try:
            session.start = session.run.start(can_take_answer=self.can_take_answer)
        except _HumanInGraph:
            session.escalating = True
        except Exception as exc:
            if is_control_flow(exc):
                raise
            log.exception("atlas could not start session %s; the student runs", session.run.session_id)
            session.start = Start()

    async def astart(self, session: _Session) -> None:
        if session.start is not None or (session.escalating and not _in_escalation.get()):
            return
        try:
            session.start = await session.run.astart(can_take_answer=self.can_take_answer)
        except _HumanInGraph:
            session.escalating = True
        except Exception as exc:
            if is_control_flow(exc):
                raise
            log.exception("atlas could not start session %s; the student runs", session.run.session_id)
            session.start = Start()

    def final_answer(self, session: _Session, state: Any) -> AnswerDecision | None:
        return _safe(lambda: session.run.final_answer(self.answer(state), can_rerun=session.rerun is not None))

    async def afinal_answer(self, session: _Session, state: Any) -> AnswerDecision | None:
        return await _asafe(lambda: session.run.afinal_answer(self.answer(state), can_rerun=session.rerun is not None))

    def rerun_call(self, graph: AtlasGraph, session: _Session, input: Any, config: RunnableConfig) -> tuple[Any, RunnableConfig] | None:
        """The input and config that run a rejected attempt again (None when it cannot be found)."""
        if session.rerun == "checkpoint":
            found = _input_checkpoint(graph.checkpointer.list(_thread_config(config)))
            return (None, _at_checkpoint(config, found)) if found else None
        return (session.input if session.rerun == "input" else input, config) if session.rerun else None

    async def arerun_call(self, graph: AtlasGraph, session: _Session, input: Any, config: RunnableConfig) -> tuple[Any, RunnableConfig] | None:
        if session.rerun == "checkpoint":
            found = _input_checkpoint([c async for c in graph.checkpointer.alist(_thread_config(config))])
            return (None, _at_checkpoint(config, found)) if found else None
        return self.rerun_call(graph, session, input, config)

    def _ended(self, config: RunnableConfig | None, pending: PendingSession | None) -> PendingSession | None:
        key = ((config or {}).get("configurable") or {}).get(self.config_key)
        with self._lock:
            self.sessions.pop(key, None)
            if pending is not None and key is not None:
                self.results[key] = pending
                self.last_result = pending
        return pending

    def end(self, session: _Session, state: Any, config: RunnableConfig) -> PendingSession | None:
        """End the session with the run's answer; returns at once (the finish runs in the background)."""
        return self._ended(config, _safe(lambda: session.run.end(self.answer(state))))

    async def aend(self, session: _Session, state: Any, config: RunnableConfig) -> PendingSession | None:
        return self._ended(config, await _asafe(lambda: session.run.aend(self.answer(state))))

    def failed(self, config: RunnableConfig | None, exc: BaseException) -> None:
        """The run raised: end its session as failed (stored, never left running). LangGraph's control flow (an
        interrupt bubbling to a parent graph) is no failure: the session stays open for the resumed run."""
        session = self.session(config)
        if session is None or is_control_flow(exc):
            return
        self._ended(config, _safe(lambda: session.run.failed(exc)))

    async def afailed(self, config: RunnableConfig | None, exc: BaseException) -> None:
        session = self.session(config)
        if session is None or is_control_flow(exc):
            return
        self._ended(config, await _asafe(lambda: session.run.afailed(exc)))

    def cancelled(self, config: RunnableConfig | None) -> None:
        """The run stopped before its end (a cancelled task, a stream closed early): end the session as cancelled."""
        session = self.session(config)
        if session is not None:
            self._ended(config, _safe(session.run.cancelled))

    async def acancelled(self, config: RunnableConfig | None) -> None:
        session = self.session(config)
        if session is not None:
            self._ended(config, await _asafe(session.run.acancelled))

    # ----------------------------------------------------------------------------------- escalation
    def escalation_graph(self, graph: AtlasGraph) -> CompiledStateGraph:
        """A one-node graph on the user's channels and checkpointer that delivers the escalation's answer (and,
        for a person, asks for it with ``interrupt()``)."""
        if self._escalation is None:
            builder = graph.builder
            escalation = StateGraph(builder.state_schema, builder.context_schema, input_schema=builder.input_schema,
                                    output_schema=builder.output_schema)
            escalation.add_node(ESCALATE, _escalate_node(self))
            escalation.add_edge(START, ESCALATE)
            escalation.add_edge(ESCALATE, END)
            self._escalation = escalation.compile(checkpointer=graph.checkpointer, store=graph.store, name=graph.name)
        return self._escalation

    # ---------------------------------------------------------------------------------- node wrapping
    def node_input(self, state: Any, run: SupervisedRun) -> Any:
        """The node's input with the instructions as a leading system message (input only, never state)."""
        instructions = run.instructions
        if not instructions or not self.messages_key or not isinstance(state, Mapping) or self.messages_key not in state:
            return state
        messages = [m for m in state.get(self.messages_key) or [] if getattr(m, "id", None) != INSTRUCTIONS_ID]
        return {**state, self.messages_key: [instructions_message(instructions), *messages]}

    def wrap(self, name: str, inner: Any) -> Any:
        """The node's runnable with the session's instructions in its input (and for
        :func:`current_instructions`) and, when it made no model or tool call, recorded as a node step. Its
        config is LangGraph's own: the step recorder is a handler of the whole run. A chain (``prompt | model``)
        stays a chain LangGraph flattens into the node's own run: only a first step that adds the instructions
        is put in front of it."""
        adapter = self
        from langchain_core.runnables import RunnableSequence

        if isinstance(inner, RunnableSequence):
            def prepare(state: Any, config: RunnableConfig) -> Any:
                session = adapter.session(config)
                return adapter.node_input(state, session.run) if session is not None else state

            async def aprepare(state: Any, config: RunnableConfig) -> Any:
                return prepare(state, config)

            return RunnableSequence(_node(prepare, aprepare, f"{name}:atlas"), *inner.steps)

        def call(state: Any, config: RunnableConfig) -> Any:
            session = adapter.session(config)
            if session is None:
                return inner.invoke(state, config)
            before, started = len(session.run.steps), time.perf_counter()
            running = _node_run.set(session.run)
            try:
                update = inner.invoke(adapter.node_input(state, session.run), config)
            finally:
                _node_run.reset(running)
            adapter.record_node(session.run, name, state, update, before, started)
            return update

        async def acall(state: Any, config: RunnableConfig) -> Any:
            session = adapter.session(config)
            if session is None:
                return await inner.ainvoke(state, config)
            before, started = len(session.run.steps), time.perf_counter()
            running = _node_run.set(session.run)
            try:
                update = await inner.ainvoke(adapter.node_input(state, session.run), config)
            finally:
                _node_run.reset(running)
            adapter.record_node(session.run, name, state, update, before, started)
            return update

        return _node(call, acall, name)

    def record_node(self, run: SupervisedRun, name: str, state: Any, update: Any, steps_before: int, started: float) -> None:
        """A node that made no model or tool call is a step of its own (custom graphs), except a create_agent
        middleware hook (``SomeMiddleware.before_model``) that changed nothing: that is plumbing, not work."""
        if len(run.steps) > steps_before or ("." in name and not update):
            return
        try:
            from datetime import timedelta

            from atlas_learning.store import utcnow

            ended = utcnow()
            redactor = self.supervisor.redactor
            run.record_step(kind="node", name=name, input=_clip_json(state, redactor), output=_clip_json(update, redactor),
                            started_at=ended - timedelta(seconds=time.perf_counter() - started), ended_at=ended)
        except Exception:  # noqa: BLE001 - recording must never fail the user's node
            log.exception("could not record node %s", name)


def _as_messages(messages: Any) -> list[Any]:
    """An input's messages as LangChain messages (strings, tuples and dicts too, as ``add_messages`` takes them)."""
    items = messages if isinstance(messages, (list, tuple)) else [messages]
    try:
        from langchain_core.messages import convert_to_messages

        return convert_to_messages(items)
    except Exception:  # noqa: BLE001 - not messages after all
        return list(items)


def _thread_config(config: RunnableConfig) -> RunnableConfig:
    configurable = config.get("configurable") or {}
    return {"configurable": {"thread_id": configurable.get("thread_id"), _CHECKPOINT_NS: configurable.get(_CHECKPOINT_NS) or ""}}


def _input_checkpoint(checkpoints: Any) -> str | None:
    """The id of the newest checkpoint that took a run's input (checkpoints newest first)."""
    for checkpoint in checkpoints:
        if (checkpoint.metadata or {}).get("source") == "input":
            return checkpoint.config["configurable"]["checkpoint_id"]
    return None


def _at_checkpoint(config: RunnableConfig, checkpoint_id: str) -> RunnableConfig:
    return {**config, "configurable": {**(config.get("configurable") or {}), "checkpoint_id": checkpoint_id}}  # type: ignore[typeddict-item]


def _writes_at_exit(kwargs: Mapping[str, Any]) -> bool:
    """Whether the call writes its checkpoints only at exit (``durability="exit"``, or the deprecated form)."""
    return kwargs.get("durability") == "exit" or kwargs.get("checkpoint_during") is False


def _escalation_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The stream options that apply to the escalation graph (breakpoints name the user's nodes)."""
    return {k: v for k, v in kwargs.items() if k not in ("interrupt_before", "interrupt_after")}


def _announcement(pending: PendingSession | None, graph: AtlasGraph, config: RunnableConfig, kwargs: Mapping[str, Any]) -> Any:
    """The ``atlas_session`` custom event in the caller's stream format; None when ``custom`` is not streamed."""
    if pending is None:
        return None
    mode = kwargs.get("stream_mode")
    if mode is None:
        mode = "values" if _TASK_ID in (config.get("configurable") or {}) else graph.stream_mode
    if "custom" not in ([mode] if isinstance(mode, str) else list(mode)):
        return None
    data = {"atlas_session": {"session_id": pending.session_id, "final_answer": pending.final_answer}}
    if kwargs.get("version") == "v2":
        return {"type": "custom", "ns": (), "data": data}
    subgraphs = bool(kwargs.get("subgraphs"))
    if isinstance(mode, list):
        return ((), "custom", data) if subgraphs else ("custom", data)
    return ((), data) if subgraphs else data


class AtlasGraph(CompiledStateGraph):
    """The compiled graph ``with_atlas`` returns: the user's graph (its nodes, channels, options) with every run
    supervised. It is a CompiledStateGraph; it adds :meth:`session_result` and :attr:`supervisor`."""

    _atlas: _Adapter

    def __init__(self, *args: Any, _atlas: _Adapter | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if _atlas is not None:
            self._atlas = _atlas

    @property
    def supervisor(self) -> Supervisor:
        return self._atlas.supervisor

    def session_result(self, config: RunnableConfig | None = None) -> PendingSession | None:
        """The session of the last run on this config's thread (and checkpoint namespace), or of the last run;
        None when none ended. It is a :class:`~atlas_learning.PendingSession`: ``session_id`` and
        ``final_answer`` now, any other SessionResult field (``reward``, ``lane``, ...) once the background
        finish is done (reading it waits); ``.result(timeout)`` or ``await`` it for the SessionResult itself."""
        configurable = (config or {}).get("configurable") or {}
        if configurable.get("thread_id") is not None:
            return self._atlas.results.get(self._atlas.run_key(configurable))
        return self._atlas.last_result

    def get_graph(self, config: RunnableConfig | None = None, *, xray: int | bool = False) -> Any:
        """The user's graph as drawn by LangGraph, with the supervision drawn around it: the probe and its lanes
        before the user's entry nodes, the teacher (accept, or retry back to the entry) after its exits, the
        escalation and the judge."""
        return _draw_supervision(super().get_graph(config, xray=xray))

    def stream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[Any]:
        adapter = self._atlas
        config, session = adapter.begin(self, input, config, _writes_at_exit(kwargs))
        if session is None:
            yield from super().stream(input, config, **kwargs)
            return
        try:
            adapter.start(session)
            call: tuple[Any, RunnableConfig] | None = (input, config)
            while call is not None:
                watcher = _RunWatcher()
                if session.escalates:
                    yield from adapter.escalation_graph(self).stream(call[0], _watched(call[1], watcher, session.recorder), **_escalation_kwargs(kwargs))
                else:
                    yield from super().stream(call[0], _watched(call[1], watcher, session.recorder), **kwargs)
                if watcher.interrupted:  # paused: the call that resumes it goes on with this session
                    session.rerun = None  # a resumed run cannot be run again: the person answered
                    return
                decision = None if session.escalates else adapter.final_answer(session, watcher.output)
                call = adapter.rerun_call(self, session, input, config) if decision is not None and decision.action == "retry" else None
            pending = adapter.end(session, watcher.output, config)
            announced = _announcement(pending, self, config, kwargs)
            if announced is not None:
                yield announced
        except GeneratorExit:  # the caller stopped reading before the run ended
            adapter.cancelled(config)
            raise
        except BaseException as exc:
            adapter.failed(config, exc)
            raise

    async def astream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> AsyncIterator[Any]:
        adapter = self._atlas
        config, session = await adapter.abegin(self, input, config, _writes_at_exit(kwargs))
        if session is None:
            async for chunk in super().astream(input, config, **kwargs):
                yield chunk
            return
        try:
            await adapter.astart(session)
            call: tuple[Any, RunnableConfig] | None = (input, config)
            while call is not None:
                watcher = _RunWatcher()
                graph = adapter.escalation_graph(self) if session.escalates else None
                chunks = graph.astream(call[0], _watched(call[1], watcher, session.arecorder), **_escalation_kwargs(kwargs)) if graph is not None \
                    else super().astream(call[0], _watched(call[1], watcher, session.arecorder), **kwargs)
                async for chunk in chunks:
                    yield chunk
                if watcher.interrupted:
                    session.rerun = None
                    return
                decision = None if session.escalates else await adapter.afinal_answer(session, watcher.output)
                call = await adapter.arerun_call(self, session, input, config) if decision is not None and decision.action == "retry" else None
            pending = await adapter.aend(session, watcher.output, config)
            announced = _announcement(pending, self, config, kwargs)
            if announced is not None:
                yield announced
        except (GeneratorExit, asyncio.CancelledError):  # closed early, or the task was cancelled
            await adapter.acancelled(config)
            raise
        except BaseException as exc:
            await adapter.afailed(config, exc)
            raise


def _draw_supervision(drawn: Any) -> Any:
    """Add the probe, lanes, teacher, escalation and judge to LangGraph's drawing of the user's graph."""
    from langchain_core.runnables.graph import Edge

    entries = [e for e in drawn.edges if e.source == START]
    exits = [e for e in drawn.edges if e.target == END]
    kept = [e for e in drawn.edges if e.source != START and e.target != END]
    for name in (PROBE, ESCALATE, TEACHER, JUDGE):
        drawn.add_node(None, name)
    edges = [Edge(START, PROBE)]
    edges += [Edge(PROBE, e.target, "run", True) for e in entries]
    edges.append(Edge(PROBE, ESCALATE, "escalate", True))
    edges += kept
    edges += [Edge(e.source, TEACHER, e.data, e.conditional) for e in exits]
    edges.append(Edge(TEACHER, JUDGE, "accept", True))
    edges += [Edge(TEACHER, e.target, "retry", True) for e in entries]
    edges += [Edge(ESCALATE, JUDGE), Edge(JUDGE, END)]
    drawn.edges = edges
    return drawn


def _escalate_node(adapter: _Adapter) -> Any:
    """The escalation graph's node: ask the person when the start needs one (``interrupt()`` pauses the run
    here; the resumed call asks again and gets the answer), then deliver the answer as an AI message."""

    def atlas_escalate(state: Any, config: RunnableConfig) -> dict[str, Any]:
        session = adapter.session(config)
        if session is not None and session.start is None:
            with _asking():
                adapter.start(session)
        return _delivered(adapter, session)

    async def aatlas_escalate(state: Any, config: RunnableConfig) -> dict[str, Any]:
        session = adapter.session(config)
        if session is not None and session.start is None:
            with _asking():
                await adapter.astart(session)
        return _delivered(adapter, session)

    return _node(atlas_escalate, aatlas_escalate, ESCALATE)


@contextlib.contextmanager
def _asking() -> Iterator[None]:
    """Inside the escalation node: the human escalation may pause the run with ``interrupt()``."""
    token = _in_escalation.set(True)
    try:
        yield
    finally:
        _in_escalation.reset(token)


def _delivered(adapter: _Adapter, session: _Session | None) -> dict[str, Any]:
    answer = session.start.answer if session is not None and session.start is not None else None
    if answer is None or not adapter.messages_key:
        return {}
    from langchain_core.messages import AIMessage

    return {adapter.messages_key: [AIMessage(content=answer, name="atlas_teacher")]}


def _ask_human(task: str, context: dict[str, Any]) -> Any:
    """Escalation to a person: LangGraph's interrupt, in the escalation graph's node; the run resumes with
    ``Command(resume=answer)``. Asked anywhere else, it hands the asking to that node."""
    if not _in_escalation.get():
        raise _HumanInGraph()
    return interrupt({"atlas_escalation": {"task": task, **{k: v for k, v in context.items() if k != "lessons"}}})


def with_atlas(
    graph: StateGraph | CompiledStateGraph,
    config: AtlasConfig | Mapping[str, Any] | str | Path | None = None,
    *,
    learning_key: str | None = None,
    agent_name: str | None = None,
    checks: Sequence[Check] = (),
    supervisor: Supervisor | None = None,
    checkpointer: Any = None,
    task_from: Callable[[Any], str] | None = None,
    answer_from: Callable[[Any], str] | None = None,
) -> AtlasGraph:
    """Wrap a LangGraph graph (a StateGraph or a compiled graph: ``create_agent``, a prebuilt ReAct agent, or any
    custom graph) so every run is supervised, judged, learned from and stored.

    The result is the user's graph itself (same nodes, channels, compile options and bound config) with
    supervision added around its run and its nodes; use it exactly like the original. ``config`` is an
    AtlasConfig, a dict or a YAML path. ``learning_key`` names the lessons and history this graph shares
    (default: ``agent_name`` or the graph's name). With no ``messages`` key in the state, the task and answer are
    the JSON of the run's input and output unless ``task_from`` (given the run's input) / ``answer_from`` (given
    its final output) say otherwise. ``checkpointer`` replaces the compiled graph's own (or compiles a StateGraph
    with it). One invocation sets its own task family, learning key, metadata and checks through
    ``config["configurable"]``: ``atlas_task_family``, ``atlas_learning_key``, ``atlas_metadata``,
    ``atlas_checks``. The supervisor (given or made here) lets LangGraph's control flow (interrupts) pass
    through; without a human callback of its own, a human escalation is an ``interrupt()``.
    """
    if isinstance(graph, StateGraph):
        compiled = graph.compile(checkpointer=checkpointer)
    elif isinstance(graph, CompiledStateGraph):
        compiled = graph if checkpointer is None else graph.copy({"checkpointer": checkpointer})
    else:
        raise TypeError(f"with_atlas takes a StateGraph or a compiled graph (graph.compile(), create_agent(...)), "
                        f"not {type(graph).__name__}")
    name = agent_name or (compiled.name if compiled.name != "LangGraph" else None) or "langgraph-agent"
    supervisor = supervisor or Supervisor(config, human=_ask_human)
    if supervisor.human is None:
        supervisor.human = _ask_human
    register_control_flow(supervisor)

    messages_key = "messages" if "messages" in compiled.channels else None
    adapter = _Adapter(supervisor, agent_name=name, learning_key=learning_key, task_from=task_from,
                       answer_from=answer_from, messages_key=messages_key, output_keys=_keys(compiled.builder.output_schema),
                       checks=checks)
    nodes = {node_name: node if node_name.startswith("__") else node.copy({"bound": adapter.wrap(node_name, node.bound),
                                                                            "subgraphs": node.subgraphs})
             for node_name, node in compiled.nodes.items()}
    attrs = {k: v for k, v in compiled.__dict__.items() if k not in ("__orig_class__", "_atlas")}
    return AtlasGraph(**{**attrs, "nodes": nodes}, _atlas=adapter)


def _keys(schema: Any) -> list[str]:
    from typing import get_type_hints

    try:
        return list(get_type_hints(schema).keys())
    except Exception:  # noqa: BLE001
        return list(getattr(schema, "model_fields", {}) or {})


def _safe(action: Callable[[], Any]) -> Any:
    """``action()``, logged and None when it fails: supervision must never fail the user's run."""
    try:
        return action()
    except Exception:  # noqa: BLE001
        log.exception("atlas supervision failed; the run goes on")
        return None


async def _asafe(action: Callable[[], Any]) -> Any:
    try:
        return await action()
    except Exception:  # noqa: BLE001
        log.exception("atlas supervision failed; the run goes on")
        return None


def _node(func: Callable[..., Any], afunc: Callable[..., Any], name: str) -> Any:
    """A node runnable with a sync and an async implementation."""
    if _NodeRunnable.__name__ == "RunnableCallable":
        return _NodeRunnable(func, afunc, name=name, trace=False)
    return _NodeRunnable(func, afunc=afunc, name=name)


def _clip_json(value: Any, redactor: Any, limit: int = 4000) -> Any:
    """A state or update as JSON data for a node step, redacted, and cut (after the redaction) when long."""
    return redactor.clip(to_jsonable(value), limit)


class _Steps:
    """LangChain callbacks of one node run -> the session's steps; what both recorders share. Never raises."""

    raise_error = False
    # Only model and tool runs are steps: LangChain skips this handler for every other run (the cost per event).
    ignore_chain = True
    ignore_retriever = True
    ignore_retry = True
    ignore_custom_event = True

    def __init__(self, run: SupervisedRun) -> None:
        self.run = run
        self._open: dict[Any, dict[str, Any]] = {}

    def _model_started(self, serialized: Any, run_id: Any, metadata: Any, messages: Any = None,
                       kwargs: Mapping[str, Any] | None = None) -> None:
        provider, model = model_name_of(metadata, serialized)
        opened: dict[str, Any] = {"started": time.perf_counter(), "provider": provider, "model": model}
        try:  # what the model is sent: its system prompt (Atlas's instructions in it) and the tools bound to it
            sent = messages[0] if messages else []
            params = (kwargs or {}).get("invocation_params") or {}
            opened["system"] = system_text(sent) or ""
            opened["tools"] = tool_schemas(params.get("tools")) or []
        except Exception:  # noqa: BLE001
            log.exception("could not read what a model call was sent")
        self._open[run_id] = opened

    def _model_ended(self, response: Any, run_id: Any) -> None:
        opened = self._open.pop(run_id, {})
        try:
            generation = response.generations[0][0]
            message = getattr(generation, "message", None)
            input_tokens, output_tokens = usage_of(message) if message is not None else (0, 0)
            output: Any = model_turn_of(message) if message is not None else generation.text
            latency = (time.perf_counter() - opened["started"]) * 1000 if opened else None
            self.run.record_model_call(provider=opened.get("provider", ""), model=opened.get("model", ""), input_tokens=input_tokens,
                                       output_tokens=output_tokens, latency_ms=latency, output=output,
                                       system=opened.get("system"), tools=opened.get("tools"))
        except Exception:  # noqa: BLE001
            log.exception("could not record a model call")

    def _model_failed(self, error: BaseException, run_id: Any) -> None:
        opened = self._open.pop(run_id, {})
        if not is_control_flow(error):
            _safe(lambda: self.run.record_failed_model_call(error, name=opened.get("model") or "model"))

    def _tool_started(self, serialized: Any, input_str: str, run_id: Any, inputs: Any, kwargs: Mapping[str, Any]) -> None:
        name = (serialized or {}).get("name") or kwargs.get("name") or "tool"
        self._open[run_id] = {"name": name, "args": inputs if inputs is not None else input_str, "started": time.perf_counter(),
                              "call_id": kwargs.get("tool_call_id")}

    def _tool_ended(self, output: Any, run_id: Any) -> str | None:
        """Record the tool step; its id, to report."""
        opened = self._open.pop(run_id, {})
        text = getattr(output, "content", output)
        if isinstance(output, Command):  # a tool that updates the state: its tool messages are its output
            update = output.update if isinstance(output.update, Mapping) else {}
            messages = [m for m in update.get("messages") or () if getattr(m, "type", None) == "tool"]
            text = "\n".join(message_text(m) for m in messages) if messages else to_jsonable(output.update)
        if isinstance(text, list) and text and all(isinstance(b, str) or (isinstance(b, Mapping) and b.get("type") == "text")
                                                   for b in text):
            text = message_text(text)  # MCP and other tools return text blocks: store the text, not block ids
        metadata = _call_id(opened)
        if getattr(output, "status", None) == "error":  # a ToolMessage the tool (or ToolNode) marked as an error
            metadata = {**(metadata or {}), "tool_status": "error"}
        return _safe(lambda: self.run.record_step(kind="tool_call", name=opened.get("name", "tool"), tool_name=opened.get("name", "tool"),
                                                  tool_args=to_jsonable(opened.get("args")), output=to_jsonable(text),
                                                  metadata=metadata))

    def _tool_failed(self, error: BaseException, run_id: Any) -> str | None:
        """Record the failed tool step; its id, to report. A tool that interrupts the run (LangGraph's
        ``interrupt()``) did not fail: it runs again when the run resumes, and is recorded then."""
        opened = self._open.pop(run_id, {})
        if is_control_flow(error):
            return None
        return _safe(lambda: self.run.record_step(kind="tool_call", name=opened.get("name", "tool"), tool_name=opened.get("name", "tool"),
                                                  tool_args=to_jsonable(opened.get("args")), error=f"{type(error).__name__}: {error}",
                                                  metadata=_call_id(opened)))


def _call_id(opened: Mapping[str, Any]) -> dict[str, Any] | None:
    """A tool step's metadata: the id of the model's tool call it answers, when LangChain passed one."""
    call_id = opened.get("call_id")
    return {"tool_call_id": call_id} if isinstance(call_id, str) and call_id else None


class _StepRecorder(_Steps, BaseCallbackHandler):
    """The recorder of sync runs: every tool step is reported with :meth:`SupervisedRun.tool_call_done`."""

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: Any, metadata: Any = None, **kwargs: Any) -> None:
        self._model_started(serialized, run_id, metadata, messages, kwargs)

    def on_llm_end(self, response: Any, *, run_id: Any, **kwargs: Any) -> None:
        self._model_ended(response, run_id)

    def on_llm_error(self, error: BaseException, *, run_id: Any, **kwargs: Any) -> None:
        self._model_failed(error, run_id)

    def on_tool_start(self, serialized: Any, input_str: str, *, run_id: Any, inputs: Any = None, **kwargs: Any) -> None:
        self._tool_started(serialized, input_str, run_id, inputs, kwargs)

    def on_tool_end(self, output: Any, *, run_id: Any, **kwargs: Any) -> None:
        self._report(self._tool_ended(output, run_id))

    def on_tool_error(self, error: BaseException, *, run_id: Any, **kwargs: Any) -> None:
        self._report(self._tool_failed(error, run_id))

    def _report(self, step: str | None) -> None:
        if step:
            _safe(lambda: self.run.tool_call_done(step))


class _AsyncStepRecorder(_Steps, AsyncCallbackHandler):
    """The recorder of async runs: tool steps are reported with :meth:`SupervisedRun.atool_call_done`, on the
    event loop (the teacher's call in coach never blocks it)."""

    async def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: Any, metadata: Any = None, **kwargs: Any) -> None:
        self._model_started(serialized, run_id, metadata, messages, kwargs)

    async def on_llm_end(self, response: Any, *, run_id: Any, **kwargs: Any) -> None:
        self._model_ended(response, run_id)

    async def on_llm_error(self, error: BaseException, *, run_id: Any, **kwargs: Any) -> None:
        self._model_failed(error, run_id)

    async def on_tool_start(self, serialized: Any, input_str: str, *, run_id: Any, inputs: Any = None, **kwargs: Any) -> None:
        self._tool_started(serialized, input_str, run_id, inputs, kwargs)

    async def on_tool_end(self, output: Any, *, run_id: Any, **kwargs: Any) -> None:
        await self._report(self._tool_ended(output, run_id))

    async def on_tool_error(self, error: BaseException, *, run_id: Any, **kwargs: Any) -> None:
        await self._report(self._tool_failed(error, run_id))

    async def _report(self, step: str | None) -> None:
        if step:
            await _asafe(lambda: self.run.atool_call_done(step))


