"""Driver for the SIGKILL test (tests/core/test_durability.py): run as a script, it imports everything once, then
``rounds`` times forks a child that opens a Supervisor on the store (replaying what the last child left) and runs
sessions as fast as it can, printing each id as soon as the call that made it returned; the driver kills the
child with SIGKILL after a random delay (some land during the start-up replay) and appends the ids the child
reported to ``produced.jsonl``. Forking a process that has started no thread keeps each round cheap.

Usage: python tests/core/kill_driver.py STORE_URL SPOOL_DIR OUT_DIR ROUNDS SEED
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import bm25s  # noqa: E402,F401 - imported here once, not in every child (the first begin would import them)
import numpy  # noqa: E402,F401

from atlas_learning.config import AtlasConfig  # noqa: E402
from atlas_learning.supervisor import Supervisor  # noqa: E402
from tests.support import ScriptedRoles, default_answers  # noqa: E402


def child(url: str, spool: str, write_fd: int) -> None:
    config = AtlasConfig.load({"storage": {"url": url, "spool_dir": spool}, "supervision": {"lane": "auto"}}, environ={})
    supervisor = Supervisor(config, models=ScriptedRoles(config, default_answers()))
    out = os.fdopen(write_fd, "w", buffering=1)
    n = 0
    while True:
        n += 1
        run = supervisor.begin(f"count the files in folder {n}", agent_name="killed", learning_key="kill")
        out.write(f"S {run.session_id}\n")
        for i in range(3):
            step = run.record_step(tool_name="list_dir", tool_args={"path": f"d{n}/{i}"}, output=f"{i} files")
            out.write(f"T {step}\n")
            run.tool_call_done(step)
        run.final_answer(f"{n} files")
        run.end(f"{n} files")
        out.write(f"E {run.session_id}\n")


def main() -> None:
    url, spool, out_dir, rounds, seed = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    rng = random.Random(seed)
    produced = open(out_dir / "produced.jsonl", "a", encoding="utf-8")  # noqa: SIM115
    for round_number in range(rounds):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            try:
                child(url, spool, write_fd)
            finally:
                os._exit(1)
        os.close(write_fd)
        delay = rng.choice([rng.uniform(0.0, 0.05), rng.uniform(0.1, 1.2), rng.uniform(0.1, 1.2)])  # a third in start-up
        deadline = time.monotonic() + delay
        buffer = b""
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([read_fd], [], [], left)
            if ready:
                chunk = os.read(read_fd, 65536)
                if not chunk:
                    break
                buffer += chunk
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        while chunk := os.read(read_fd, 65536):  # what the child wrote before it died
            buffer += chunk
        os.close(read_fd)
        lines = [line.split() for line in buffer.decode().splitlines() if line.strip()]
        produced.write(json.dumps({"round": round_number, "delay": round(delay, 3),
                                   "sessions": [i for k, i in lines if k == "S"], "steps": [i for k, i in lines if k == "T"],
                                   "ended": [i for k, i in lines if k == "E"]}) + "\n")
        produced.flush()


if __name__ == "__main__":
    main()
