"""``with_atlas(graph)``: a LangGraph graph under Atlas supervision, itself a compiled LangGraph graph.

Shape (``app.get_graph().draw_mermaid()``)::

    START -> atlas_probe -(run)-> student ---------> atlas_teacher -(accept / stand)-> atlas_judge -> END
                         \\-(answer)-> atlas_escalate --^         \\-(retry)-> student

The nodes translate the graph's run into the Atlas session protocol (:class:`~atlas_learning.SupervisedRun`) and
apply the answers; what to do is decided in the core.

* ``atlas_probe`` begins the session (lane, lessons) and reports the start (:meth:`SupervisedRun.start`): in
  coach the teacher reviews the (empty) plan; in escalate, for a graph with a ``messages`` key (one that can take
  an answer), the teacher or a human answers in place of the student. A human answers through ``interrupt()``:
  the run pauses there and resumes with ``Command(resume=answer)``.
* ``atlas_escalate`` delivers that answer as an AI message; without one the student runs.
* ``student`` is the user's graph, rebuilt node for node. Each node is wrapped so that (a) the session's
  instructions (lessons, plan, concerns, guidance) reach it as a system message added to the *input* of nodes
  that read ``messages``, never written to state, and in ``config["configurable"]["atlas_instructions"]`` for
  graphs that build their own prompt; (b) a callback handler records every model call and tool call as a step
  and reports every tool step (:meth:`SupervisedRun.tool_call_done`; in coach the teacher validates it, and a
  rejection's guidance is in the next model call's instructions); (c) nodes that made no model or tool call are
  recorded as node steps. A graph that raises ends its session as failed (cancelled when a task is cancelled);
  LangGraph's own control flow (an interrupt) passes through.
* ``atlas_teacher`` reports the answer (:meth:`SupervisedRun.final_answer`) in every lane; on ``retry`` it
  removes the rejected attempt's messages and runs the student again, whose instructions now carry the guidance.
* ``atlas_judge`` ends the session (:meth:`SupervisedRun.end`) and returns at once: judges, drift, review
  status, learning and storage run on the supervisor's background finisher. A ``custom`` stream event
  ``{"atlas_session": {"session_id": ..., "final_answer": ...}}`` names the session, and
  ``app.session_result(config)`` is its :class:`~atlas_learning.PendingSession` (the reward and the rest of the
  SessionResult by waiting, when read).

Input and output keys are the user's; supervision model calls never pass through LangChain, so they never
reach the user's ``messages`` stream.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import var_child_runnable_config
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
from atlas_learning.supervisor import AnswerDecision, Start, SupervisedRun, Supervisor

from ._control_flow import is_control_flow, register_control_flow
from ._messages import (
    INSTRUCTIONS_ID,
    instructions_message,
    last_text,
    message_text,
    model_name_of,
    state_get,
    to_jsonable,
    usage_of,
)
from ._options import begin_options

__all__ = ["with_atlas", "AtlasGraph"]

log = logging.getLogger("atlas_plugins.langgraph")

INVOCATION_KEY = "atlas_invocation"
#: Set per call in ``configurable``: whether the call continues a paused run (``Command(resume=...)``, or None
#: as the input) rather than starting one with new input.
RESUMING_KEY = "atlas_resuming"
INSTRUCTIONS_KEY = "atlas_instructions"
PROBE, STUDENT, TEACHER, ESCALATE, JUDGE = "atlas_probe", "student", "atlas_teacher", "atlas_escalate", "atlas_judge"


@dataclass
class _Session:
    """One invocation's supervised run and what the adapter must remember about it."""

    run: SupervisedRun
    recorder: _StepRecorder
    arecorder: _AsyncStepRecorder
    input_message_ids: list[str] = field(default_factory=list)
    input_messages: list[Any] = field(default_factory=list)
    #: What the run's start decided; None until it returned (a human escalation may pause it: see ``atlas_probe``).
    start: Start | None = None


class _Adapter:
    """Everything with_atlas's nodes share: the supervisor, the sessions by invocation, how to read the state."""

    def __init__(self, supervisor: Supervisor, *, agent_name: str, learning_key: str | None,
                 task_from: Callable[[Any], str] | None, answer_from: Callable[[Any], str] | None,
                 messages_key: str | None, messages_reducer: bool, output_keys: Sequence[str],
                 checks: Sequence[Check] = ()) -> None:
        self.supervisor = supervisor
        self.checks = list(checks)
        self.agent_name = agent_name
        self.learning_key = learning_key
        self.task_from = task_from
        self.answer_from = answer_from
        self.messages_key = messages_key
        self.messages_reducer = messages_reducer
        self.output_keys = list(output_keys)
        self.sessions: dict[str, _Session] = {}
        #: The ended sessions by invocation key, and the last one: PendingSessions (the result by waiting).
        self.results: dict[str, PendingSession] = {}
        self.last_result: PendingSession | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------ state
    def task(self, state: Any) -> str:
        if self.task_from is not None:
            return str(self.task_from(state))
        if self.messages_key:
            return last_text(state_get(state, self.messages_key) or [], "human")
        import json

        return json.dumps(to_jsonable(state), ensure_ascii=False, default=str)

    def answer(self, state: Any) -> str:
        if self.answer_from is not None:
            return str(self.answer_from(state))
        if self.messages_key:
            return last_text(state_get(state, self.messages_key) or [], "ai")
        import json

        values = {key: state_get(state, key) for key in self.output_keys}
        return json.dumps(to_jsonable(values), ensure_ascii=False, default=str)

    @property
    def can_take_answer(self) -> bool:
        """Whether the graph can deliver an escalation's answer in place of the student's: as an AI message."""
        return bool(self.messages_key)

    # --------------------------------------------------------------------------------------- sessions
    def session(self, config: RunnableConfig | None) -> _Session | None:
        key = _invocation(config)
        with self._lock:
            return self.sessions.get(key) if key else None

    def _begin_arguments(self, state: Any, config: RunnableConfig) -> tuple[str, dict[str, Any]]:
        """The task and the begin options of the invocation's ``configurable`` (see ``_options``)."""
        configurable = (config or {}).get("configurable", {})
        thread = configurable.get("thread_id")
        options = begin_options(configurable, learning_key=self.learning_key, checks=self.checks,
                                metadata={"thread_id": thread} if thread else {})
        return self.task(state), {"agent_name": self.agent_name, **options}

    def _open(self, run: SupervisedRun, state: Any, config: RunnableConfig) -> _Session:
        messages = list(state_get(state, self.messages_key) or []) if self.messages_key else []
        session = _Session(run, _StepRecorder(run), _AsyncStepRecorder(run),
                           [m.id for m in messages if getattr(m, "id", None)], messages)
        with self._lock:
            self.sessions[_invocation(config)] = session
        return session

    def _resumable(self, config: RunnableConfig) -> tuple[_Session | None, _Session | None]:
        """(the session this call resumes, a stale one to cancel). A call that continues a paused run and finds
        its session still starting (the human escalation paused it) resumes that session; any other session
        still open under this invocation key belongs to a run that paused and was never resumed."""
        existing = self.session(config)
        if existing is None:
            return None, None
        if _resuming(config) and existing.start is None:
            return existing, None
        with self._lock:
            self.sessions.pop(_invocation(config), None)
        return None, existing

    def begin(self, state: Any, config: RunnableConfig) -> _Session:
        """The invocation's session: the one a resumed call paused in, else a new one (begun in the core)."""
        resumed, stale = self._resumable(config)
        if stale is not None:
            _safe(stale.run.cancelled)
        if resumed is not None:
            return resumed
        task, options = self._begin_arguments(state, config)
        return self._open(self.supervisor.begin(task, **options), state, config)

    async def abegin(self, state: Any, config: RunnableConfig) -> _Session:
        resumed, stale = self._resumable(config)
        if stale is not None:
            await _asafe(stale.run.acancelled)
        if resumed is not None:
            return resumed
        task, options = self._begin_arguments(state, config)
        return self._open(await self.supervisor.abegin(task, **options), state, config)

    def _ended(self, config: RunnableConfig | None, pending: PendingSession | None) -> PendingSession | None:
        key = _invocation(config)
        with self._lock:
            self.sessions.pop(key, None)
            if pending is not None and key is not None:
                self.results[key] = pending
                self.last_result = pending
        return pending

    def end(self, session: _Session, state: Any, config: RunnableConfig) -> PendingSession | None:
        """End the session with the graph's answer; returns at once (the finish runs in the background)."""
        return self._ended(config, _safe(lambda: session.run.end(self.answer(state))))

    async def aend(self, session: _Session, state: Any, config: RunnableConfig) -> PendingSession | None:
        return self._ended(config, await _asafe(lambda: session.run.aend(self.answer(state))))

    def start(self, session: _Session) -> None:
        """Report the start; what it decided is kept on the session. LangGraph's control flow (the human
        escalation's interrupt) propagates: it pauses the run."""
        try:
            session.start = session.run.start(can_take_answer=self.can_take_answer)
        except Exception as exc:
            if is_control_flow(exc):
                raise
            log.exception("atlas could not start session %s; the student runs", session.run.session_id)
            session.start = Start()

    async def astart(self, session: _Session) -> None:
        try:
            session.start = await session.run.astart(can_take_answer=self.can_take_answer)
        except Exception as exc:
            if is_control_flow(exc):
                raise
            log.exception("atlas could not start session %s; the student runs", session.run.session_id)
            session.start = Start()

    def failed(self, config: RunnableConfig | None, exc: BaseException) -> None:
        """The user's graph raised: end the session as failed (stored, never left running). LangGraph's control
        flow (an interrupt) is no failure: the session stays open for the resumed run."""
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

    def after_answer(self, decision: AnswerDecision, session: _Session, state: Any) -> Command:
        """Apply the core's decision on the answer: run the student again (its instructions carry the guidance),
        or go on to the end."""
        if decision.action == "retry":
            return Command(goto=STUDENT, update=_reset_attempt(self, session, state))
        return Command(goto=JUDGE)

    # ---------------------------------------------------------------------------------- node wrapping
    def node_input(self, state: Any, run: SupervisedRun) -> Any:
        """The node's input with the instructions as a leading system message (input only, never state)."""
        instructions = run.instructions
        if not instructions or not self.messages_key or not isinstance(state, Mapping):
            return state
        messages = [m for m in state.get(self.messages_key) or [] if getattr(m, "id", None) != INSTRUCTIONS_ID]
        return {**state, self.messages_key: [instructions_message(instructions), *messages]}

    def node_config(self, config: RunnableConfig, session: _Session, recorder: BaseCallbackHandler) -> RunnableConfig:
        from langchain_core.runnables.config import merge_configs

        return merge_configs(config, {"callbacks": [recorder], "configurable": {INSTRUCTIONS_KEY: session.run.instructions}})

    def wrap(self, name: str, inner: Any) -> Any:
        adapter = self

        def call(state: Any, config: RunnableConfig) -> Any:
            session = adapter.session(config)
            if session is None:
                return inner.invoke(state, config)
            before, started = len(session.run.steps), time.perf_counter()
            node_config = adapter.node_config(config, session, session.recorder)
            token = var_child_runnable_config.set(node_config)  # nodes built with trace=False read the ambient config
            try:
                update = inner.invoke(adapter.node_input(state, session.run), node_config)
            finally:
                var_child_runnable_config.reset(token)
            adapter.record_node(session.run, name, state, update, before, started)
            return update

        async def acall(state: Any, config: RunnableConfig) -> Any:
            session = adapter.session(config)
            if session is None:
                return await inner.ainvoke(state, config)
            before, started = len(session.run.steps), time.perf_counter()
            node_config = adapter.node_config(config, session, session.arecorder)
            token = var_child_runnable_config.set(node_config)
            try:
                update = await inner.ainvoke(adapter.node_input(state, session.run), node_config)
            finally:
                var_child_runnable_config.reset(token)
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
            run.record_step(kind="node", name=name, input=_clip_json(state), output=_clip_json(update),
                            started_at=ended - timedelta(seconds=time.perf_counter() - started), ended_at=ended)
        except Exception:  # noqa: BLE001 - recording must never fail the user's node
            log.exception("could not record node %s", name)


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
        return _NodeRunnable(func, afunc, name=name, trace=True)
    return _NodeRunnable(func, afunc=afunc, name=name)


def _clip_json(value: Any, limit: int = 4000) -> Any:
    import json

    data = to_jsonable(value)
    text = json.dumps(data, ensure_ascii=False, default=str)
    return data if len(text) <= limit else text[:limit] + "…[cut]"


class _Steps:
    """LangChain callbacks of one node run -> the session's steps; what both recorders share. Never raises."""

    raise_error = False

    def __init__(self, run: SupervisedRun) -> None:
        self.run = run
        self._open: dict[Any, dict[str, Any]] = {}

    def _model_started(self, serialized: Any, run_id: Any, metadata: Any) -> None:
        provider, model = model_name_of(metadata, serialized)
        self._open[run_id] = {"started": time.perf_counter(), "provider": provider, "model": model}

    def _model_ended(self, response: Any, run_id: Any) -> None:
        opened = self._open.pop(run_id, {})
        try:
            generation = response.generations[0][0]
            message = getattr(generation, "message", None)
            input_tokens, output_tokens = usage_of(message) if message is not None else (0, 0)
            output: Any = to_jsonable(message) if message is not None else generation.text
            latency = (time.perf_counter() - opened["started"]) * 1000 if opened else None
            self.run.record_model_call(provider=opened.get("provider", ""), model=opened.get("model", ""), input_tokens=input_tokens,
                                       output_tokens=output_tokens, latency_ms=latency, output=output)
        except Exception:  # noqa: BLE001
            log.exception("could not record a model call")

    def _model_failed(self, error: BaseException, run_id: Any) -> None:
        opened = self._open.pop(run_id, {})
        if not is_control_flow(error):
            _safe(lambda: self.run.record_step(kind="model_call", name=opened.get("model") or "model",
                                               error=f"{type(error).__name__}: {error}"))

    def _tool_started(self, serialized: Any, input_str: str, run_id: Any, inputs: Any, kwargs: Mapping[str, Any]) -> None:
        name = (serialized or {}).get("name") or kwargs.get("name") or "tool"
        self._open[run_id] = {"name": name, "args": inputs if inputs is not None else input_str, "started": time.perf_counter()}

    def _tool_ended(self, output: Any, run_id: Any) -> str | None:
        """Record the tool step; its id, to report."""
        opened = self._open.pop(run_id, {})
        text = getattr(output, "content", output)
        if isinstance(text, list) and text and all(isinstance(b, str) or (isinstance(b, Mapping) and b.get("type") == "text")
                                                   for b in text):
            text = message_text(text)  # MCP and other tools return text blocks: store the text, not block ids
        return _safe(lambda: self.run.record_step(kind="tool_call", name=opened.get("name", "tool"), tool_name=opened.get("name", "tool"),
                                                  tool_args=to_jsonable(opened.get("args")), output=to_jsonable(text)))

    def _tool_failed(self, error: BaseException, run_id: Any) -> str | None:
        """Record the failed tool step; its id, to report. A tool that interrupts the run (LangGraph's
        ``interrupt()``) did not fail: it runs again when the run resumes, and is recorded then."""
        opened = self._open.pop(run_id, {})
        if is_control_flow(error):
            return None
        return _safe(lambda: self.run.record_step(kind="tool_call", name=opened.get("name", "tool"), tool_name=opened.get("name", "tool"),
                                                  tool_args=to_jsonable(opened.get("args")), error=f"{type(error).__name__}: {error}"))


class _StepRecorder(_Steps, BaseCallbackHandler):
    """The recorder of sync runs: every tool step is reported with :meth:`SupervisedRun.tool_call_done`."""

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: Any, metadata: Any = None, **kwargs: Any) -> None:
        self._model_started(serialized, run_id, metadata)

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
        self._model_started(serialized, run_id, metadata)

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


def _invocation(config: RunnableConfig | None) -> str | None:
    return ((config or {}).get("configurable") or {}).get(INVOCATION_KEY)


def _resuming(config: RunnableConfig | None) -> bool:
    return bool(((config or {}).get("configurable") or {}).get(RESUMING_KEY))


class AtlasGraph(CompiledStateGraph):
    """The compiled graph ``with_atlas`` returns. It is a CompiledStateGraph; it adds a per-invocation key to
    ``configurable`` (the thread id when there is one, so a resumed run finds its session) and
    :meth:`session_result`."""

    _atlas: _Adapter

    @property
    def supervisor(self) -> Supervisor:
        return self._atlas.supervisor

    def session_result(self, config: RunnableConfig | None = None) -> PendingSession | None:
        """The session of the invocation with this config's thread id, or of the last invocation; None when none
        ended. It is a :class:`~atlas_learning.PendingSession`: ``session_id`` and ``final_answer`` now, any
        other SessionResult field (``reward``, ``lane``, ...) once the background finish is done (reading it
        waits); ``.result(timeout)`` or ``await`` it for the SessionResult itself."""
        thread = ((config or {}).get("configurable") or {}).get("thread_id")
        if thread is not None:
            return self._atlas.results.get(f"thread:{thread}")
        return self._atlas.last_result

    def _with_invocation(self, config: RunnableConfig | None, input: Any) -> RunnableConfig:
        config = dict(config or {})
        configurable = dict(config.get("configurable") or {})
        if INVOCATION_KEY not in configurable:
            thread = configurable.get("thread_id")
            configurable[INVOCATION_KEY] = f"thread:{thread}" if thread is not None else uuid.uuid4().hex
        configurable[RESUMING_KEY] = input is None or isinstance(input, Command)
        config["configurable"] = configurable
        return config  # type: ignore[return-value]

    def stream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        config = self._with_invocation(config, input)
        try:
            yield from super().stream(input, config, **kwargs)
        except GeneratorExit:  # the caller stopped reading before the run ended
            self._atlas.cancelled(config)
            raise
        except Exception as exc:  # raised outside the student (which ends its own session): never left running
            self._atlas.failed(config, exc)
            raise

    async def astream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        config = self._with_invocation(config, input)
        try:
            async for chunk in super().astream(input, config, **kwargs):
                yield chunk
        except (GeneratorExit, asyncio.CancelledError):  # closed early, or the task was cancelled
            await self._atlas.acancelled(config)
            raise
        except Exception as exc:
            await self._atlas.afailed(config, exc)
            raise


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
    custom graph) so every invocation is supervised, judged, learned from and stored.

    The result is a compiled graph with the same input and output keys; use it exactly like the original.
    ``config`` is an AtlasConfig, a dict or a YAML path. ``learning_key`` names the lessons and history this
    graph shares (default: ``agent_name`` or the graph's name). With no ``messages`` key in the state, the task
    and answer are the JSON of the input and output keys unless ``task_from`` / ``answer_from`` say otherwise.
    ``checkpointer`` defaults to the compiled graph's own. One invocation sets its own task family, learning key,
    metadata and checks through ``config["configurable"]``: ``atlas_task_family``, ``atlas_learning_key``,
    ``atlas_metadata``, ``atlas_checks``. The supervisor (given or made here) lets LangGraph's control flow
    (interrupts) pass through; without a human callback of its own, a human escalation is an ``interrupt()``.
    """
    builder = graph.builder if isinstance(graph, CompiledStateGraph) else graph
    compiled = graph if isinstance(graph, CompiledStateGraph) else None
    name = agent_name or (compiled.name if compiled is not None and compiled.name != "LangGraph" else None) or "langgraph-agent"
    supervisor = supervisor or Supervisor(config, human=_ask_human)
    if supervisor.human is None:
        supervisor.human = _ask_human
    register_control_flow(supervisor)

    channels = (compiled or builder.compile()).channels
    messages_key = "messages" if "messages" in channels else None
    reducer = getattr(channels.get("messages"), "operator", None) if messages_key else None
    adapter = _Adapter(
        supervisor, agent_name=name, learning_key=learning_key, task_from=task_from, answer_from=answer_from,
        messages_key=messages_key, messages_reducer=reducer is not None and "add_messages" in getattr(reducer, "__qualname__", ""),
        output_keys=_keys(builder.output_schema), checks=checks,
    )
    student = _student_node(_rebuild(builder, adapter, compiled), channels, adapter)

    outer = StateGraph(builder.state_schema, builder.context_schema, input_schema=builder.input_schema, output_schema=builder.output_schema)
    outer.add_node(PROBE, _probe_node(adapter))
    outer.add_node(STUDENT, student)
    outer.add_node(TEACHER, _teacher_node(adapter), destinations=(STUDENT, JUDGE))
    outer.add_node(ESCALATE, _escalate_node(adapter), destinations=(STUDENT, JUDGE))
    outer.add_node(JUDGE, _judge_node(adapter))
    outer.add_edge(START, PROBE)
    outer.add_conditional_edges(PROBE, _route_start(adapter), {"student": STUDENT, "escalate": ESCALATE})
    outer.add_edge(STUDENT, TEACHER)
    outer.add_edge(JUDGE, END)
    saver = checkpointer if checkpointer is not None else (compiled.checkpointer if compiled is not None else None)
    app = outer.compile(checkpointer=saver, store=compiled.store if compiled is not None else None, name=name)
    app.__class__ = AtlasGraph
    app._atlas = adapter  # type: ignore[attr-defined]
    return app  # type: ignore[return-value]


def _keys(schema: Any) -> list[str]:
    from typing import get_type_hints

    try:
        return list(get_type_hints(schema).keys())
    except Exception:  # noqa: BLE001
        return list(getattr(schema, "model_fields", {}) or {})


def _rebuild(builder: StateGraph, adapter: _Adapter, compiled: CompiledStateGraph | None) -> CompiledStateGraph:
    """The user's graph, node for node, each node wrapped; edges, branches and interrupts kept."""
    copy = StateGraph(builder.state_schema, builder.context_schema, input_schema=builder.input_schema, output_schema=builder.output_schema)
    for node_name, spec in builder.nodes.items():
        copy.add_node(node_name, adapter.wrap(node_name, spec.runnable), defer=spec.defer, metadata=spec.metadata,
                      input_schema=spec.input_schema, retry_policy=spec.retry_policy, cache_policy=spec.cache_policy,
                      destinations=tuple(spec.ends) if spec.ends else None)
    copy.edges = set(builder.edges)
    copy.waiting_edges = set(builder.waiting_edges)
    for source, branches in builder.branches.items():
        copy.branches[source].update(branches)
    return copy.compile(
        interrupt_before=compiled.interrupt_before_nodes if compiled is not None else None,
        interrupt_after=compiled.interrupt_after_nodes if compiled is not None else None,
        name=STUDENT,
    )


def _student_node(student: CompiledStateGraph, channels: Mapping[str, Any], adapter: _Adapter) -> Callable[..., Any]:
    """The user's graph as a subgraph whose result is applied as the update the original graph would have made.

    A subgraph returns its whole final state, and the outer graph applies it through its reducers: a list with
    ``operator.add`` would then hold the input twice. So the node returns, per key, only what changed: the new tail
    of an appended list, new or changed messages plus ``RemoveMessage`` for those the student removed, and the
    value of plain keys. A custom reducer whose delta cannot be told is given the full value (see the docs).

    When the user's graph raises, its session ends as failed (cancelled, when the task is cancelled) and the
    error propagates; LangGraph's control flow (an interrupt in the user's graph) passes through, the session
    open for the resumed run."""
    reducers = {key: getattr(channel, "operator", None) for key, channel in channels.items()}

    def delta(before: Any, after: Any) -> Any:
        if not isinstance(after, Mapping):
            return after
        update = {}
        for key, value in after.items():
            reducer = reducers.get(key)
            old = state_get(before, key)
            if reducer is None or old is None:
                update[key] = value
            elif key == adapter.messages_key and adapter.messages_reducer:
                update[key] = _message_delta(old, value)
            elif isinstance(old, list) and isinstance(value, list) and value[: len(old)] == old:
                update[key] = value[len(old):]
            else:
                update[key] = value
        return update

    def student_node(state: Any, config: RunnableConfig) -> Any:
        try:
            return delta(state, student.invoke(state, config))
        except BaseException as exc:
            adapter.failed(config, exc)
            raise

    async def astudent_node(state: Any, config: RunnableConfig) -> Any:
        try:
            return delta(state, await student.ainvoke(state, config))
        except asyncio.CancelledError:
            await adapter.acancelled(config)
            raise
        except BaseException as exc:
            await adapter.afailed(config, exc)
            raise

    return _node(student_node, astudent_node, STUDENT)


def _message_delta(before: Sequence[Any], after: Sequence[Any]) -> list[Any]:
    from langchain_core.messages import RemoveMessage

    old = {m.id: m for m in before if getattr(m, "id", None)}
    new_ids = {m.id for m in after if getattr(m, "id", None)}
    removed = [RemoveMessage(id=i) for i in old if i not in new_ids]
    changed = [m for m in after if getattr(m, "id", None) not in old or old[m.id] != m]
    return [*removed, *changed]


def _probe_node(adapter: _Adapter) -> Any:
    """Begin the session and report its start. A human escalation pauses the run here (``interrupt()`` passes
    through the core as control flow); the resumed call runs this node again, finds the session still starting
    and starts it again, when the interrupt returns the human's answer."""

    def atlas_probe(state: Any, config: RunnableConfig) -> dict[str, Any]:
        adapter.start(adapter.begin(state, config))
        return {}

    async def aatlas_probe(state: Any, config: RunnableConfig) -> dict[str, Any]:
        await adapter.astart(await adapter.abegin(state, config))
        return {}

    return _node(atlas_probe, aatlas_probe, PROBE)


def _route_start(adapter: _Adapter) -> Callable[..., str]:
    def route(state: Any, config: RunnableConfig) -> str:
        """To ``atlas_escalate`` when the start gave an answer to deliver in place of the student's."""
        session = adapter.session(config)
        if session is not None and session.start is not None and session.start.answer is not None:
            return "escalate"
        return "student"

    return route


def _teacher_node(adapter: _Adapter) -> Any:
    """Report the answer (every lane) and apply the core's decision: retry, or go on to the end."""

    def atlas_teacher(state: Any, config: RunnableConfig) -> Any:
        session = adapter.session(config)
        if session is None:
            return Command(goto=JUDGE)
        decision = _safe(lambda: session.run.final_answer(adapter.answer(state)))
        return adapter.after_answer(decision, session, state) if decision is not None else Command(goto=JUDGE)

    async def aatlas_teacher(state: Any, config: RunnableConfig) -> Any:
        session = adapter.session(config)
        if session is None:
            return Command(goto=JUDGE)
        decision = await _asafe(lambda: session.run.afinal_answer(adapter.answer(state)))
        return adapter.after_answer(decision, session, state) if decision is not None else Command(goto=JUDGE)

    return _node(atlas_teacher, aatlas_teacher, TEACHER)


def _reset_attempt(adapter: _Adapter, session: _Session, state: Any) -> dict[str, Any]:
    """Undo the rejected attempt's messages so the retry starts from the user's input (stored, not lost)."""
    if not adapter.messages_key:
        return {}
    current = state_get(state, adapter.messages_key) or []
    if adapter.messages_reducer:
        from langchain_core.messages import RemoveMessage

        keep = set(session.input_message_ids)
        return {adapter.messages_key: [RemoveMessage(id=m.id) for m in current if getattr(m, "id", None) and m.id not in keep]}
    return {adapter.messages_key: list(session.input_messages)}


def _escalate_node(adapter: _Adapter) -> Any:
    """Deliver the escalation's answer as the graph's answer, in place of the student's."""

    def atlas_escalate(state: Any, config: RunnableConfig) -> Any:
        session = adapter.session(config)
        answer = session.start.answer if session is not None and session.start is not None else None
        if answer is None or not adapter.messages_key:  # nothing to deliver: the student runs
            return Command(goto=STUDENT)
        from langchain_core.messages import AIMessage

        return Command(goto=JUDGE, update={adapter.messages_key: [AIMessage(content=answer, name="atlas_teacher")]})

    async def aatlas_escalate(state: Any, config: RunnableConfig) -> Any:
        return atlas_escalate(state, config)

    return _node(atlas_escalate, aatlas_escalate, ESCALATE)


def _judge_node(adapter: _Adapter) -> Any:
    """End the session; returns at once (judging, learning and storage run in the background)."""

    def announce(pending: PendingSession | None) -> None:
        if pending is None:
            return
        try:
            from langgraph.config import get_stream_writer

            get_stream_writer()({"atlas_session": {"session_id": pending.session_id, "final_answer": pending.final_answer}})
        except Exception:  # noqa: BLE001 - outside a streaming run there is no writer
            pass

    def atlas_judge(state: Any, config: RunnableConfig) -> dict[str, Any]:
        session = adapter.session(config)
        if session is not None:
            announce(adapter.end(session, state, config))
        return {}

    async def aatlas_judge(state: Any, config: RunnableConfig) -> dict[str, Any]:
        session = adapter.session(config)
        if session is not None:
            announce(await adapter.aend(session, state, config))
        return {}

    return _node(atlas_judge, aatlas_judge, JUDGE)


def _ask_human(task: str, context: dict[str, Any]) -> Any:
    """Escalation to a person: LangGraph's interrupt; the run resumes with ``Command(resume=answer)``."""
    return interrupt({"atlas_escalation": {"task": task, **{k: v for k, v in context.items() if k != "lessons"}}})
