"""``AtlasMiddleware``: Atlas supervision for LangChain v1 ``create_agent`` agents.

>>> from langchain.agents import create_agent
>>> from atlas_plugins.langgraph.middleware import AtlasMiddleware
>>> atlas = AtlasMiddleware("atlas.yaml", agent_name="file-agent")
>>> agent = create_agent(model, tools=[read_file], middleware=[atlas])
>>> agent.invoke({"messages": [("user", "Count the items in notes/todo.txt")]})
>>> atlas.last_result.reward          # a PendingSession: reading a field waits for the background finish

The middleware only translates the agent's events into the :class:`~atlas_learning.supervisor.SupervisedRun`
protocol and applies what the core answers; it decides nothing itself. Per invocation:

- ``before_agent``: :meth:`~atlas_learning.supervisor.Supervisor.begin` (task: the last human message; the
  invocation's ``configurable`` may set ``atlas_task_family``, ``atlas_learning_key``, ``atlas_metadata`` and
  ``atlas_checks``, as for ``with_atlas``), then :meth:`~atlas_learning.supervisor.SupervisedRun.start`. The
  middleware can deliver text in place of the agent's answer: when the core hands back an answer (escalate: the
  teacher's or a human's), it becomes the agent's AI message and the agent jumps to its end without calling the
  model. A human answering through LangGraph's ``interrupt`` resumes the same session.
- ``wrap_model_call``: ``run.instructions`` (lessons, plan, concerns, pending guidance) is appended to the
  request's system message on every model call (never written to state); the call is recorded.
- ``wrap_tool_call``: the tool call is recorded as a step and reported (``tool_call_done``); a rejected step's
  guidance is in the instructions of the next model call.
- ``after_model``: a final answer (an AI message without tool calls) is reported (``final_answer``, in every
  lane). ``retry``: the draft is removed from the state and the agent jumps back to the model, whose request
  carries the guidance in its system message. ``accept`` / ``stand``: the agent ends as it would.
- ``after_agent``: an answer the model hook did not see (a structured response, a ``return_direct`` tool, another
  middleware's jump to the end) is reported the same way (a retry jumps back to the model from here); then the
  session ends (``end``: it returns at once, judging and learning run in the background).
  :attr:`AtlasMiddleware.last_result` and :meth:`AtlasMiddleware.result_for` hold the PendingSession.
- An exception that leaves a model or tool call (past every middleware listed after this one) ends the session as
  failed and propagates unchanged; LangGraph's interrupts and commands pass through. List ``AtlasMiddleware``
  first so that retry or fallback middleware sit inside it.

Each invocation is keyed by its session id, kept in a private state field (``atlas_session``: out of the agent's
input and output schemas) that every hook reads from the state it is given, so concurrent invocations on one
middleware never mix sessions. An unexpected exception in Atlas code is logged and the agent goes on.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from langchain.agents.middleware.types import (
    AgentMiddleware,
    AgentState,
    ExtendedModelResponse,
    ModelRequest,
    ModelResponse,
    PrivateStateAttr,
    hook_config,
)
from langchain_core.messages import AIMessage, RemoveMessage, SystemMessage, ToolMessage
from langgraph.errors import GraphBubbleUp
from typing_extensions import NotRequired

from atlas_learning.background import PendingSession
from atlas_learning.config import AtlasConfig
from atlas_learning.judges import Check
from atlas_learning.store import utcnow
from atlas_learning.supervisor import AnswerDecision, Start, SupervisedRun, Supervisor, as_text

from ._control_flow import is_control_flow, register_control_flow
from ._messages import (
    INSTRUCTIONS_ID,
    last_text,
    message_text,
    model_name_of,
    model_turn_of,
    state_get,
    to_jsonable,
    tool_schemas,
    usage_of,
)
from ._options import begin_options, current_configurable

__all__ = ["AtlasMiddleware", "AtlasAgentState", "SESSION_KEY"]

log = logging.getLogger("atlas_plugins.langgraph.middleware")

#: The private state field that holds the invocation's session id.
SESSION_KEY = "atlas_session"
#: How many per-thread results :meth:`AtlasMiddleware.result_for` keeps (oldest dropped first).
MAX_THREAD_RESULTS = 1024
#: How many sessions ended as failed are remembered, to warn once if their agent went on anyway.
_MAX_FAILED = 1024


class AtlasAgentState(AgentState[Any]):
    """The agent state plus the invocation's Atlas session id (private: not in the input or output schema)."""

    atlas_session: NotRequired[Annotated[str | None, PrivateStateAttr]]


@dataclass
class _Invocation:
    """One agent invocation under supervision."""

    run: SupervisedRun
    thread_id: str | None
    #: The answer delivered in place of the agent's (``Start.answer``); the session ends with it as it is.
    delivered: str | None = None
    #: The answer last reported to ``final_answer`` (its message id, else its text): reported once.
    reported: str | None = None


@dataclass(frozen=True)
class _Answer:
    """The agent's answer in a state: what identifies it (a message id, else the text) and its text."""

    key: str
    text: str
    #: The id of the AI message that is the answer (removed from the state on a retry), or None.
    draft_id: str | None = None


class AtlasMiddleware(AgentMiddleware[AtlasAgentState, Any, Any]):
    """Supervise every invocation of a ``create_agent`` agent with Atlas.

    ``config`` is an AtlasConfig, a dict or a YAML path, used to build a :class:`Supervisor` (with ``checks``) when
    no ``supervisor`` is given. ``learning_key`` and ``agent_name`` are passed to :meth:`Supervisor.begin`.
    A config that does not load raises here, at construction; nothing raises during a run.
    """

    state_schema = AtlasAgentState

    def __init__(
        self,
        config: AtlasConfig | Mapping[str, Any] | str | Path | None = None,
        *,
        supervisor: Supervisor | None = None,
        learning_key: str | None = None,
        agent_name: str = "agent",
        checks: Sequence[Check] = (),
    ) -> None:
        super().__init__()
        self.supervisor = supervisor if supervisor is not None else Supervisor(config, checks=checks)
        self._owns_supervisor = supervisor is None
        register_control_flow(self.supervisor)
        # Checks given with a ready supervisor go to each session; otherwise the supervisor already has them.
        self._session_checks = tuple(checks) if supervisor is not None else ()
        self.learning_key = learning_key
        self.agent_name = agent_name
        #: The last invocation's session once it ended (any thread): a PendingSession, whose fields wait for the
        #: background finish when read.
        self.last_result: PendingSession | None = None
        self._lock = threading.Lock()
        self._runs: dict[str, _Invocation] = {}
        self._by_thread: OrderedDict[str, PendingSession] = OrderedDict()
        # Escalations interrupted (a LangGraph ``interrupt`` in the human callback), by thread, to resume.
        self._suspended: dict[str, SupervisedRun] = {}
        # Sessions ended as failed by an error that left a model or tool call, to warn if the agent went on.
        self._failed: OrderedDict[str, None] = OrderedDict()

    def close(self) -> None:
        """Close the supervisor this middleware built (wait for pending finishes, flush the recorder, release
        models); a supervisor that was passed in is left to its owner."""
        if self._owns_supervisor:
            self.supervisor.close()

    # ------------------------------------------------------------------------------------------ results
    def result_for(self, config: Mapping[str, Any] | str) -> PendingSession | None:
        """The last ended session of a thread (a PendingSession: its fields wait for the background finish): pass
        the invocation's config (``configurable.thread_id``) or the thread id itself. None when that thread has
        no ended session here."""
        thread_id = config if isinstance(config, str) else (config.get("configurable") or {}).get("thread_id")
        if thread_id is None:
            return None
        with self._lock:
            return self._by_thread.get(str(thread_id))

    def run_for(self, state: Any) -> SupervisedRun | None:
        """The session in progress for an agent state (inside a hook, a tool or a node), or None."""
        invocation = self._lookup(state)
        return invocation.run if invocation is not None else None

    # -------------------------------------------------------------------------------------- before_agent
    @hook_config(can_jump_to=["end"])
    def before_agent(self, state: AtlasAgentState, runtime: Any) -> dict[str, Any] | None:
        try:
            run, thread_id, abandoned = self._resumed(state, runtime)
            if abandoned is not None:
                abandoned.cancelled()
            if run is None:
                run = self.supervisor.begin(**self._begin_args(state, thread_id))
        except GraphBubbleUp:
            raise
        except Exception:  # noqa: BLE001 - supervision must never fail the agent
            log.exception("Atlas could not begin a session; this invocation runs unsupervised")
            return {SESSION_KEY: None}
        try:
            started: Start | None = run.start(can_take_answer=True)
        except GraphBubbleUp:  # a human answers through interrupt(): the same session resumes
            self._suspend(thread_id, run)
            raise
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not start session %s; the agent runs", run.session_id)
            started = None
        return self._started(_Invocation(run, thread_id), started)

    @hook_config(can_jump_to=["end"])
    async def abefore_agent(self, state: AtlasAgentState, runtime: Any) -> dict[str, Any] | None:
        try:
            run, thread_id, abandoned = self._resumed(state, runtime)
            if abandoned is not None:
                await abandoned.acancelled()
            if run is None:
                run = await self.supervisor.abegin(**self._begin_args(state, thread_id))
        except GraphBubbleUp:
            raise
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not begin a session; this invocation runs unsupervised")
            return {SESSION_KEY: None}
        try:
            started: Start | None = await run.astart(can_take_answer=True)
        except GraphBubbleUp:
            self._suspend(thread_id, run)
            raise
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not start session %s; the agent runs", run.session_id)
            started = None
        return self._started(_Invocation(run, thread_id), started)

    def _resumed(self, state: Any, runtime: Any) -> tuple[SupervisedRun | None, str | None, SupervisedRun | None]:
        """(the suspended run of this thread to resume, or None; the thread id; a suspended run this invocation
        abandons, with another task: it ends as cancelled)."""
        thread_id = _thread_id(runtime)
        if thread_id is None:
            return None, None, None
        with self._lock:
            suspended = self._suspended.pop(thread_id, None)
        if suspended is not None and suspended.task == _task_of(state):
            return suspended, thread_id, None
        return None, thread_id, suspended

    def _begin_args(self, state: Any, thread_id: str | None) -> dict[str, Any]:
        """``Supervisor.begin``'s arguments: the middleware's own, with the invocation's per-call options
        (``configurable``'s ``atlas_task_family``, ``atlas_learning_key``, ``atlas_metadata``, ``atlas_checks``)."""
        metadata: dict[str, Any] = {"framework": "langchain", "adapter": "AtlasMiddleware"}
        if thread_id is not None:
            metadata["thread_id"] = thread_id
        options = begin_options(current_configurable(), learning_key=self.learning_key, metadata=metadata,
                                checks=self._session_checks)
        return {"task": _task_of(state), "agent_name": self.agent_name, **options}

    def _suspend(self, thread_id: str | None, run: SupervisedRun) -> None:
        if thread_id is not None:
            with self._lock:
                self._suspended[thread_id] = run

    def _started(self, invocation: _Invocation, started: Start | None) -> dict[str, Any]:
        """Register the invocation; an answer the core hands over is delivered and ends the agent."""
        run = invocation.run
        with self._lock:
            # An earlier invocation of this thread that never reached after_agent (it raised outside a model or
            # tool call: a recursion limit, another middleware) is over: it ends as failed, not left running.
            stale = [i for i in self._runs.values() if invocation.thread_id is not None and i.thread_id == invocation.thread_id]
            for old in stale:
                del self._runs[old.run.session_id]
            self._runs[run.session_id] = invocation
        for old in stale:
            try:
                old.run.failed(f"abandoned: the invocation ended before after_agent (an error outside a model or tool "
                               f"call), and thread {old.thread_id} began another")
            except Exception:  # noqa: BLE001
                log.exception("Atlas could not end the abandoned session %s", old.run.session_id)
        update: dict[str, Any] = {SESSION_KEY: run.session_id}
        if started is not None and started.answer is not None:
            invocation.delivered = started.answer
            message = AIMessage(content=started.answer,
                                response_metadata={"atlas": {"escalated": True, "session_id": run.session_id}})
            update.update({"messages": [message], "jump_to": "end"})
        return update

    def _lookup(self, state: Any) -> _Invocation | None:
        try:
            session_id = state_get(state, SESSION_KEY)
        except Exception:  # noqa: BLE001
            return None
        if not session_id:
            return None
        with self._lock:
            invocation = self._runs.get(session_id)
            went_on = invocation is None and session_id in self._failed
            if went_on:
                del self._failed[session_id]  # warned once
        if went_on:
            log.warning("session %s ended as failed when an error left a model or tool call, but the agent went on "
                        "(a middleware listed before AtlasMiddleware handled the error); the rest of this invocation "
                        "is unsupervised: list AtlasMiddleware first", session_id)
        return invocation

    # ------------------------------------------------------------------------------------ wrap_model_call
    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]) -> Any:
        invocation = self._lookup(request.state)
        prepared = self._prepare(invocation, request)
        started = time.perf_counter()
        try:
            response = handler(prepared)
        except BaseException as exc:
            if self._ends_the_run(invocation, exc):
                self._model_failed(invocation, exc, started)
                self._abort(invocation, exc)
            raise
        self._model_done(invocation, prepared, response, started)
        return response

    async def awrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[ModelResponse]]) -> Any:
        invocation = self._lookup(request.state)
        prepared = self._prepare(invocation, request)
        started = time.perf_counter()
        try:
            response = await handler(prepared)
        except BaseException as exc:
            if self._ends_the_run(invocation, exc):
                self._model_failed(invocation, exc, started)
                await self._aabort(invocation, exc)
            raise
        self._model_done(invocation, prepared, response, started)
        return response

    def _prepare(self, invocation: _Invocation | None, request: ModelRequest) -> ModelRequest:
        """The request with the run's instructions appended to its system message (the state is untouched)."""
        if invocation is None:
            return request
        try:
            instructions = invocation.run.instructions
            if not instructions:
                return request
            return request.override(system_message=_append_system(request.system_message, instructions))
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not add its instructions to a model call")
            return request

    def _model_done(self, invocation: _Invocation | None, request: ModelRequest, response: Any, started: float) -> None:
        if invocation is None:
            return
        try:
            message = _response_message(response)
            input_tokens, output_tokens = usage_of(message) if message is not None else (0, 0)
            provider, model = _model_identity(request.model, message)
            system = request.system_message
            invocation.run.record_model_call(role="student", provider=provider, model=model, input_tokens=input_tokens,
                                             output_tokens=output_tokens, latency_ms=(time.perf_counter() - started) * 1000,
                                             output=model_turn_of(message), system=message_text(system) if system is not None else "",
                                             tools=tool_schemas(request.tools) or [])
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not record a model call")

    @staticmethod
    def _model_failed(invocation: _Invocation, exc: BaseException, started: float) -> None:
        try:
            invocation.run.record_failed_model_call(exc, metadata={"latency_ms": (time.perf_counter() - started) * 1000})
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not record a failed model call")

    # ------------------------------------------------------------------------------------- wrap_tool_call
    def wrap_tool_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        invocation = self._lookup(request.state)
        started = utcnow()
        try:
            result = handler(request)
        except BaseException as exc:
            if self._ends_the_run(invocation, exc):
                self._tool_failed(invocation, request, exc, started)
                self._abort(invocation, exc)
            raise
        step_id = self._tool_done(invocation, request, result, started)
        if step_id is not None and invocation is not None:
            try:
                invocation.run.tool_call_done(step_id)
            except GraphBubbleUp:
                raise
            except Exception:  # noqa: BLE001
                log.exception("Atlas could not report a tool call")
        return result

    async def awrap_tool_call(self, request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        invocation = self._lookup(request.state)
        started = utcnow()
        try:
            result = await handler(request)
        except BaseException as exc:
            if self._ends_the_run(invocation, exc):
                self._tool_failed(invocation, request, exc, started)
                await self._aabort(invocation, exc)
            raise
        step_id = self._tool_done(invocation, request, result, started)
        if step_id is not None and invocation is not None:
            try:
                await invocation.run.atool_call_done(step_id)
            except GraphBubbleUp:
                raise
            except Exception:  # noqa: BLE001
                log.exception("Atlas could not report a tool call")
        return result

    @staticmethod
    def _tool_done(invocation: _Invocation | None, request: Any, result: Any, started: Any) -> str | None:
        if invocation is None:
            return None
        try:
            call = request.tool_call
            output, error = _tool_output(result, call.get("id"))
            return invocation.run.record_step(kind="tool_call", tool_name=call.get("name"), tool_args=call.get("args"),
                                              output=output, error=error, started_at=started, ended_at=utcnow(),
                                              metadata={"tool_call_id": call.get("id")})
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not record a tool call")
            return None

    @staticmethod
    def _tool_failed(invocation: _Invocation, request: Any, exc: BaseException, started: Any) -> None:
        try:
            call = request.tool_call
            invocation.run.record_step(kind="tool_call", tool_name=call.get("name"), tool_args=call.get("args"),
                                       error=f"{type(exc).__name__}: {exc}", started_at=started, ended_at=utcnow(),
                                       metadata={"tool_call_id": call.get("id")})
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not record a failed tool call")

    # ------------------------------------------------------------------------------------------ failures
    def _ends_the_run(self, invocation: _Invocation | None, exc: BaseException) -> bool:
        """Whether an exception leaving a model or tool call ends a supervised run: not the framework's control
        flow (interrupts, commands), which the graph resumes from."""
        return invocation is not None and not (is_control_flow(exc) or isinstance(exc, self.supervisor.control_flow))

    def _release(self, invocation: _Invocation) -> bool:
        """Take the invocation out of the runs in progress; False when it already was (it ends once)."""
        session_id = invocation.run.session_id
        with self._lock:
            if self._runs.get(session_id) is not invocation:
                return False
            del self._runs[session_id]
            return True

    def _abort(self, invocation: _Invocation, exc: BaseException) -> None:
        """The agent raised: the session ends as failed (cancelled for a cancellation); the error propagates."""
        if not self._release(invocation):
            return
        try:
            run = invocation.run
            pending = run.cancelled() if isinstance(exc, asyncio.CancelledError) else run.failed(exc)
            self._failed_session(invocation, pending)
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not end session %s as failed", invocation.run.session_id)

    async def _aabort(self, invocation: _Invocation, exc: BaseException) -> None:
        if not self._release(invocation):
            return
        try:
            run = invocation.run
            pending = await (run.acancelled() if isinstance(exc, asyncio.CancelledError) else run.afailed(exc))
            self._failed_session(invocation, pending)
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not end session %s as failed", invocation.run.session_id)

    def _failed_session(self, invocation: _Invocation, pending: PendingSession) -> None:
        self._store_result(invocation, pending)
        with self._lock:
            self._failed[pending.session_id] = None
            while len(self._failed) > _MAX_FAILED:
                self._failed.popitem(last=False)

    # --------------------------------------------------------------------------------------- after_model
    @hook_config(can_jump_to=["model"])
    def after_model(self, state: AtlasAgentState, runtime: Any) -> dict[str, Any] | None:
        invocation, answer = self._to_report(state, final_message_only=True)
        if invocation is None or answer is None:
            return None
        try:
            decision = invocation.run.final_answer(answer.text)
        except GraphBubbleUp:
            raise
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not report the answer; it stands unverified")
            return None
        return _applied(invocation, answer, decision)

    @hook_config(can_jump_to=["model"])
    async def aafter_model(self, state: AtlasAgentState, runtime: Any) -> dict[str, Any] | None:
        invocation, answer = self._to_report(state, final_message_only=True)
        if invocation is None or answer is None:
            return None
        try:
            decision = await invocation.run.afinal_answer(answer.text)
        except GraphBubbleUp:
            raise
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not report the answer; it stands unverified")
            return None
        return _applied(invocation, answer, decision)

    def _to_report(self, state: Any, *, final_message_only: bool) -> tuple[_Invocation | None, _Answer | None]:
        """The invocation and its answer in ``state`` when that answer is still to be reported (it is then marked
        reported: an answer is reported once, even when reporting it fails). Nothing for an answer the core
        delivered. ``final_message_only``: only an AI message without tool calls (the model hook's case)."""
        invocation = self._lookup(state)
        if invocation is None or invocation.delivered is not None:
            return invocation, None
        try:
            answer = _answer_in(state, final_message_only=final_message_only)
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not read the agent's answer")
            return invocation, None
        if answer is None or answer.key == invocation.reported:
            return invocation, None
        invocation.reported = answer.key
        return invocation, answer

    # --------------------------------------------------------------------------------------- after_agent
    @hook_config(can_jump_to=["model"])
    def after_agent(self, state: AtlasAgentState, runtime: Any) -> dict[str, Any] | None:
        invocation, answer = self._to_report(state, final_message_only=False)
        if invocation is None:
            return None
        if answer is not None:
            try:
                update = _applied(invocation, answer, invocation.run.final_answer(answer.text))
                if update is not None:
                    return update
            except GraphBubbleUp:
                raise
            except Exception:  # noqa: BLE001
                log.exception("Atlas could not report the answer; it stands unverified")
        if self._release(invocation):
            try:
                self._store_result(invocation, invocation.run.end(self._final_text(invocation, state)))
            except Exception:  # noqa: BLE001
                log.exception("Atlas could not end session %s", invocation.run.session_id)
        return {SESSION_KEY: None}

    @hook_config(can_jump_to=["model"])
    async def aafter_agent(self, state: AtlasAgentState, runtime: Any) -> dict[str, Any] | None:
        invocation, answer = self._to_report(state, final_message_only=False)
        if invocation is None:
            return None
        if answer is not None:
            try:
                update = _applied(invocation, answer, await invocation.run.afinal_answer(answer.text))
                if update is not None:
                    return update
            except GraphBubbleUp:
                raise
            except Exception:  # noqa: BLE001
                log.exception("Atlas could not report the answer; it stands unverified")
        if self._release(invocation):
            try:
                self._store_result(invocation, await invocation.run.aend(self._final_text(invocation, state)))
            except Exception:  # noqa: BLE001
                log.exception("Atlas could not end session %s", invocation.run.session_id)
        return {SESSION_KEY: None}

    @staticmethod
    def _final_text(invocation: _Invocation, state: Any) -> str | None:
        """The answer the session ends with: the one delivered, else the agent's (None: the core's last attempt)."""
        if invocation.delivered is not None:
            return invocation.delivered
        try:
            answer = _answer_in(state, final_message_only=False)
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not read the agent's answer")
            return None
        return answer.text if answer is not None else None

    def _store_result(self, invocation: _Invocation, result: PendingSession) -> None:
        with self._lock:
            self.last_result = result
            if invocation.thread_id is not None:
                self._by_thread[invocation.thread_id] = result
                self._by_thread.move_to_end(invocation.thread_id)
                while len(self._by_thread) > MAX_THREAD_RESULTS:
                    self._by_thread.popitem(last=False)


def _applied(invocation: _Invocation, answer: _Answer, decision: AnswerDecision) -> dict[str, Any] | None:
    """The state update that applies the core's decision on an answer: ``retry`` goes back to the model (the
    rejected draft leaves the conversation, the guidance is in the next call's instructions); otherwise none."""
    run = invocation.run
    if decision.action != "retry":
        if decision.action == "stand":
            log.info("session %s: the answer stands though rejected (%s)", run.session_id, decision.reason or decision.verdict.reason)
        return None
    log.info("session %s: answer rejected (%s); back to the model with guidance", run.session_id, decision.verdict.reason)
    update: dict[str, Any] = {"jump_to": "model"}
    if answer.draft_id:
        # The model retries from the same messages, with the guidance in its system message (a trailing AI
        # message is refused by some providers).
        update["messages"] = [RemoveMessage(id=answer.draft_id)]
    return update


def _answer_in(state: Any, *, final_message_only: bool) -> _Answer | None:
    """The agent's answer in a state: a last AI message without tool calls; otherwise (``final_message_only``
    False) the structured response, a last tool message (``return_direct``), or the last AI text."""
    messages = state_get(state, "messages") or []
    last = messages[-1] if messages else None
    if isinstance(last, AIMessage) and not last.tool_calls:
        text = message_text(last)
        return _Answer(last.id or text, text, last.id)
    if final_message_only:
        return None
    key = getattr(last, "id", None)
    structured = state_get(state, "structured_response")
    if structured is not None:
        text = as_text(structured)
    elif isinstance(last, ToolMessage):
        text = message_text(last)
    elif messages:
        text = last_text(messages, "ai")
    else:
        return None
    return _Answer(key or text, text)


# ------------------------------------------------------------------------------------------------ helpers
def _task_of(state: Any) -> str:
    messages = state_get(state, "messages") or []
    task = last_text(messages, "human")
    if not task and messages:
        task = message_text(messages[-1])
    return task


def _thread_id(runtime: Any) -> str | None:
    """The invocation's thread id: LangGraph's execution info, else the config's ``configurable.thread_id``."""
    info = getattr(runtime, "execution_info", None)
    thread_id = getattr(info, "thread_id", None)
    if thread_id is None:
        thread_id = current_configurable().get("thread_id")
    return None if thread_id is None else str(thread_id)


def _append_system(system: SystemMessage | None, text: str) -> SystemMessage:
    """The system message with ``text`` appended (a new message; the original and the state are untouched)."""
    if system is None:
        return SystemMessage(content=text, id=INSTRUCTIONS_ID)
    content = system.content
    if isinstance(content, str):
        merged: Any = f"{content}\n\n{text}" if content else text
    else:
        merged = [*content, {"type": "text", "text": f"\n\n{text}"}]
    return system.model_copy(update={"content": merged})


def _response_message(response: Any) -> AIMessage | None:
    """The AI message of a model call's result (ModelResponse, ExtendedModelResponse or AIMessage)."""
    if isinstance(response, ExtendedModelResponse):
        response = response.model_response
    if isinstance(response, AIMessage):
        return response
    for message in reversed(getattr(response, "result", None) or []):
        if isinstance(message, AIMessage):
            return message
    return None


def _model_identity(model: Any, message: AIMessage | None) -> tuple[str, str]:
    """(provider, model name) from the chat model's LangSmith params, else its fields or the response metadata."""
    params: dict[str, Any] = {}
    try:
        params = dict(model._get_ls_params())
    except Exception:  # noqa: BLE001 - not a BaseChatModel, or one that cannot tell
        params = {}
    if not params.get("ls_model_name") and message is not None and message.response_metadata.get("model_name"):
        params["ls_model_name"] = message.response_metadata["model_name"]
    serialized = {"kwargs": {"model_name": getattr(model, "model_name", None), "model": getattr(model, "model", None)},
                  "name": type(model).__name__}
    return model_name_of(params, serialized)


def _tool_output(result: Any, tool_call_id: str | None) -> tuple[Any, str | None]:
    """(output text, error) of a tool call's result: a ToolMessage, or a Command whose update carries one."""
    message = result if isinstance(result, ToolMessage) else None
    if message is None:
        update = getattr(result, "update", None)
        messages = state_get(update, "messages") if update is not None else None
        for candidate in messages or ():
            if isinstance(candidate, ToolMessage) and (tool_call_id is None or candidate.tool_call_id == tool_call_id):
                message = candidate
        if message is None:
            return to_jsonable(update if update is not None else result), None
    text = message_text(message)
    return text, (text or "tool error") if message.status == "error" else None
