"""``with_atlas(agent)``: an OpenAI Agents SDK agent under Atlas supervision, run like ``agents.Runner``.

>>> runner = with_atlas(agent, "atlas.yaml", learning_key="support")
>>> result = await runner.run("Where is my order A1?")        # the SDK's own RunResult, returned before judging
>>> runner.session_result().reward                             # the PendingSession: reading a field waits for it

The adapter only translates the SDK's events into the :class:`~atlas_learning.supervisor.SupervisedRun` protocol
and applies the core's answers; it decides nothing by lane. Per run:

* the session begins with the run's input text as the task (``abegin``) and ``astart`` is reported before the
  agent runs (in coach the core reviews the empty plan). When the core hands back an answer (escalate),
  ``run`` / ``run_sync`` deliver it: the agent is run once on a model that returns that answer, so the caller still
  gets a ``RunResult`` (the agent's guardrails and output type apply to it; a tripwire is raised as usual). A
  streamed run starts inside the SDK's run loop, when it is too late to answer in the agent's place: it reports
  ``can_take_answer=False`` and the agent runs;
* ``RunConfig.call_model_input_filter`` appends ``run.instructions`` (lessons, plan, concerns, pending guidance: the
  core's one rendering) to every model call of the run, after the user's own filter; the input items are never
  touched. Model calls made while one of the run's tool calls executes (an agent used through ``Agent.as_tool``)
  belong to that tool: they get the user's filter only;
* ``RunHooks`` record every model call (tokens from ``ModelResponse.usage``, the agent's name in the step), every
  tool call (name, arguments from ``ToolContext.tool_arguments``, output) and every handoff as steps; every tool
  step is reported with ``atool_call_done`` (the core validates it in coach; its guidance is then in the
  instructions of the next model call). The model calls of agents run as tools are recorded as nested steps
  (``metadata["nested"]``, the sub-agent's name, the tool call it ran in), through a delegating default
  ``AgentRunner`` that gives those nested runs Atlas's hooks (see :class:`_NestingRunner`);
* every final output is reported with ``afinal_answer``; ``retry`` repeats the run from the same input (the
  guidance is in ``run.instructions`` for every model call of the retry), ``accept`` / ``stand`` keep it. A
  streamed run cannot be repeated into the caller's stream: its answer is reported and stands;
* :class:`~._tracing.AtlasTraceProcessor` stores the run's trace spans as trajectory events of the session
  (mapped through ``RunConfig.trace_metadata``);
* the session ends with ``aend`` (returns at once; judges, learning and storage run in the background). The
  :class:`~atlas_learning.background.PendingSession` is ``result.atlas_session`` and ``runner.session_result()``;
  reading a SessionResult field on it waits for the background finish.

Supervision never fails the user's run: an error in Atlas code is logged and the run goes on unsupervised. An
error raised by the agent itself (its model, its tools, a guardrail tripwire, streamed or not) ends the session as
failed and is re-raised unchanged; a cancelled run ends it as cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import threading
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from agents import Agent, RunConfig, RunHooks, Runner
from agents.exceptions import ModelBehaviorError
from agents.lifecycle import RunHooksBase
from agents.run_config import CallModelData, ModelInputData

from atlas_learning.background import PendingSession
from atlas_learning.config import AtlasConfig
from atlas_learning.judges import Check
from atlas_learning.store import utcnow
from atlas_learning.supervisor import AnswerDecision, HumanCallback, SupervisedRun, Supervisor

from ._items import answer_text, clip, parse_arguments, task_text, to_jsonable
from ._model import AnswerModel
from ._tracing import RUN_KEY, SESSION_KEY, current_run, install_trace_processor

__all__ = ["with_atlas", "AtlasRunner", "RESULT_ATTRIBUTE"]

log = logging.getLogger("atlas_plugins.openai_agents")

#: The attribute every supervised ``RunResult`` / ``RunResultStreaming`` gets: its session's ``PendingSession``.
RESULT_ATTRIBUTE = "atlas_session"
#: The attribute Atlas's input filter carries: the session whose run config it is (nested runs are found by it).
_FILTER_SESSION = "atlas_session"

#: Sessions whose runs are going on, by the adapter's key (for runs nested in their tool calls).
_live: dict[str, _Session] = {}
_live_lock = threading.Lock()


class _Session:
    """One supervised run (every attempt of it): the SupervisedRun and what the adapter remembers about it."""

    def __init__(self, runner: AtlasRunner, task: str, *, streamed: bool = False, managed: bool = True,
                 metadata: Mapping[str, Any] | None = None, task_family: str | None = None,
                 learning_key: str | None = None) -> None:
        self.runner = runner
        self.task = task
        #: What the caller said about this run's session, passed through to ``begin`` (the core resolves the rest).
        self.task_family = task_family
        self.learning_key = learning_key
        #: The adapter's key for this run: in its trace metadata, and in the tables of sessions.
        self.key = uuid.uuid4().hex
        self.streamed = streamed
        #: Managed by AtlasRunner.run/run_streamed (answers reported, retried, ended there); else by the caller.
        self.managed = managed
        self.metadata = dict(metadata or {})
        self.run: SupervisedRun | None = None
        #: Atlas failed somewhere: the rest of this run goes on unsupervised.
        self.broken = False
        self.began = False
        #: What the core's start handed back in place of the agent's work (escalate), to deliver.
        self.start_answer: str | None = None
        #: The run is the start answer being delivered: nothing to record or inject.
        self.delivering = False
        self.final_output: Any = None
        self.has_output = False
        self.sdk_result: Any = None
        self.result: PendingSession | None = None
        #: ``RunConfig.model`` of the run, which overrides every agent's model (for the recorded model name).
        self.config_model: Any = None
        self._llm_started: dict[Any, float] = {}
        #: The run's own tool calls executing now, by call id (with their start time): model calls made meanwhile
        #: are a nested run's (an agent used as a tool), never the run's own.
        self._tools_started: dict[str, float] = {}
        #: Agent name -> the system prompt (instructions) its last model call was sent, Atlas's included.
        self._sent_instructions: dict[str, str] = {}
        self._lock: asyncio.Lock | None = None

    # ------------------------------------------------------------------------------------------ begin
    @property
    def can_take_answer(self) -> bool:
        """Whether this run can deliver the core's answer in place of the agent's: only runs the runner starts
        after the session began (``run`` / ``run_sync``); a streamed run has started by then, and a caller's own
        run is the caller's."""
        return self.managed and not self.streamed

    async def ensure(self) -> SupervisedRun | None:
        """The session's run, begun and started on first need (before the run, or in the first hook of a streamed
        run)."""
        if self.began or self.broken:
            return self.run
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.began or self.broken:
                return self.run
            try:
                run = await self.runner.supervisor.abegin(self.task, **self._begin_kwargs())
            except Exception:  # noqa: BLE001 - supervision must never fail the user's run
                log.exception("Atlas could not begin a session; this run goes on unsupervised")
                self.broken = True
                return None
            self.run = run
            self.began = True
            self._watch(run)
            try:
                started = await run.astart(can_take_answer=self.can_take_answer)
                self.start_answer = started.answer
            except Exception:  # noqa: BLE001
                log.exception("Atlas could not start session %s; the agent runs", run.session_id)
            return self.run

    def begin_sync(self) -> SupervisedRun | None:
        """Sync twin of :meth:`ensure` for the caller-managed helpers."""
        if self.began or self.broken:
            return self.run
        try:
            run = self.runner.supervisor.begin(self.task, **self._begin_kwargs())
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not begin a session; this run goes on unsupervised")
            self.broken = True
            return None
        self.run = run
        self.began = True
        self._watch(run)
        try:
            run.start(can_take_answer=self.can_take_answer)
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not start session %s; the agent runs", run.session_id)
        return self.run

    def _begin_kwargs(self) -> dict[str, Any]:
        """``Supervisor.begin``'s arguments besides the task: the runner's own, with this run's per-call options."""
        runner = self.runner
        return {"agent_name": runner.agent_name, "learning_key": self.learning_key or runner.learning_key,
                "task_family": self.task_family,
                "metadata": {"framework": "openai-agents", "adapter": "with_atlas", "agent": runner.agent.name, **self.metadata},
                "checks": runner._session_checks}

    def _watch(self, run: SupervisedRun) -> None:
        try:
            install_trace_processor().watch(self.key, run)
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not register its trace processor; spans are not stored")
        with self.runner._lock:
            self.runner._sessions[self.key] = self
        with _live_lock:
            _live[self.key] = self

    @property
    def active(self) -> SupervisedRun | None:
        """The run to record into now, or None (not begun, broken, ended, or delivering the start answer)."""
        run = self.run
        if run is None or self.broken or self.delivering or run.ended:
            return None
        return run

    @property
    def in_tool_call(self) -> bool:
        """Whether one of the run's own tool calls is executing (a model call now is a nested run's)."""
        return bool(self._tools_started)

    def new_attempt(self) -> None:
        """Forget what the last attempt left half-done (a retry starts from the input)."""
        self._llm_started.clear()
        self._tools_started.clear()
        self.final_output, self.has_output = None, False

    # ------------------------------------------------------------------------------------ instructions
    async def filter(self, data: CallModelData[Any], user_filter: Any = None) -> ModelInputData:
        """``call_model_input_filter``: the user's filter first, then the core's instructions appended (to the
        run's own model calls only: a call made inside one of its tool calls is a nested agent's)."""
        model_data = data.model_data
        if user_filter is not None:
            produced = user_filter(data)
            model_data = await produced if inspect.isawaitable(produced) else produced
        await self.ensure()
        try:
            run = self.active
            if run is None or self.in_tool_call or not isinstance(model_data, ModelInputData):
                return model_data
            extra = run.instructions
            base = model_data.instructions or ""
            self._sent_instructions[getattr(data.agent, "name", "")] = (f"{base}\n\n{extra}" if base else extra) if extra else base
            if not extra:
                return model_data
            return ModelInputData(input=model_data.input, instructions=f"{base}\n\n{extra}" if base else extra)
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not add its instructions to a model call")
            return model_data

    # ---------------------------------------------------------------------------------------- records
    def llm_started(self, agent: Any) -> None:
        self._llm_started[getattr(agent, "name", "")] = time.perf_counter()

    async def llm_ended(self, agent: Any, response: Any) -> None:
        started = self._llm_started.pop(getattr(agent, "name", ""), None)
        self._record_model_call(agent, response, started)

    def nested_llm_started(self, context: Any, agent: Any) -> None:
        self._llm_started[(id(context), getattr(agent, "name", ""))] = time.perf_counter()

    async def nested_llm_ended(self, context: Any, agent: Any, response: Any) -> None:
        """A model call of a run nested in one of this run's tool calls: a step of the session, marked nested."""
        started = self._llm_started.pop((id(context), getattr(agent, "name", "")), None)
        parent = getattr(context, "agent", None)
        self._record_model_call(agent, response, started, nested={
            "nested": True, "parent_agent": getattr(parent, "name", None),
            "tool_name": getattr(context, "tool_name", None), "tool_call_id": getattr(context, "tool_call_id", None)})

    def _record_model_call(self, agent: Any, response: Any, started: float | None, *,
                           nested: Mapping[str, Any] | None = None) -> None:
        run = self.active
        if run is None:
            return
        try:
            usage = getattr(response, "usage", None)
            input_tokens = int(getattr(usage, "input_tokens", 0) or 0)
            output_tokens = int(getattr(usage, "output_tokens", 0) or 0)
            provider, model = _model_identity(agent, self.config_model)
            latency_ms = (time.perf_counter() - started) * 1000 if started is not None else None
            run.record_model_call(role="student", provider=provider, model=model, input_tokens=input_tokens,
                                  output_tokens=output_tokens, latency_ms=latency_ms, as_step=False)
            ended = utcnow()
            name = getattr(agent, "name", "") or "agent"
            where = f" inside {nested.get('tool_name') or 'a tool call'}" if nested else ""
            run.record_step(kind="model_call", name=name, output=clip(_response_output(response), run.supervisor.redactor),
                            system=None if nested else self._sent_instructions.get(name), tools=None if nested else _tool_schemas(agent),
                            input_tokens=input_tokens, output_tokens=output_tokens,
                            started_at=ended - timedelta(milliseconds=latency_ms) if latency_ms is not None else None,
                            ended_at=ended, description=f"{name}{where} called {model}",
                            metadata={"agent": name, "provider": provider, "model": model,
                                      "response_id": getattr(response, "response_id", None), **(nested or {})})
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not record a model call")

    def tool_started(self, context: Any, tool: Any) -> None:
        self._tools_started[_call_key(context, tool)] = time.perf_counter()

    async def tool_ended(self, context: Any, agent: Any, tool: Any, result: Any) -> None:
        started = self._tools_started.pop(_call_key(context, tool), None)
        run = self.active
        if run is None:
            return
        step = None
        try:
            name = getattr(context, "tool_name", None) or getattr(tool, "name", None) or type(tool).__name__
            arguments = getattr(context, "tool_arguments", None)
            ended = utcnow()
            step = run.record_step(
                kind="tool_call", name=name, tool_name=name,
                tool_args=parse_arguments(arguments) if arguments is not None else None,
                output=_tool_output(result, run.supervisor.redactor), ended_at=ended,
                started_at=ended - timedelta(seconds=time.perf_counter() - started) if started is not None else None,
                metadata={"agent": getattr(agent, "name", None), "call_id": getattr(context, "tool_call_id", None)},
            )
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not record a tool call")
        if step is not None:
            try:
                await run.atool_call_done(step)  # validated where the core says so; guidance goes into the instructions
            except Exception:  # noqa: BLE001
                log.exception("Atlas could not report a tool call")

    def handoff(self, from_agent: Any, to_agent: Any) -> None:
        run = self.active
        if run is None:
            return
        try:
            source, target = getattr(from_agent, "name", "?"), getattr(to_agent, "name", "?")
            # the output is what the model's transfer call returned to it (the SDK's transfer message)
            run.record_step(kind="handoff", name=f"{source} -> {target}", input=source, output=_transfer_message(from_agent, to_agent),
                            description=f"{source} handed off to {target}",
                            metadata={"from_agent": source, "to_agent": target})
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not record a handoff")

    async def agent_ended(self, agent: Any, output: Any) -> None:
        self.final_output, self.has_output = output, True
        if self.streamed and self.managed and self.active is not None:
            # A streamed run cannot be repeated into the caller's stream: its answer is reported here, so the
            # stream waits for the verdict; the session ends when the run loop has ended (guardrails included).
            await self.answer(output, can_rerun=False)  # the core records why the answer stands

    # -------------------------------------------------------------------------------- answer / end
    async def answer(self, output: Any, *, can_rerun: bool = True) -> AnswerDecision | None:
        """Report a final output; the core's decision, or None when Atlas failed (the answer then stands)."""
        run = self.active
        if run is None:
            return None
        try:
            return await run.afinal_answer(answer_text(output), can_rerun=can_rerun)
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not report the answer; it stands unverified")
            return None

    async def end(self, output: Any = None, *, error: BaseException | str | None = None,
                  cancelled: bool = False) -> PendingSession | None:
        """End the session (once begun, even after a failure in Atlas code: it must not stay running); returns at
        once with the PendingSession (None when Atlas could not end it)."""
        run = self.run
        if run is None:
            return None
        try:
            if cancelled:
                pending = await run.acancelled()
            elif error is not None:
                pending = await run.afailed(error)
            else:
                pending = await run.aend(answer_text(output) if output is not None else None)
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not end session %s", run.session_id)
            pending = None
        self._done(pending)
        return pending

    def end_sync(self, output: Any = None, *, error: BaseException | str | None = None,
                 cancelled: bool = False) -> PendingSession | None:
        """Sync twin of :meth:`end` (``end`` returns at once too)."""
        run = self.run
        if run is None:
            return None
        try:
            if cancelled:
                pending = run.cancelled()
            elif error is not None:
                pending = run.failed(error)
            else:
                pending = run.end(answer_text(output) if output is not None else None)
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not end session %s", run.session_id)
            pending = None
        self._done(pending)
        return pending

    def _done(self, pending: PendingSession | None) -> None:
        self.result = pending
        with contextlib.suppress(Exception):
            install_trace_processor().forget(self.key)
        with self.runner._lock:
            self.runner._sessions.pop(self.key, None)
            if pending is not None:
                self.runner.last_session = pending
        with _live_lock:
            _live.pop(self.key, None)
        if pending is not None and self.sdk_result is not None:
            with contextlib.suppress(Exception):
                setattr(self.sdk_result, RESULT_ATTRIBUTE, pending)

    # ------------------------------------------------------------------------------------- run kwargs
    def run_kwargs(self, kwargs: Mapping[str, Any], *, model: Any = None) -> dict[str, Any]:
        """The caller's Runner keyword arguments with Atlas's hooks and run config merged in."""
        merged = dict(kwargs)
        user_hooks = kwargs.get("hooks")
        if user_hooks is None or isinstance(user_hooks, RunHooksBase):
            merged["hooks"] = _AtlasHooks(self, user_hooks)
        # else: not RunHooks (AgentHooks, say); left as given, so the SDK refuses it with its own TypeError
        merged["run_config"] = self.run_config(kwargs.get("run_config"), model=model)
        return merged

    def run_config(self, base: RunConfig | Mapping[str, Any] | None, *, model: Any = None) -> RunConfig | dict[str, Any]:
        """The caller's run config (a RunConfig, a dict or None) with Atlas's input filter and trace metadata.

        None and dicts stay dicts, so the SDK still owns (and closes) the model provider it creates."""
        user_filter = base.get("call_model_input_filter") if isinstance(base, Mapping) else getattr(base, "call_model_input_filter", None)
        trace_metadata = base.get("trace_metadata") if isinstance(base, Mapping) else getattr(base, "trace_metadata", None)
        session = self

        async def atlas_input_filter(data: CallModelData[Any]) -> ModelInputData:
            return await session.filter(data, user_filter)

        # Runs nested in this run's tool calls inherit this config: the filter names the session they belong to.
        setattr(atlas_input_filter, _FILTER_SESSION, self)
        marks = {RUN_KEY: self.key, **({SESSION_KEY: self.run.session_id} if self.run is not None else {})}
        changes: dict[str, Any] = {"call_model_input_filter": atlas_input_filter,
                                   "trace_metadata": {**(trace_metadata or {}), **marks}}
        if model is not None:
            changes["model"] = model
        self.config_model = model if model is not None else (
            base.get("model") if isinstance(base, Mapping) else getattr(base, "model", None))
        if base is None or isinstance(base, Mapping):
            return {**dict(base or {}), **changes}
        return dataclasses.replace(base, **changes)


class _DelegatingHooks(RunHooks[Any]):
    """RunHooks that call the caller's own hooks (whose errors are theirs) after Atlas's part."""

    def __init__(self, session: _Session, user: Any = None) -> None:
        self.session = session
        self.user = user

    async def on_agent_start(self, context: Any, agent: Any) -> None:
        if self.user is not None:
            await self.user.on_agent_start(context, agent)

    async def on_llm_start(self, context: Any, agent: Any, system_prompt: str | None, input_items: list[Any]) -> None:
        if self.user is not None:
            await self.user.on_llm_start(context, agent, system_prompt, input_items)

    async def on_llm_end(self, context: Any, agent: Any, response: Any) -> None:
        if self.user is not None:
            await self.user.on_llm_end(context, agent, response)

    async def on_tool_start(self, context: Any, agent: Any, tool: Any) -> None:
        if self.user is not None:
            await self.user.on_tool_start(context, agent, tool)

    async def on_tool_end(self, context: Any, agent: Any, tool: Any, result: Any) -> None:
        if self.user is not None:
            await self.user.on_tool_end(context, agent, tool, result)

    async def on_handoff(self, context: Any, from_agent: Any, to_agent: Any) -> None:
        if self.user is not None:
            await self.user.on_handoff(context, from_agent, to_agent)

    async def on_agent_end(self, context: Any, agent: Any, output: Any) -> None:
        if self.user is not None:
            await self.user.on_agent_end(context, agent, output)


class _AtlasHooks(_DelegatingHooks):
    """The supervised run's hooks: model calls, tool calls and handoffs become steps of its session."""

    async def on_agent_start(self, context: Any, agent: Any) -> None:
        await self.session.ensure()
        await super().on_agent_start(context, agent)

    async def on_llm_start(self, context: Any, agent: Any, system_prompt: str | None, input_items: list[Any]) -> None:
        self.session.llm_started(agent)
        await super().on_llm_start(context, agent, system_prompt, input_items)

    async def on_llm_end(self, context: Any, agent: Any, response: Any) -> None:
        await self.session.llm_ended(agent, response)
        await super().on_llm_end(context, agent, response)

    async def on_tool_start(self, context: Any, agent: Any, tool: Any) -> None:
        self.session.tool_started(context, tool)
        await super().on_tool_start(context, agent, tool)

    async def on_tool_end(self, context: Any, agent: Any, tool: Any, result: Any) -> None:
        await self.session.tool_ended(context, agent, tool, result)
        await super().on_tool_end(context, agent, tool, result)

    async def on_handoff(self, context: Any, from_agent: Any, to_agent: Any) -> None:
        self.session.handoff(from_agent, to_agent)
        await super().on_handoff(context, from_agent, to_agent)

    async def on_agent_end(self, context: Any, agent: Any, output: Any) -> None:
        await self.session.agent_ended(agent, output)
        await super().on_agent_end(context, agent, output)


class _NestedHooks(_DelegatingHooks):
    """The hooks of a run nested in one of a supervised run's tool calls (``Agent.as_tool``, or a tool that runs
    an agent itself): its model calls become nested steps of the session; nothing else of it is the session's
    (its final output is the tool's output, recorded with the tool call)."""

    async def on_llm_start(self, context: Any, agent: Any, system_prompt: str | None, input_items: list[Any]) -> None:
        self.session.nested_llm_started(context, agent)
        await super().on_llm_start(context, agent, system_prompt, input_items)

    async def on_llm_end(self, context: Any, agent: Any, response: Any) -> None:
        await self.session.nested_llm_ended(context, agent, response)
        await super().on_llm_end(context, agent, response)


class _NestingRunner:
    """The SDK's default ``AgentRunner``, wrapped: a run started inside a supervised run's tool call gets
    :class:`_NestedHooks` (around the hooks it was given), so a sub-agent's model calls are recorded.

    ``Agent.as_tool`` runs the sub-agent with ``Runner.run(..., run_config=<the parent's>, hooks=<as_tool's>)``;
    ``Runner`` sends every run through ``agents.run.get_default_agent_runner()``, the one place such a run can be
    seen. A run is nested when its run config carries a supervised session's input filter (or, for a run config of
    its own, when it runs in a supervised run's context) while one of that run's tool calls executes, and its hooks
    are not a supervised run's own. Everything else passes through unchanged; the wrapped runner does the work.
    Installed once per process (:func:`_install_nesting_runner`); a runner set later by someone else is wrapped in
    turn at the next supervised run."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    async def run(self, starting_agent: Any, input: Any, **kwargs: Any) -> Any:
        return await self.inner.run(starting_agent, input, **_nested_kwargs(kwargs))

    def run_sync(self, starting_agent: Any, input: Any, **kwargs: Any) -> Any:
        return self.inner.run_sync(starting_agent, input, **_nested_kwargs(kwargs))

    def run_streamed(self, starting_agent: Any, input: Any, **kwargs: Any) -> Any:
        return self.inner.run_streamed(starting_agent, input, **_nested_kwargs(kwargs))


def _nested_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A run's Runner kwargs, with :class:`_NestedHooks` when the run is nested in a supervised run's tool call."""
    try:
        hooks = kwargs.get("hooks")
        if isinstance(hooks, _DelegatingHooks) or (hooks is not None and not isinstance(hooks, RunHooksBase)):
            return kwargs  # a supervised run's own, or hooks the SDK is about to refuse
        config = kwargs.get("run_config")
        input_filter = config.get("call_model_input_filter") if isinstance(config, Mapping) else getattr(config, "call_model_input_filter", None)
        session = getattr(input_filter, _FILTER_SESSION, None)
        if not isinstance(session, _Session):
            key = current_run.get()
            with _live_lock:
                session = _live.get(key) if key else None
        if session is None or session.active is None or not session.in_tool_call:
            return kwargs
        return {**kwargs, "hooks": _NestedHooks(session, hooks)}
    except Exception:  # noqa: BLE001 - supervision must never fail the user's run
        log.exception("Atlas could not check whether a run is nested in a supervised one")
        return kwargs


_NESTING_LOCK = threading.Lock()


def _install_nesting_runner() -> None:
    """Wrap the SDK's default AgentRunner in :class:`_NestingRunner`, once (again if it was replaced since)."""
    from agents import run as sdk_run

    with _NESTING_LOCK:
        current = sdk_run.get_default_agent_runner()
        if not isinstance(current, _NestingRunner):
            sdk_run.set_default_agent_runner(_NestingRunner(current))


class AtlasRunner:
    """``agents.Runner`` for one agent, under Atlas supervision. Made by :func:`with_atlas`.

    ``run`` / ``run_sync`` / ``run_streamed`` take the input and the same keyword arguments as ``Runner``'s
    (``context``, ``max_turns``, ``hooks``, ``run_config``, ``session``, ...) and return the SDK's own
    ``RunResult`` / ``RunResultStreaming``. Hooks and a run config you pass are kept: Atlas's hooks call yours,
    and its input filter runs after yours.

    Per run, ``atlas_task_family=``, ``atlas_learning_key=`` and ``atlas_metadata=`` say which task family and
    learning key the session belongs to and add session metadata; they go to ``Supervisor.begin``, never to
    ``Runner``. (``supervised``, ``begin`` and ``abegin`` take the same as ``task_family=``, ``learning_key=``,
    ``metadata=``.) Sessions begun inside ``atlas_learning.session_options(...)`` pick those up too.

    Where the session is: ``runner.session_result()`` (the last session that ended), or
    ``runner.session_result(result)`` / ``result.atlas_session`` for one result: a
    :class:`~atlas_learning.background.PendingSession` (``session_id`` and ``final_answer`` now; reading any other
    SessionResult field, ``reward`` say, waits for the background finish; ``await`` it in async code).
    """

    def __init__(self, agent: Agent[Any], supervisor: Supervisor, *, agent_name: str, learning_key: str | None,
                 session_checks: Sequence[Check] = (), owns_supervisor: bool = False) -> None:
        self.agent = agent
        self.supervisor = supervisor
        self.agent_name = agent_name
        self.learning_key = learning_key
        self._session_checks = tuple(session_checks)
        self._owns_supervisor = owns_supervisor
        #: The last session that ended (its PendingSession), and the last SDK result returned.
        self.last_session: PendingSession | None = None
        self.last_result: Any = None
        self._sessions: dict[str, _Session] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._ended_streams: list[PendingSession] = []
        self._lock = threading.Lock()

    # ---------------------------------------------------------------------------------------- results
    def session_result(self, result: Any = None) -> PendingSession | None:
        """The PendingSession of one SDK result, or of the last session that ended when none is given."""
        if result is not None:
            return getattr(result, RESULT_ATTRIBUTE, None)
        return self.last_session

    def close(self) -> None:
        """Close the supervisor this runner built (finish pending sessions, flush the recorder, release models);
        one passed in is left."""
        if self._owns_supervisor:
            self.supervisor.close()

    # -------------------------------------------------------------------------------------------- run
    async def run(self, input: Any, *, atlas_task_family: str | None = None, atlas_learning_key: str | None = None,
                  atlas_metadata: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        """``Runner.run(agent, input, **kwargs)`` under supervision; returns the SDK's ``RunResult``.

        The ``atlas_*`` arguments are this run's session options (see the class); ``kwargs`` go to ``Runner``."""
        session = _Session(self, task_text(input), task_family=atlas_task_family, learning_key=atlas_learning_key,
                           metadata=atlas_metadata)
        run = await session.ensure()
        if run is None:
            result = await Runner.run(self.agent, input, **kwargs)
            self.last_result = result
            return result
        token = current_run.set(session.key)
        try:
            if session.start_answer is not None:
                result = await self._deliver(session, input, kwargs, session.start_answer)
                if result is not None:
                    return result
            while True:
                session.new_attempt()
                result = await _run_ending_on_error(session, self.agent, input, self._kwargs(session, kwargs))
                session.sdk_result = self.last_result = result
                if getattr(result, "interruptions", None):  # paused for approvals: the session ends here
                    await session.end(result.final_output)
                    return result
                # With SDK memory (a session, a server-side conversation), a rerun would see the rejected attempt and
                # store the input twice: the answer then stands, the rejection and guidance recorded.
                rerunnable = not any(kwargs.get(name) for name in ("session", "conversation_id", "previous_response_id"))
                decision = await session.answer(result.final_output, can_rerun=rerunnable)
                if decision is not None and decision.action == "retry":
                    log.info("session %s: answer rejected (%s); running the agent again", run.session_id,
                             decision.verdict.reason)
                    continue
                await session.end(result.final_output)
                return result
        finally:
            current_run.reset(token)

    def run_sync(self, input: Any, *, atlas_task_family: str | None = None, atlas_learning_key: str | None = None,
                 atlas_metadata: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        """Sync twin of :meth:`run`, on the thread's default event loop like ``Runner.run_sync``."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("AtlasRunner.run_sync() cannot be called when an event loop is already running; use run().")
        policy = asyncio.get_event_loop_policy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                loop = policy.get_event_loop()
            except RuntimeError:
                loop = policy.new_event_loop()
                policy.set_event_loop(loop)
        if loop.is_closed():
            loop = policy.new_event_loop()
            policy.set_event_loop(loop)
        task = loop.create_task(self.run(input, atlas_task_family=atlas_task_family, atlas_learning_key=atlas_learning_key,
                                         atlas_metadata=atlas_metadata, **kwargs))
        try:
            return loop.run_until_complete(task)
        except BaseException:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(task)
            raise
        finally:
            with contextlib.suppress(RuntimeError):
                loop.run_until_complete(loop.shutdown_asyncgens())

    def run_streamed(self, input: Any, *, atlas_task_family: str | None = None, atlas_learning_key: str | None = None,
                     atlas_metadata: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        """``Runner.run_streamed`` under supervision; returns the SDK's ``RunResultStreaming``.

        The session begins in the run's first hook (nothing blocks the event loop here), so the agent always runs
        (``can_take_answer=False``: an escalated session is supervised like a paired one). When the agent produces
        its final output, the answer is reported before the stream completes; a streamed run is never repeated (a
        rejected answer stands). The session ends when the run loop has ended: failed when it raised (a guardrail
        tripwire included), cancelled when it was cancelled; ``streamed.atlas_session`` is set by the time the
        caller's ``stream_events()`` loop is over. The ``atlas_*`` arguments are as for :meth:`run`."""
        session = _Session(self, task_text(input), streamed=True, task_family=atlas_task_family,
                           learning_key=atlas_learning_key, metadata=atlas_metadata)
        run_kwargs = self._kwargs(session, kwargs)
        token = current_run.set(session.key)  # the run's background task copies this context
        try:
            result = Runner.run_streamed(self.agent, input, **run_kwargs)
        finally:
            current_run.reset(token)
        session.sdk_result = self.last_result = result
        try:
            task = result.run_loop_task
            if task is not None:
                task.add_done_callback(lambda done: self._streamed_done(session, done))
        except Exception:  # noqa: BLE001
            log.exception("Atlas cannot watch this streamed run's end; its session stays open")
        return result

    def _streamed_done(self, session: _Session, task: asyncio.Task[Any]) -> None:
        """A streamed run's loop ended: end its session, with the run's error if it raised or tripped a guardrail.

        Runs as the loop task's done callback, before the caller's ``stream_events()`` returns: ``end`` returns at
        once (it only queues the finish), so it is called here directly; only when the finish queue is full (it
        would wait for room) is the end left to a task that waits off the event loop."""
        run = session.run
        if run is None or run.ended or session.result is not None:
            return
        try:
            error, cancelled = _stream_outcome(session.sdk_result, task, session.has_output)
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not read how a streamed run ended")
            error, cancelled = None, False
        output = session.final_output if session.has_output else getattr(session.sdk_result, "final_output", None)
        try:
            has_room = run.supervisor.finisher.has_room
        except Exception:  # noqa: BLE001
            has_room = False
        if not has_room:
            try:
                ending = asyncio.get_running_loop().create_task(session.end(output, error=error, cancelled=cancelled))
            except RuntimeError:
                pass
            else:
                self._background.add(ending)
                ending.add_done_callback(self._background.discard)
                return
        pending = session.end_sync(output, error=error, cancelled=cancelled)
        if pending is not None:  # kept for wait_finished() until done
            self._ended_streams = [p for p in self._ended_streams if not p.done()] + [pending]

    async def wait_finished(self) -> None:
        """Wait until the sessions of the streamed runs that ended so far are finished (judged, learned from,
        stored): for scripts and tests that read the store next."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        ended, self._ended_streams = self._ended_streams, []
        for pending in ended:
            with contextlib.suppress(Exception):
                await pending.aresult()

    async def _deliver(self, session: _Session, input: Any, kwargs: Mapping[str, Any], answer: str) -> Any:
        """Deliver the core's start answer (escalate): the agent is run once on a model that gives that answer.

        Returns the RunResult, or None when the answer does not fit the agent's output type (the student then
        works, and its answer is reported as usual). The agent's guardrails judge the answer as they would the
        agent's own: a tripwire (or any other error of the run) ends the session as failed and is raised."""
        run = session.run
        source = "human" if run.config.supervision.escalation == "human" else "teacher"
        session.delivering = True
        try:
            result = await _run_ending_on_error(session, self.agent, input, self._kwargs(session, kwargs, model=AnswerModel(answer, source)),
                                                passes=(ModelBehaviorError,))
        except ModelBehaviorError as exc:  # the answer is not the agent's output_type
            log.warning("session %s: the %s's answer could not be delivered (%s: %s); the student works",
                        run.session_id, source, type(exc).__name__, exc)
            return None
        finally:
            session.delivering = False
        session.sdk_result = self.last_result = result
        await session.end(result.final_output)
        return result

    def _kwargs(self, session: _Session, kwargs: Mapping[str, Any], *, model: Any = None) -> dict[str, Any]:
        """The Runner kwargs for one attempt; the caller's own when Atlas cannot prepare them (unsupervised then)."""
        try:
            install_trace_processor()
            _install_nesting_runner()
            return session.run_kwargs(kwargs, model=model)
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not prepare the run's hooks and config; it goes on unsupervised")
            session.broken = True
            return dict(kwargs)

    # ---------------------------------------------------------------------- for callers of Runner itself
    @contextlib.asynccontextmanager
    async def supervised(self, input: Any, *, metadata: Mapping[str, Any] | None = None, task_family: str | None = None,
                         learning_key: str | None = None) -> AsyncIterator[SupervisedRun | None]:
        """Supervise runs you start yourself: the session begins (and starts) on entry and ends on exit.

        >>> async with runner.supervised(question) as run:
        ...     while True:
        ...         result = await Runner.run(agent, question, run_config=runner.run_config(run), hooks=runner.hooks(run))
        ...         if run is None or (await run.afinal_answer(result.final_output)).action != "retry":
        ...             break                                   # on "retry", run.instructions carry the guidance

        On exit the session ends with the last final output the hooks saw (failed when the block raised; the
        error propagates). The agent always runs (``can_take_answer=False``). Yields None when Atlas could not
        begin (then nothing is supervised). ``metadata``, ``task_family`` and ``learning_key`` go to
        ``Supervisor.begin`` for this session."""
        session = _Session(self, task_text(input), managed=False, metadata=metadata, task_family=task_family,
                           learning_key=learning_key)
        run = await session.ensure()
        token = current_run.set(session.key) if run is not None else None
        try:
            yield run
        except asyncio.CancelledError:
            await session.end(cancelled=True)
            raise
        except GeneratorExit:  # the context manager was dropped unfinished: nothing may be awaited now
            session.end_sync(error="the supervised block was closed before it ended")
            raise
        except BaseException as exc:
            await session.end(error=exc)
            raise
        else:
            await session.end(session.final_output if session.has_output else None)
        finally:
            if token is not None:
                current_run.reset(token)

    def begin(self, input: Any, *, metadata: Mapping[str, Any] | None = None, task_family: str | None = None,
              learning_key: str | None = None) -> SupervisedRun | None:
        """Begin (and start) a session for a run you start yourself (sync); end it with :meth:`finish`. None if
        Atlas failed. The keyword arguments are as for :meth:`supervised`."""
        return _Session(self, task_text(input), managed=False, metadata=metadata, task_family=task_family,
                        learning_key=learning_key).begin_sync()

    async def abegin(self, input: Any, *, metadata: Mapping[str, Any] | None = None, task_family: str | None = None,
                     learning_key: str | None = None) -> SupervisedRun | None:
        """Async twin of :meth:`begin`."""
        return await _Session(self, task_text(input), managed=False, metadata=metadata, task_family=task_family,
                              learning_key=learning_key).ensure()

    def finish(self, run: SupervisedRun | None, result: Any = None, *, error: str | None = None) -> PendingSession | None:
        """End a session begun with :meth:`begin`: ``result`` is a RunResult or the final output itself. Returns at
        once with the PendingSession (also set as ``result.atlas_session``); the finish runs in the background."""
        session = self._session_of(run)
        if session is None:
            return None
        session.sdk_result = result if _is_run_result(result) else None
        return session.end_sync(_final_output(result, session), error=error)

    async def afinish(self, run: SupervisedRun | None, result: Any = None, *, error: str | None = None) -> PendingSession | None:
        """Async twin of :meth:`finish`."""
        session = self._session_of(run)
        if session is None:
            return None
        session.sdk_result = result if _is_run_result(result) else None
        return await session.end(_final_output(result, session), error=error)

    def run_config(self, run: SupervisedRun | None = None, base: RunConfig | Mapping[str, Any] | None = None) -> RunConfig:
        """A RunConfig for ``Runner.run`` that injects ``run``'s instructions and maps its trace spans to it.

        ``base`` (your RunConfig or dict) is kept, its input filter and trace metadata included. ``run`` defaults
        to the session of the innermost :meth:`supervised` block; with no session, ``base`` is returned as a
        RunConfig unchanged. Pass :meth:`hooks` too, or model and tool calls are not recorded as steps."""
        session = self._session_of(run)
        if session is None:
            return base if isinstance(base, RunConfig) else RunConfig(**dict(base or {}))
        install_trace_processor()
        config = session.run_config(base)
        return config if isinstance(config, RunConfig) else RunConfig(**config)

    def hooks(self, run: SupervisedRun | None = None, hooks: RunHooks[Any] | None = None) -> RunHooks[Any]:
        """RunHooks that record ``run``'s model calls, tool calls and handoffs (and report its tool steps), then
        call ``hooks`` (yours)."""
        session = self._session_of(run)
        if session is None:
            return hooks if hooks is not None else RunHooks()
        try:
            _install_nesting_runner()
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not wrap the SDK's runner; model calls of agents used as tools are not recorded")
        return _AtlasHooks(session, hooks)

    def _session_of(self, run: SupervisedRun | None) -> _Session | None:
        """The session of ``run``, or of the innermost :meth:`supervised` block when ``run`` is None."""
        with self._lock:
            if run is None:
                key = current_run.get()
                return self._sessions.get(key) if key else None
            return next((s for s in self._sessions.values() if s.run is run), None)


def _stream_outcome(result: Any, task: asyncio.Task[Any], has_output: bool) -> tuple[BaseException | str | None, bool]:
    """How a streamed run's loop ended: (the error to end the session with, or None; whether it was cancelled).

    The loop task's exception (a model or tool error, an output guardrail tripwire), else the exception the
    stream stored, else too many turns (the loop stops, the stream raises), else a tripped input guardrail (those
    run beside the loop), else cancelled when the caller cancelled the stream before an answer."""
    if task.cancelled():
        return None, True
    error: BaseException | None = task.exception() or getattr(result, "_stored_exception", None)
    if isinstance(error, asyncio.CancelledError):
        return None, True
    if error is not None:
        return error, False
    from agents.exceptions import InputGuardrailTripwireTriggered, MaxTurnsExceeded, OutputGuardrailTripwireTriggered

    max_turns = getattr(result, "max_turns", None)  # the loop just stops; the stream raises (as _check_errors does)
    if max_turns is not None and getattr(result, "current_turn", 0) > max_turns and not getattr(result, "_max_turns_handled", False):
        return MaxTurnsExceeded(f"Max turns ({max_turns}) exceeded"), False

    for tripped, kind in ((getattr(result, "input_guardrail_results", None), InputGuardrailTripwireTriggered),
                          (getattr(result, "output_guardrail_results", None), OutputGuardrailTripwireTriggered)):
        for guardrail in tripped or []:
            if getattr(getattr(guardrail, "output", None), "tripwire_triggered", False):
                return kind(guardrail), False
    if getattr(result, "_cancel_mode", "none") not in (None, "none") and not has_output:  # "none": never cancelled
        return None, True
    return None, False


async def _run_ending_on_error(session: _Session, agent: Any, input: Any, kwargs: Mapping[str, Any], *,
                               passes: tuple[type[BaseException], ...] = ()) -> Any:
    """``Runner.run``; when it raises (but not one of ``passes``), the session ends, failed or cancelled, first."""
    try:
        return await Runner.run(agent, input, **kwargs)
    except passes:
        raise
    except asyncio.CancelledError:
        await session.end(cancelled=True)
        raise
    except BaseException as exc:
        await session.end(error=exc)
        raise


def _model_identity(agent: Any, config_model: Any) -> tuple[str, str]:
    """(provider, model name) of the model an agent's call went to (``RunConfig.model`` overrides the agent's)."""
    model = config_model if config_model is not None else getattr(agent, "model", None)
    if model is None or model == "":
        from agents.models.default_models import get_default_model

        return "openai", get_default_model()
    if isinstance(model, str):
        provider, _, name = model.partition("/")
        return (provider, name) if name else ("openai", model)
    name = getattr(model, "model", None)
    if type(model).__module__.startswith("agents.models.openai"):
        provider = "openai"
    else:
        provider = getattr(model, "provider", None) or type(model).__name__
    return str(provider), str(name) if name else type(model).__name__


def _tool_schemas(agent: Any) -> list[dict[str, Any]]:
    """The tools an agent's model is offered: its function tools (agents used as tools among them) and its
    handoffs, as function schemas; hosted tools (web search...) have none and are left out."""
    from agents import FunctionTool
    from agents.handoffs import Handoff, handoff

    schemas: list[dict[str, Any]] = []
    for tool in getattr(agent, "tools", None) or ():
        if isinstance(tool, FunctionTool):
            schemas.append({"name": tool.name, "description": tool.description or "", "parameters": tool.params_json_schema})
    for target in getattr(agent, "handoffs", None) or ():
        try:
            made = target if isinstance(target, Handoff) else handoff(target)
        except Exception:  # noqa: BLE001 - not a handoff the SDK can describe
            continue
        schemas.append({"name": made.tool_name, "description": made.tool_description or "", "parameters": made.input_json_schema})
    return schemas


def _transfer_message(from_agent: Any, to_agent: Any) -> str:
    """What the SDK returns to the model for its handoff call to ``to_agent`` (the agent's name when unknown)."""
    from agents.handoffs import Handoff, handoff

    for target in getattr(from_agent, "handoffs", None) or ():
        try:
            made = target if isinstance(target, Handoff) else handoff(target)
            if made.agent_name == getattr(to_agent, "name", None):
                return made.get_transfer_message(to_agent)
        except Exception:  # noqa: BLE001
            continue
    return str(getattr(to_agent, "name", "?"))


def _call_key(context: Any, tool: Any) -> str:
    return str(getattr(context, "tool_call_id", None) or getattr(tool, "name", None) or id(tool))


def _response_output(response: Any) -> Any:
    """A model response's output: its text when it only wrote text, else the items (tool calls, handoffs)."""
    items = list(getattr(response, "output", None) or [])
    texts, calls = [], []
    for item in items:
        kind = getattr(item, "type", None)
        if kind == "message":
            from ._items import item_text

            texts.append(item_text(item))
        elif kind == "function_call":
            calls.append({"name": getattr(item, "name", None), "arguments": parse_arguments(getattr(item, "arguments", None))})
        else:
            calls.append(to_jsonable(item))
    text = "".join(texts)
    return text if not calls else {"content": text, "tool_calls": calls}


def _tool_output(result: Any, redactor: Any) -> Any:
    if result is None or isinstance(result, str):
        return result
    return clip(result, redactor)


def _is_run_result(value: Any) -> bool:
    return hasattr(value, "final_output") and hasattr(value, "new_items")


def _final_output(result: Any, session: _Session) -> Any:
    if _is_run_result(result):
        return result.final_output
    if result is not None:
        return result
    return session.final_output if session.has_output else None


def with_atlas(
    agent: Agent[Any],
    config: AtlasConfig | Mapping[str, Any] | str | Path | None = None,
    *,
    learning_key: str | None = None,
    agent_name: str | None = None,
    checks: Sequence[Check] = (),
    supervisor: Supervisor | None = None,
    human: HumanCallback | None = None,
) -> AtlasRunner:
    """Put an Agents SDK agent under Atlas supervision; returns an :class:`AtlasRunner` (use it like ``Runner``).

    ``config`` is an AtlasConfig, a dict or a YAML path, used to build a :class:`Supervisor` (with ``checks`` and
    ``human``) when no ``supervisor`` is given; a config that does not load raises here, never during a run.
    ``agent_name`` defaults to the agent's name; ``learning_key`` names the lessons and history the runs share
    (default: the supervisor's rule: ``supervision.learning_key``, else the agent name); task families live inside
    the key and are set per run (``atlas_task_family=``). ``human`` decides escalations when
    ``supervision.escalation`` is ``human``: ``(task, context) -> answer``, sync or async.
    """
    if supervisor is None:
        supervisor = Supervisor(config, checks=checks, human=human)
        owns, session_checks = True, ()
    else:
        owns, session_checks = False, tuple(checks)
        if human is not None:
            supervisor.human = human
    return AtlasRunner(agent, supervisor, agent_name=agent_name or agent.name or "openai-agent", learning_key=learning_key,
                       session_checks=session_checks, owns_supervisor=owns)
