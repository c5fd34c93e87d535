"""Training the student's own model: its recorded chats (the messages export) as prompt/completion examples, one
per model turn, rejected answers dropped or masked, trained with TRL's SFTTrainer through `atlas train sft
--target student`, on both stores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("trl")

from typer.testing import CliRunner  # noqa: E402

from atlas_learning.cli import app  # noqa: E402
from atlas_learning.errors import AtlasError  # noqa: E402
from atlas_learning.store import Store  # noqa: E402
from atlas_learning.train import load_student_records, student_examples, train_gkd, train_grpo  # noqa: E402
from tests import support  # noqa: E402

make_supervisor = support.make_supervisor  # the shared fixture, once per store

DOUBLE = {"type": "function", "function": {"name": "double", "description": "Double a number.",
                                           "parameters": {"type": "object", "properties": {"n": {"type": "integer"}}}}}


def _doubling_sessions(supervisor, count: int) -> list[str]:
    """Sessions where the student's model calls `double`, gets the result and answers; every other one first
    answers wrong, is rejected with guidance, and answers again."""
    ids = []
    for n in range(1, count + 1):
        run = supervisor.begin(f"double {n}", metadata={"expected_answer": str(2 * n)})
        system = "You double numbers with the double tool."
        run.record_model_call(model="tiny", system=system, tools=[DOUBLE],
                              output={"content": "", "tool_calls": [{"name": "double", "arguments": {"n": n}}]})
        run.record_step(tool_name="double", tool_args={"n": n}, output=str(2 * n))
        if n % 2:
            run.record_model_call(model="tiny", system=system, tools=[DOUBLE], output="I do not know")
            verdict = run.validate_answer("I do not know")
            assert verdict.accepted is False and run.can_retry
        run.record_model_call(model="tiny", system=system, tools=[DOUBLE], output=str(2 * n))
        run.validate_answer(str(2 * n))
        ids.append(run.finish(str(2 * n)).session_id)
    return ids


@pytest.fixture
def approved_store(make_supervisor, store_url: str) -> str:  # noqa: F811 - the fixture above
    supervisor = make_supervisor({"teacher": {"Verdict": lambda m: {"accepted": "I do not know" not in m[-1]["content"],
                                                                   "guidance": "Use the tool's result.", "reason": "r"}}},
                                 supervision={"lane": "paired", "max_retries": 1}, drift={"enabled": False})
    ids = _doubling_sessions(supervisor, 6)
    assert supervisor.drain(30)
    with Store(store_url) as store:
        for session_id in ids:
            store.update_session(session_id, review_status="approved")
    return store_url


def test_each_model_turn_is_an_example_and_rejected_answers_are_dropped_or_masked(approved_store: str) -> None:
    records = load_student_records("approved", store_url=approved_store)
    assert len(records) == 6
    dropped = student_examples(records, layout="chat")
    masked = student_examples(records, rejected="mask", layout="chat")
    # per session: the tool call and the accepted answer (the three rejected answers are never completions)
    assert len(dropped) == len(masked) == 12
    completions = [e["completion"][0] for e in dropped]
    assert sum(1 for c in completions if c.get("tool_calls")) == 6
    assert "I do not know" not in json.dumps([e["completion"] for e in masked])
    assert "I do not know" not in json.dumps([e["prompt"] for e in dropped])  # dropped from the conversation too
    assert any("I do not know" in json.dumps(e["prompt"]) for e in masked)  # masked: still in the later prompts
    first = dropped[0]
    assert [m["role"] for m in first["prompt"]] == ["system", "user"] and json.loads(first["tools"]) == [DOUBLE]
    with pytest.raises(AtlasError, match="rejected='keep'"):
        student_examples(records, rejected="keep")
    with pytest.raises(AtlasError, match="student_layout='native'"):
        student_examples(records, layout="native")
    served = student_examples(records)  # the default: as a model that calls tools by structured output is served
    assert len(served) == 12 and all(e["tools"] == "[]" for e in served)
    assert json.loads(served[0]["completion"][0]["content"]) == {"step": {"action": "double", "arguments": {"n": 1}}}
    assert served[0]["prompt"][0]["content"].endswith("Call one tool at a time; give the final answer when you know it.")
    assert served[1]["prompt"][-2]["content"] == served[0]["completion"][0]["content"]  # the step it wrote, as it wrote it
    assert served[1]["prompt"][-1]["content"] == "result of double: 2"
    assert served[1]["prompt"][: len(served[0]["prompt"])] == served[0]["prompt"]  # prefix-stable: the turn continues the last
    assert json.loads(served[1]["completion"][0]["content"]) == {"step": {"action": "final_answer", "answer": "2"}}


@pytest.mark.parametrize("tool_fails", [False, True], ids=["result", "error-result"])
def test_the_served_layout_is_exactly_what_atlas_chat_model_sent_and_got(make_supervisor, store_url: str,  # noqa: F811
                                                                          tool_fails: bool) -> None:
    """A tool's result, and one the tool marked an error (LangChain's ToolException: a ToolMessage with status
    error, which AtlasChatModel shows as ``error from ...``), are in the training prompt as the model was sent them."""
    from langchain.agents import create_agent
    from langchain_core.messages import HumanMessage
    from langchain_core.tools import ToolException, tool

    from atlas_learning.config import ModelSettings
    from atlas_learning.models import create_model
    from atlas_plugins.langgraph import with_atlas
    from atlas_plugins.langgraph.chat_model import AtlasChatModel

    @tool
    def read_file(path: str) -> str:
        """Read a text file and return its content."""
        if tool_fails:
            raise ToolException(f"{path} is locked")
        return "buy milk\ncall mom\nfix bike"

    read_file.handle_tool_error = True  # the tool answers with an error result instead of raising

    outputs = [{"step": {"action": "read_file", "arguments": {"path": "notes.txt"}}},
               {"step": {"action": "final_answer", "answer": "notes.txt has 3 lines."}}]
    student = create_model(ModelSettings(provider="scripted", max_retries=0, options={"responses": list(outputs)}))
    supervisor = make_supervisor(supervision={"lane": "auto"})
    agent = create_agent(AtlasChatModel(student), tools=[read_file], system_prompt="You answer questions about files.")
    app_ = with_atlas(agent, supervisor=supervisor, agent_name="files")
    app_.invoke({"messages": [HumanMessage("How many lines does notes.txt have?")]})
    session_id = app_.session_result().session_id
    assert supervisor.drain(30)
    with Store(store_url) as store:
        store.update_session(session_id, review_status="approved")
    examples = student_examples(load_student_records("approved", store_url=store_url))
    sent = [prompt for prompt, _schema in student.requests]  # type: ignore[attr-defined]
    assert [e["prompt"] for e in examples] == sent  # the training prompt is the served prompt, token for token
    assert [json.loads(e["completion"][0]["content"]) for e in examples] == outputs
    shown = examples[1]["prompt"][-1]["content"]
    assert shown.startswith("error from read_file: notes.txt is locked" if tool_fails else "result of read_file: buy milk")


@support.ON_SQLITE_ONLY  # the training is the subject; both stores' data: the test above
def test_atlas_train_sft_target_student_learns_the_student_s_turns(approved_store: str, tmp_path: Path) -> None:
    out = tmp_path / "student"
    result = CliRunner().invoke(app, ["train", "sft", "--target", "student", "--store", approved_store, "--output", str(out),
                                      "--set", "max_steps=8", "--set", "held_out=0.34", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 8 and summary["train_examples"] >= 6 and (out / "config.json").is_file()
    # held-out turns are scored through the serving path against the recorded step (student_step)
    assert summary["held_out_examples"] == 4 and 0.0 <= summary["held_out_before"] <= 1.0
    # the printed figure is the served checkpoint's: scoring it again through the serving path gives the same number
    from atlas_learning.train import split_examples
    from atlas_learning.train.evaluation import evaluate_served
    from atlas_learning.train.rewards import StudentStepReward

    _, held = split_examples(student_examples(load_student_records("approved", store_url=approved_store)), 0.34, seed=0)
    assert evaluate_served(out, held, [StudentStepReward()], max_new_tokens=256) == summary["held_out_after"]
    assert "only 4 held-out examples" in summary["warnings"][0]
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert len(losses) == 8 and losses[-1] < losses[0]


@support.ON_SQLITE_ONLY  # the training is the subject; both stores' data: the test above
def test_atlas_train_gkd_target_student_distils_a_student_checkpoint(approved_store: str, tmp_path: Path) -> None:
    """GKD on the student's turns: a checkpoint SFT made of the student is the teacher; a fresh tiny model is moved
    toward the teacher's token distributions on the served prompts (the divergence falls; lmbda 0 here, so the
    batches are the recorded turns and the test is deterministic), and the result is served back."""
    teacher = tmp_path / "teacher"
    made = CliRunner().invoke(app, ["train", "sft", "--target", "student", "--store", approved_store, "--output", str(teacher),
                                    "--set", "max_steps=12", "--json"])
    assert made.exit_code == 0, made.output
    out = tmp_path / "distilled"
    result = CliRunner().invoke(app, ["train", "gkd", "--target", "student", "--teacher", str(teacher), "--store", approved_store,
                                      "--output", str(out), "--set", "max_steps=10", "--set", "lmbda=0.0", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 10 and summary["train_examples"] >= 6 and (out / "config.json").is_file()
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert len(losses) == 10 and losses[-1] < losses[0]  # the divergence to the teacher falls
    from atlas_learning.config import ModelSettings
    from atlas_learning.models import create_model

    served = create_model(ModelSettings(provider="local", model=str(out), max_tokens=4), role="student")
    try:
        assert served.generate("double 3").usage.output_tokens > 0
    finally:
        served.close()


def test_the_student_target_refuses_what_is_not_built(approved_store: str, tmp_path: Path) -> None:
    examples = student_examples(load_student_records("approved", store_url=approved_store))
    with pytest.raises(AtlasError, match="--set environment=module:factory"):
        train_grpo(examples, output=tmp_path / "g", rewards=[lambda prompts, completions, **_: [0.0] * len(prompts)],
                   settings={"target": "student"}, progress=False)
    with pytest.raises(AtlasError, match="give module:factory"):
        train_grpo(examples, output=tmp_path / "g", rewards=[lambda prompts, completions, **_: [0.0] * len(prompts)],
                   settings={"target": "student", "environment": "no_colon"}, progress=False)
    with pytest.raises(AtlasError, match="use_vllm=false"):  # the episodes are the trained model's own decoding
        train_grpo(examples, output=tmp_path / "g", rewards=[lambda prompts, completions, **_: [0.0] * len(prompts)],
                   settings={"target": "student", "use_vllm": True,
                             "environment": f"{__name__}:DoublingEnvironment"}, progress=False)
    with pytest.raises(AtlasError, match="student_layout=served"):
        train_gkd(student_examples(load_student_records("approved", store_url=approved_store), layout="chat"),
                  output=tmp_path / "k", teacher=tmp_path / "any", settings={"target": "student", "student_layout": "chat"},
                  progress=False)
    bad = CliRunner().invoke(app, ["train", "sft", "--target", "coach", "--output", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "--target 'coach'" in bad.output
    not_messages = tmp_path / "trace.jsonl"
    not_messages.write_text(json.dumps({"task": "t", "steps": []}) + "\n")
    with pytest.raises(AtlasError, match="not a messages record"):
        load_student_records(not_messages)


def test_the_served_layout_is_prefix_stable_under_a_chat_template(approved_store: str) -> None:
    """Each served turn's prompt, rendered by a ChatML template, begins with the previous turn's prompt and the
    step the model wrote: a session is one token sequence (what GRPO on tool rollouts trains on)."""
    import jinja2

    from atlas_learning.train.trainer import _CHATML

    template = jinja2.Environment().from_string(_CHATML)
    served = student_examples(load_student_records("approved", store_url=approved_store))
    by_session: dict[str, list[dict]] = {}
    for example in served:
        by_session.setdefault(example["session_id"], []).append(example)
    continued = 0
    for turns in by_session.values():
        for before, after in zip(turns, turns[1:], strict=False):
            written = template.render(messages=before["prompt"], add_generation_prompt=True, tools=None) \
                + before["completion"][0]["content"] + "<|im_end|>\n"
            assert template.render(messages=after["prompt"], add_generation_prompt=True, tools=None).startswith(written)
            continued += 1
    assert continued == 6  # every session's answer continued its tool call's turn


class DoublingEnvironment:
    """The sessions' task as an environment: ``double`` runs for real, and the answer is checked."""

    episodes: list[DoublingEnvironment] = []

    def __init__(self) -> None:
        self.n, self.calls = 0, []
        DoublingEnvironment.episodes.append(self)

    def reset(self, task: str) -> None:
        self.n = int(task.split()[-1])

    def tools(self) -> list[dict]:
        return [DOUBLE]

    def call(self, name: str, arguments: dict) -> str:
        self.calls.append((name, arguments))
        if name != "double" or not isinstance(arguments.get("n"), int):
            raise ValueError("double takes an integer n")
        return str(2 * arguments["n"])

    def reward(self, answer: str | None) -> float:
        return 1.0 if answer is not None and answer.strip() == str(2 * self.n) else 0.0


@support.ON_SQLITE_ONLY  # the training is the subject; both stores' data: the test above
def test_grpo_target_student_plays_episodes_in_the_environment_and_masks_its_tokens(approved_store: str, tmp_path: Path,
                                                                                      monkeypatch) -> None:
    """GRPO on the student's own rollouts: each episode starts from a session's first served prompt, decodes steps
    under the step grammar, runs tools in the environment, and is one sequence in which only the model's tokens
    are trained (env_mask 0 on the tool results); the environment's reward is the episode's."""
    import atlas_learning.train.rollouts as rollouts

    seen: list[dict] = []
    real = rollouts.tool_rollouts

    def recording(*args, **kwargs):
        inner = real(*args, **kwargs)

        def rollout(prompts, trainer):
            out = inner(prompts, trainer)
            seen.append({"prompts": prompts, **out, "tokenizer": trainer.processing_class})
            return out
        return rollout

    monkeypatch.setattr(rollouts, "tool_rollouts", recording)
    warm = tmp_path / "sft-student"  # a student that has learned the recorded turns: its episodes can succeed
    made = CliRunner().invoke(app, ["train", "sft", "--target", "student", "--store", approved_store, "--output", str(warm),
                                    "--set", "max_steps=30", "--json"])
    assert made.exit_code == 0, made.output
    DoublingEnvironment.episodes.clear()
    out = tmp_path / "grpo-student"
    result = CliRunner().invoke(app, ["train", "grpo", "--target", "student", "--store", approved_store, "--output", str(out),
                                      "--model", str(warm),
                                      "--set", f"environment={__name__}:DoublingEnvironment", "--set", "max_steps=2",
                                      "--set", "num_generations=4", "--set", "per_device_train_batch_size=4",
                                      "--set", "rollout_max_turns=3", "--set", "max_completion_length=80", "--set", "temperature=0.3", "--json"])
    # 1: every group's episodes got the same reward (a tiny model rarely answers right), so no gradient moved, and
    # the trainer says so; the rollouts themselves are what this test checks
    assert result.exit_code == 0 or "every logged gradient norm was 0" in result.output, result.output
    assert (out / "config.json").is_file()
    assert seen and len(DoublingEnvironment.episodes) == sum(len(batch["prompts"]) for batch in seen)
    for batch in seen:
        tokenizer = batch["tokenizer"]
        assert len(batch["completion_ids"]) == len(batch["prompts"]) == len(batch["env_mask"]) == len(batch["episode_reward"])
        for prompt, ids, mask, logprobs in zip(batch["prompts"], batch["completion_ids"], batch["env_mask"], batch["logprobs"], strict=True):
            assert [m["role"] for m in prompt] == ["system", "user"] and "- double(n)" in prompt[0]["content"]
            assert len(ids) == len(mask) == len(logprobs)
            model_text = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m], skip_special_tokens=True)
            env_text = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if not m], skip_special_tokens=True)
            assert model_text.startswith('{"step": {"action": ')  # decoded under the step grammar
            assert all(lp == 0.0 for lp, m in zip(logprobs, mask, strict=True) if not m) and all(lp <= 0.0 for lp in logprobs)
            if 0 in mask:  # a tool ran: its result is the environment's, in the served layout
                assert "result of double" in env_text or "error from double" in env_text
    assert any(0 in mask for batch in seen for mask in batch["env_mask"])  # some episode called the tool
    assert any(e.calls for e in DoublingEnvironment.episodes)
