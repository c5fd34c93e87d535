"""The ``atlas`` command.

Every command loads heavy modules inside its own body, so ``atlas --help`` stays fast: the review, export,
playbook, report, env and run commands live in :mod:`atlas_learning._commands`, imported when they run.

Errors are printed in one place, :class:`AtlasGroup`, as one line on stderr: a usage error (an unknown option, a
bad value: click's, or an :class:`~atlas_learning.errors.UsageError`) as ``atlas sessions: no such option: --bogus
(see atlas sessions -h)`` with exit status 2; any other :class:`~atlas_learning.errors.AtlasError` (a store, model
or config failure) as ``atlas: error: ...`` with exit status 1. Help is plain text (no rich boxes).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

try:
    from typer import _click as click  # typer 0.2x vendors click: its errors are these classes
except ImportError:  # pragma: no cover - a typer that uses click itself
    import click  # type: ignore[no-redef]

from . import __version__
from .errors import AtlasError, UsageError


class AtlasGroup(TyperGroup):
    """The root command. It runs the app without click's standalone mode and prints every error as one line:
    click's usage errors and Atlas's :class:`~atlas_learning.errors.UsageError` as ``<command>: <message> (see
    <command> -h)``, exit status 2; other Atlas errors as ``atlas: error: <message>``, exit status 1."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:  # a caller that handles errors itself
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as error:  # `atlas review`: what it can do
            typer.echo(error.ctx.get_help())
            sys.exit(2)
        except click.exceptions.UsageError as error:
            command = error.ctx.command_path if error.ctx is not None else "atlas"
            print(f"{command}: {_one_line(error.format_message())} (see {command} -h)", file=sys.stderr)
            sys.exit(2)
        except click.exceptions.ClickException as error:  # a file option click could not open
            print(f"atlas: error: {_one_line(error.format_message())}", file=sys.stderr)
            sys.exit(error.exit_code)
        except typer.Abort:
            print("atlas: aborted", file=sys.stderr)
            sys.exit(1)
        except AtlasError as error:
            print(f"atlas: error: {_one_line(str(error))}", file=sys.stderr)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) and not isinstance(code, bool) else 0)


def _one_line(message: str) -> str:
    """A message as one line, starting lower-case as the rest of the line does ("No such option" -> "no such
    option"), without click's closing full stop."""
    text = " ".join(message.split()).removesuffix(".")
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        text = text[0].lower() + text[1:]
    return text


def _examples(*lines: str) -> str:
    """A command's epilog: usage examples, kept line by line in ``--help``."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


app = typer.Typer(
    name="atlas",
    cls=AtlasGroup,
    help="A closed learning loop for the agents you already run: supervise, judge, learn, store, export, train.",
    epilog=_examples("atlas quickstart --model scripted", "atlas sessions --since 1d", "atlas show 3f2a9c1e",
                     "atlas review approve --all-pending --min-reward 0.8", "atlas export -o traces.jsonl"),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help and errors, as uv, ruff and gh print them
    context_settings={"help_option_names": ["-h", "--help"]},  # every subcommand inherits it
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


@app.command("config", epilog=_examples("atlas config", "atlas config -c atlas.yaml --json | jq .storage.url"))
def show_config(config: ConfigOption = None, as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of YAML.")] = False) -> None:
    """Validate the configuration and print it as Atlas sees it (file, then ATLAS_* variables, then defaults),
    with secrets (a password in storage.url, keys in a role's options) redacted."""
    from .config import AtlasConfig
    from .redact import Redactor

    loaded = AtlasConfig.load(config)
    data = Redactor(loaded.redaction.patterns).value(loaded.model_dump(mode="json"))
    if as_json:
        typer.echo(json.dumps(data))
    else:
        import yaml

        typer.echo(yaml.safe_dump(data, sort_keys=False).rstrip())


@app.command(epilog=_examples("atlas quickstart --model scripted", "atlas quickstart --tasks 1-5 --compare", "atlas quickstart --loop",
                              "atlas quickstart --model scripted --tasks 1-3 --json | jq .learning.summary"))
def quickstart(
    config: ConfigOption = None,
    tasks: Annotated[str, typer.Option("--tasks", help="Which of the 25 tasks: 1-5, 3,7,10-12 or all.")] = "all",
    repeat: Annotated[int, typer.Option("--repeat", help="Run the selection N times.")] = 1,
    baseline: Annotated[bool, typer.Option("--baseline", help="Run with learning disabled.")] = False,
    compare: Annotated[bool, typer.Option("--compare", help="Run with learning, then the baseline, and compare.")] = False,
    model: Annotated[str, typer.Option("--model", help="config (the config's student; default the embedded model) or scripted (no LLM, seconds).")] = "config",
    out: Annotated[Path, typer.Option("--out", help="Folder for results.json and the learning-curve PNG.")] = Path(".atlas/mcp_file_ops"),
    loop: Annotated[bool, typer.Option("--loop", help="After the checks, run the local loop's quick size instead of the tasks: demonstrations, SFT of the embedded student, held-out before/after (needs the train extra).")] = False,
    variants: Annotated[str, typer.Option("--variants", help="The workspace of each repetition: canonical, train (generated 1, 2, ...), heldout (100001, ...: never in train) or a seed number.")] = "canonical",
    as_json: Annotated[bool, typer.Option("--json", help="Print the results (what results.json holds, per run; with --loop, loop.json) as one JSON object; the checks and tables go to stderr.")] = False,
) -> None:
    """Check the options, the config, the store and the teacher's model, then run the main example: 25 MCP file
    tasks under supervision (the example ships in the package: any folder will do).

    Needs no key and no network: by default every role runs on the embedded model; --model scripted loads no model
    at all. The same as ``python -m examples.mcp_file_ops`` with the same options.
    """
    if not as_json:
        _invoke("quickstart", "quickstart", config=config, tasks=tasks, repeat=repeat, baseline=baseline, compare=compare,
                model=model, out=out, variants=variants, loop=loop)
        return
    import contextlib

    written = [out / name for name in (["results.json"] if not baseline else []) + (["results-baseline.json"] if baseline or compare else [])]
    if loop:
        written = [out / "loop" / "loop.json"]
    for path in written:  # a file from an earlier run must not pass for this one's
        path.unlink(missing_ok=True)
    with contextlib.redirect_stdout(sys.stderr):  # stdout holds the one object alone
        _invoke("quickstart", "quickstart", config=config, tasks=tasks, repeat=repeat, baseline=baseline, compare=compare,
                model=model, out=out, variants=variants, loop=loop)
    runs = {("loop" if path.name == "loop.json" else "baseline" if path.name.endswith("-baseline.json") else "learning"):
            json.loads(path.read_text(encoding="utf-8")) for path in written if path.is_file()}
    typer.echo(json.dumps({"out": str(out), **runs}, default=str))


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table: JSON Lines (one compact object per line) for a listing, one compact object otherwise.")]
StoreOption = Annotated[str | None, typer.Option("--store", metavar="URL", help="The store to use instead of storage.url: sqlite:///path/atlas.db or postgresql+psycopg://user@host/db.")]
KeyOption = Annotated[str | None, typer.Option("--key", "-k", help="Only this learning key.")]
SinceOption = Annotated[str | None, typer.Option("--since", help="Only sessions started since: an ISO date or time, or an age (7d, 12h, 30m).")]
LimitOption = Annotated[int | None, typer.Option("--limit", "-n", help="At most this many sessions, newest first (0: no limit).")]


def _invoke(module: str, function: str, /, **kwargs: object) -> None:
    """Run a command's implementation, imported only now. A UsageError becomes click's, so that AtlasGroup prints
    it with the command's name, as it prints click's own; other errors go to AtlasGroup as they are."""
    try:
        implementation = getattr(importlib.import_module(f"atlas_learning._commands.{module}"), function)
        implementation(**kwargs)
    except UsageError as error:
        raise click.exceptions.UsageError(str(error), ctx=click.globals.get_current_context(silent=True)) from None
    except BrokenPipeError:  # `atlas export -o - | head`: the reader left; stop quietly
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        raise typer.Exit(1) from None


@app.command("sessions", epilog=_examples("atlas sessions --key files --since 7d", "atlas sessions --status pending --min-reward 0.8 --json",
                                           "atlas sessions --limit 0 | cut -f1,5"))
def sessions_command(
    key: KeyOption = None,
    lane: Annotated[str | None, typer.Option("--lane", help="auto, paired, coach or escalate.")] = None,
    status: Annotated[str | None, typer.Option("--status", help="Review status: pending, approved or quarantined.")] = None,
    min_reward: Annotated[float | None, typer.Option("--min-reward", help="Reward at least this (0..1).")] = None,
    max_reward: Annotated[float | None, typer.Option("--max-reward", help="Reward at most this (0..1).")] = None,
    since: SinceOption = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many, newest first (0: no limit).")] = 50,
    as_json: JsonOption = False,
    store: StoreOption = None,
    config: ConfigOption = None,
) -> None:
    """List sessions: id, key, lane, status, reward, review status, steps, tokens, start time.

    On a terminal, a table (ids shortened to 12 characters); piped or redirected, tab-separated values under a
    header line, every value whole."""
    _invoke("sessions", "list_sessions", config=config, store=store, key=key, lane=lane, status=status, min_reward=min_reward,
            max_reward=max_reward, since=since, limit=limit, as_json=as_json)


@app.command("show", epilog=_examples("atlas show 3f2a9c1e", "atlas show 3f2a9c1e --json | jq .session_reward"))
def show_command(
    session: Annotated[str, typer.Argument(metavar="SESSION", help="The session id, or a unique prefix of 8 or more characters.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the full trace (AtlasSessionTrace fields, unrounded) as one JSON object.")] = False,
    store: StoreOption = None,
    config: ConfigOption = None,
) -> None:
    """Show one session: plan, steps with tool arguments and outputs, guidance, verdicts, reward and judge samples."""
    _invoke("sessions", "show_session", config=config, store=store, session=session, as_json=as_json)


review_app = typer.Typer(
    help="Move sessions through the review gate: approve, quarantine, or send back to pending. Every change is logged.",
    epilog=_examples("atlas review approve 3f2a9c1e --note 'checked by hand'", "atlas review approve --all-pending --min-reward 0.8"),
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(review_app, name="review")


def _review_command(action: str, summary: str) -> None:
    def command(
        sessions: Annotated[list[str] | None, typer.Argument(help="Session ids or unique prefixes (8+ characters).", show_default=False)] = None,
        all_pending: Annotated[bool, typer.Option("--all-pending", help="Every pending session (with --min-reward: at or above it).")] = False,
        min_reward: Annotated[float | None, typer.Option("--min-reward", help="With --all-pending: only sessions with at least this reward.")] = None,
        note: Annotated[str | None, typer.Option("--note", help="Why; kept in the review log and on the session.")] = None,
        reviewer: Annotated[str | None, typer.Option("--reviewer", help="Who reviews (default: $USER, else 'cli').")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per session chosen (JSON Lines): session_id, from, to, changed.")] = False,
        store: StoreOption = None,
        config: ConfigOption = None,
    ) -> None:
        _invoke("review", "review", config=config, store=store, action=action, sessions=list(sessions or []), all_pending=all_pending,
                min_reward=min_reward, note=note, reviewer=reviewer, as_json=as_json)

    command.__doc__ = summary
    review_app.command(action, epilog=_examples(f"atlas review {action} 3f2a9c1e 7b0d5e22 --note 'why'",
                                                f"atlas review {action} --all-pending --json"))(command)


_review_command("approve", "Approve sessions: export and training read approved sessions only, unless told otherwise.")
_review_command("quarantine", "Quarantine sessions: kept, but never exported or trained on unless asked for.")
_review_command("pending", "Send sessions back to pending review.")


@app.command("export", epilog=_examples("atlas export -o traces.jsonl", "atlas export -o - --status pending --key files | head -1",
                                         "atlas export -o sft.jsonl --format messages --min-reward 0.8 --json"))
def export_command(
    output: Annotated[str | None, typer.Option("--output", "-o", help="The JSONL file to write, or - for stdout.")] = None,
    status: Annotated[list[str] | None, typer.Option("--status", help="Review status to include; repeat for several (default: approved).")] = None,
    min_reward: Annotated[float | None, typer.Option("--min-reward", help="Reward at least this (0..1).")] = None,
    max_reward: Annotated[float | None, typer.Option("--max-reward", help="Reward at most this (0..1).")] = None,
    key: KeyOption = None,
    lane: Annotated[str | None, typer.Option("--lane", help="Only this lane.")] = None,
    since: SinceOption = None,
    limit: LimitOption = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="trace (AtlasSessionTrace), messages (chat SFT), grpo (prompts and rewards) or otlp (OpenTelemetry traces to --endpoint).")] = "trace",
    endpoint: Annotated[str | None, typer.Option("--endpoint", help="With --format otlp: the OTLP/HTTP endpoint (http://127.0.0.1:4318; /v1/traces is added).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was exported as one JSON object on stdout (not with -o -, where stdout holds the records).")] = False,
    store: StoreOption = None,
    config: ConfigOption = None,
) -> None:
    """Export reviewed sessions as JSONL, or as OpenTelemetry traces (--format otlp). Only approved sessions unless --status asks for others."""
    _invoke("exporting", "export", config=config, output=output, statuses=list(status or []), min_reward=min_reward,
            max_reward=max_reward, key=key, lane=lane, since=since, limit=limit, fmt=fmt, endpoint=endpoint, store=store,
            as_json=as_json)


playbook_app = typer.Typer(help="The lessons each learning key has learned, their history, and retiring one by hand.", no_args_is_help=True,
                           epilog=_examples("atlas playbook show --key files", "atlas playbook history --key files --json"),
                           rich_markup_mode=None)
app.add_typer(playbook_app, name="playbook")


@playbook_app.command("show", epilog=_examples("atlas playbook show", "atlas playbook show --key files --json | jq -r .lesson"))
def playbook_show(key: Annotated[str | None, typer.Option("--key", "-k", help="One learning key (default: all).")] = None,
                  as_json: JsonOption = False, store: StoreOption = None, config: ConfigOption = None) -> None:
    """Live lessons (provisional and active) with their uses and measured impact; --json: one line per lesson."""
    _invoke("playbook", "show", config=config, store=store, key=key, as_json=as_json)


@playbook_app.command("history", epilog=_examples("atlas playbook history --key files", "atlas playbook history --key files --json"))
def playbook_history(key: Annotated[str, typer.Option("--key", "-k", help="The learning key.")],
                     as_json: JsonOption = False, store: StoreOption = None, config: ConfigOption = None) -> None:
    """Every change to a key's playbook, oldest first, with the registry version it made; --json: one line per change."""
    _invoke("playbook", "history", config=config, store=store, key=key, as_json=as_json)


@playbook_app.command("diff", epilog=_examples("atlas playbook diff 3 5 --key files", "atlas playbook diff 0 5 --key files --json"))
def playbook_diff(
    from_version: Annotated[int, typer.Argument(metavar="FROM", help="Registry version to compare from.")],
    to_version: Annotated[int, typer.Argument(metavar="TO", help="Registry version to compare to.")],
    key: Annotated[str, typer.Option("--key", "-k", help="The learning key.")],
    as_json: JsonOption = False,
    store: StoreOption = None,
    config: ConfigOption = None,
) -> None:
    """What changed between two registry versions: entries added, reworded, activated or retired; --json: one line per entry."""
    _invoke("playbook", "diff", config=config, store=store, key=key, from_version=from_version, to_version=to_version, as_json=as_json)


@playbook_app.command("retire", epilog=_examples("atlas playbook retire 9c41e0b2 --key files --reason 'too vague'"))
def playbook_retire(
    entry_id: Annotated[str, typer.Argument(metavar="ENTRY_ID", help="The entry id or a unique prefix.")],
    key: Annotated[str, typer.Option("--key", "-k", help="The learning key.")],
    reason: Annotated[str | None, typer.Option("--reason", help="Why it is retired.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the retired entry as one JSON object.")] = False,
    store: StoreOption = None,
    config: ConfigOption = None,
) -> None:
    """Retire one lesson by hand (a new registry version; the history keeps it)."""
    _invoke("playbook", "retire", config=config, store=store, key=key, entry_id=entry_id, reason=reason, as_json=as_json)


@app.command("console", epilog=_examples("atlas console", "atlas console --read-only --port 9000"))
def console_command(
    host: Annotated[str, typer.Option("--host", help="Address to bind; anything but loopback requires the access token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8765,
    token: Annotated[str | None, typer.Option("--token", help="Access token (off loopback one is generated and printed when left out).")] = None,
    read_only: Annotated[bool, typer.Option("--read-only", help="Browse only: refuse every review and retire.")] = False,
    reviewer: Annotated[str | None, typer.Option("--reviewer", help="Who the review log names (default: $USER, else 'console').")] = None,
    store: StoreOption = None,
    config: ConfigOption = None,
) -> None:
    """A local review console in the browser: sessions, one session's timeline, review queue, playbook, learning curve."""
    _invoke("console", "console", config=config, store=store, host=host, port=port, token=token, read_only=read_only,
            reviewer=reviewer)


@app.command("report", epilog=_examples("atlas report --key files", "atlas report --key files --plot learning.png",
                                         "atlas report --since 7d --json | jq .mean_reward"))
def report_command(
    key: KeyOption = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Also write a PNG: reward, tool calls and lane mix per session.")] = None,
    window: Annotated[int, typer.Option("--window", help="Sessions per window for the means and the lane mix.")] = 5,
    since: SinceOption = None,
    limit: Annotated[int | None, typer.Option("--limit", "-n", help="Only the last N sessions (0: all).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
    store: StoreOption = None,
    config: ConfigOption = None,
) -> None:
    """The learning curve: reward, tool calls and lane per session; lane mix, reward by window, supervision tokens."""
    _invoke("report", "report", config=config, store=store, key=key, since=since, limit=limit, window=window, plot=plot, as_json=as_json)


env_app = typer.Typer(help="Set Atlas up for a project.", no_args_is_help=True, rich_markup_mode=None,
                      epilog=_examples("atlas env init", "atlas env init path/to/project --output atlas.yaml --force"))
app.add_typer(env_app, name="env")


@env_app.command("init", epilog=_examples("atlas env init", "atlas env init path/to/project --force --json"))
def env_init_command(
    path: Annotated[Path, typer.Argument(metavar="PATH", help="The project's root folder.")] = Path("."),
    output: Annotated[Path | None, typer.Option("--output", "-o", help="The file to write (default: PATH/atlas.yaml).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was written and found as one JSON object.")] = False,
) -> None:
    """Find the project's agents and MCP servers by reading its code (nothing is imported) and write atlas.yaml."""
    _invoke("envinit", "env_init", path=path, output=output, force=force, as_json=as_json)


train_app = typer.Typer(
    help="Train a checkpoint from approved sessions with TRL: GRPO, SFT (a warm start) or GKD (distil a teacher checkpoint). Needs the train extra.",
    epilog=_examples("atlas train grpo --output teacher --set max_steps=50", "atlas train sft --data traces.jsonl --output warm",
                     "atlas train sft --target student --model smollm2 --output student"),
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(train_app, name="train")


TargetOption = Annotated[str, typer.Option("--target", help="teacher (its verdicts, plans and answers) or student (the chats its own model had: the messages export; sft or gkd).")]


def _train_command(method: str, summary: str, *examples: str) -> None:
    def command(
        output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the checkpoint, metrics.jsonl, metrics.png, atlas_train.json.")],
        data: Annotated[str, typer.Option("--data", "-d", help="'approved' (read the store) or a trace JSONL from `atlas export`.")] = "approved",
        model: Annotated[str | None, typer.Option("--model", "-m", help="Checkpoint directory, hub id, smollm2 (the embedded model) or a .gguf file (cpu-tiny without it: a tiny model built from a config).")] = None,
        preset: Annotated[str, typer.Option("--preset", help="cpu-tiny (a smoke run on the CPU) or gpu (bf16, LoRA, vLLM).")] = "cpu-tiny",
        settings: Annotated[list[str] | None, typer.Option("--set", help="key=value: an Atlas training setting or a TRL config field; repeat for several.")] = None,
        include: Annotated[list[str] | None, typer.Option("--include", help="Review statuses to train on (default: approved); repeat for several.")] = None,
        key: KeyOption = None,
        target: TargetOption = "teacher",
        teacher: Annotated[str | None, typer.Option("--teacher", help="gkd: the checkpoint to distil (a directory, smollm2 or a .gguf), sharing the model's tokenizer.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the run's summary as one JSON object.")] = False,
        store: StoreOption = None,
        config: ConfigOption = None,
    ) -> None:
        _invoke("training", "train", method=method, config=config, store=store, data=data, model=model, output=output,
                preset=preset, settings=list(settings or []), include=list(include or []), key=key, as_json=as_json,
                target=target, teacher=teacher)

    command.__doc__ = summary
    train_app.command(method, epilog=_examples(*(examples or (f"atlas train {method} --output teacher --set max_steps=50",
                                                             f"atlas train {method} --data traces.jsonl --output teacher --json"))))(command)


_train_command("grpo", "GRPO on TRL's GRPOTrainer: the teacher's verdicts scored by the run-time reward rules.")
_train_command("sft", "Supervised fine-tuning on TRL's SFTTrainer: the teacher's recorded verdicts as targets (a warm start).")
_train_command("gkd", "On-policy distillation on TRL's GKDTrainer: the model samples the recorded prompts, a teacher "
               "checkpoint's token distributions (--teacher) are its target.",
               "atlas train gkd --teacher teacher-sft --output distilled",
               "atlas train gkd --teacher big-teacher --model smollm2 --output smol --json")


@app.command("run", epilog=_examples('atlas run --task "How many files are in ./data?"', 'atlas run -c atlas.yaml -t "6 * 7" --json'))
def run_command(
    task: Annotated[str, typer.Option("--task", "-t", help="The task to give the agent.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the answer and the session as one JSON object.")] = False,
    store: StoreOption = None,
    config: ConfigOption = None,
) -> None:
    """Run the configured agent (agent.import_path) once under supervision; print its answer and the session.

    Exit status 3 when a supervision role failed and left the answer unvalidated or unscored."""
    _invoke("run", "run_agent", config=config, store=store, task=task, as_json=as_json)


def main() -> None:
    """Console entry point: run the app (AtlasGroup prints errors as one line: status 2 for usage, 1 otherwise)."""
    for position, argument in enumerate(sys.argv[1:], 1):
        try:
            argument.encode("utf-8")
        except UnicodeEncodeError:  # bytes the OS could not decode arrive as lone surrogates
            print(f"atlas: error: argument {position} ({argument.encode('utf-8', 'replace').decode()!r}) is not valid "
                  "UTF-8; pass UTF-8 text", file=sys.stderr)
            raise SystemExit(2) from None
    app(prog_name="atlas")  # also under python -m or -c, whose argv[0] is not the name
