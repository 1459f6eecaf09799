"""Runs inside the disposable machine, as root, with agentd and the default
model installed and a user alice. Goals with injected plans (no planning):

  spawn   N goals one after another, each one model step that none of alice's
          agents can take, so agentd makes a sub-agent for it. Per goal, from
          the goal's creation: sub-agent intent -> agent made and its unit's
          start queued ("ready") -> runtime registered ("online", its
          agent.online audit row) -> step claimed (the task's started_at) ->
          first model token (the step's first model call: its usage row's
          start plus first_token_s, as agentd saw the token). Then cancelled,
          which removes the sub-agent.
  wide    one goal of W independent model steps, --max-agents W: the same
          figures per step, the time until every step has its first token,
          failures (sub-agents refused, steps failed), and peak memory of
          agentd and of the model service (their cgroups, sampled every
          0.5 s); then cancelled, and the time until every sub-agent is gone.
  many    one goal of S command steps (`true`), --max-agents 100: completes
          with no failure; the most steps open at once (backpressure: <= 100)
          and the most sub-agents alive, sampled; wall time.
  serial  the same 40 command steps (`sleep 1`) with --no-sub-agents on 1 of
          alice's agents and on 8 (created and online first): the speed-up of
          8 over 1, from submit to the last step's end (the planner's report,
          the same model work in both, is timed apart).
  serial_model  (when asked: N > 0) the same with N model steps (the bench
          template) on 1 agent of it and on 8.
  capable (only when asked: K > 0) with Qwen2.5-Coder-1.5B in use, one goal of
          K independent model steps (a sentence each) with --max-agents K, and
          the same goal with --max-agents 1 (one step after another): wall
          time from submit to the goal's result, and the speed-up.

Times come from agentd's own database (read-only) and audit log. Prints JSON.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

DB = "/var/lib/agentd/agentd.db"
CONF = "/etc/agentd/agentd.toml"
# One owner's limits lifted (agents, ceilings, queued tasks), and the model
# service's per-owner queue (16 of 64 by default: one owner's 100 steps would
# otherwise be refused Overloaded and deferred, which measures the fairness
# bound, not the spawn): 128 requests may wait, all of them alice's.
LIFTED = """
max_agents_per_owner = 1000
owner_memory_max = 0
owner_cpu_quota_max = 0
owner_tasks_max = 0
max_queued_tasks_per_owner = 100000

[model]
max_queue = 128
max_queue_per_owner = 128
"""
# The model steps' template: one model step a task (then finish), no tools, so
# that a step's work after its first token is small and the next steps' first
# tokens are not queued behind long agent loops.
TEMPLATE = """description = "bench: one model step"
capabilities = ["benchstep"]
tools = []
profile = "offline"
steps = 1
concurrency = 1
"""


def sh(*args: str, user: str | None = None, check: bool = True) -> str:
    cmd = ["runuser", "-u", user, "--", *args] if user else list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if check and r.returncode:
        raise RuntimeError(f"{cmd}: {r.returncode} {r.stderr}")
    return r.stdout


def ctl(*args: str, user: str | None = "alice") -> Any:
    return json.loads(sh("agentctl", *args, "--json", user=user))


def q(sql: str, args: tuple = ()) -> list[sqlite3.Row]:
    db = sqlite3.connect(f"file:{DB}?mode=ro", uri=True, timeout=30)
    db.row_factory = sqlite3.Row
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def wait(pred: Any, timeout: float, what: str, every: float = 0.2) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(every)
    raise TimeoutError(what)


def submit(steps: list[dict], *args: str) -> int:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"steps": steps}, f)
    os.chmod(f.name, 0o644)
    try:
        return int(sh("agentctl", "goal", "submit", "Bench", *args, "--plan", f.name, user="alice"))
    finally:
        os.unlink(f.name)


def model_step(i: int) -> dict:
    return {
        "id": f"s{i}",
        "title": f"Say {i}",
        "instructions": f"Answer with the number {i} and nothing else.",
        "needs": ["benchstep"],
    }


def command_step(i: int, cmd: str) -> dict:
    return {**model_step(i), "needs": ["general"], "exec": cmd}


def pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))], 3)


def summary(xs: list[float]) -> dict[str, Any]:
    return {"n": len(xs), "p50": pct(xs, 50), "p99": pct(xs, 99), "max": pct(xs, 100)}


def timeline(goal: int) -> list[dict[str, float | None]]:
    """Per step task of GOAL: seconds from the goal's creation to each point."""
    [g] = q("SELECT created_at FROM goals WHERE id=?", (goal,))
    t0 = g["created_at"]
    rows = []
    for t in q(
        "SELECT t.id, t.agent, t.started_at, g.step FROM goal_tasks g JOIN tasks t"
        " ON t.id = g.task_id WHERE g.goal_id=? AND g.role='step'",
        (goal,),
    ):
        sub = q("SELECT * FROM goal_agents WHERE name=?", (t["agent"],))
        online = q(
            "SELECT min(ts) AS ts FROM audit WHERE action='agent.online' AND agent=?",
            (t["agent"],),
        )
        first = q(
            "SELECT ts - duration_s + first_token_s AS at FROM usage WHERE task_id=?"
            " AND first_token_s IS NOT NULL ORDER BY id LIMIT 1",
            (t["id"],),
        )

        def since(v: float | None) -> float | None:
            return None if v is None else round(v - t0, 3)

        rows.append(
            {
                "intent": since(sub[0]["created_at"]) if sub else None,
                "ready": since(sub[0]["ready_at"]) if sub else None,
                "online": since(online[0]["ts"]) if online else None,
                "claimed": since(t["started_at"]),
                "first_token": since(first[0]["at"]) if first else None,
            }
        )
    return rows


def firsts(goal: int, n: int) -> bool:
    got = q(
        "SELECT count(DISTINCT u.task_id) AS n FROM usage u JOIN goal_tasks g ON g.task_id ="
        " u.task_id WHERE g.goal_id=? AND g.role='step' AND u.first_token_s IS NOT NULL",
        (goal,),
    )
    return got[0]["n"] >= n


def subs_gone(goal: int) -> bool:
    return not q(
        "SELECT 1 FROM goal_agents WHERE goal_id=? AND state IN ('creating', 'present')", (goal,)
    )


class Peak(threading.Thread):
    """Peak memory.current of agentd's and the model service's cgroups."""

    def __init__(self) -> None:
        self.UNITS = {"agentd": "agentd.service", "service": "agentd-inference.service"}
        super().__init__(daemon=True)
        self.peak = {k: 0 for k in self.UNITS}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            for k, unit in self.UNITS.items():
                out = sh("systemctl", "show", "-p", "MemoryCurrent", "--value", unit, check=False)
                if out.strip().isdigit():
                    self.peak[k] = max(self.peak[k], int(out))


def spawn(n: int) -> dict[str, Any]:
    runs = []
    for i in range(n):
        goal = submit([model_step(i)], "--max-agents", "1")
        wait(lambda g=goal: firsts(g, 1), 600, f"goal {goal}'s first token")
        [row] = timeline(goal)
        runs.append(row)
        sh("agentctl", "goal", "cancel", str(goal), user="alice")
        wait(lambda g=goal: subs_gone(g), 120, "its sub-agent removed")
    return {
        "runs": runs,
        **{k: summary([r[k] for r in runs if r[k] is not None]) for k in runs[0]},
    }


def wide(w: int) -> dict[str, Any]:
    peak = Peak()
    peak.start()
    start = time.monotonic()
    goal = submit([model_step(i) for i in range(w)], "--max-agents", str(w))
    wait(lambda: firsts(goal, w), 3600, "every step's first token", every=1)
    all_first = time.monotonic() - start
    rows = timeline(goal)
    refused = q(
        "SELECT count(*) AS n FROM goal_agents WHERE goal_id=? AND state='refused'", (goal,)
    )
    failed = q(
        "SELECT count(*) AS n FROM goal_tasks g JOIN tasks t ON t.id=g.task_id WHERE g.goal_id=?"
        " AND t.status IN ('failed', 'dead_lettered')",
        (goal,),
    )
    t = time.monotonic()
    sh("agentctl", "goal", "cancel", str(goal), user="alice")
    wait(lambda: subs_gone(goal), 1800, "sub-agents removed", every=1)
    removed = time.monotonic() - t
    peak.stop.set()
    peak.join()
    return {
        "steps": w,
        "until_every_first_token_s": round(all_first, 2),
        "first_token": summary([r["first_token"] for r in rows if r["first_token"] is not None]),
        "online": summary([r["online"] for r in rows if r["online"] is not None]),
        "claimed": summary([r["claimed"] for r in rows if r["claimed"] is not None]),
        "sub_agents_refused": refused[0]["n"],
        "steps_failed": failed[0]["n"],
        "cancel_until_all_removed_s": round(removed, 2),
        "peak_memory_mib": {k: round(v / 2**20, 1) for k, v in peak.peak.items()},
    }


def many(s: int) -> dict[str, Any]:
    start = time.monotonic()
    goal = submit([command_step(i, "true") for i in range(s)], "--max-agents", "100")
    most_open = most_subs = 0
    while True:
        [g] = q("SELECT state FROM goals WHERE id=?", (goal,))
        opened = q(
            "SELECT count(*) AS n FROM goal_tasks g JOIN tasks t ON t.id=g.task_id"
            " WHERE g.goal_id=? AND g.role='step' AND t.status IN ('pending', 'in_progress')",
            (goal,),
        )[0]["n"]
        subs = q(
            "SELECT count(*) AS n FROM goal_agents WHERE goal_id=? AND state IN"
            " ('creating', 'present')",
            (goal,),
        )[0]["n"]
        most_open, most_subs = max(most_open, opened), max(most_subs, subs)
        if g["state"] not in ("planning", "running", "awaiting_approval"):
            break
        time.sleep(0.5)
    wall = time.monotonic() - start
    done = q(
        "SELECT t.status, count(*) AS n FROM goal_tasks g JOIN tasks t ON t.id=g.task_id"
        " WHERE g.goal_id=? AND g.role='step' GROUP BY t.status",
        (goal,),
    )
    wait(lambda: subs_gone(goal), 1800, "sub-agents removed", every=1)
    return {
        "steps": s,
        "state": g["state"],
        "wall_s": round(wall, 2),
        "steps_by_status": {r["status"]: r["n"] for r in done},
        "most_steps_open": most_open,
        "most_sub_agents": most_subs,
    }


def online(name: str) -> bool:
    return bool(q("SELECT 1 FROM audit WHERE action='agent.online' AND agent=? LIMIT 1", (name,)))


def serial(steps: list[dict], template: str, tag: str) -> dict[str, Any]:
    out: dict[str, Any] = {"steps": len(steps), "template": template}
    for n in (1, 8):
        names = [f"{tag}{n}-{i}" for i in range(n)]
        for name in names:
            sh("agentctl", "agent", "create", name, "--template", template, user="alice")
            sh("agentctl", "agent", "start", name, user="alice")
        wait(lambda ns=names: all(online(x) for x in ns), 120, "agents online")
        goal = submit(steps, "--max-agents", "100", "--no-sub-agents")
        wait(
            lambda g=goal: q("SELECT state FROM goals WHERE id=?", (g,))[0]["state"] == "completed",
            1800,
            "the goal done",
            every=0.5,
        )
        [g] = q("SELECT created_at, finished_at FROM goals WHERE id=?", (goal,))
        [last] = q(
            "SELECT max(t.finished_at) AS at FROM goal_tasks s JOIN tasks t ON t.id = s.task_id"
            " WHERE s.goal_id=? AND s.role='step'",
            (goal,),
        )
        out[f"agents_{n}_steps_s"] = round(last["at"] - g["created_at"], 2)
        out[f"agents_{n}_report_s"] = round(g["finished_at"] - last["at"], 2)
        for name in names:
            sh("agentctl", "agent", "rm", name, user="alice", check=False)
    out["speedup_8_over_1"] = round(out["agents_1_steps_s"] / out["agents_8_steps_s"], 2)
    return out


SENTENCES = ("the sea", "a mountain", "a city", "a forest", "a river", "the moon", "a bird", "rain")


def capable(k: int) -> dict[str, Any]:
    cache = str(Path(__file__).resolve().parents[1] / "build" / "model-cache")
    sh("agentctl", "model", "install", "qwen2.5-coder-1.5b", "--from", cache)
    sh("agentctl", "model", "use", "qwen2.5-coder-1.5b")
    wait(lambda: ctl("model", "show")["state"] == "loaded", 600, "1.5B loaded", every=1)
    steps = [
        {**model_step(i), "instructions": f"Write one sentence about {SENTENCES[i % 8]}."}
        for i in range(k)
    ]
    out: dict[str, Any] = {"steps": k, "model": "qwen2.5-coder-1.5b"}
    for most in (k, 1):
        t = time.monotonic()
        goal = submit(steps, "--max-agents", str(most))
        wait(
            lambda g=goal: (
                q("SELECT state FROM goals WHERE id=?", (g,))[0]["state"]
                in ("completed", "failed", "cancelled")
            ),
            3600,
            "the goal's end",
            every=1,
        )
        out[f"max_agents_{most}_s"] = round(time.monotonic() - t, 1)
        out[f"max_agents_{most}_state"] = q("SELECT state FROM goals WHERE id=?", (goal,))[0][
            "state"
        ]
        wait(lambda g=goal: subs_gone(g), 600, "sub-agents removed", every=1)
    out["speedup"] = round(out["max_agents_1_s"] / out[f"max_agents_{k}_s"], 2)
    return out


def main() -> None:
    spawns, w, s, k, serially, by_model = (int(a) for a in sys.argv[1:7])
    with open(CONF, "a") as f:
        f.write(LIFTED)
    os.makedirs("/etc/agentd/templates", exist_ok=True)
    with open("/etc/agentd/templates/benchstep.toml", "w") as f:
        f.write(TEMPLATE)
    sh("systemctl", "restart", "agentd-inference.service", "agentd.service")
    wait(lambda: ctl("model", "show")["state"] == "loaded", 300, "model loaded", every=1)
    sh("agentctl", "agent", "create", "bp", "--template", "planner", user="alice")
    sh("agentctl", "quota", "set", "--owner", "alice", "0")
    report: dict[str, Any] = {"cpus": os.cpu_count()}
    if spawns:
        report["spawn"] = spawn(spawns)
    if w:
        report["wide"] = wide(w)
    if s:
        report["many"] = many(s)
    if serially:
        commands = [command_step(i, "sleep 1") for i in range(40)]
        report["serial"] = serial(commands, "sandbox", "bs")
    if by_model:
        report["serial_model"] = serial([model_step(i) for i in range(by_model)], "benchstep", "bm")
    if k:
        report["capable"] = capable(k)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
