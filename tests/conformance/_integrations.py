"""The same agent, built in every integration around one scripted :class:`~._student.Student`.

Each integration gives its agent one tool, ``lookup(order: int) -> str``, and a model (or agent body) that plays
the student's turns. A driver exposes:

* ``run(task, metadata=None, checks=None, task_family=None)``: run the agent as a user would and return the
  user-visible answer (or raise what the agent raised); ``arun`` is the async entry, for cancellation;
* ``session_id``: the one session the run began (every ``Supervisor.begin`` / ``abegin`` is watched);
* ``result()``: what the adapter itself hands the user about the last session (``last_result``,
  ``session_result()``, ``atlas_result``, the PendingSession ``supervise`` returns).

Where an integration legitimately differs, the driver says so in a class attribute with the reason, and the
tests assert the difference rather than loosening what they assert for every integration.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import pytest

from atlas_learning import session_options
from atlas_learning.judges import Check
from atlas_learning.supervisor import SupervisedRun, Supervisor
from tests.support import record_begun

from ._student import Student, Turn, lookup

__all__ = ["AGENT", "BASE_PROMPT", "INTEGRATIONS", "Integration"]

AGENT = "order-agent"
BASE_PROMPT = "You answer questions about orders."


class Integration:
    """One integration's driver. Subclasses build the agent lazily in :meth:`run` (per run, since some integrations
    take checks only where the agent is wrapped)."""

    id: ClassVar[str]
    #: None when the integration reports the agent's tool calls as steps (stored, validated in coach); else why not.
    no_tool_steps: ClassVar[str | None] = None
    #: None when a run can be cancelled from the caller's side (an async entry); else why not.
    not_cancellable: ClassVar[str | None] = None
    #: None when the call itself carries per-call checks; else where they go instead, and why.
    checks_at_wrap: ClassVar[str | None] = None

    def __init__(self, supervisor: Supervisor, student: Student) -> None:
        self.supervisor = supervisor
        self.student = student
        self.runs: list[SupervisedRun] = record_begun(supervisor)

    @property
    def session_id(self) -> str:
        """The session of the run: exactly one must have begun."""
        assert len(self.runs) == 1, f"{self.id}: one run began {len(self.runs)} sessions"
        return self.runs[0].session_id

    def run(self, task: str, *, metadata: Mapping[str, Any] | None = None, checks: Sequence[Check] | None = None,
            task_family: str | None = None) -> str:
        raise NotImplementedError

    async def arun(self, task: str, *, metadata: Mapping[str, Any] | None = None, checks: Sequence[Check] | None = None,
                   task_family: str | None = None) -> str:
        raise NotImplementedError

    def result(self) -> Any:
        raise NotImplementedError


# ------------------------------------------------------------------------------------------ LangChain parts
@functools.cache
def _chat_model_class() -> type:
    """A LangChain chat model that plays the student: it sees the system messages of each request."""
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage, SystemMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    def system_text(messages: Sequence[Any]) -> str:
        return "\n\n".join(_text(m.content) for m in messages if isinstance(m, SystemMessage))

    def result(turn: Turn) -> ChatResult:
        if turn.kind == "tool":
            message = AIMessage(content="", tool_calls=[{"name": turn.tool_name, "args": turn.args, "id": turn.call_id}])
        else:
            message = AIMessage(content=turn.text)
        return ChatResult(generations=[ChatGeneration(message=message)])

    class StudentChatModel(BaseChatModel):
        student: Any

        @property
        def _llm_type(self) -> str:
            return "conformance-student"

        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self

        def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
            return result(self.student.next(system_text(messages)))

        async def _agenerate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
            return result(await self.student.anext(system_text(messages)))

    return StudentChatModel


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(b if isinstance(b, str) else str(b.get("text", "")) for b in content or [])


def _langchain_tool() -> Any:
    from langchain_core.tools import tool

    @tool("lookup")
    def lookup_tool(order: int) -> str:
        """Look an order up by its number."""
        return lookup(order)

    return lookup_tool


def _configurable(metadata: Mapping[str, Any] | None, checks: Sequence[Check] | None, task_family: str | None) -> dict[str, Any]:
    """The per-invocation options both LangGraph integrations read from ``config["configurable"]``."""
    configurable: dict[str, Any] = {}
    if metadata:
        configurable["atlas_metadata"] = dict(metadata)
    if checks:
        configurable["atlas_checks"] = list(checks)
    if task_family:
        configurable["atlas_task_family"] = task_family
    return {"configurable": configurable}


def _last_ai_text(output: Mapping[str, Any]) -> str:
    last = output["messages"][-1]
    assert last.type == "ai", f"the run ended on a {last.type} message, not an answer"
    return _text(last.content)


class WithAtlas(Integration):
    """``with_atlas(create_agent(...))``: the LangGraph graph wrapper."""

    id = "with_atlas"

    def _app(self) -> Any:
        pytest.importorskip("langgraph")
        from langchain.agents import create_agent
        from langchain_core.messages import HumanMessage

        from atlas_plugins.langgraph import with_atlas

        graph = create_agent(_chat_model_class()(student=self.student), tools=[_langchain_tool()], system_prompt=BASE_PROMPT)
        self.app = with_atlas(graph, supervisor=self.supervisor, agent_name=AGENT)
        self._human = HumanMessage
        return self.app

    def run(self, task: str, *, metadata=None, checks=None, task_family=None) -> str:
        app = self._app()
        return _last_ai_text(app.invoke({"messages": [self._human(task)]}, _configurable(metadata, checks, task_family)))

    async def arun(self, task: str, *, metadata=None, checks=None, task_family=None) -> str:
        app = self._app()
        return _last_ai_text(await app.ainvoke({"messages": [self._human(task)]}, _configurable(metadata, checks, task_family)))

    def result(self) -> Any:
        return self.app.session_result()


class Middleware(Integration):
    """``create_agent(model, tools, middleware=[AtlasMiddleware(...)])``."""

    id = "middleware"

    def _agent(self) -> Any:
        pytest.importorskip("langchain")
        from langchain.agents import create_agent

        from atlas_plugins.langgraph import AtlasMiddleware

        self.atlas = AtlasMiddleware(supervisor=self.supervisor, agent_name=AGENT)
        return create_agent(_chat_model_class()(student=self.student), tools=[_langchain_tool()], system_prompt=BASE_PROMPT,
                            middleware=[self.atlas])

    def run(self, task: str, *, metadata=None, checks=None, task_family=None) -> str:
        output = self._agent().invoke({"messages": [("user", task)]}, _configurable(metadata, checks, task_family))
        return _last_ai_text(output)

    async def arun(self, task: str, *, metadata=None, checks=None, task_family=None) -> str:
        output = await self._agent().ainvoke({"messages": [("user", task)]}, _configurable(metadata, checks, task_family))
        return _last_ai_text(output)

    def result(self) -> Any:
        return self.atlas.last_result


# ------------------------------------------------------------------------------------------ Agents SDK parts
@functools.cache
def _sdk_model_class() -> type:
    """An ``agents.Model`` that plays the student: it sees the instructions of each call."""
    from agents import Model, ModelResponse, Usage
    from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText

    class StudentModel(Model):
        def __init__(self, student: Student) -> None:
            self.student = student
            self.model = "conformance-student"

        async def get_response(self, system_instructions: Any, input: Any, model_settings: Any, tools: Any, output_schema: Any,
                               handoffs: Any, tracing: Any, **kwargs: Any) -> Any:
            turn = await self.student.anext(system_instructions or "")
            if turn.kind == "tool":
                item: Any = ResponseFunctionToolCall(id=f"fc_{turn.call_id}", call_id=turn.call_id, type="function_call",
                                                     name=turn.tool_name, arguments=json.dumps(turn.args))
            else:
                item = ResponseOutputMessage(id=f"msg_{turn.index}", type="message", role="assistant", status="completed",
                                             content=[ResponseOutputText(type="output_text", text=turn.text, annotations=[])])
            return ModelResponse(output=[item], usage=Usage(requests=1, input_tokens=10, output_tokens=5, total_tokens=15),
                                 response_id=None)

        def stream_response(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError("the conformance suite runs the Agents SDK without streaming")

    return StudentModel


def _sdk_tool() -> Any:
    from agents import function_tool

    @function_tool(name_override="lookup")
    def lookup_tool(order: int) -> str:
        """Look an order up by its number."""
        return lookup(order)

    return lookup_tool


class AgentsSdk(Integration):
    """``atlas_plugins.openai_agents.with_atlas(agent)``: the AtlasRunner."""

    id = "agents_sdk"
    checks_at_wrap = ("AtlasRunner.run takes atlas_metadata= and atlas_task_family= per run but no checks: they go to "
                      "with_atlas(checks=...), which builds the runner for this one run")

    def _runner(self, checks: Sequence[Check] | None) -> Any:
        pytest.importorskip("agents")
        from agents import Agent

        from atlas_plugins.openai_agents import with_atlas

        agent = Agent(name=AGENT, instructions=BASE_PROMPT, model=_sdk_model_class()(self.student), tools=[_sdk_tool()])
        self.runner = with_atlas(agent, supervisor=self.supervisor, checks=list(checks or ()))
        return self.runner

    def run(self, task: str, *, metadata=None, checks=None, task_family=None) -> str:
        return asyncio.run(self.arun(task, metadata=metadata, checks=checks, task_family=task_family))

    async def arun(self, task: str, *, metadata=None, checks=None, task_family=None) -> str:
        result = await self._runner(checks).run(task, atlas_metadata=metadata, atlas_task_family=task_family)
        return result.final_output

    def result(self) -> Any:
        return self.runner.session_result()


# ------------------------------------------------------------------------------------------------- BYOA
_BYOA_CHECKS = ("@atlas_agent keeps the entry method's own signature and session_options carries no checks: they go "
                "to @atlas_agent(checks=...), on a class decorated for this one run")


class ByoaSync(Integration):
    """``@atlas_agent`` on a class whose sync ``run(task) -> str`` reads ``atlas_context().instructions`` before each
    model call and reports its tool calls through ``atlas_context().tool_call``."""

    id = "byoa_sync"
    not_cancellable = "a sync entry method runs to its end in the caller's thread: there is no task to cancel"
    checks_at_wrap = _BYOA_CHECKS

    def _agent(self, checks: Sequence[Check] | None) -> Any:
        from atlas_plugins.byoa import atlas_agent, atlas_context

        student = self.student

        @atlas_agent(supervisor=self.supervisor, agent_name=AGENT, checks=list(checks or ()))
        class OrderAgent:
            def run(self, task: str) -> str:
                while True:
                    turn = student.next(atlas_context().instructions)
                    if turn.kind == "answer":
                        return turn.text
                    atlas_context().tool_call(turn.tool_name, turn.args, lookup(**turn.args))

        self.agent = OrderAgent()
        return self.agent

    def run(self, task: str, *, metadata=None, checks=None, task_family=None) -> str:
        agent = self._agent(checks)
        with session_options(metadata=metadata, task_family=task_family):
            return agent.run(task)

    def result(self) -> Any:
        from atlas_plugins.byoa import atlas_result

        return atlas_result(self.agent)


class ByoaAsync(Integration):
    """``@atlas_agent`` on a class whose ``async run(task) -> str`` does the same as :class:`ByoaSync`'s."""

    id = "byoa_async"
    checks_at_wrap = _BYOA_CHECKS

    def _agent(self, checks: Sequence[Check] | None) -> Any:
        from atlas_plugins.byoa import atlas_agent, atlas_context

        student = self.student

        @atlas_agent(supervisor=self.supervisor, agent_name=AGENT, checks=list(checks or ()))
        class OrderAgent:
            async def run(self, task: str) -> str:
                while True:
                    turn = await student.anext(atlas_context().instructions)
                    if turn.kind == "answer":
                        return turn.text
                    await atlas_context().atool_call(turn.tool_name, turn.args, lookup(**turn.args))

        self.agent = OrderAgent()
        return self.agent

    def run(self, task: str, *, metadata=None, checks=None, task_family=None) -> str:
        return asyncio.run(self.arun(task, metadata=metadata, checks=checks, task_family=task_family))

    async def arun(self, task: str, *, metadata=None, checks=None, task_family=None) -> str:
        agent = self._agent(checks)
        with session_options(metadata=metadata, task_family=task_family):
            return await agent.run(task)

    def result(self) -> Any:
        from atlas_plugins.byoa import atlas_result

        return atlas_result(self.agent)


# --------------------------------------------------------------------------------------------- supervise
class Supervise(Integration):
    """``Supervisor.supervise(task, attempt)`` (``asupervise`` for the async entry): ``attempt(instructions)`` plays
    one attempt; its tool runs, unreported."""

    id = "supervise"
    no_tool_steps = ("Supervisor.supervise runs a plain attempt(instructions) -> answer function: it has no channel to "
                     "report tool calls, so the tool runs unseen and no tool step exists")

    def run(self, task: str, *, metadata=None, checks=None, task_family=None) -> str:
        def attempt(instructions: str) -> str:
            while True:
                turn = self.student.next(instructions)
                if turn.kind == "answer":
                    return turn.text
                lookup(**turn.args)

        self.pending = self.supervisor.supervise(task, attempt, agent_name=AGENT, metadata=metadata, checks=list(checks or ()),
                                                 task_family=task_family)
        return self.pending.final_answer

    async def arun(self, task: str, *, metadata=None, checks=None, task_family=None) -> str:
        async def attempt(instructions: str) -> str:
            while True:
                turn = await self.student.anext(instructions)
                if turn.kind == "answer":
                    return turn.text
                lookup(**turn.args)

        self.pending = await self.supervisor.asupervise(task, attempt, agent_name=AGENT, metadata=metadata,
                                                        checks=list(checks or ()), task_family=task_family)
        return self.pending.final_answer

    def result(self) -> Any:
        return self.pending


INTEGRATIONS: dict[str, type[Integration]] = {
    cls.id: cls for cls in (WithAtlas, Middleware, AgentsSdk, ByoaSync, ByoaAsync, Supervise)
}
