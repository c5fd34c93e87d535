"""The example's tasks as a GRPO environment for the student: every task's reference solution, played through the
environment's MCP tools on a fresh training workspace, earns the full reward; a wrong answer earns none; the
tools are the server's own (its schemas, its validation, its ERROR lines)."""

from __future__ import annotations

import pytest

pytest.importorskip("mcp")

from atlas_learning.train.rollouts import ToolEnvironment, load_environment  # noqa: E402
from examples.mcp_file_ops.environment import FileOpsEnvironment  # noqa: E402
from examples.mcp_file_ops.tasks import PHRASINGS, TASKS, VARIANT_SETS  # noqa: E402


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.name)
def test_the_reference_solution_earns_the_reward_and_a_wrong_answer_does_not(task) -> None:
    env = FileOpsEnvironment()
    assert isinstance(env, ToolEnvironment)
    env.reset(task.prompt)
    assert env.task.base is task or env.task is task
    assert VARIANT_SETS["train"] <= env.task.variant < VARIANT_SETS["heldout"]  # never a held-out workspace
    names = {t["function"]["name"] for t in env.tools()}
    assert {"read_file", "write_file", "list_files", "search_content", "run_command"} <= names
    solution = env.task.solution(env.workspace)
    for call in solution.calls:
        env.call(call.name, dict(call.args))
    assert env.reward(solution.answer) == 1.0
    fresh = FileOpsEnvironment()
    fresh.reset(task.prompt)
    assert fresh.reward("I could not do it.") == 0.0 and fresh.reward(None) == 0.0


def test_phrasings_find_their_task_and_tools_answer_as_the_server_does() -> None:
    task_id, phrasings = next(iter(PHRASINGS.items()))
    env = load_environment("examples.mcp_file_ops.environment:FileOpsEnvironment")()
    env.reset(phrasings[0])
    assert env.task.id == task_id
    assert env.call("read_file", {"path": "../etc/passwd"}).startswith("ERROR:")  # the server's guard
    with pytest.raises(Exception, match="path"):
        env.call("read_file", {})  # the server's argument validation: the rollout shows it as an error result
    with pytest.raises(ValueError, match="no mcp_file_ops task"):
        FileOpsEnvironment().reset("Translate this poem.")
