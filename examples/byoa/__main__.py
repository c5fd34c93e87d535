"""Bring your own agent: two plain classes under Atlas supervision, offline.

* ``TicketRouter`` is rule-based: no model at all. It reports its own matching step to Atlas.
* ``ShortAnswerer`` is an LLM agent whose model is the embedded SmolLM2 (in-process, no key, no network). It
  takes lessons and the teacher's guidance through a ``guidance`` parameter and its ``instructions``
  attribute, and reports its own model call's tokens.

The supervision roles use atlas.yaml, or the embedded model by default. Run from the repository root:

    python -m examples.byoa

SmolLM2 (135M) is weak; its answers and the teacher's verdicts will often be poor. What the example shows is the
loop: lanes, validation, retries, rewards and stored sessions, all working offline.
"""

from __future__ import annotations

import argparse
import time

from atlas_learning import AtlasConfig, ModelSettings, Supervisor, create_model
from atlas_plugins.byoa import atlas_agent, atlas_context, atlas_result


def build_agents(supervisor: Supervisor):
    @atlas_agent(supervisor=supervisor, learning_key="ticket-router")
    class TicketRouter:
        """Sends a support ticket to a team by keyword."""

        rules = {"refund": "billing", "invoice": "billing", "password": "accounts", "crash": "engineering"}

        def run(self, task: str) -> str:
            for keyword, team in self.rules.items():
                if keyword in task.lower():
                    atlas_context().step("keyword match", input=keyword, output=team)
                    return team
            atlas_context().step("no keyword matched", input=task, output="general")
            return "general"

    @atlas_agent(supervisor=supervisor, learning_key="short-answers")
    class ShortAnswerer:
        """Answers in one short sentence with a small local model."""

        def __init__(self) -> None:
            self.instructions = "Answer in one short sentence."
            self.model = create_model(ModelSettings(provider="local", max_tokens=48), role="student")

        def run(self, task: str, guidance: str | None = None) -> str:
            messages = [{"role": "system", "content": self.instructions}]
            if guidance:
                messages.append({"role": "system", "content": f"A reviewer said: {guidance}"})
            messages.append({"role": "user", "content": task})
            reply = self.model.generate(messages)
            atlas_context().model_call(reply.model, provider="local", input_tokens=reply.usage.input_tokens,
                                       output_tokens=reply.usage.output_tokens, output=reply.text)
            return reply.text.strip()

    return TicketRouter(), ShortAnswerer()


def show(agent, task: str, answer: str, started: float) -> None:
    result = atlas_result(agent)
    reward = "none" if result.reward is None else f"{result.reward:.2f}"
    print(f"{type(agent).__name__}: {task!r}\n  -> {answer!r}")
    print(f"  session {result.session_id[:8]}  lane {result.lane}  attempts {result.attempts}  accepted {result.accepted}  "
          f"reward {reward}  {time.perf_counter() - started:.1f}s\n")


def main() -> None:
    parser = argparse.ArgumentParser(description="Two plain agent classes under Atlas supervision, offline.")
    parser.add_argument("--config", help="atlas.yaml (default: ./atlas.yaml or built-in defaults)")
    args = parser.parse_args()
    # Without a config file: quick settings for the embedded model (one judge sample, one retry).
    quick = {} if args.config else {"judges": {"temperatures": [0.0]}, "supervision": {"max_retries": 1}}
    with Supervisor(AtlasConfig.load(args.config, **quick)) as supervisor:
        router, answerer = build_agents(supervisor)
        for task in ["I was charged twice, please refund me", "The app crashes when I log in"]:
            started = time.perf_counter()
            show(router, task, router.run(task), started)
        task = "What is the capital of France?"
        started = time.perf_counter()
        show(answerer, task, answerer.run(task), started)


if __name__ == "__main__":
    main()
