"""Per-session core time as a learning key's playbook grows: 0, 10, 100 and 1,000 live lessons.

Every size has its own learning key in one SQLite store (in a temp dir), seeded through PlaybookRegistry.apply
with distinct imperative lessons generated from templates over a few hundred words (a seeded random), added
until the key holds the size live (near-duplicates merge), half of them then made active. A session is
Supervisor.begin -> a few record_step calls -> finish, the lane forced to auto, instant scripted models for every
role (the InstantRoles of overhead.py); tasks vary and share some words with the lessons, so retrieval ranks and
injects some of them. Sizes run side by side: each round runs --sessions sessions per size in a shuffled order,
so machine noise falls on all sizes alike, and every size sees the same tasks. The scripted judge gives every
session the same reward, so lessons that show no effect get retired as the playbook's rules say; before every
session (outside the timed span) the key is topped up to its size with new lessons, so each timed session begins
with exactly that many live ones, whatever the retirement rules.

Sessions report through the adapter protocol (start is not needed in auto; tool_call_done, final_answer, end);
each is timed twice: on the caller's path (begin to end(), which returns before judging and learning) and in full
(until its background finish is done: all the core's work for it). The next session starts after that, so the
background work of one never overlaps the next one's timing.

Printed per size: live lessons at the start, lessons proposed to seed it and to top it up during the run, median
and p90 ms per session (caller's path and full), the ratios of the medians to the 0-lesson size's, and lessons
injected per session on average. Target: 1,000 live lessons at most 1.3x none (median ms per session), printed for
both; PASS/FAIL is printed, never asserted.
Run: .venv/bin/python benchmarks/playbook_scaling.py [--rounds 20] [--sessions 5] [--sizes 0,10,100,1000]
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import update

sys.path.insert(0, str(Path(__file__).parent))
from overhead import InstantRoles  # noqa: E402 - the same instant roles as the core benchmark

from atlas_learning.config import AtlasConfig  # noqa: E402
from atlas_learning.playbook import PlaybookRegistry  # noqa: E402
from atlas_learning.schemas import LessonChange  # noqa: E402
from atlas_learning.store import PlaybookEntryRecord  # noqa: E402
from atlas_learning.supervisor import Supervisor  # noqa: E402

TARGET_SIZE, TARGET_RATIO = 1000, 1.3
STEPS = 3
SEED_BATCH = 100

VERBS = ("read list open check verify compare count parse validate inspect record cache retry load save close "
         "sort filter merge split trim quote escape encode decode hash sign rotate archive compress extract "
         "review confirm measure test lock unlock flush refresh resolve normalise rename move copy delete restore "
         "summarise cite reject accept prefer pin bump scan index query group label tag").split()
NOUNS = ("file folder path directory header footer column row table schema record field index key value token "
         "request response payload status code error message warning log trace span metric counter timer budget "
         "quota limit offset cursor page batch chunk buffer stream socket port host address route endpoint query "
         "parameter argument option flag setting config secret credential certificate signature checksum digest "
         "archive backup snapshot version release branch commit tag diff patch migration transaction lock queue "
         "worker thread process job task retry timeout deadline schedule calendar invoice receipt order customer "
         "account balance payment refund currency price discount report summary chart figure caption citation "
         "source reference quote date timezone locale encoding unicode image thumbnail upload download mirror "
         "registry package dependency manifest license readme changelog test fixture sample dataset label").split()
ADJECTIVES = ("empty large small stale fresh partial missing duplicate nested hidden binary compressed encrypted "
              "signed unsigned remote local cached pending failed retried expired locked shared private public "
              "sorted unsorted truncated malformed optional required legacy current previous first last latest "
              "oldest slow noisy quiet").split()
TASK_WORDS = ("quarterly weekly monthly customer billing support onboarding vendor travel payroll marketing "
              "inventory shipping warehouse audit security compliance research hiring incident").split()

LESSON_TEMPLATES = (
    "{Verb} the {adj} {noun} before you {verb2} the {noun2}.",
    "Always {verb} each {noun} against the {adj} {noun2}.",
    "Never {verb} a {adj} {noun} without checking its {noun2}.",
    "When the {noun} is {adj}, {verb} the {noun2} first.",
    "Keep the {noun} {adj} and {verb} every {noun2} once.",
    "{Verb} {noun} and {noun2} separately, then {verb2} the {adj} {noun3}.",
)
CONDITIONS = ("the task mentions a {noun}", "a {adj} {noun} is involved", "{noun} and {noun2} both appear", "")
TASK_TEMPLATES = (
    "Summarise the {word} {noun} report and {verb} every {adj} {noun2}.",
    "{Verb} the {noun} in the {word} folder and report each {noun2}.",
    "Find why the {word} {noun} failed and {verb} the {adj} {noun2}.",
    "Prepare the {word} {word2} overview for the team.",
    "Count the {adj} {noun} entries in the {word} export.",
)


@dataclass
class Figures:
    """One size's measurements."""

    key: str
    lessons: random.Random
    live: int
    seeded: int
    topped_up: int = 0
    ms: list[float] = field(default_factory=list)
    full_ms: list[float] = field(default_factory=list)
    injected: list[int] = field(default_factory=list)


def fill(template: str, rng: random.Random) -> str:
    """A template with random words: verbs, nouns, adjectives and (for tasks) words of no lesson."""
    verb, verb2 = rng.sample(VERBS, 2)
    noun, noun2, noun3 = rng.sample(NOUNS, 3)
    word, word2 = rng.sample(TASK_WORDS, 2)
    return template.format(Verb=verb.capitalize(), verb=verb, verb2=verb2, noun=noun, noun2=noun2, noun3=noun3,
                           adj=rng.choice(ADJECTIVES), word=word, word2=word2)


def lesson_change(rng: random.Random) -> LessonChange:
    return LessonChange(op="add", lesson=fill(rng.choice(LESSON_TEMPLATES), rng),
                        applies_when=fill(rng.choice(CONDITIONS), rng))


def top_up(registry: PlaybookRegistry, key: str, size: int, rng: random.Random) -> int:
    """Add lessons in batches until ``key`` holds ``size`` live ones; returns how many were proposed (those beyond
    the missing ones merged into near-duplicates)."""
    proposed = 0
    # The cached view's entries are the live ones (re-read only when the registry version moved): counting them
    # costs nothing, where reading every live row before each timed session would itself slow the session
    # (by about 0.9 ms at 1,000 lessons: the next reads run on caches it evicted).
    while (missing := size - len(registry.view(key).entries)) > 0:
        batch = [lesson_change(rng) for _ in range(min(SEED_BATCH, missing))]
        registry.apply(key, batch)
        proposed += len(batch)
    return proposed


def activate_half(registry: PlaybookRegistry, key: str) -> None:
    """Every other live entry becomes active, as in a playbook that has been learning for a while."""
    half = [entry.id for entry in registry.live_entries(key)[::2]]
    entries = PlaybookEntryRecord.__table__  # type: ignore[attr-defined]
    with registry.store.engine.begin() as connection:
        connection.execute(update(entries).where(entries.c.id.in_(half)).values(status="active"))


def session(supervisor: Supervisor, key: str, task: str) -> tuple[float, float, int]:
    """One auto-lane session: ms on the caller's path (begin to end), ms until its background finish is done
    (everything the core does for it), and how many lessons it injected."""
    started = time.perf_counter()
    run = supervisor.begin(task, agent_name="bench", learning_key=key)
    for i in range(STEPS):
        step = run.record_step(tool_name="read_file", tool_args={"path": f"f{i}.txt"}, output=f"result {i}")
        run.tool_call_done(step)
    run.final_answer(f"done after {STEPS} steps")
    pending = run.end(f"done after {STEPS} steps")
    caller = time.perf_counter() - started
    result = pending.result()
    return caller * 1000, (time.perf_counter() - started) * 1000, len(result.lessons_used)


def config_for(workdir: Path, largest: int) -> AtlasConfig:
    return AtlasConfig.load({
        "storage": {"url": f"sqlite:///{workdir / 'atlas.db'}", "spool_dir": str(workdir / "spool")},
        "supervision": {"lane": "auto"},
        "playbook": {"total_token_budget": max(3000, 100 * largest)},  # room for every lesson (about 20 tokens each)
    }, environ={})


def measure(supervisor: Supervisor, sizes: list[int], rounds: int, sessions: int) -> dict[int, Figures]:
    registry = supervisor.playbook
    figures: dict[int, Figures] = {}
    for size in sizes:
        key, lessons = f"bench:{size}", random.Random(size)
        seeded = top_up(registry, key, size, lessons)
        activate_half(registry, key)
        figures[size] = Figures(key, lessons, len(registry.live_entries(key)), seeded)
    task_rng = random.Random(0)
    tasks = [fill(task_rng.choice(TASK_TEMPLATES), task_rng) for _ in range(rounds * sessions)]
    for size in sizes:  # warm up: statement caches, each key's registry row and history
        session(supervisor, figures[size].key, tasks[0])
    order_rng = random.Random(1)
    for round_index in range(rounds):
        runs = [(size, round_index * sessions + k) for size in sizes for k in range(sessions)]
        order_rng.shuffle(runs)
        for size, task_index in runs:
            f = figures[size]
            f.topped_up += top_up(registry, f.key, size, f.lessons)
            ms, full_ms, injected = session(supervisor, f.key, tasks[task_index])
            f.ms.append(ms)
            f.full_ms.append(full_ms)
            f.injected.append(injected)
    return figures


def p90(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=10, method="inclusive")[-1] if len(samples) > 1 else samples[0]


def report(figures: dict[int, Figures]) -> None:
    baseline = statistics.median(figures[0].ms) if 0 in figures else None
    full_baseline = statistics.median(figures[0].full_ms) if 0 in figures else None
    print("caller = begin to end() on the user's path; full = until the background finish is done (all core work)")
    print(f"{'lessons':>7} {'live':>5} {'seeded':>6} {'topped up':>9} {'caller ms':>9} {'p90':>6} {'vs 0':>6} "
          f"{'full ms':>8} {'p90':>6} {'vs 0':>6} {'injected':>8}")
    for size, f in figures.items():
        median, full = statistics.median(f.ms), statistics.median(f.full_ms)
        ratio = f"{median / baseline:.2f}x" if baseline else "-"
        full_ratio = f"{full / full_baseline:.2f}x" if full_baseline else "-"
        print(f"{size:>7} {f.live:>5} {f.seeded:>6} {f.topped_up:>9} {median:>9.2f} {p90(f.ms):>6.2f} {ratio:>6} "
              f"{full:>8.2f} {p90(f.full_ms):>6.2f} {full_ratio:>6} {statistics.mean(f.injected):>8.1f}")
    for name, attribute, base in (("caller's path", "ms", baseline), ("full core time", "full_ms", full_baseline)):
        target = f"target ({name}): {TARGET_SIZE:,} live lessons at most {TARGET_RATIO}x none"
        if base and TARGET_SIZE in figures:
            ratio = statistics.median(getattr(figures[TARGET_SIZE], attribute)) / base
            print(f"{target}: {'PASS' if ratio <= TARGET_RATIO else 'FAIL'} ({ratio:.2f}x)")
        else:
            print(f"{target}: not measured (needs sizes 0 and {TARGET_SIZE})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--sessions", type=int, default=5, help="sessions per size in each round")
    parser.add_argument("--sizes", type=lambda text: [int(s) for s in text.split(",")],
                        default=[0, 10, 100, TARGET_SIZE], help="live lessons per key, comma-separated")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        config = config_for(Path(tmp), max(args.sizes))
        with Supervisor(config, models=InstantRoles(config)) as supervisor:
            started = time.perf_counter()
            figures = measure(supervisor, args.sizes, args.rounds, args.sessions)
            print(f"{args.rounds} rounds x {args.sessions} sessions per size, {STEPS} steps each, auto lane, "
                  f"SQLite ({time.perf_counter() - started:.0f} s with seeding)")
            report(figures)


if __name__ == "__main__":
    main()
