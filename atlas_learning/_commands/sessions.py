"""``atlas sessions`` (a filtered listing) and ``atlas show`` (one session in full)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import AtlasError
from ._common import (
    LANES,
    REVIEW_STATUSES,
    Column,
    check_choice,
    check_limit,
    check_reward,
    clip,
    console,
    echo_json,
    fmt_number,
    fmt_reward,
    fmt_time,
    fmt_value,
    load_config,
    open_store,
    parse_since,
    print_table,
    resolve_session,
    short,
    step_counts,
)

#: The columns of ``atlas sessions``; on a terminal the id is shortened to 12 characters.
SESSION_COLUMNS = (Column("id", short=12), Column("key", wrap=True), Column("lane"), Column("status"), Column("reward", "right"),
                   Column("review"), Column("steps", "right"), Column("tokens", "right"), Column("started (UTC)", wrap=True))


def list_sessions(*, config: Path | None, store: str | None = None, key: str | None, lane: str | None, status: str | None,
                  min_reward: float | None, max_reward: float | None, since: str | None, limit: int | None, as_json: bool) -> None:
    from ..store import SessionFilter

    where = SessionFilter(
        learning_key=key,
        lane=check_choice(lane, LANES, "--lane"),
        review_status=[status] if check_choice(status, REVIEW_STATUSES, "--status") else None,
        min_reward=check_reward(min_reward, "--min-reward"),
        max_reward=check_reward(max_reward, "--max-reward"),
        since=parse_since(since),
        limit=check_limit(limit),
    )
    with open_store(load_config(config, store)) as opened:
        records = opened.list_sessions(where)
        counts = step_counts(opened, [r.id for r in records])
        matching = opened.count_sessions(where) if where.limit is not None and len(records) == where.limit else len(records)
    if as_json:
        echo_json(
            ({**_record_json(r), "steps": sum(counts.get(r.id, {}).values()),
              "tool_calls": counts.get(r.id, {}).get("tool_call", 0)} for r in records),
            lines=True,
        )
        return

    out = console()
    if not records:
        empty = "no sessions match" + (" (try a wider filter)" if _filtered(where) else "; run an agent under Atlas first")
        if out.is_terminal:
            out.print(empty)
        else:  # piped: the header alone on stdout, the words on stderr
            print_table(SESSION_COLUMNS, [], out=out)
            console(stderr=True).print(empty)
        return
    print_table(SESSION_COLUMNS, ([record.id, record.learning_key, record.lane or "-", record.status, fmt_reward(record.reward),
                                   record.review_status + (" (drift)" if record.drift_alert else ""),
                                   sum(counts.get(record.id, {}).values()), record.total_tokens, fmt_time(record.started_at)]
                                  for record in records), out=out)
    if matching > len(records):  # on stderr when piped, so the TSV holds rows only
        note = f"showing {len(records)} of {matching} matching sessions (newest first); raise --limit or pass --limit 0 for all"
        (out if out.is_terminal else console(stderr=True)).print(note)


def _record_json(record: Any) -> dict[str, Any]:
    """A session row as JSON, fields in their declared order."""
    data = record.model_dump(mode="json")
    return {name: data.get(name) for name in type(record).model_fields}


def _filtered(where: Any) -> bool:
    return any(getattr(where, name) is not None for name in ("learning_key", "lane", "review_status", "min_reward", "max_reward", "since"))


def show_session(*, config: Path | None, store: str | None = None, session: str, as_json: bool) -> None:
    with open_store(load_config(config, store)) as store:
        record = resolve_session(store, session)
        if as_json:
            try:
                from ..export import session_trace
            except ImportError as exc:
                raise AtlasError(f"--json needs atlas_learning.export, which is not available ({exc})") from None
            trace = session_trace(store, record.id)
            if trace is None:
                raise AtlasError(f"no session {record.id} in {store!r}")
            echo_json(trace)  # full values: only the text view rounds
            return
        details = _details(store, record.id)
    _render(record, details)


def _details(store: Any, session_id: str) -> dict[str, list[Any]]:
    from ..store import (
        AttemptRecord,
        GuidanceRecord,
        PlanRecord,
        ReviewLogRecord,
        RewardRecord,
        StepRecord,
        TrajectoryEventRecord,
    )

    return {
        "plans": store.rows(PlanRecord, PlanRecord.session_id == session_id, order_by=PlanRecord.id),
        "steps": sorted(store.rows(StepRecord, StepRecord.session_id == session_id),
                        key=lambda s: (s.step_index, s.attempt, s.started_at)),
        "attempts": store.rows(AttemptRecord, AttemptRecord.session_id == session_id, order_by=AttemptRecord.attempt),
        "guidance": store.rows(GuidanceRecord, GuidanceRecord.session_id == session_id, order_by=GuidanceRecord.id),
        "rewards": store.rows(RewardRecord, RewardRecord.session_id == session_id, order_by=RewardRecord.id),
        "reviews": store.rows(ReviewLogRecord, ReviewLogRecord.session_id == session_id, order_by=ReviewLogRecord.id),
        "verdicts": store.rows(TrajectoryEventRecord, TrajectoryEventRecord.session_id == session_id,
                               TrajectoryEventRecord.event_type == "verdict", order_by=TrajectoryEventRecord.seq),
    }


def _render(record: Any, details: dict[str, list[Any]]) -> None:
    from rich.table import Table
    from rich.text import Text

    out = console()

    def field(label: str, value: Any) -> None:
        line = Text(f"{label:<13}", style="bold")
        line.append(str(value))
        out.print(line)

    out.print(Text(f"session {record.id}", style="bold underline"))
    field("learning key", record.learning_key + (f"  (agent {record.agent_name})" if record.agent_name else ""))
    field("task", clip(record.task, 400))
    lane = record.lane or "-"
    if record.lane:
        confidence = "" if record.lane_confidence is None else f", confidence {fmt_number(record.lane_confidence)}"
        lane += f" ({record.lane_source or '?'}{confidence}): {clip(record.lane_reason, 200)}"
    field("lane", lane)
    field("status", f"{record.status}; {record.retries} retries, {record.interventions} interventions")
    error = (record.session_metadata or {}).get("error") or (record.session_metadata or {}).get("finish_error")
    if error:
        field("error", clip(error, 400))
    field("answer", clip(record.final_answer, 400) or "-")
    field("reward", fmt_reward(record.reward) + (f"  {clip(record.reward_reason, 200)}" if record.reward_reason else ""))
    review = record.review_status + (f" ({clip(record.review_note, 200)})" if record.review_note else "")
    if record.drift_alert:
        review += f"; drift alert: {clip(record.drift_reason, 200)}"
    field("review", review)
    unpriced = [role for role, u in (record.usage_by_role or {}).items()
                if isinstance(u, dict) and u.get("calls") and u.get("cost_usd") is None]
    cost = "unknown cost" if record.total_cost_usd is None else f"${record.total_cost_usd:.4f}"
    if unpriced and record.total_cost_usd is not None:
        cost += f" + unknown for {', '.join(unpriced)}"
    roles = ", ".join(f"{role} {int(u.get('input_tokens', 0)) + int(u.get('output_tokens', 0))}"
                      for role, u in (record.usage_by_role or {}).items() if isinstance(u, dict))
    field("tokens", f"{record.total_tokens} ({cost})" + (f"; by role: {roles}" if roles else ""))
    field("time", f"{fmt_time(record.started_at)} → {fmt_time(record.finished_at)} UTC")
    if record.lessons_used:
        field("lessons used", ", ".join(short(i) for i in record.lessons_used))

    for plan in details["plans"]:
        if not plan.steps and not plan.concerns:  # a review that changed nothing and raised nothing: no empty header
            continue
        out.print(Text(f"\nplan ({plan.kind})", style="bold"))
        for number, step in enumerate(plan.steps, 1):
            description = step.get("description", step) if isinstance(step, dict) else step
            out.print(Text(f"  {number}. {clip(description, 200)}"))
        for concern in plan.concerns:
            out.print(Text(f"  concern: {clip(concern, 200)}"))

    step_rewards = {r.step_id: r for r in details["rewards"] if r.scope == "step" and r.step_id}
    step_numbers = {s.id: s.step_index + 1 for s in details["steps"]}
    step_verdicts: dict[str, str] = {}
    for event in details["verdicts"]:
        step_id = (event.payload or {}).get("step_id")
        if step_id:
            accepted = event.payload.get("accepted")
            step_verdicts[step_id] = {True: "accepted", False: "rejected"}.get(accepted, "unverified")
    if details["steps"]:
        out.print(Text(f"\nsteps ({len(details['steps'])})", style="bold"))
        table = Table(box=None, header_style="bold", pad_edge=False)
        columns = ["#", "try", "kind", "name", "args / input", "output", "reward", *(["teacher"] if step_verdicts else [])]
        for name in columns:
            table.add_column(name, overflow="fold")
        for step in details["steps"]:
            args = step.tool_args if step.tool_args is not None else step.input
            output = Text(clip(step.output, 160))
            if step.error:
                output = Text(f"error: {clip(step.error, 160)}", style="red")
            reward = step_rewards.get(step.id)
            verdict = [step_verdicts.get(step.id, "")] if step_verdicts else []
            table.add_row(str(step.step_index + 1), str(step.attempt), step.kind, Text(clip(step.tool_name or step.name, 40)),
                          Text(clip(args, 120)), output, fmt_reward(reward.score if reward else None), *verdict)
        out.print(table)
    else:
        out.print(Text("\nsteps: none recorded", style="bold"))

    if details["guidance"]:
        out.print(Text("\nguidance", style="bold"))
        for note in details["guidance"]:
            where = f" on step {step_numbers[note.step_id]}" if note.step_id in step_numbers else ""
            out.print(Text(f"  [{note.source} {note.kind}{where}] {clip(note.content, 300)}"))

    if details["attempts"]:
        out.print(Text("\nattempts and verdicts", style="bold"))
        for attempt in details["attempts"]:
            verdict = {True: "accepted", False: "rejected", None: "unverified"}[attempt.accepted]
            line = f"  {attempt.attempt}. {verdict}: {clip(attempt.answer, 160)}"
            if attempt.verdict_reason:
                line += f"  (reason: {clip(attempt.verdict_reason, 160)})"
            out.print(Text(line))
            if attempt.guidance:
                out.print(Text(f"     guidance: {clip(attempt.guidance, 300)}"))

    for reward in (r for r in details["rewards"] if r.scope == "session"):
        out.print(Text(f"\nsession reward {fmt_reward(reward.score)} ({judge_summary(reward)})", style="bold"))
        if reward.reason:
            out.print(Text(f"  {clip(reward.reason, 300)}"))
        if reward.breakdown:
            parts = ", ".join(f"{k} {fmt_value(v)}" for k, v in reward.breakdown.items())
            out.print(Text(f"  breakdown: {parts}"))
        if reward.samples:
            table = Table(box=None, header_style="bold", pad_edge=False)
            for name in ("judge", "temp", "outcome", "process", "efficiency", "confidence", "rationale"):
                table.add_column(name, overflow="fold")
            for sample in reward.samples:
                temperature = sample.get("temperature")
                scores = [_score(sample.get(part)) for part in ("outcome", "process", "efficiency", "confidence")]
                note = sample.get("rationale") if "error" not in sample else f"failed: {sample.get('error')}"
                table.add_row(str(sample.get("judge", "")), "" if temperature is None else f"{temperature:g}", *scores,
                              Text(clip(note, 160)))
            out.print(table)

    if details["reviews"]:
        out.print(Text("\nreview log", style="bold"))
        for entry in details["reviews"]:
            note = f": {clip(entry.note, 200)}" if entry.note else ""
            out.print(Text(f"  {fmt_time(entry.created_at)} {entry.reviewer or '?'} {entry.from_status} → {entry.to_status}{note}"))


def _score(value: Any) -> str:
    return fmt_number(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def judge_summary(reward: Any) -> str:
    """How a session reward came about, in words that match its samples: ``ok; 3 of 3 judge samples answered``,
    ``scored by verifiable checks; every judge failed (4 samples)``, ``no_reward; ..., the large judge failed``."""
    samples = [s for s in reward.samples or [] if isinstance(s, dict)]
    answered = [s for s in samples if "error" not in s]
    large = [s for s in samples if s.get("judge") == "large"]
    checks = isinstance(reward.breakdown, dict) and "checks" in reward.breakdown
    if reward.status == "ok" and samples and not answered:
        status = "scored by verifiable checks" if checks else "scored without a judge"
    elif reward.status == "ok" and checks:
        status = "ok, with verifiable checks"
    else:
        status = reward.status
    if not samples:
        judges = "no judge asked"
    elif not answered:
        judges = f"every judge failed ({len(samples)} sample{'s' if len(samples) != 1 else ''})"
    else:
        judges = f"{len(answered)} of {len(samples)} judge samples answered"
    if large and answered:
        judges += ", the large judge failed" if all("error" in s for s in large) else ", the large judge arbitrated"
    return f"{status}; {judges}"
