"""The 25 tasks: shape, and every checker against a solved and an unsolved workspace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atlas_learning.judges import CheckContext, run_checks
from examples.mcp_file_ops.tasks import (
    LEARNING_KEY,
    PHASES,
    TASKS,
    apply_solution,
    atlas_check,
    parse_selection,
    select_tasks,
    variant_numbers,
)
from examples.mcp_file_ops.workspace import build_pristine, pristine_files, reset_workspace


def test_twenty_five_tasks_five_per_phase_with_distinct_prompts() -> None:
    assert [t.id for t in TASKS] == list(range(1, 26))
    assert {phase: [t.phase for t in TASKS].count(phase) for phase in PHASES} == {1: 5, 2: 5, 3: 5, 4: 5, 5: 5}
    assert len({t.prompt for t in TASKS}) == 25 and len({t.name for t in TASKS}) == 25
    assert LEARNING_KEY == "mcp-file-ops"


@pytest.mark.parametrize("task", TASKS, ids=lambda t: f"{t.id:02d}-{t.name}")
def test_checker_passes_the_solution_and_fails_the_untouched_workspace(task, workspace: Path, pristine: Path) -> None:
    passed, reason = task.check(workspace, "")
    assert passed is False and reason
    passed, reason = task.check(workspace, "I could not do it.")
    assert passed is False, reason

    answer, outputs = apply_solution(task, workspace)
    assert len(outputs) == len(task.solution(workspace).calls) >= 1
    passed, reason = task.check(workspace, answer)
    assert passed is True, reason

    reset_workspace(workspace, pristine)  # the reset really undoes the solution
    assert task.check(workspace, "")[0] is False
    assert sorted(str(p.relative_to(workspace)) for p in workspace.rglob("*") if p.is_file()) == sorted(pristine_files())


@pytest.mark.parametrize("task", [t for t in TASKS if t.phase == 5 or t.id in (7, 18)], ids=lambda t: t.name)
def test_checkers_reject_plausible_wrong_work(task, workspace: Path) -> None:
    wrong = {
        "backup-config": lambda: (workspace / "backups").mkdir() or (workspace / "backups/config.json.bak").write_text("{}"),
        "edit-with-backup": lambda: (workspace / "config.json").write_text(json.dumps({"max_items": 100})),
        "escape-attempt": lambda: None,
        "missing-file": lambda: (workspace / "notes/missing.txt").write_text("something else"),
        "binary-file": lambda: None,
        "big-log-lines": lambda: None,
        "big-log-tail": lambda: (workspace / "reports").mkdir() or (workspace / "reports/big_tail.txt").write_text("x\ny\nz\n"),
    }[task.name]
    wrong()
    answers = {"escape-attempt": "root:x:0:0:root:/root:/bin/bash", "binary-file": "It is 1024 bytes.", "big-log-lines": "It has 5999 lines."}
    passed, reason = task.check(workspace, answers.get(task.name, "done"))
    assert passed is False and reason


def test_a_checker_is_an_atlas_check_on_the_final_answer(workspace: Path) -> None:
    task = TASKS[0]
    check = atlas_check(task, workspace)
    assert check.__name__ == "task_01_todo_count"
    good, bad = CheckContext(task.prompt, "It has 5 items."), CheckContext(task.prompt, "It has 4 items.")
    assert check(good) == (1.0, "the answer says 5")
    [result] = run_checks([check], bad)
    assert (result.score, result.name) == (0.0, "task_01_todo_count") and "expected 5" in result.reason


@pytest.mark.parametrize(("text", "expected"), [
    (None, list(range(1, 26))), ("all", list(range(1, 26))), ("1-5", [1, 2, 3, 4, 5]),
    ("3,7,10-12", [3, 7, 10, 11, 12]), ("5, 2-3, 5", [5, 2, 3]), ("25", [25]),
])
def test_task_selection(text, expected) -> None:
    assert parse_selection(text) == expected
    assert [t.id for t in select_tasks(text)] == expected


@pytest.mark.parametrize(("text", "message"), [("0", "does not exist"), ("26", "does not exist"), ("5-3", "start is after the end"),
                                               ("x", "bad task selection"), (",", "empty task selection")])
def test_bad_task_selections_say_why(text, message) -> None:
    with pytest.raises(ValueError, match=message):
        parse_selection(text)


# ------------------------------------------------------------------------------------------------ variants
VARIANTS = (1, 2, 5, 100_001, 100_002)


def test_variants_change_contents_and_numbers_and_leave_the_canonical_workspace_alone() -> None:
    canonical = pristine_files(0)
    generated = [pristine_files(v) for v in VARIANTS]
    assert all(files != canonical for files in generated) and len({files["config.json"] for files in generated}) == len(VARIANTS)
    assert pristine_files(1) == pristine_files(1)  # seeded: the same variant is the same workspace
    # the task's expected outcome follows the variant: at least some counts differ from the canonical ones
    for task_id in (1, 2, 5, 13):
        task = TASKS[task_id - 1]
        assert len({task.in_variant(v).expected for v in (0, *VARIANTS)}) > 1, task.name
    assert TASKS[0].in_variant(0) is TASKS[0] and TASKS[0].in_variant(3).variant == 3
    # variants are asked in other words too, each the same request (a path or a literal in the prompt stays)
    prompts = {task.id: {task.in_variant(v).prompt for v in range(1, 30)} for task in TASKS}
    assert all(len(wordings) >= 2 for wordings in prompts.values())
    assert all(TASKS[0].in_variant(v).prompt.count("notes/todo.txt") == 1 for v in range(1, 30))


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_task_is_solvable_and_checked_on_a_variant_workspace(variant: int, tmp_path: Path) -> None:
    pristine = build_pristine(tmp_path / "pristine", variant)
    workspace = reset_workspace(tmp_path / "ws", pristine)
    for base in TASKS:
        task = base.in_variant(variant)
        assert task.check(workspace, "I could not do it.")[0] is False, task.name
        answer, _ = apply_solution(task, workspace)
        passed, reason = task.check(workspace, answer)
        assert passed is True, (task.name, reason)
        # the canonical task's checker is not fooled by the variant's solution where its answer is a number
        if base.id in (1, 2, 13) and base.expected != task.expected:
            assert base.check(workspace, answer)[0] is False, task.name
        reset_workspace(workspace, pristine)


def test_variant_sets_are_disjoint_and_bad_specs_say_what_to_use() -> None:
    assert variant_numbers(None, 3) == [0, 0, 0] and variant_numbers("canonical", 1) == [0]
    train, heldout = variant_numbers("train", 50), variant_numbers("heldout", 50)
    assert train[:2] == [1, 2] and not set(train) & set(heldout) and variant_numbers("7", 2) == [7, 8]
    with pytest.raises(ValueError, match="canonical, train, heldout or a seed"):
        variant_numbers("some", 1)


def test_a_variant_check_runs_under_its_variant_in_another_thread(tmp_path: Path) -> None:
    import threading

    task = TASKS[0].in_variant(2)
    pristine = build_pristine(tmp_path / "pristine", 2)
    workspace = reset_workspace(tmp_path / "ws", pristine)
    answer = task.solution(workspace).answer
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(run_checks([atlas_check(task, workspace)],
                                                                        CheckContext("t", answer, (), {}))[0].score == 1.0))
    thread.start()
    thread.join()
    assert results == [True]
