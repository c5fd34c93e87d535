"""AtlasChatModel: an Atlas ChatModel as a LangChain tool-calling chat model, driven offline by scripted models."""

from __future__ import annotations

import subprocess
import sys
from typing import Any, Literal

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel

from atlas_learning.config import ModelSettings
from atlas_learning.errors import InvalidOutputError
from atlas_learning.models import ScriptedModel, create_model
from atlas_plugins.langgraph.chat_model import FINAL_ANSWER, AtlasChatModel, atlas_messages

FILES = {"notes.txt": "buy milk\ncall mom\nfix bike", "todo.md": "# todo"}
QUESTION = "How many lines does notes.txt have?"


@tool
def list_files() -> str:
    """List the files in the folder.

    A second line that the prompt leaves out."""
    return "\n".join(sorted(FILES))


@tool
def read_file(path: str) -> str:
    """Read a text file and return its content."""
    return FILES.get(path, f"no such file: {path}")


def scripted(*responses: Any) -> ScriptedModel:
    model = create_model(ModelSettings(provider="scripted", max_retries=0, options={"responses": list(responses)}))
    assert isinstance(model, ScriptedModel)
    return model


def call(action: str, **arguments: Any) -> dict[str, Any]:
    return {"step": {"action": action, "arguments": arguments}}


def answer(text: str) -> dict[str, Any]:
    return {"step": {"action": FINAL_ANSWER, "answer": text}}


def actions_offered(schema: dict[str, Any]) -> set[str]:
    """The ``action`` constants of every branch of a step schema."""
    defs = schema.get("$defs", {})
    step = schema["properties"]["step"]
    refs = [branch["$ref"] for branch in step.get("oneOf", [])] or [step["$ref"]]
    return {defs[ref.split("/")[-1]]["properties"]["action"]["const"] for ref in refs}


def arguments_schema(schema: dict[str, Any], action: str) -> dict[str, Any]:
    for definition in schema["$defs"].values():
        if definition.get("properties", {}).get("action", {}).get("const") == action:
            return schema["$defs"][definition["properties"]["arguments"]["$ref"].split("/")[-1]]
    raise AssertionError(f"no branch for {action}")


# ------------------------------------------------------------------------------------------ plain text
def test_without_tools_the_answer_is_plain_text() -> None:
    model = scripted("  Paris is the capital.  ")
    message = AtlasChatModel(model).invoke([SystemMessage("Be brief."), HumanMessage("Capital of France?")])
    assert message.content == "Paris is the capital."
    assert message.tool_calls == []
    (sent, schema), = model.requests
    assert schema is None
    assert sent == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]


def test_stop_sequences_cut_a_plain_answer() -> None:
    message = AtlasChatModel(scripted("one\nObservation: two")).invoke("go", stop=["Observation:"])
    assert message.content == "one\n"


def test_temperature_and_max_tokens_reach_the_atlas_model() -> None:
    seen: dict[str, Any] = {}
    model = scripted("ok")
    original = model.generate

    def spy(messages: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        return original(messages, **kwargs)

    model.generate = spy  # type: ignore[method-assign]
    AtlasChatModel(model, max_tokens=77, temperature=0.3).invoke("hi")
    assert (seen["max_tokens"], seen["temperature"]) == (77, 0.3)


# ---------------------------------------------------------------------------------------- tool calls
def test_a_tool_call_becomes_an_ai_message_tool_call_with_a_fresh_id() -> None:
    model = scripted(call("read_file", path="notes.txt"), call("read_file", path="todo.md"))
    bound = AtlasChatModel(model).bind_tools([list_files, read_file])
    first, second = bound.invoke(QUESTION), bound.invoke(QUESTION)
    assert first.content == ""
    assert [(c["name"], c["args"]) for c in first.tool_calls] == [("read_file", {"path": "notes.txt"})]
    assert second.tool_calls[0]["args"] == {"path": "todo.md"}
    assert first.tool_calls[0]["id"].startswith("call_")
    assert first.tool_calls[0]["id"] != second.tool_calls[0]["id"]


def test_the_schema_offers_exactly_the_bound_tools_and_the_final_answer() -> None:
    schemas: list[dict[str, Any]] = []

    def respond(messages: list[dict[str, str]], schema: dict[str, Any] | None) -> Any:
        assert schema is not None
        schemas.append(schema)
        return answer("done")

    model = scripted(respond)
    AtlasChatModel(model).bind_tools([list_files, read_file]).invoke(QUESTION)
    (schema,) = schemas
    assert actions_offered(schema) == {"list_files", "read_file", FINAL_ANSWER}
    read_args = arguments_schema(schema, "read_file")
    assert read_args["required"] == ["path"] and read_args["additionalProperties"] is False
    assert arguments_schema(schema, "list_files")["properties"] == {}
    system = model.requests[0][0][0]
    assert system["role"] == "system"
    assert "- list_files(): List the files in the folder." in system["content"]
    assert "- read_file(path): Read a text file and return its content." in system["content"]
    assert "A second line" not in system["content"]


@pytest.mark.parametrize(
    ("tool_choice", "offered"),
    [("any", {"list_files", "read_file"}), ("required", {"list_files", "read_file"}), ("read_file", {"read_file"}),
     ({"type": "function", "function": {"name": "list_files"}}, {"list_files"}), ("auto", None)],
)
def test_tool_choice_narrows_the_schema(tool_choice: Any, offered: set[str] | None) -> None:
    model = scripted(call("read_file", path="a") if offered != {"list_files"} else call("list_files"))
    AtlasChatModel(model).bind_tools([list_files, read_file], tool_choice=tool_choice).invoke(QUESTION)
    schema = model.requests[0][1]
    assert schema is not None
    assert actions_offered(schema) == (offered or {"list_files", "read_file", FINAL_ANSWER})


def test_tool_choice_none_is_a_plain_text_call() -> None:
    model = scripted("just text")
    message = AtlasChatModel(model).bind_tools([read_file], tool_choice="none").invoke(QUESTION)
    assert message.content == "just text" and model.requests[0][1] is None


def test_bind_tools_refuses_what_it_cannot_offer() -> None:
    @tool
    def final_answer(answer: str) -> str:
        """Clashes with the answer branch."""
        return answer

    chat = AtlasChatModel(scripted())
    with pytest.raises(ValueError, match="may not be named 'final_answer'"):
        chat.bind_tools([final_answer])
    with pytest.raises(ValueError, match="names no bound tool"):
        chat.bind_tools([read_file], tool_choice="write_file")


# LangChain warns about its own model of the tool's arguments; a field named "schema" is what this test is about.
@pytest.mark.filterwarnings('ignore:Field name "schema"')
def test_argument_types_are_mapped_to_simple_fields() -> None:
    @tool
    def search(
        pattern: str, limit: int, min_score: float, recursive: bool, folders: list[str],
        mode: Literal["glob", "regex"] = "glob", schema: str | None = None,
    ) -> str:
        """Search files."""
        return ""

    model = scripted(call("search", pattern="*.txt", limit=3, min_score=0.5, recursive=True, folders=["a"],
                          mode="regex", schema=None))
    message = AtlasChatModel(model).bind_tools([search]).invoke("find text files")
    assert message.tool_calls[0]["args"] == {"pattern": "*.txt", "limit": 3, "min_score": 0.5, "recursive": True,
                                             "folders": ["a"], "mode": "regex"}  # None left out: the default applies
    properties = arguments_schema(model.requests[0][1] or {}, "search")["properties"]
    assert list(properties) == ["pattern", "limit", "min_score", "recursive", "folders", "mode", "schema"]
    assert [properties[name].get("type") for name in ("pattern", "limit", "min_score", "recursive", "folders")] == [
        "string", "integer", "number", "boolean", "array"]
    assert properties["folders"]["items"] == {"type": "string"}
    assert properties["mode"]["anyOf"][0]["enum"] == ["glob", "regex"]


def test_the_final_answer_branch_is_the_message_content() -> None:
    bound = AtlasChatModel(scripted(answer("It has 3 lines."), {"action": FINAL_ANSWER, "answer": "3"}))
    bound = bound.bind_tools([read_file])
    message = bound.invoke(QUESTION)
    assert message.content == "It has 3 lines." and message.tool_calls == []
    assert bound.invoke(QUESTION).content == "3"  # the bare step, without the "step" wrapper, is accepted too


def test_with_structured_output_works_through_bind_tools() -> None:
    class City(BaseModel):
        name: str
        population: int

    model = scripted(call("City", name="Lyon", population=520000))
    result = AtlasChatModel(model).with_structured_output(City).invoke("A French city?")
    assert result == City(name="Lyon", population=520000)
    assert actions_offered(model.requests[0][1] or {}) == {"City"}


# ------------------------------------------------------------------------------------------- messages
def test_tool_calls_and_results_become_short_lines_in_merged_turns() -> None:
    messages = [
        SystemMessage("You are a file agent."),
        HumanMessage(QUESTION),
        AIMessage("Let me look.", tool_calls=[{"name": "list_files", "args": {}, "id": "c1"},
                                              {"name": "read_file", "args": {"path": "notes.txt"}, "id": "c2"}]),
        ToolMessage(content=[{"type": "text", "text": "notes.txt\n"}, {"type": "text", "text": "todo.md"}],
                    tool_call_id="c1"),
        ToolMessage(content="x" * 50, tool_call_id="c2", name="read_file"),
        ToolMessage(content="boom", tool_call_id="c9", status="error"),
    ]
    converted = atlas_messages(messages, tools=[], max_tool_result_chars=20)
    assert converted == [
        {"role": "system", "content": "You are a file agent."},
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": 'Let me look.\n{"step": {"action": "list_files", "arguments": {}}}\n'
                                         '{"step": {"action": "read_file", "arguments": {"path": "notes.txt"}}}'},
        {"role": "user", "content": "result of list_files: notes.txt\ntodo.md\n"
                                    f"result of read_file: {'x' * 20}... [30 more characters]\n"
                                    "error from a tool: boom"},
    ]


def test_system_messages_and_the_tool_list_form_one_leading_system_message() -> None:
    from langchain_core.utils.function_calling import convert_to_openai_tool

    converted = atlas_messages([HumanMessage("hi"), SystemMessage("Extra rule.")],
                               tools=[convert_to_openai_tool(read_file)])
    assert [m["role"] for m in converted] == ["system", "user"]
    assert converted[0]["content"].startswith("Extra rule.\n\nTools:\n- read_file(path)")


# ---------------------------------------------------------------------------------------------- usage
def test_usage_and_model_go_into_the_message_metadata() -> None:
    model = scripted(call("list_files"))
    message = AtlasChatModel(model).bind_tools([list_files]).invoke(QUESTION)
    recorded = model.ledger.total()
    assert recorded.calls == 1 and recorded.input_tokens > 0 and recorded.output_tokens > 0
    assert message.usage_metadata == {"input_tokens": recorded.input_tokens, "output_tokens": recorded.output_tokens,
                                      "total_tokens": recorded.total_tokens}
    assert message.response_metadata["model_name"] == "scripted"
    assert message.response_metadata["atlas_provider"] == "scripted"
    params = AtlasChatModel(model)._get_ls_params()
    assert (params["ls_provider"], params["ls_model_name"]) == ("scripted", "scripted")


# ------------------------------------------------------------------------------------ repeated calls
def test_a_repeated_call_is_turned_into_a_request_for_the_answer() -> None:
    model = scripted(call("list_files"), call("list_files"), answer("Two files."))
    agent = create_agent(AtlasChatModel(model), tools=[list_files])
    result = agent.invoke({"messages": [("user", "Which files are there?")]})
    final = result["messages"][-1]
    assert final.content == "Two files." and final.response_metadata["repeated_call_stopped"] is True
    assert [m.type for m in result["messages"]] == ["human", "ai", "tool", "ai"]
    retry_messages, retry_schema = model.requests[2]
    assert actions_offered(retry_schema or {}) == {FINAL_ANSWER}
    assert retry_messages[-1]["content"].endswith("Now answer: Which files are there?")
    assert final.usage_metadata["input_tokens"] == sum(  # both calls of the turn are counted
        len(" ".join(m["content"] for m in sent).split()) for sent, _ in model.requests[1:])


def test_repeated_calls_pass_through_when_the_guard_is_off() -> None:
    model = scripted(call("list_files"))
    history = [HumanMessage("Which files?"), AIMessage("", tool_calls=[{"name": "list_files", "args": {}, "id": "a"}]),
               ToolMessage("notes.txt", tool_call_id="a")]
    message = AtlasChatModel(model, stop_repeated_calls=False).bind_tools([list_files]).invoke(history)
    assert message.tool_calls[0]["name"] == "list_files" and len(model.requests) == 1


# ---------------------------------------------------------------------------------------- end to end
def agent_script() -> ScriptedModel:
    def check_result(messages: list[dict[str, str]], schema: dict[str, Any] | None) -> Any:
        assert messages[-1]["content"] == "result of read_file: buy milk\ncall mom\nfix bike"
        return answer("notes.txt has 3 lines.")

    return scripted(call("list_files"), call("read_file", path="notes.txt"), check_result)


def assert_agent_transcript(result: dict[str, Any], model: ScriptedModel) -> None:
    messages = result["messages"]
    assert [m.type for m in messages] == ["human", "ai", "tool", "ai", "tool", "ai"]
    assert messages[2].content == "notes.txt\ntodo.md"
    assert messages[4].content == "buy milk\ncall mom\nfix bike"
    assert messages[-1].content == "notes.txt has 3 lines."
    assert len(model.requests) == 3
    # the step the model wrote, as it wrote it: each request continues the one before (prefix-stable)
    assert model.requests[2][0][-2]["content"] == '{"step": {"action": "read_file", "arguments": {"path": "notes.txt"}}}'
    assert model.requests[2][0][: len(model.requests[1][0])] == model.requests[1][0]


def test_create_agent_runs_tool_calls_to_a_final_answer() -> None:
    model = agent_script()
    agent = create_agent(AtlasChatModel(model), tools=[list_files, read_file], system_prompt="You are a file agent.")
    result = agent.invoke({"messages": [("user", QUESTION)]})
    assert_agent_transcript(result, model)
    assert model.requests[0][0][0]["content"].startswith("You are a file agent.\n\nTools:")


async def test_create_agent_runs_asynchronously() -> None:
    model = agent_script()
    agent = create_agent(AtlasChatModel(model), tools=[list_files, read_file])
    result = await agent.ainvoke({"messages": [("user", QUESTION)]})
    assert_agent_transcript(result, model)


# ---------------------------------------------------------------------------------------------- errors
def test_malformed_output_raises_a_clear_atlas_error() -> None:
    model = scripted("I will read the file.", '{"step": {"action": "delete_file", "arguments": {}}}')
    with pytest.raises(InvalidOutputError, match="does not match ToolCallOrAnswer after one repair attempt") as info:
        AtlasChatModel(model).bind_tools([read_file]).invoke(QUESTION)
    assert "delete_file" in info.value.raw_output
    assert "action" in str(info.value)


async def test_malformed_output_raises_asynchronously_too() -> None:
    model = scripted("{}", "{}")
    with pytest.raises(InvalidOutputError, match="ToolCallOrAnswer"):
        await AtlasChatModel(model).bind_tools([read_file]).ainvoke(QUESTION)


def test_an_empty_final_answer_is_invalid_not_silent() -> None:
    model = scripted(answer(" "), answer(""))
    with pytest.raises(InvalidOutputError, match="the final answer is empty"):
        AtlasChatModel(model).bind_tools([read_file]).invoke(QUESTION)


class GrammarModel(ScriptedModel):
    """A scripted model that calls itself ``local``, the provider whose decoding follows the schema."""

    provider = "local"


def test_the_answer_length_is_limited_only_where_decoding_enforces_it() -> None:
    local = GrammarModel(ModelSettings(provider="scripted", max_retries=0), responses=[answer("x" * 80)])
    message = AtlasChatModel(local, max_answer_chars=50).bind_tools([read_file]).invoke(QUESTION)
    assert message.content == "x" * 80  # a schema hint for the decoder, not a validation rule
    local_answer = (local.requests[0][1] or {})["$defs"]["FinalAnswer"]["properties"]["answer"]
    assert (local_answer["minLength"], local_answer["maxLength"]) == (1, 50)
    cloud = scripted(answer("y"))
    AtlasChatModel(cloud, max_answer_chars=50).bind_tools([read_file]).invoke(QUESTION)
    cloud_answer = (cloud.requests[0][1] or {})["$defs"]["FinalAnswer"]["properties"]["answer"]
    assert "maxLength" not in cloud_answer and "minLength" not in cloud_answer


def test_text_arguments_are_limited_only_where_decoding_enforces_it() -> None:
    """A small model repeating itself inside an argument (a search pattern) closes the string at the limit under
    constrained decoding, instead of running to its token limit with the JSON unclosed."""
    local = GrammarModel(ModelSettings(provider="scripted", max_retries=0), responses=[call("read_file", path="p" * 90)])
    message = AtlasChatModel(local, max_argument_chars=60).bind_tools([read_file]).invoke(QUESTION)
    assert message.tool_calls[0]["args"] == {"path": "p" * 90}  # a schema hint for the decoder, not a validation rule
    assert arguments_schema(local.requests[0][1] or {}, "read_file")["properties"]["path"]["maxLength"] == 60
    cloud = scripted(call("read_file", path="a.txt"))
    AtlasChatModel(cloud, max_argument_chars=60).bind_tools([read_file]).invoke(QUESTION)
    assert "maxLength" not in arguments_schema(cloud.requests[0][1] or {}, "read_file")["properties"]["path"]


# ----------------------------------------------------------------------------------------------- export
def test_the_package_exports_it_lazily() -> None:
    import atlas_plugins.langgraph as package

    assert package.AtlasChatModel is AtlasChatModel and "AtlasChatModel" in package.__all__
    code = "import sys, atlas_plugins.langgraph; print(any(m.startswith('langchain') for m in sys.modules))"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "False"
