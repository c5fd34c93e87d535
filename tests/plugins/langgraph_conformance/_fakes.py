"""Offline stand-ins for the models and tools the patterns use: built fresh per run, counting what they do."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.tools import tool
from pydantic import ConfigDict, Field, PrivateAttr


class ScriptedChat(BaseChatModel):
    """A chat model that answers from a script, one AIMessage per call, and counts its calls in ``counts``.

    It accepts tools (``bind_tools`` returns itself) and streams like a provider: the content word by word (so
    ``messages`` mode yields many chunks), then the tool calls as one last chunk. ``cycle`` starts the script
    again when it runs out (for drivers that run the same app several times); otherwise running out is an error.
    ``per_conversation`` picks the turn by the conversation instead of by call order (the number of AI messages
    since the last human one), for one model shared by runs in parallel.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    script: list[AIMessage]
    counts: Any = Field(default_factory=Counter)  # Any: pydantic would copy a Counter, and the test's would stay 0
    label: str = "model"
    cycle: bool = False
    per_conversation: bool = False
    _turn: int = PrivateAttr(0)

    @property
    def _llm_type(self) -> str:
        return "scripted-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"label": self.label}

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedChat:
        return self

    def _next(self, messages: list[Any]) -> AIMessage:
        if self.per_conversation:
            since_human = 0
            for message in messages:
                since_human = 0 if message.type == "human" else since_human + (message.type == "ai")
            self._turn = since_human
        if self._turn >= len(self.script) and not self.cycle:
            raise AssertionError(f"{self.label}: the script has no turn {self._turn + 1}")
        message = self.script[self._turn % len(self.script)]
        self._turn += 1
        self.counts[self.label] += 1
        return message.model_copy(deep=True)

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._next(messages))])

    def _stream(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
        message = self._next(messages)
        tokens = [t for t in re.split(r"(\s)", message.content) if t] if isinstance(message.content, str) else []
        chunks = [AIMessageChunk(content=token, id=message.id) for token in tokens]
        if message.tool_calls or not chunks:
            chunks.append(AIMessageChunk(content="", id=message.id, tool_call_chunks=[
                {"name": call["name"], "args": json.dumps(call["args"]), "id": call["id"], "index": index}
                for index, call in enumerate(message.tool_calls)]))
        chunks[-1].chunk_position = "last"
        for chunk in chunks:
            generation = ChatGenerationChunk(message=chunk)
            if run_manager:
                run_manager.on_llm_new_token(chunk.content, chunk=generation)
            yield generation


def call(name: str, call_id: str, /, **args: Any) -> AIMessage:
    """An AI turn that calls one tool."""
    return AIMessage("", tool_calls=[{"name": name, "args": args, "id": call_id, "type": "tool_call"}])


NOTES = {"notes/todo.txt": "- milk\n- eggs\n- bread"}
QUESTION = "How many items are in notes/todo.txt?"
ANSWER = "There are 3 items: milk, eggs and bread."


def ask(text: str = QUESTION) -> dict[str, Any]:
    """A fresh input for a messages graph: add_messages gives input messages ids in place, so no two runs
    (bare and wrapped) may share one."""
    return {"messages": [HumanMessage(text)]}


def notes_script() -> list[AIMessage]:
    """Read the file, count its lines, answer."""
    return [call("read_file", "r1", path="notes/todo.txt"), call("count_lines", "c1", text=NOTES["notes/todo.txt"]),
            AIMessage(ANSWER)]


def notes_tools(counts: Counter) -> list[Any]:
    @tool
    def read_file(path: str) -> str:
        """Read a text file from the notes folder."""
        counts["read_file"] += 1
        return NOTES.get(path, f"no such file: {path}")

    @tool
    def count_lines(text: str) -> int:
        """Count the lines of a text."""
        counts["count_lines"] += 1
        return len(text.splitlines())

    return [read_file, count_lines]


