"""``with_atlas(agent)``: an OpenAI Agents SDK agent under Atlas supervision, run like ``agents.Runner``.

>>> runner = with_atlas(agent, "atlas.yaml", learning_key="support")
>>> result = await runner.run("Where is my order A1?")        # the SDK's own RunResult
>>> runner.session_result().summary()                          # lane, reward, review status

The adapter only translates the SDK's events into :class:`~atlas_learning.supervisor.SupervisedRun` calls and
applies what the core decided. Per run:

* the session begins with the run's input text as the task (``abegin``); in coach the teacher reviews the (empty)
  plan so its plan and concerns reach the instructions;
* ``RunConfig.call_model_input_filter`` appends ``run.instructions`` (lessons, plan, concerns, guidance) to the
  model's instructions, after the user's own filter; the input items are never touched;
* ``RunHooks`` record every model call (tokens from ``ModelResponse.usage``, the agent's name in the step), every
  tool call (name, arguments from ``ToolContext.tool_arguments``, output) and every handoff as steps; in coach the
  teacher validates each tool call as it ends and its guidance goes into the next model call;
* paired and coach (and escalate when nobody answered): the final output is validated after the run; rejected
  with retries left, the run is repeated from the same input with the rejected answer and the guidance in the
  instructions, and every retry is validated again;
* escalate: the teacher model (or a human, per ``supervision.escalation``) answers; the agent is run once on a
  model that returns that answer, so the caller still gets a ``RunResult`` whose ``final_output`` is it;
* :class:`~._tracing.AtlasTraceProcessor` stores the run's trace spans as trajectory events of the session
  (mapped through ``RunConfig.trace_metadata``);
* the session is finished (judges, learning, storage) with the final output; ``runner.session_result()``.

Supervision never fails the user's run: an error in Atlas code is logged and the run goes on unsupervised. An
error raised by the agent itself (its model, its tools, a guardrail tripwire) finishes the session with
``error=...`` and is re-raised unchanged.
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
from agents.lifecycle import RunHooksBase
from agents.run_config import CallModelData, ModelInputData

from atlas_learning.config import AtlasConfig
from atlas_learning.judges import Check
from atlas_learning.store import utcnow
from atlas_learning.supervisor import HumanCallback, SessionResult, SupervisedRun, Supervisor

from ._items import answer_text, clip, parse_arguments, task_text, to_jsonable
from ._model import AnswerModel
from ._tracing import RUN_KEY, SESSION_KEY, current_run, install_trace_processor

__all__ = ["with_atlas", "AtlasRunner", "RESULT_ATTRIBUTE"]

log = logging.getLogger("atlas_plugins.openai_agents")

#: The attribute every supervised ``RunResult`` / ``RunResultStreaming`` gets: its session's ``SessionResult``.
RESULT_ATTRIBUTE = "atlas_session"
_NOT_VALIDATED = ("auto",)


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
        #: The adapter's key for this run: in its trace metadata, and in the runner's table of sessions.
        self.key = uuid.uuid4().hex
        self.streamed = streamed
        #: Managed by AtlasRunner.run/run_streamed (validated, retried, finished there); else by the caller.
        self.managed = managed
        self.metadata = dict(metadata or {})
        self.run: SupervisedRun | None = None
        #: Atlas failed somewhere: the rest of this run goes on unsupervised.
        self.broken = False
        self.began = False
        #: The answer the teacher rejected and the guidance given, shown on every model call of the retry.
        self.rejected_answer: str | None = None
        self.retry_guidance: list[str] = []
        #: Streamed runs in escalate: the teacher's (or human's) answer, shown to the student (see the docs).
        self.escalation_answer: str | None = None
        #: The run is the escalation's answer being delivered: nothing to record, validate or inject.
        self.delivering = False
        self.guidance_shown = False
        self.final_output: Any = None
        self.has_output = False
        self.sdk_result: Any = None
        self.result: SessionResult | None = None
        #: ``RunConfig.model`` of the run, which overrides every agent's model (for the recorded model name).
        self.config_model: Any = None
        self._llm_started: dict[str, float] = {}
        self._tools_started: dict[str, float] = {}
        self._lock: asyncio.Lock | None = None

    # ------------------------------------------------------------------------------------------ begin
    async def ensure(self) -> SupervisedRun | None:
        """The session's run, begun on first need (before the run, or in the first hook of a streamed run)."""
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
                if run.lane == "coach":
                    await run.areview_plan([])
                if run.lane == "escalate" and self.streamed:
                    self.escalation_answer = await run.aescalate()
            except Exception:  # noqa: BLE001
                log.exception("Atlas could not prepare the %s lane; the run goes on", run.lane)
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
        if run.lane == "coach":
            try:
                run.review_plan([])
            except Exception:  # noqa: BLE001
                log.exception("Atlas could not have the plan reviewed; the run goes on")
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

    @property
    def active(self) -> SupervisedRun | None:
        """The run to record into now, or None (not begun, broken, finished, or delivering an escalation)."""
        run = self.run
        if run is None or self.broken or self.delivering or run.finished is not None:
            return None
        return run

    # ------------------------------------------------------------------------------------ instructions
    def injection(self) -> str:
        """What to append to the model's instructions now."""
        run = self.active
        if run is None:
            return ""
        parts = []
        if self.escalation_answer:
            parts.append("An expert already answered this task. Give this answer, in your own words if needed:\n"
                         + self.escalation_answer)
        if self.rejected_answer is not None:
            parts.append("Your previous answer was rejected by the teacher:\n" + self.rejected_answer)
        if self.retry_guidance:
            parts.append("Teacher guidance for this attempt:\n" + "\n".join(f"- {g}" for g in self.retry_guidance))
        self.guidance_shown = bool(run.pending_guidance)
        instructions = run.instructions
        if instructions:
            parts.append(instructions)
        return "\n\n".join(parts)

    async def filter(self, data: CallModelData[Any], user_filter: Any = None) -> ModelInputData:
        """``call_model_input_filter``: the user's filter first, then Atlas's instructions appended."""
        model_data = data.model_data
        if user_filter is not None:
            produced = user_filter(data)
            model_data = await produced if inspect.isawaitable(produced) else produced
        await self.ensure()
        try:
            extra = self.injection()
            if not extra or not isinstance(model_data, ModelInputData):
                return model_data
            base = model_data.instructions or ""
            return ModelInputData(input=model_data.input, instructions=f"{base}\n\n{extra}" if base else extra)
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not add its instructions to a model call")
            return model_data

    # ---------------------------------------------------------------------------------------- records
    def llm_started(self, agent: Any) -> None:
        self._llm_started[getattr(agent, "name", "")] = time.perf_counter()

    async def llm_ended(self, agent: Any, response: Any) -> None:
        run = self.active
        if run is None:
            return
        started = self._llm_started.pop(getattr(agent, "name", ""), None)
        try:
            if self.guidance_shown:  # shown once the call succeeded: consumed
                run.take_guidance()
                self.guidance_shown = False
            usage = getattr(response, "usage", None)
            input_tokens = int(getattr(usage, "input_tokens", 0) or 0)
            output_tokens = int(getattr(usage, "output_tokens", 0) or 0)
            provider, model = _model_identity(agent, self.config_model)
            latency_ms = (time.perf_counter() - started) * 1000 if started is not None else None
            run.record_model_call(role="student", provider=provider, model=model, input_tokens=input_tokens,
                                  output_tokens=output_tokens, latency_ms=latency_ms, as_step=False)
            ended = utcnow()
            name = getattr(agent, "name", "") or "agent"
            run.record_step(kind="model_call", name=name, output=clip(_response_output(response)),
                            input_tokens=input_tokens, output_tokens=output_tokens,
                            started_at=ended - timedelta(milliseconds=latency_ms) if latency_ms is not None else None,
                            ended_at=ended, description=f"{name} called {model}",
                            metadata={"agent": name, "provider": provider, "model": model,
                                      "response_id": getattr(response, "response_id", None)})
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not record a model call")

    def tool_started(self, context: Any, tool: Any) -> None:
        self._tools_started[_call_key(context, tool)] = time.perf_counter()

    async def tool_ended(self, context: Any, agent: Any, tool: Any, result: Any) -> None:
        run = self.active
        if run is None:
            return
        step = None
        try:
            started = self._tools_started.pop(_call_key(context, tool), None)
            name = getattr(context, "tool_name", None) or getattr(tool, "name", None) or type(tool).__name__
            arguments = getattr(context, "tool_arguments", None)
            ended = utcnow()
            step = run.record_step(
                kind="tool_call", name=name, tool_name=name,
                tool_args=parse_arguments(arguments) if arguments is not None else None,
                output=_tool_output(result), ended_at=ended,
                started_at=ended - timedelta(seconds=time.perf_counter() - started) if started is not None else None,
                metadata={"agent": getattr(agent, "name", None), "call_id": getattr(context, "tool_call_id", None)},
            )
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not record a tool call")
        if step is not None and run.lane == "coach":
            try:
                await run.avalidate_step(step)
            except Exception:  # noqa: BLE001
                log.exception("Atlas could not validate a tool call")

    def handoff(self, from_agent: Any, to_agent: Any) -> None:
        run = self.active
        if run is None:
            return
        try:
            source, target = getattr(from_agent, "name", "?"), getattr(to_agent, "name", "?")
            run.record_step(kind="handoff", name=f"{source} -> {target}", input=source, output=target,
                            description=f"{source} handed off to {target}",
                            metadata={"from_agent": source, "to_agent": target})
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not record a handoff")

    async def agent_ended(self, agent: Any, output: Any) -> None:
        self.final_output, self.has_output = output, True
        if self.streamed and self.managed and self.run is not None and not self.broken and not self.delivering:
            # A streamed run cannot be repeated into the caller's stream: validate, then finish before the
            # stream completes, so the session result is there when the caller's loop ends.
            await self.validate(output, retry=False)
            await self.finish(output)

    # ------------------------------------------------------------------------------ validate / finish
    async def validate(self, output: Any, *, retry: bool = True) -> bool:
        """Validate a final output where the lane asks for it; True when the run must be repeated."""
        run = self.active
        if run is None or run.lane in _NOT_VALIDATED:
            return False
        try:
            answer = answer_text(output)
            verdict = await run.avalidate_answer(answer)
            if verdict.accepted is False and run.can_retry:
                if not retry:
                    log.info("session %s: streamed answer rejected (%s); a streamed run is not repeated",
                             run.session_id, verdict.reason)
                    return False
                log.info("session %s: answer rejected (%s); running the agent again with guidance",
                         run.session_id, verdict.reason)
                self.rejected_answer = answer
                self.retry_guidance = run.take_guidance()
                return True
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not validate the answer; it stands unverified")
        return False

    async def finish(self, output: Any = None, *, error: str | None = None) -> SessionResult | None:
        """Finish the session (once begun, even after a failure in Atlas code: it must not stay running)."""
        run = self.run
        if run is None:
            return None
        try:
            result = await run.afinish(answer_text(output) if output is not None else None, error=error)
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not finish session %s", run.session_id)
            result = None
        self._done(result)
        return result

    def finish_sync(self, output: Any = None, *, error: str | None = None) -> SessionResult | None:
        run = self.run
        if run is None:
            return None
        try:
            result = run.finish(answer_text(output) if output is not None else None, error=error)
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not finish session %s", run.session_id)
            result = None
        self._done(result)
        return result

    def _done(self, result: SessionResult | None) -> None:
        self.result = result
        with contextlib.suppress(Exception):
            install_trace_processor().forget(self.key)
        with self.runner._lock:
            self.runner._sessions.pop(self.key, None)
            if result is not None:
                self.runner.last_session = result
        if result is not None and self.sdk_result is not None:
            with contextlib.suppress(Exception):
                setattr(self.sdk_result, RESULT_ATTRIBUTE, result)

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


class _AtlasHooks(RunHooks[Any]):
    """RunHooks that record into a session, then call the caller's own hooks (whose errors are theirs)."""

    def __init__(self, session: _Session, user: Any = None) -> None:
        self.session = session
        self.user = user

    async def on_agent_start(self, context: Any, agent: Any) -> None:
        await self.session.ensure()
        if self.user is not None:
            await self.user.on_agent_start(context, agent)

    async def on_llm_start(self, context: Any, agent: Any, system_prompt: str | None, input_items: list[Any]) -> None:
        self.session.llm_started(agent)
        if self.user is not None:
            await self.user.on_llm_start(context, agent, system_prompt, input_items)

    async def on_llm_end(self, context: Any, agent: Any, response: Any) -> None:
        await self.session.llm_ended(agent, response)
        if self.user is not None:
            await self.user.on_llm_end(context, agent, response)

    async def on_tool_start(self, context: Any, agent: Any, tool: Any) -> None:
        self.session.tool_started(context, tool)
        if self.user is not None:
            await self.user.on_tool_start(context, agent, tool)

    async def on_tool_end(self, context: Any, agent: Any, tool: Any, result: Any) -> None:
        await self.session.tool_ended(context, agent, tool, result)
        if self.user is not None:
            await self.user.on_tool_end(context, agent, tool, result)

    async def on_handoff(self, context: Any, from_agent: Any, to_agent: Any) -> None:
        self.session.handoff(from_agent, to_agent)
        if self.user is not None:
            await self.user.on_handoff(context, from_agent, to_agent)

    async def on_agent_end(self, context: Any, agent: Any, output: Any) -> None:
        await self.session.agent_ended(agent, output)
        if self.user is not None:
            await self.user.on_agent_end(context, agent, output)


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

    Where the session summary is: ``runner.session_result()`` (the last finished session), or
    ``runner.session_result(result)`` / ``result.atlas_session`` for one result.
    """

    def __init__(self, agent: Agent[Any], supervisor: Supervisor, *, agent_name: str, learning_key: str | None,
                 session_checks: Sequence[Check] = (), owns_supervisor: bool = False) -> None:
        self.agent = agent
        self.supervisor = supervisor
        self.agent_name = agent_name
        self.learning_key = learning_key
        self._session_checks = tuple(session_checks)
        self._owns_supervisor = owns_supervisor
        #: The last session that finished, and the last SDK result returned.
        self.last_session: SessionResult | None = None
        self.last_result: Any = None
        self._sessions: dict[str, _Session] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._lock = threading.Lock()

    # ---------------------------------------------------------------------------------------- results
    def session_result(self, result: Any = None) -> SessionResult | None:
        """The SessionResult of one SDK result, or of the last finished session when none is given."""
        if result is not None:
            return getattr(result, RESULT_ATTRIBUTE, None)
        return self.last_session

    def close(self) -> None:
        """Close the supervisor this runner built (flush the recorder, release models); one passed in is left."""
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
            if run.lane == "escalate":
                result = await self._escalated(session, input, kwargs)
                if result is not None:
                    return result
            while True:
                try:
                    result = await Runner.run(self.agent, input, **self._kwargs(session, kwargs))
                except Exception as exc:
                    await session.finish(error=f"{type(exc).__name__}: {exc}")
                    raise
                session.sdk_result = self.last_result = result
                if getattr(result, "interruptions", None):  # paused for approvals: the session ends here
                    await session.finish(result.final_output)
                    return result
                if await session.validate(result.final_output):
                    continue
                await session.finish(result.final_output)
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

        The session begins in the run's first hook (nothing blocks the event loop here). When the agent produces
        its final output, the answer is validated (paired, coach) and the session finished before the stream
        completes. A streamed run is never repeated: a rejected answer stands, with ``accepted`` False.
        The ``atlas_*`` arguments are as for :meth:`run`."""
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
            log.exception("Atlas cannot watch this streamed run's end; an error in it leaves the session running")
        return result

    def _streamed_done(self, session: _Session, task: asyncio.Task[Any]) -> None:
        """A streamed run ended: finish a session the final-output hook did not finish (error, interruption)."""
        if session.run is None or session.result is not None or session.run.finished is not None:
            return
        if task.cancelled():
            error: str | None = "CancelledError: the streamed run was cancelled"
        else:
            exc = task.exception()
            stored = getattr(session.sdk_result, "_stored_exception", None)
            exc = exc or stored
            error = f"{type(exc).__name__}: {exc}" if exc is not None else None
        output = session.final_output if session.has_output else getattr(session.sdk_result, "final_output", None)
        try:
            pending = asyncio.get_running_loop().create_task(session.finish(output, error=error))
        except RuntimeError:
            session.finish_sync(output, error=error)
            return
        self._background.add(pending)
        pending.add_done_callback(self._background.discard)

    async def wait_finished(self) -> None:
        """Wait for sessions that streamed runs are finishing in the background (after an error or interruption)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def _escalated(self, session: _Session, input: Any, kwargs: Mapping[str, Any]) -> Any:
        """Escalate: the teacher or a human answers; the agent is run on a model that gives that answer.

        Returns the RunResult, or None when nobody answered or the answer could not be delivered (the student
        then works, and its answer is validated)."""
        run = session.run
        try:
            answer = await run.aescalate()
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not escalate; the student works")
            return None
        if answer is None:
            log.warning("session %s: escalation produced no answer; the student works", run.session_id)
            return None
        source = "human" if run.config.supervision.escalation == "human" else "teacher"
        session.delivering = True
        try:
            result = await Runner.run(self.agent, input, **self._kwargs(session, kwargs, model=AnswerModel(answer, source)))
        except Exception as exc:  # noqa: BLE001 - e.g. an answer that is not the agent's output_type
            log.warning("session %s: the escalation's answer could not be delivered (%s: %s); the student works",
                        run.session_id, type(exc).__name__, exc)
            return None
        finally:
            session.delivering = False
        session.sdk_result = self.last_result = result
        await session.finish(result.final_output)
        return result

    def _kwargs(self, session: _Session, kwargs: Mapping[str, Any], *, model: Any = None) -> dict[str, Any]:
        """The Runner kwargs for one attempt; the caller's own when Atlas cannot prepare them (unsupervised then)."""
        try:
            install_trace_processor()
            return session.run_kwargs(kwargs, model=model)
        except Exception:  # noqa: BLE001
            log.exception("Atlas could not prepare the run's hooks and config; it goes on unsupervised")
            session.broken = True
            return dict(kwargs)

    # ---------------------------------------------------------------------- for callers of Runner itself
    @contextlib.asynccontextmanager
    async def supervised(self, input: Any, *, metadata: Mapping[str, Any] | None = None, task_family: str | None = None,
                         learning_key: str | None = None) -> AsyncIterator[SupervisedRun | None]:
        """Supervise runs you start yourself: the session begins on entry and finishes on exit.

        >>> async with runner.supervised(question) as run:
        ...     result = await Runner.run(agent, question, run_config=runner.run_config(run), hooks=runner.hooks(run))
        ...     if run is not None and run.lane != "auto":
        ...         verdict = await run.avalidate_answer(result.final_output)   # retry yourself if you like

        On exit the session finishes with the last final output the hooks saw (or with ``error=`` when the block
        raised; the error propagates). Yields None when Atlas could not begin (then nothing is supervised).
        ``metadata``, ``task_family`` and ``learning_key`` go to ``Supervisor.begin`` for this session."""
        session = _Session(self, task_text(input), managed=False, metadata=metadata, task_family=task_family,
                           learning_key=learning_key)
        run = await session.ensure()
        token = current_run.set(session.key) if run is not None else None
        try:
            yield run
        except Exception as exc:
            await session.finish(error=f"{type(exc).__name__}: {exc}")
            raise
        else:
            await session.finish(session.final_output if session.has_output else None)
        finally:
            if token is not None:
                current_run.reset(token)

    def begin(self, input: Any, *, metadata: Mapping[str, Any] | None = None, task_family: str | None = None,
              learning_key: str | None = None) -> SupervisedRun | None:
        """Begin a session for a run you start yourself (sync); finish it with :meth:`finish`. None if Atlas failed.
        The keyword arguments are as for :meth:`supervised`."""
        return _Session(self, task_text(input), managed=False, metadata=metadata, task_family=task_family,
                        learning_key=learning_key).begin_sync()

    async def abegin(self, input: Any, *, metadata: Mapping[str, Any] | None = None, task_family: str | None = None,
                     learning_key: str | None = None) -> SupervisedRun | None:
        """Async twin of :meth:`begin`."""
        return await _Session(self, task_text(input), managed=False, metadata=metadata, task_family=task_family,
                              learning_key=learning_key).ensure()

    def finish(self, run: SupervisedRun | None, result: Any = None, *, error: str | None = None) -> SessionResult | None:
        """Finish a session begun with :meth:`begin`: ``result`` is a RunResult or the final output itself."""
        session = self._session_of(run)
        if session is None:
            return None
        session.sdk_result = result if _is_run_result(result) else None
        output = _final_output(result, session)
        return session.finish_sync(output, error=error)

    async def afinish(self, run: SupervisedRun | None, result: Any = None, *, error: str | None = None) -> SessionResult | None:
        """Async twin of :meth:`finish`."""
        session = self._session_of(run)
        if session is None:
            return None
        session.sdk_result = result if _is_run_result(result) else None
        return await session.finish(_final_output(result, session), error=error)

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
        """RunHooks that record ``run``'s model calls, tool calls and handoffs, then call ``hooks`` (yours)."""
        session = self._session_of(run)
        if session is None:
            return hooks if hooks is not None else RunHooks()
        return _AtlasHooks(session, hooks)

    def _session_of(self, run: SupervisedRun | None) -> _Session | None:
        """The session of ``run``, or of the innermost :meth:`supervised` block when ``run`` is None."""
        with self._lock:
            if run is None:
                key = current_run.get()
                return self._sessions.get(key) if key else None
            return next((s for s in self._sessions.values() if s.run is run), None)


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


def _tool_output(result: Any) -> Any:
    if result is None or isinstance(result, str):
        return result
    return clip(result)


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
