"""Runs inside the disposable machine, as root, with agentd installed: the agent
task suite (bench/agent_tasks) through agentd, as a user would hand it over.

One agent per template the chosen tasks need (eval-sandbox, eval-ops,
eval-writing), created by alice; for each task, one at a time (times per task
are then the model's and the loop's, not a queue's): its fixtures copied into
the agent's home (owned by the agent), the task submitted as alice with its
title and description (free-form: no --exec; with --reference, the task's
reference solution as --exec, which checks this runner and the checkers
without a model), then watched until it ends or its timeout: pending
approvals are granted as the owner (`agentctl approval grant`) and questions
answered (`agentctl task reply`), both counted; then the result, artifacts
and trace are read with agentctl as alice and the checker judges them.

    /usr/bin/python3 bench/agents_inner.py CONFIG_JSON

Progress on stderr, one JSON report on stdout.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench" / "agent_tasks"))

import suite  # noqa: E402  (bench/agent_tasks/suite.py)

OWNER = "alice"
FINAL = ("completed", "failed", "dead_lettered", "cancelled")
POLL = 2.0  # seconds between looks at a running task
REPLY = "I have nothing to add: decide yourself with what you have and finish the task."
CONF = Path("/etc/agentd/agentd.toml")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ctl(*args: str, user: str | None = OWNER, check: bool = True, timeout: float = 120) -> str:
    argv = ["agentctl", *args]
    if user is not None:
        argv = ["runuser", "-u", user, "--", *argv]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def ctl_json(*args: str, user: str | None = OWNER) -> Any:
    return json.loads(ctl(*args, "--json", user=user))


def has_command(*path: str) -> bool:
    """agentctl PATH exists in this tree (other issue-12 work may not have landed)."""
    r = subprocess.run(["agentctl", *path, "--help"], capture_output=True, text=True)
    return r.returncode == 0


# ---------------------------------------------------------------- the model
def use_model(cfg: dict[str, Any]) -> dict[str, Any]:
    """Make the model cfg names the active one; what `model show` says of it."""
    name, gguf = cfg["model"], cfg.get("gguf")
    if gguf:  # [model] path in agentd.toml (agentd/inference/config.py)
        table = (
            f'\n[model]\npath = "{gguf}"\ncontext = {cfg["context"]}\n'
            f"sequences = {cfg['sequences']}\n"
        )
        CONF.write_text(CONF.read_text() + table)
        log(f"model: [model] path = {gguf}, context {cfg['context']}; restarting the service")
        subprocess.run(
            ["systemctl", "restart", "agentd-inference.service"], check=True, timeout=600
        )
    elif name != cfg["default_model"]:
        if not has_command("model", "use"):
            raise SystemExit(f"agentctl model use is not in this tree: pass --gguf for {name}")
        cache = REPO / "build" / "model-cache"  # the host's wheels: no download
        source = ["--from", str(cache)] if cache.is_dir() else []
        log(f"model: agentctl model install {name} {' '.join(source)}; model use {name}")
        ctl("model", "install", name, *source, user=None, timeout=3600)
        ctl("model", "use", name, user=None, timeout=1200)
    try:
        info: dict[str, Any] = ctl_json("model", "show", user=None)
    except (RuntimeError, ValueError) as e:
        info = {"error": str(e)}
    return info


# ---------------------------------------------------------------- agents
def agent_home(agent: str) -> tuple[Path, int, int]:
    info = ctl_json("agent", "show", agent)
    home = Path(info["home"])
    st = home.stat()
    return home, st.st_uid, st.st_gid


def create_agents(templates: set[str]) -> dict[str, tuple[Path, int, int]]:
    """The eval agents, their token quotas and their owner's lifted: a template's
    monthly budget (sandbox: 50,000) is a day's use, not 29 tasks' on one agent
    (measured 2026-12-01: the 1.5B model spent it by the 11th task, and the rest
    waited for the month's reset until their timeout)."""
    homes = {}
    for template in sorted(templates):
        agent = f"eval-{template}"
        ctl("agent", "create", agent, "--template", template)
        ctl("quota", "set", agent, "0", user=None)
        homes[template] = agent_home(agent)
    ctl("quota", "set", "--owner", OWNER, "0", user=None)
    return homes


def place(task: suite.Task, home: Path, uid: int, gid: int, reference: bool) -> None:
    """The task's fixtures (and with --reference its solution) in the agent's home."""
    suite.place_fixtures(task, home)
    if reference:
        (home / ".eval").mkdir(exist_ok=True)
        shutil.copy(task.dir / "reference.sh", home / ".eval" / f"{task.name}.sh")
    for top in [*task.fixture_names(), ".eval"]:
        path = home / top
        if path.exists():
            subprocess.run(["chown", "-R", f"{uid}:{gid}", str(path)], check=True)


# ---------------------------------------------------------------- one task
class Watch:
    """What the runner did for a task while it ran, as its owner."""

    def __init__(self, task_id: int) -> None:
        self.task_id = task_id
        self.granted: list[dict[str, Any]] = []
        self.replies = 0
        self.answered: set[str] = set()

    def approvals(self) -> None:
        for a in ctl_json("approval", "list"):
            if int(a.get("task", a.get("task_id", -1))) != self.task_id:
                continue
            if a.get("status", "pending") != "pending":
                continue
            ctl("approval", "grant", str(a["id"]))
            self.granted.append({"tool": a.get("tool"), "arguments": a.get("arguments")})
            log(f"    granted approval {a['id']}: {a.get('tool')} {a.get('arguments')}")

    def question(self, info: dict[str, Any]) -> None:
        reason = str(info.get("block_reason") or "")
        if reason.startswith("question") and reason not in self.answered:
            ctl("task", "reply", str(self.task_id), REPLY)
            self.answered.add(reason)
            self.replies += 1
            log(f"    replied to {reason[:100]!r}")


def submit(task: suite.Task, agent: str, cfg: dict[str, Any]) -> int:
    args = ["task", "submit", task.title, "-d", task.description, "--agent", agent]
    args += ["--max-attempts", str(cfg["attempts"])]
    if cfg["reference"]:
        args += ["--exec", f"bash .eval/{task.name}.sh"]
    return int(ctl(*args).strip())


def wait(task_id: int, timeout: float, can_approve: bool) -> tuple[dict[str, Any], Watch]:
    watch = Watch(task_id)
    deadline = time.monotonic() + timeout
    while True:
        info: dict[str, Any] = ctl_json("task", "show", str(task_id))
        if info["status"] in FINAL:
            return info, watch
        if time.monotonic() > deadline:
            ctl("task", "cancel", str(task_id), check=False)
            info["status"] = "timeout"
            info["error"] = f"no end after {timeout:g}s (cancelled)"
            return info, watch
        if info["status"] == "awaiting_approval" and can_approve:
            watch.approvals()
        elif info["status"] == "blocked":
            watch.question(info)
        time.sleep(POLL)


def answer_of(result_text: str) -> tuple[str, dict[str, Any]]:
    """The final answer in a task's result (JSON text), and the result itself."""
    try:
        result = json.loads(result_text) if result_text else {}
    except ValueError:
        return result_text, {}
    if not isinstance(result, dict):
        return str(result), {}
    for key in ("answer", "stdout"):  # the loop's answer; an --exec task's output
        if isinstance(result.get(key), str):
            return result[key], result
    return "", result


def trace_of(task_id: int, result: dict[str, Any], has_log: bool) -> dict[str, Any]:
    """Steps and tokens: from `task log` (the stored trace), else from the result."""
    steps: list[dict[str, Any]] = []
    if has_log:
        try:
            steps = [s for s in ctl_json("task", "log", str(task_id)) if isinstance(s, dict)]
        except (RuntimeError, ValueError):
            steps = []
    if steps:
        tokens = {
            k: sum(int(s.get(k) or 0) for s in steps)
            for k in ("prompt_tokens", "computed_tokens", "completion_tokens")
        }
        tools = [str(s.get("tool")) for s in steps]
        # the memory's part (issue 13): what the recall before the first step
        # found, and whether the lesson at the end was stored
        memory = {
            s["tool"]: str(s.get("result", ""))[:300]
            for s in steps
            if s.get("tool") in ("recall", "lesson")
            and (s["tool"] == "lesson" or (s.get("arguments") or {}).get("auto"))
        }
        out = {"steps": len(steps), "tools": tools, **tokens, "source": "task log"}
        return {**out, "memory": memory}
    listed = result.get("steps")
    n = len(listed) if isinstance(listed, list) else int(listed or 0)
    tools = (
        [str(s.get("action") or s.get("tool")) for s in listed] if isinstance(listed, list) else []
    )
    return {
        "steps": n,
        "tools": tools,
        "prompt_tokens": int(result.get("prompt_tokens") or 0),
        "computed_tokens": int(result.get("computed_tokens") or 0),
        "completion_tokens": int(result.get("completion_tokens") or 0),
        "source": "result",
    }


def artifacts_of(task_id: int, listed: list[dict[str, Any]]) -> dict[str, bytes]:
    out = {}
    for a in listed:
        argv = [
            "runuser",
            "-u",
            OWNER,
            "--",
            "agentctl",
            "task",
            "artifact",
            str(task_id),
            a["name"],
        ]
        r = subprocess.run([*argv, "-o", "-"], capture_output=True, timeout=60)
        if r.returncode == 0:
            out[a["name"]] = r.stdout
    return out


def template_for(task: suite.Task, reference: bool) -> str:
    """The agent's template; a reference solution is a shell script, so with
    --reference the writing template's tasks (no shell tool) go to sandbox."""
    return "sandbox" if reference and task.template == "writing" else task.template


def run_task(
    task: suite.Task,
    homes: dict[str, tuple[Path, int, int]],
    cfg: dict[str, Any],
    caps: dict[str, bool],
) -> dict[str, Any]:
    template = template_for(task, cfg["reference"])
    path, uid, gid = homes[template]
    place(task, path, uid, gid, cfg["reference"])
    timeout = cfg["timeout"] or task.timeout
    t0 = time.monotonic()
    task_id = submit(task, f"eval-{template}", cfg)
    info, watch = wait(task_id, timeout, caps["approval"])
    seconds = time.monotonic() - t0
    answer, result = answer_of(str(info.get("result") or ""))
    artifacts = artifacts_of(task_id, info.get("artifacts") or [])
    verdict = suite.Result(info["status"], answer, artifacts, path, str(info.get("error") or ""))
    passed, reason = suite.judge(task, verdict)
    return {
        "task": task.name,
        "template": template,
        "id": task_id,
        "status": info["status"],
        "passed": passed,
        "reason": reason,
        "seconds": round(seconds, 1),
        "run_seconds": round(float(info["finished_at"]) - float(info["started_at"]), 1)
        if info.get("finished_at") and info.get("started_at")
        else None,
        "attempts": info.get("attempts"),
        **trace_of(task_id, result, caps["log"]),
        "approvals_granted": len(watch.granted),
        "granted": watch.granted,
        "replies": watch.replies,
        "answer": answer[:2000],
        "artifacts": sorted(artifacts),
        "error": str(info.get("error") or "")[:1000],
    }


def main() -> None:
    cfg = json.loads(sys.argv[1])
    tasks = suite.load(cfg["tasks"] or None)
    caps = {"approval": has_command("approval", "grant"), "log": has_command("task", "log")}
    log(f"agentctl: approval {'yes' if caps['approval'] else 'no'}, task log {caps['log']}")
    model = {} if cfg["reference"] else use_model(cfg)
    homes = create_agents({template_for(t, cfg["reference"]) for t in tasks})
    rows = []
    for n, task in enumerate(tasks, 1):
        log(f"[{n}/{len(tasks)}] {task.name} ({task.template})")
        try:
            row = run_task(task, homes, cfg, caps)
        except Exception as e:  # the runner's own trouble: recorded, the suite goes on
            why = f"{type(e).__name__}: {e}"[:500]
            row = {"task": task.name, "template": task.template, "passed": False,
                   "status": "runner_error", "reason": why}  # fmt: skip
        log(f"    {'PASS' if row['passed'] else 'FAIL'} {row['status']} {row['reason']}")
        rows.append(row)
    journal = subprocess.run(
        ["journalctl", "-u", "agentd", "-u", "agentd-inference", "-u", "agent-eval-*",
         "-p", "warning", "--no-pager", "-n", "30"],
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    agents = subprocess.run(
        ["journalctl", "-u", "agent-eval-*", "--no-pager", "-n", "40"],
        capture_output=True,
        text=True,
    ).stdout  # the runtimes' own words, e.g. a traceback when the loop breaks
    report = {"model": cfg["model"], "model_info": model, "capabilities": caps, "tasks": rows,
              "journal_warnings": journal.splitlines()[-30:],
              "agent_journal": agents.splitlines()[-40:]}  # fmt: skip
    print(json.dumps(report))


if __name__ == "__main__":
    main()
