"""The ``atlas`` command.

Every command loads heavy modules inside its own body, so ``atlas --help`` stays fast. An
:class:`~atlas_learning.errors.AtlasError` ends the command with one line on stderr and exit status 2.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from . import __version__
from .errors import AtlasError

app = typer.Typer(
    name="atlas",
    help="A closed learning loop for the agents you already run: supervise, judge, learn, store, export, train.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="atlas.yaml to read (default: ./atlas.yaml or $ATLAS_CONFIG, else built-in defaults)."),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"atlas-plugins {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Atlas Plugins."""


@app.command("config")
def show_config(config: ConfigOption = None, as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of YAML.")] = False) -> None:
    """Validate the configuration and print it as Atlas sees it (file, then ATLAS_* variables, then defaults)."""
    from .config import AtlasConfig

    loaded = AtlasConfig.load(config)
    data = loaded.model_dump(mode="json")
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        import yaml

        typer.echo(yaml.safe_dump(data, sort_keys=False).rstrip())


@app.command()
def quickstart(config: ConfigOption = None) -> None:
    """Check that Atlas works on this machine with no key and no network, then say what the main example does.

    It loads the configuration, opens the store (creating or upgrading its schema), asks the teacher role's model
    for one structured answer, then runs one supervised session (probe, teacher, judges, learning, storage) around
    a rule-based student.
    """
    from pydantic import BaseModel

    from .config import AtlasConfig
    from .models import RoleModels
    from .store import Store

    class Check(BaseModel):
        answer: str
        confident: bool

    loaded = AtlasConfig.load(config)
    typer.echo(f"config      ok ({config or 'defaults'})")
    with Store(loaded) as store:
        typer.echo(f"store       ok ({store!r}, schema version {store.schema_version()})")
    models = RoleModels(loaded)
    teacher = models.get("teacher")
    started = time.perf_counter()
    reply = teacher.generate("What is the capital of France? Answer in one word.", output_type=Check, max_tokens=48)
    elapsed = time.perf_counter() - started
    tokens_per_s = reply.usage.output_tokens / elapsed if elapsed > 0 else 0.0
    typer.echo(
        f"teacher     ok ({teacher.provider}:{teacher.model_name}) answered {reply.output.model_dump()} "
        f"in {elapsed:.2f}s including load, {reply.usage.output_tokens} tokens ({tokens_per_s:.0f}/s)"
    )
    models.close()

    from .supervisor import Supervisor

    def student(instructions: str) -> str:  # a rule-based agent: no model of its own
        return str(17 * 23)

    started = time.perf_counter()
    with Supervisor(loaded) as supervisor:
        result = supervisor.supervise("What is 17 * 23? Answer with the number only.", student, agent_name="quickstart")
    learned = ", ".join(f"{c.op} {c.lesson!r}" for c in result.lessons_learned) or "none"
    reward = "none" if result.reward is None else f"{result.reward:.2f}"
    typer.echo(
        f"session     ok ({time.perf_counter() - started:.1f}s) lane {result.lane} ({result.decision.reason}); "
        f"answer {result.final_answer} accepted={result.accepted}; reward {reward} ({result.reward_reason}); "
        f"lessons learned: {learned}; stored as {result.session_id}"
    )
    typer.echo(
        "\nThe main example, 25 MCP file-operation tasks under supervision (examples/mcp_file_ops), is not built "
        "yet;\nwhen it is, this command runs it."
    )


def main() -> None:
    """Console entry point: run the app, turning Atlas errors into one line and exit status 2."""
    try:
        app()
    except AtlasError as error:
        print(f"atlas: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
