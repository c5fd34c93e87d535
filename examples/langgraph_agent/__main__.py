"""A LangChain create_agent agent under Atlas supervision, offline.

The agent's own model is a scripted tool-calling fake (so the example needs no key); its tools are real and
work on a small notes folder this script creates. The supervision roles (teacher, judges, probe, synthesizer)
use whatever atlas.yaml says, by default the embedded SmolLM2 model, in-process.

    python -m examples.langgraph_agent            # three questions, one session each
    python -m examples.langgraph_agent --lane coach

Each run prints the answer and the session Atlas recorded; `.atlas/atlas.db` keeps them.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool

from atlas_learning import AtlasConfig
from atlas_learning.store import StepRecord
from atlas_plugins.langgraph import with_atlas

NOTES = {"todo.txt": "- milk\n- eggs\n- bread\n", "ideas.txt": "- a garden\n- a bike\n"}
QUESTIONS = {"todo.txt": "How many items are on my todo list?", "ideas.txt": "How many ideas did I write down?"}


class ScriptedToolModel(GenericFakeChatModel):
    """The student's model: answers from a script; accepts tools like a real chat model."""

    def bind_tools(self, tools, **kwargs):
        return self


def make_tools(folder: Path):
    @tool
    def read_note(name: str) -> str:
        """Read one note from the notes folder."""
        path = (folder / name).resolve()
        if path.parent != folder.resolve() or not path.is_file():
            return f"no note named {name!r}; notes: {', '.join(sorted(p.name for p in folder.iterdir()))}"
        return path.read_text()

    @tool
    def count_items(text: str) -> int:
        """Count the list items (lines starting with '-') in a text."""
        return sum(1 for line in text.splitlines() if line.startswith("-"))

    return [read_note, count_items]


def script_for(note: str) -> ScriptedToolModel:
    text = NOTES[note]
    count = sum(1 for line in text.splitlines() if line.startswith("-"))
    return ScriptedToolModel(messages=iter([
        AIMessage("", tool_calls=[{"name": "read_note", "args": {"name": note}, "id": "read"}]),
        AIMessage("", tool_calls=[{"name": "count_items", "args": {"text": text}, "id": "count"}]),
        AIMessage(f"There are {count} items in {note}."),
    ]))


def main() -> None:
    parser = argparse.ArgumentParser(description="A create_agent agent under Atlas supervision, offline.")
    parser.add_argument("--config", help="atlas.yaml (default: ./atlas.yaml or built-in defaults)")
    parser.add_argument("--lane", choices=["auto", "paired", "coach"], help="force a lane instead of letting the probe decide")
    args = parser.parse_args()
    overrides = {"supervision": {"lane": args.lane}} if args.lane else {}
    config = AtlasConfig.load(args.config, **overrides)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, text in NOTES.items():
            (folder / name).write_text(text)
        supervisor = None
        for note in ["todo.txt", "ideas.txt", "todo.txt"]:
            agent = create_agent(script_for(note), tools=make_tools(folder), system_prompt="You answer questions about my notes.")
            app = with_atlas(agent, config, agent_name="notes-agent", supervisor=supervisor)
            supervisor = app.supervisor  # one supervisor (and one loaded local model) for every run
            out = app.invoke({"messages": [HumanMessage(QUESTIONS[note])]})
            result = app.session_result()
            reward = "none" if result.reward is None else f"{result.reward:.2f}"
            steps = supervisor.store.rows(StepRecord, StepRecord.session_id == result.session_id)
            print(f"Q: {QUESTIONS[note]}\nA: {out['messages'][-1].content}")
            print(f"   session {result.session_id[:8]}  lane {result.lane} ({result.decision.reason})  reward {reward}  "
                  f"steps {len(steps)} ({', '.join(s.name for s in steps)})  lessons learned {len(result.lessons_learned)}\n")
        supervisor.close()


if __name__ == "__main__":
    main()
