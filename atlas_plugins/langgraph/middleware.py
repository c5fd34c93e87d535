"""``AtlasMiddleware``: Atlas supervision for LangChain v1 ``create_agent`` agents.

>>> from langchain.agents import create_agent
>>> from atlas_plugins.langgraph.middleware import AtlasMiddleware
>>> atlas = AtlasMiddleware("atlas.yaml", agent_name="file-agent")
>>> agent = create_agent(model, tools=[read_file], middleware=[atlas])
>>> agent.invoke({"messages": [("user", "Count the items in notes/todo.txt")]})
>>> atlas.last_result.summary()

The middleware only translates the agent's events into :class:`~atlas_learning.supervisor.SupervisedRun` calls and
applies what the core decided; it decides nothing itself. Per invocation:

- ``before_agent``: begin the session (task: the last human message; the invocation's ``configurable`` may set
  ``atlas_task_family``, ``atlas_learning_key``, ``atlas_metadata`` and ``atlas_checks``, as for ``with_atlas``).
  Coach: the teacher reviews the (empty) plan so its plan and concerns reach the instructions. Escalate: the
  teacher (or human) answers and the agent jumps to its end with that answer; if neither could answer, the student
  works as usual.
- ``wrap_model_call``: ``run.instructions`` (lessons, plan, concerns, guidance) is appended to the request's system
  message (never written to state); the call is recorded as a student step.
- ``wrap_tool_call``: the tool call is recorded as a step; in coach the teacher validates it (its guidance goes
  into the next model call).
- ``after_model``: in paired and coach a final answer (an AI message without tool calls) is validated; rejected with
  retries left, the rejected answer is removed from the state and the agent jumps back to the model, whose next
  request carries the guidance and the rejected answer in its system message.
- ``after_agent``: finish the session with the final answer: :attr:`AtlasMiddleware.last_result`,
  :meth:`AtlasMiddleware.result_for`.

Each invocation is keyed by its session id, kept in a private state field (``atlas_session``: out of the agent's
input and output schemas) that every hook reads from the state it is given, so concurrent invocations on one
middleware never mix sessions. An unexpected exception in Atlas code is logged and the agent goes on unsupervised.
"""

from __future__ import annotations

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

from atlas_learning.config import AtlasConfig
from atlas_learning.judges import Check
from atlas_learning.store import utcnow
from atlas_learning.supervisor import SessionResult, SupervisedRun, Supervisor

from ._messages import INSTRUCTIONS_ID, last_text, message_text, model_name_of, state_get, to_jsonable, usage_of
from ._options import begin_options, current_configurable

__all__ = ["AtlasMiddleware", "AtlasAgentState", "SESSION_KEY"]

log = logging.getLogger("atlas_plugins.langgraph.middleware")

#: The private state field that holds the invocation's session id.
SESSION_KEY = "atlas_session"
#: How many per-thread results :meth:`AtlasMiddleware.result_for` keeps (oldest dropped first).
MAX_THREAD_RESULTS = 1024
_VALIDATING_LANES = ("paired", "coach")


class AtlasAgentState(AgentState[Any]):
    """The agent state plus the invocation's Atlas session id (private: not in the input or output schema)."""

    atlas_session: NotRequired[Annotated[str | None, PrivateStateAttr]]


@dataclass
class _Invocation:
    """One agent invocation under supervision."""

    run: SupervisedRun
    thread_id: str | None
    #: The answer the teacher rejected, shown to the model with the guidance on its next call.
    rejected_answer: str | None = None


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
        # Checks given with a ready supervisor go to each session; otherwise the supervisor already has them.
        self._session_checks = tuple(checks) if supervisor is not None else ()
        self.learning_key = learning_key
        self.agent_name = agent_name
        #: The result of the last invocation that finished (any thread).
        self.last_result: SessionResult | None = None
        self._lock = threading.Lock()
        self._runs: dict[str, _Invocation] = {}
        self._by_thread: OrderedDict[str, SessionResult] = OrderedDict()
        # Escalations interrupted (a LangGraph ``interrupt`` in the human callback), by thread, to resume.
        self._suspended: dict[str, SupervisedRun] = {}

    def close(self) -> None:
        """Close the supervisor this middleware built (flush the recorder, release models); a supervisor that was
        passed in is left to its owner."""
        if self._owns_supervisor:
            self.supervisor.close()

    # ------------------------------------------------------------------------------------------ results
    def result_for(self, config: Mapping[str, Any] | str) -> SessionResult | None:
        """The last finished session of a thread: pass the invocation's config (``configurable.thread_id``) or
        the thread id itself. None when that thread has no finished session here."""
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
            run, thread_id, resumed = self._start(state, runtime)
            if run is None:
                run = self.supervisor.begin(**self._begin_args(state, thread_id))
            update: dict[str, Any] = {SESSION_KEY: run.session_id}
            if not resumed and run.lane == "coach":
                run.review_plan([])
            if run.lane == "escalate":
                try:
                    answer = run.escalate()
                except GraphBubbleUp:
                    self._suspend(thread_id, run)
                    raise
                update.update(self._escalated(run, answer))
            self._register(run, thread_id)
            return update
        except GraphBubbleUp:
            raise
        except Exception:  # noqa: BLE001 - supervision must never fail the agent
            log.exception("Atlas could not begin a session; this invocation runs unsupervised")
            return {SESSION_KEY: None}

    @hook_config(can_jump_to=["end"])
    async def abefore_agent(self, state: AtlasAgentState, runtime: Any) -> dict[str, Any] | None:
        try:
            run, thread_id, resumed = self._start(state, runtime)
            if run is None:
                run = await self.supervisor.abegin(**self._begin_args(state, thread_id))
            update: dict[str, Any] = {SESSION_KEY: run.session_id}
            if not resumed and run.lane == "coach":
                await run.areview_plan([])
            if run.lane == "escalate":
                try:
                    answer = await run.aescalate()
                except GraphBubbleUp:
                    self._suspend(thread_id, run)
                    raise
                update.update(self._escalated(run, answer))
            self._register(run, thread_id)
            return update
        except GraphBubbleUp:
            raise
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not begin a session; this invocation runs unsupervised")
            return {SESSION_KEY: None}

    def _start(self, state: Any, runtime: Any) -> tuple[SupervisedRun | None, str | None, bool]:
        """(a suspended run of this thread to resume, the thread id, whether it was resumed)."""
        thread_id = _thread_id(runtime)
        if thread_id is None:
            return None, None, False
        with self._lock:
            suspended = self._suspended.pop(thread_id, None)
        if suspended is not None and suspended.task == _task_of(state):
            return suspended, thread_id, True
        return None, thread_id, False

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

    @staticmethod
    def _escalated(run: SupervisedRun, answer: str | None) -> dict[str, Any]:
        """The escalation's answer ends the agent; without one the student works as usual."""
        if answer is None:
            log.warning("session %s: escalation produced no answer; the student works unsupervised by the teacher",
                        run.session_id)
            return {}
        message = AIMessage(content=answer, response_metadata={"atlas": {"escalated": True, "session_id": run.session_id}})
        return {"messages": [message], "jump_to": "end"}

    def _register(self, run: SupervisedRun, thread_id: str | None) -> None:
        with self._lock:
            self._runs[run.session_id] = _Invocation(run, thread_id)

    def _lookup(self, state: Any) -> _Invocation | None:
        try:
            session_id = state_get(state, SESSION_KEY)
        except Exception:  # noqa: BLE001
            return None
        if not session_id:
            return None
        with self._lock:
            return self._runs.get(session_id)

    # ------------------------------------------------------------------------------------ wrap_model_call
    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]) -> Any:
        invocation = self._lookup(request.state)
        prepared, injected = self._prepare(invocation, request)
        started = time.perf_counter()
        try:
            response = handler(prepared)
        except Exception as exc:
            self._model_failed(invocation, exc, started)
            raise
        self._model_done(invocation, prepared, response, started, injected)
        return response

    async def awrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[ModelResponse]]) -> Any:
        invocation = self._lookup(request.state)
        prepared, injected = self._prepare(invocation, request)
        started = time.perf_counter()
        try:
            response = await handler(prepared)
        except Exception as exc:
            self._model_failed(invocation, exc, started)
            raise
        self._model_done(invocation, prepared, response, started, injected)
        return response

    def _prepare(self, invocation: _Invocation | None, request: ModelRequest) -> tuple[ModelRequest, bool]:
        """The request with the run's instructions appended to its system message; (request, injected)."""
        if invocation is None:
            return request, False
        try:
            parts = []
            if invocation.rejected_answer is not None:
                parts.append("Your previous answer was rejected by the teacher:\n" + invocation.rejected_answer)
            instructions = invocation.run.instructions
            if instructions:
                parts.append(instructions)
            if not parts:
                return request, False
            return request.override(system_message=_append_system(request.system_message, "\n\n".join(parts))), True
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not add its instructions to a model call")
            return request, False

    def _model_done(self, invocation: _Invocation | None, request: ModelRequest, response: Any, started: float,
                    injected: bool) -> None:
        if invocation is None:
            return
        try:
            if injected:  # what was shown is consumed only once the call succeeded
                invocation.run.take_guidance()
                invocation.rejected_answer = None
            message = _response_message(response)
            input_tokens, output_tokens = usage_of(message) if message is not None else (0, 0)
            provider, model = _model_identity(request.model, message)
            invocation.run.record_model_call(role="student", provider=provider, model=model, input_tokens=input_tokens,
                                             output_tokens=output_tokens, latency_ms=(time.perf_counter() - started) * 1000,
                                             output=_model_output(message))
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not record a model call")

    def _model_failed(self, invocation: _Invocation | None, exc: Exception, started: float) -> None:
        if invocation is None or isinstance(exc, GraphBubbleUp):
            return
        try:
            invocation.run.record_step(kind="model_call", name="model", error=f"{type(exc).__name__}: {exc}",
                                       metadata={"latency_ms": (time.perf_counter() - started) * 1000})
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not record a failed model call")

    # ------------------------------------------------------------------------------------- wrap_tool_call
    def wrap_tool_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        invocation = self._lookup(request.state)
        started = utcnow()
        try:
            result = handler(request)
        except Exception as exc:
            self._tool_failed(invocation, request, exc, started)
            raise
        step_id = self._tool_done(invocation, request, result, started)
        if step_id is not None and invocation is not None and invocation.run.lane == "coach":
            try:
                invocation.run.validate_step(step_id)
            except GraphBubbleUp:
                raise
            except Exception:  # noqa: BLE001
                log.exception("Atlas could not validate a tool call")
        return result

    async def awrap_tool_call(self, request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        invocation = self._lookup(request.state)
        started = utcnow()
        try:
            result = await handler(request)
        except Exception as exc:
            self._tool_failed(invocation, request, exc, started)
            raise
        step_id = self._tool_done(invocation, request, result, started)
        if step_id is not None and invocation is not None and invocation.run.lane == "coach":
            try:
                await invocation.run.avalidate_step(step_id)
            except GraphBubbleUp:
                raise
            except Exception:  # noqa: BLE001
                log.exception("Atlas could not validate a tool call")
        return result

    def _tool_done(self, invocation: _Invocation | None, request: Any, result: Any, started: Any) -> str | None:
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

    def _tool_failed(self, invocation: _Invocation | None, request: Any, exc: Exception, started: Any) -> None:
        if invocation is None or isinstance(exc, GraphBubbleUp):
            return
        try:
            call = request.tool_call
            invocation.run.record_step(kind="tool_call", tool_name=call.get("name"), tool_args=call.get("args"),
                                       error=f"{type(exc).__name__}: {exc}", started_at=started, ended_at=utcnow(),
                                       metadata={"tool_call_id": call.get("id")})
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not record a failed tool call")

    # --------------------------------------------------------------------------------------- after_model
    @hook_config(can_jump_to=["model"])
    def after_model(self, state: AtlasAgentState, runtime: Any) -> dict[str, Any] | None:
        try:
            invocation, answer = self._final_answer(state)
            if invocation is None or answer is None:
                return None
            verdict = invocation.run.validate_answer(answer)
            return self._apply_verdict(invocation, state, answer, verdict)
        except GraphBubbleUp:
            raise
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not validate the answer; it stands unverified")
            return None

    @hook_config(can_jump_to=["model"])
    async def aafter_model(self, state: AtlasAgentState, runtime: Any) -> dict[str, Any] | None:
        try:
            invocation, answer = self._final_answer(state)
            if invocation is None or answer is None:
                return None
            verdict = await invocation.run.avalidate_answer(answer)
            return self._apply_verdict(invocation, state, answer, verdict)
        except GraphBubbleUp:
            raise
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not validate the answer; it stands unverified")
            return None

    def _final_answer(self, state: Any) -> tuple[_Invocation | None, str | None]:
        """The invocation and the answer to validate: the last message, an AI message without tool calls, in a
        lane where the teacher validates answers."""
        invocation = self._lookup(state)
        if invocation is None or invocation.run.lane not in _VALIDATING_LANES:
            return None, None
        messages = state_get(state, "messages") or []
        last = messages[-1] if messages else None
        if not isinstance(last, AIMessage) or last.tool_calls:
            return None, None
        return invocation, message_text(last)

    @staticmethod
    def _apply_verdict(invocation: _Invocation, state: Any, answer: str, verdict: Any) -> dict[str, Any] | None:
        run = invocation.run
        if verdict.accepted is not False:
            return None
        if not run.can_retry:
            log.info("session %s: answer rejected (%s); no retries left, it stands", run.session_id, verdict.reason)
            return None
        log.info("session %s: answer rejected (%s); back to the model with guidance", run.session_id, verdict.reason)
        invocation.rejected_answer = answer
        update: dict[str, Any] = {"jump_to": "model"}
        last = (state_get(state, "messages") or [None])[-1]
        if getattr(last, "id", None):
            # The rejected draft leaves the conversation: the model retries from the same messages, with the
            # draft and the guidance in its system message (a trailing AI message is refused by some providers).
            update["messages"] = [RemoveMessage(id=last.id)]
        return update

    # --------------------------------------------------------------------------------------- after_agent
    def after_agent(self, state: AtlasAgentState, runtime: Any) -> dict[str, Any] | None:
        invocation = self._end(state)
        if invocation is None:
            return None
        try:
            self._store_result(invocation, invocation.run.finish(last_text(state_get(state, "messages") or [], "ai")))
        except GraphBubbleUp:
            raise
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not finish session %s", invocation.run.session_id)
        return {SESSION_KEY: None}

    async def aafter_agent(self, state: AtlasAgentState, runtime: Any) -> dict[str, Any] | None:
        invocation = self._end(state)
        if invocation is None:
            return None
        try:
            result = await invocation.run.afinish(last_text(state_get(state, "messages") or [], "ai"))
            self._store_result(invocation, result)
        except GraphBubbleUp:
            raise
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not finish session %s", invocation.run.session_id)
        return {SESSION_KEY: None}

    def _end(self, state: Any) -> _Invocation | None:
        """The invocation, removed from the runs in progress."""
        try:
            session_id = state_get(state, SESSION_KEY)
        except Exception:  # noqa: BLE001
            return None
        if not session_id:
            return None
        with self._lock:
            return self._runs.pop(session_id, None)

    def _store_result(self, invocation: _Invocation, result: SessionResult) -> None:
        with self._lock:
            self.last_result = result
            if invocation.thread_id is not None:
                self._by_thread[invocation.thread_id] = result
                self._by_thread.move_to_end(invocation.thread_id)
                while len(self._by_thread) > MAX_THREAD_RESULTS:
                    self._by_thread.popitem(last=False)


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


def _model_output(message: AIMessage | None) -> Any:
    if message is None:
        return None
    text = message_text(message)
    if not message.tool_calls:
        return text
    return {"content": text, "tool_calls": to_jsonable(message)["tool_calls"]}


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
