"""The ``messages`` export is what the student's model was sent and produced: for a LangGraph agent (``with_atlas``
and ``AtlasMiddleware``), an OpenAI Agents SDK agent and a BYOA agent, each driven by a scripted model that
remembers its inputs, on SQLite and PostgreSQL; and the records go through a real tool-calling chat template."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, convert_to_openai_messages
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool

from atlas_learning.export import export_sessions
from atlas_learning.store import SessionFilter, StepRecord
from atlas_learning.student import render_instructions
from atlas_plugins.byoa import atlas_agent, atlas_context, atlas_result
from atlas_plugins.langgraph import with_atlas
from atlas_plugins.langgraph.middleware import AtlasMiddleware
from tests import support

make_supervisor = support.make_supervisor  # the shared fixture: a supervisor on scripted models, once per store

QUESTION = "How many items are in notes/todo.txt?"
SYSTEM = "You answer questions about notes."
GUIDANCE = "Count with count_lines instead of guessing."


class BindingFake(GenericFakeChatModel):
    """A scripted chat model that binds tools as a provider model does (they reach the call's invocation
    params) and remembers every input it was sent and the tools it was offered."""

    inputs: list[list[Any]] = []
    offered: list[list[dict[str, Any]]] = []

    def bind_tools(self, tools, **kwargs):
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        type(self).inputs.append(list(messages))
        type(self).offered.append(list(kwargs.get("tools") or []))
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)


@tool
def read_file(path: str) -> str:
    """Read a text file from the notes folder."""
    return {"notes/todo.txt": "- milk\n- eggs\n- bread"}.get(path, f"no such file: {path}")


@tool
def count_lines(text: str) -> int:
    """Count the lines of a text."""
    return len(text.splitlines())


def turns() -> list[AIMessage]:
    return [AIMessage("", tool_calls=[{"name": "read_file", "args": {"path": "notes/todo.txt"}, "id": "r1"}]),
            AIMessage("Now I count.", tool_calls=[{"name": "count_lines", "args": {"text": "- milk\n- eggs\n- bread"}, "id": "c1"}]),
            AIMessage("There are 3 items.")]


def fresh_model() -> BindingFake:
    BindingFake.inputs, BindingFake.offered = [], []
    return BindingFake(messages=iter(turns()), disable_streaming=True)


def exported(supervisor, session_id: str) -> dict[str, Any]:
    assert supervisor.drain(10)
    buffer = io.StringIO()
    export_sessions(supervisor.store, buffer, format="messages", where=SessionFilter(review_status=None))
    records = {r["session_id"]: r for r in map(json.loads, buffer.getvalue().splitlines())}
    return records[session_id]


def comparable(messages: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Chat messages as (role, text, tool calls, tool call id): tool-call arguments parsed, so the OpenAI wire layout
    (arguments as JSON text) and TRL's (arguments as an object) compare."""
    rows = []
    for message in messages:
        calls = tuple((c.get("id"), c["function"]["name"], json.dumps(c["function"]["arguments"] if isinstance(c["function"]["arguments"], dict)
                       else json.loads(c["function"]["arguments"]), sort_keys=True)) for c in message.get("tool_calls") or ())
        content = message.get("content")
        rows.append((message["role"], content if isinstance(content, str) else "", calls, message.get("tool_call_id")))
    return rows


def assistant_positions(messages: list[dict[str, Any]]) -> list[int]:
    return [i for i, m in enumerate(messages) if m["role"] == "assistant"]


def assert_no_raw_turns(messages: list[dict[str, Any]]) -> None:
    """No model turn repeated as JSON text beside the real one (the bug this format had)."""
    for message in messages:
        content = message.get("content") or ""
        assert message["role"] == "tool" or not content.lstrip().startswith("{"), message


# ---------------------------------------------------------------------------------------------- LangGraph
def test_with_atlas_records_are_exactly_the_models_inputs_and_outputs(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})
    app = with_atlas(create_agent(fresh_model(), tools=[read_file, count_lines], system_prompt=SYSTEM), supervisor=supervisor,
                     agent_name="notes")
    app.invoke({"messages": [HumanMessage(QUESTION)]})
    record = exported(supervisor, app.session_result().session_id)
    messages = record["messages"]
    assert record["tools"] == [convert_to_openai_tool(read_file), convert_to_openai_tool(count_lines)] == BindingFake.offered[0]
    assert len(BindingFake.inputs) == 3 and assistant_positions(messages) == [2, 4, 6]  # each model call once
    for call, position in enumerate(assistant_positions(messages)):
        # everything before the call's answer is what that call was sent, message for message
        assert comparable(messages[:position]) == comparable(convert_to_openai_messages(BindingFake.inputs[call]))
    assert comparable(messages[2:3]) == comparable(convert_to_openai_messages(turns()[:1]))
    assert messages[4]["content"] == "Now I count." and messages[4]["tool_calls"][0]["function"] == {
        "name": "count_lines", "arguments": {"text": "- milk\n- eggs\n- bread"}}
    assert messages[5] == {"role": "tool", "tool_call_id": "c1", "name": "count_lines", "content": "3"}
    assert messages[-1] == {"role": "assistant", "content": "There are 3 items."} and len(messages) == 7
    assert_no_raw_turns(messages)


def test_with_atlas_coach_guidance_is_the_system_prompt_the_next_call_got(make_supervisor) -> None:
    verdicts = [{"accepted": False, "guidance": GUIDANCE, "reason": "x"}, {"accepted": True, "guidance": "", "reason": "ok"},
                {"accepted": True, "guidance": "", "reason": "ok"}]
    supervisor = make_supervisor({"teacher": {"Verdict": verdicts}}, supervision={"lane": "coach"})
    app = with_atlas(create_agent(fresh_model(), tools=[read_file, count_lines], system_prompt=SYSTEM), supervisor=supervisor)
    app.invoke({"messages": [HumanMessage(QUESTION)]})
    messages = exported(supervisor, app.session_result().session_id)["messages"]
    sent = [[m for m in convert_to_openai_messages(inputs) if m["role"] == "system"] for inputs in BindingFake.inputs]
    assert GUIDANCE not in json.dumps(sent[0]) and GUIDANCE in json.dumps(sent[1])  # the run really showed it there

    def system_before(position: int) -> str:
        return next(m["content"] for m in reversed(messages[:position]) if m["role"] == "system")

    for call, position in enumerate(assistant_positions(messages)):
        assert system_before(position) == "\n\n".join(m["content"] for m in sent[call])
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "system", "assistant", "tool", "system",
                                             "assistant"]
    assert GUIDANCE in messages[4]["content"] and GUIDANCE not in messages[7]["content"]  # shown to one call only
    assert not any(m["role"] == "user" and GUIDANCE in m["content"] for m in messages)
    assert_no_raw_turns(messages)


def test_middleware_records_the_request_system_prompt_and_tools(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "paired"})
    atlas = AtlasMiddleware(supervisor=supervisor, agent_name="notes")
    agent = create_agent(fresh_model(), tools=[read_file, count_lines], system_prompt=SYSTEM, middleware=[atlas])
    agent.invoke({"messages": [HumanMessage(QUESTION)]})
    record = exported(supervisor, atlas.last_result.session_id)
    messages = record["messages"]
    assert [t["function"]["name"] for t in record["tools"]] == ["read_file", "count_lines"]
    assert record["tools"][0] == convert_to_openai_tool(read_file)
    for call, position in enumerate(assistant_positions(messages)):
        assert comparable(messages[:position]) == comparable(convert_to_openai_messages(BindingFake.inputs[call]))
    assert messages[0] == {"role": "system", "content": SYSTEM} and messages[-1]["content"] == "There are 3 items."
    assert_no_raw_turns(messages)


# ---------------------------------------------------------------------------------------- OpenAI Agents SDK
@pytest.fixture
def local_tracing():
    """Tracing on, with no processor but the one Atlas adds: the SDK's default exporter never tries the network."""
    yield from support.local_agents_tracing()


async def test_agents_sdk_records_instructions_tools_and_handoffs(make_supervisor, local_tracing) -> None:
    from atlas_plugins.openai_agents import with_atlas as agents_with_atlas
    from tests.plugins.test_openai_agents import ANSWER, team
    from tests.plugins.test_openai_agents import QUESTION as ORDER_QUESTION

    verdicts = [{"accepted": False, "guidance": "Give the shipping date.", "reason": "vague"},
                {"accepted": True, "guidance": "", "reason": "ok"}]
    supervisor = make_supervisor({"teacher": {"Verdict": verdicts}}, supervision={"lane": "paired", "max_retries": 1})
    triage, triage_model, writer_model = team("It shipped.", ANSWER)
    runner = agents_with_atlas(triage, supervisor=supervisor, learning_key="orders")
    result = await runner.run(ORDER_QUESTION)
    assert result.final_output == ANSWER
    record = exported(supervisor, runner.session_result().session_id)
    messages, tools = record["messages"], record["tools"]
    assert [t["function"]["name"] for t in tools] == ["lookup_order", "transfer_to_writer"]
    assert tools[0]["function"]["parameters"]["properties"]["order_id"]["type"] == "string"
    sent = [call["instructions"] for model in (triage_model, writer_model) for call in model.calls]
    systems = [m["content"] for m in messages if m["role"] == "system"]
    assert systems[0] == triage_model.calls[0]["instructions"] and set(systems) <= set(sent)
    assert writer_model.calls[0]["instructions"] in systems  # the handoff's agent had its own instructions
    assert any("Give the shipping date." in s for s in systems)  # the retry's instructions held the guidance
    assert not any("Give the shipping date." in (m.get("content") or "") for m in messages if m["role"] == "user")
    calls = [c for m in messages for c in m.get("tool_calls") or ()]
    assert [c["function"]["name"] for c in calls[:2]] == ["lookup_order", "transfer_to_writer"]
    assert calls[0]["id"] == "lookup0" and calls[0]["function"]["arguments"] == {"order_id": "A1"}  # the SDK's call id
    results = [m for m in messages if m["role"] == "tool"]
    assert results[0] == {"role": "tool", "tool_call_id": "lookup0", "name": "lookup_order", "content": "shipped on May 2"}
    # the handoff call is answered with what the SDK returned to the model for it
    assert results[1] == {"role": "tool", "tool_call_id": calls[1]["id"], "name": "transfer_to_writer",
                          "content": json.dumps({"assistant": "writer"})}
    handoff_output = [item for item in writer_model.calls[0]["input"] if item.get("type") == "function_call_output"][-1]
    assert handoff_output["output"] == results[1]["content"]
    assert len(assistant_positions(messages)) == len(triage_model.calls) + len(writer_model.calls) == 6  # each call once
    answers = [m["content"] for m in messages if m["role"] == "assistant" and not m.get("tool_calls")]
    assert answers == ["It shipped.", ANSWER]  # the rejected answer once, as the writer produced it, then the final one
    assert_no_raw_turns(messages)


# -------------------------------------------------------------------------------------------------- BYOA
def test_byoa_records_what_the_agent_reports_it_sent(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})
    schema = {"name": "add", "description": "Add numbers.", "parameters": {"type": "object", "properties": {
        "numbers": {"type": "array", "items": {"type": "integer"}}}, "required": ["numbers"]}}

    @atlas_agent(supervisor=supervisor, learning_key="math")
    class Adder:
        def run(self, task: str) -> str:
            numbers = [int(t) for t in task.split() if t.isdigit()]
            context = atlas_context()
            system = "You add numbers." + (f"\n\n{context.instructions}" if context.instructions else "")
            context.model_call("tiny", system=system, tools=[schema],
                               output={"content": "", "tool_calls": [{"name": "add", "arguments": {"numbers": numbers}}]})
            context.tool_call("add", {"numbers": numbers}, output=sum(numbers))
            answer = f"The sum is {sum(numbers)}."
            context.model_call("tiny", system=system, tools=[schema], output=answer)
            return answer

    agent = Adder()
    agent.run("add 2 and 3")
    record = exported(supervisor, atlas_result(agent).session_id)
    steps = supervisor.store.rows(StepRecord, StepRecord.session_id == atlas_result(agent).session_id, order_by=StepRecord.step_index)
    # stored once: the second call was sent the same system prompt and tools, so its step does not repeat them
    assert steps[0].step_metadata == {"system": "You add numbers.", "tools": [{"type": "function", "function": schema}]}
    assert steps[2].step_metadata == {} and steps[2].output == "The sum is 5."
    assert json.loads(steps[0].output) == {"content": "", "tool_calls": [{"name": "add", "arguments": {"numbers": [2, 3]}}]}
    assert record["tools"] == [{"type": "function", "function": schema}]
    assert record["messages"] == [
        {"role": "system", "content": "You add numbers."},
        {"role": "user", "content": "add 2 and 3"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": record["messages"][2]["tool_calls"][0]["id"], "type": "function",
             "function": {"name": "add", "arguments": {"numbers": [2, 3]}}}]},
        {"role": "tool", "tool_call_id": record["messages"][2]["tool_calls"][0]["id"], "name": "add", "content": "5"},
        {"role": "assistant", "content": "The sum is 5."},
    ]


def test_byoa_without_recorded_prompts_falls_back_to_the_core_renderer(make_supervisor) -> None:
    """An agent that reports only its tools: the instructions are the core's rendering, its tool calls stand alone."""
    supervisor = make_supervisor(supervision={"lane": "auto"})

    @atlas_agent(supervisor=supervisor)
    class Echo:
        def run(self, task: str) -> str:
            atlas_context().tool_call("echo", {"text": task}, output=task)
            return task

    agent = Echo()
    agent.run("hello")
    record = exported(supervisor, atlas_result(agent).session_id)
    assert record["tools"] == [] and render_instructions() == ""
    assert [m["role"] for m in record["messages"]] == ["user", "assistant", "tool", "assistant"]


# --------------------------------------------------------------------------------------------- chat template
QWEN_STYLE_TEMPLATE = """{%- if tools %}
{{- '<|im_start|>system\\n' }}
{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}{%- else %}{{- 'You are a helpful assistant.' }}{%- endif %}
{{- '\\n\\n# Tools\\n\\nYou may call one or more functions.\\n<tools>' }}
{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}
{{- '\\n</tools><|im_end|>\\n' }}
{%- elif messages[0]['role'] == 'system' %}
{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message.role == 'user' or (message.role == 'system' and not loop.first) or (message.role == 'assistant' and not message.tool_calls) %}
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
{%- elif message.role == 'assistant' %}
{{- '<|im_start|>assistant' }}
{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}
{%- for tool_call in message.tool_calls %}
{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}
{{- '\\n<tool_call>\\n{"name": "' + tool_call.name + '", "arguments": ' }}
{%- if tool_call.arguments is string %}{{- tool_call.arguments }}{%- else %}{{- tool_call.arguments | tojson }}{%- endif %}
{{- '}\\n</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\\n' }}
{%- elif message.role == 'tool' %}
{%- if loop.index0 == 0 or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}
{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"""


def offline_tokenizer() -> Any:
    """A byte-level BPE tokenizer built here (nothing downloaded) with a Qwen2.5-style tool-calling chat template."""
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=300, special_tokens=["<|im_start|>", "<|im_end|>"],
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(["read the file and count the lines"] * 4, trainer=trainer)
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|im_end|>")
    tokenizer.chat_template = QWEN_STYLE_TEMPLATE
    return tokenizer


def test_exported_records_render_through_a_tool_calling_chat_template(make_supervisor) -> None:
    tokenizer = offline_tokenizer()
    verdicts = [{"accepted": False, "guidance": GUIDANCE, "reason": "x"}, {"accepted": True, "guidance": "", "reason": "ok"},
                {"accepted": True, "guidance": "", "reason": "ok"}]
    supervisor = make_supervisor({"teacher": {"Verdict": verdicts}}, supervision={"lane": "coach"})
    app = with_atlas(create_agent(fresh_model(), tools=[read_file, count_lines], system_prompt=SYSTEM), supervisor=supervisor)
    app.invoke({"messages": [HumanMessage(QUESTION)]})
    record = exported(supervisor, app.session_result().session_id)
    text = tokenizer.apply_chat_template(record["messages"], tools=record["tools"], tokenize=False)
    assert text.startswith(f"<|im_start|>system\n{SYSTEM}") and "<tools>" in text
    assert '"name": "read_file"' in text and '"name": "count_lines"' in text and "Read a text file from the notes folder." in text
    assert '<tool_call>\n{"name": "read_file", "arguments": {"path": "notes/todo.txt"}}\n</tool_call>' in text
    assert "<tool_response>\n- milk\n- eggs\n- bread\n</tool_response>" in text and "<tool_response>\n3\n</tool_response>" in text
    assert f"<|im_start|>system\n{SYSTEM}\n\n" in text.split("<tool_response>")[1] and GUIDANCE in text  # the guidance turn
    assert text.rstrip().endswith("There are 3 items.<|im_end|>")
    ids = tokenizer.apply_chat_template(record["messages"], tools=record["tools"], tokenize=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert len(ids) > 100 and tokenizer.decode(ids).count("<tool_call>") == 2


def test_a_tool_schema_the_core_cannot_read_is_a_clear_error(make_supervisor) -> None:
    supervisor = make_supervisor(supervision={"lane": "auto"})
    run = supervisor.begin("add 2 and 3")
    with pytest.raises(TypeError, match="convert the framework's tool first"):
        run.record_model_call(model="tiny", output="5", tools=[read_file])  # a LangChain tool, not a schema
    with pytest.raises(ValueError, match="needs a name"):
        run.record_model_call(model="tiny", output="5", tools=[{"description": "no name"}])
    run.record_model_call(model="tiny", output={"role": "ai", "content": "5"}, system="s",
                          tools=[{"type": "function", "function": {"name": "add"}}])
    step = run.steps[-1]
    assert len(run.steps) == 1 and run.usage.as_dict()["student"]["calls"] == 1  # the refused calls recorded nothing
    assert step["output"] == "5"  # a message without tool calls is stored as its text
    assert step["step_metadata"]["tools"] == [{"type": "function", "function": {
        "name": "add", "description": "", "parameters": {"type": "object", "properties": {}}}}]
    run.finish("5")


def test_parallel_calls_of_one_tool_are_answered_by_their_own_results(make_supervisor) -> None:
    """Two calls of one tool in one turn, finished in the other order: each result goes with its own call (by
    arguments), under the call id the framework gave it."""
    supervisor = make_supervisor(supervision={"lane": "auto"})
    run = supervisor.begin("double 1 and 2")
    run.record_model_call(model="tiny", system="You double numbers.", output={"content": "", "tool_calls": [
        {"name": "double", "arguments": {"n": 1}}, {"name": "double", "arguments": {"n": 2}}]})
    run.record_step(tool_name="double", tool_args={"n": 2}, output="4", metadata={"tool_call_id": "second"})
    run.record_step(tool_name="double", tool_args={"n": 1}, output="2", metadata={"tool_call_id": "first"})
    run.record_model_call(model="tiny", system="You double numbers.", output="2 and 4")
    session_id = run.finish("2 and 4").session_id
    messages = exported(supervisor, session_id)["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "tool", "assistant"]
    assert [(c["id"], c["function"]["arguments"]) for c in messages[2]["tool_calls"]] == [("first", {"n": 1}), ("second", {"n": 2})]
    assert [(m["tool_call_id"], m["content"]) for m in messages[3:5]] == [("second", "4"), ("first", "2")]
    assert messages[-1] == {"role": "assistant", "content": "2 and 4"}
