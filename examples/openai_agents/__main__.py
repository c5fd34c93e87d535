"""An OpenAI Agents SDK agent under Atlas supervision, offline.

The agent is a plain ``agents.Agent`` whose model is the embedded SmolLM2 (``AtlasModel`` around Atlas's local
``ChatModel``, in-process, no network, no key). The supervision roles (teacher, judges, probe, synthesizer) use
whatever atlas.yaml says, by default the same local model. The SDK's default trace exporter (which uploads to
OpenAI) is switched off; Atlas's own trace processor stores the run's spans with the session.

    python -m examples.openai_agents                 # two questions, one session each
    python -m examples.openai_agents --lane paired   # force a lane instead of letting the probe decide

Each run prints the answer and the session Atlas recorded; `.atlas/atlas.db` keeps them. SmolLM2-135M is tiny:
expect short, sometimes wrong answers, and judges and a teacher that are no smarter.
"""

from __future__ import annotations

import argparse
import time

from agents import Agent, ModelSettings
from agents.tracing import set_trace_processors

from atlas_learning import AtlasConfig
from atlas_learning.config import ModelSettings as AtlasModelSettings
from atlas_learning.models import create_model
from atlas_learning.store import StepRecord, TrajectoryEventRecord
from atlas_plugins.openai_agents import AtlasModel, with_atlas

QUESTIONS = ["What is the capital of France?", "Which planet is known as the red planet?"]


def main() -> None:
    parser = argparse.ArgumentParser(description="An Agents SDK agent under Atlas supervision, offline.")
    parser.add_argument("--config", help="atlas.yaml (default: ./atlas.yaml or built-in defaults)")
    parser.add_argument("--lane", choices=["auto", "paired", "coach"], help="force a lane instead of letting the probe decide")
    args = parser.parse_args()
    overrides = {"supervision": {"lane": args.lane}} if args.lane else {}
    config = AtlasConfig.load(args.config, **overrides)
    set_trace_processors([])  # no upload to OpenAI; with_atlas adds Atlas's own processor on the first run

    student = AtlasModel(create_model(AtlasModelSettings(provider="local"), role="student"))
    agent = Agent(name="quiz-agent", instructions="Answer the question in one short sentence.", model=student,
                  model_settings=ModelSettings(max_tokens=48, temperature=0.0))
    runner = with_atlas(agent, config)
    try:
        for question in QUESTIONS:
            started = time.perf_counter()
            result = runner.run_sync(question)
            session = runner.session_result(result)
            print(f"Q: {question}\nA: {result.final_output}")
            if session is None:
                print("   (not supervised: see the log)\n")
                continue
            store = runner.supervisor.store
            steps = store.rows(StepRecord, StepRecord.session_id == session.session_id)
            spans = store.rows(TrajectoryEventRecord, TrajectoryEventRecord.session_id == session.session_id,
                               TrajectoryEventRecord.event_type == "span")
            reward = "none" if session.reward is None else f"{session.reward:.2f}"
            verdicts = ", ".join({True: "accepted", False: "rejected", None: "unverified"}[v.accepted]
                                 for v in session.verdicts if v.attempt is not None) or "none"
            print(f"   session {session.session_id[:8]}  lane {session.lane} ({session.decision.reason})  reward {reward}")
            print(f"   attempts {session.attempts} ({verdicts})  steps {len(steps)} "
                  f"({', '.join(f'{s.kind}:{s.name}' for s in steps)})  spans {len(spans)}  "
                  f"lessons learned {len(session.lessons_learned)}  tokens {session.total_tokens}  "
                  f"{time.perf_counter() - started:.1f}s\n")
    finally:
        runner.close()
        student.chat_model.close()


if __name__ == "__main__":
    main()
