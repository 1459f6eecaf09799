"""Runs inside the disposable machine, as root, with agentd installed (the
default model) and a user alice. The agents' OpenAI-compatible endpoint
(issue 16), each figure beside a baseline measured in this same run:

  overhead   one process, as the agent (setpriv: its uid, gid and the
             agentd-agents group) in its unit's network namespace (nsenter -n
             on its runtime), with its key (told by an --exec task): the same
             request, one user message and max_tokens 1, temperature 0, N
             times through Runtime.Think over D-Bus (the baseline: what the
             agent loop uses) and N times through the endpoint (http.client,
             one keep-alive connection: POST /v1/chat/completions, not
             streamed), alternated so that both see the same model and load.
             Not an --exec task itself: a tool runs under agentd.nobind, and
             the vendored sd-bus binds its socket (a tool cannot use it).
             Latency p50/p95 of each, and the difference of the p95s (goal:
             at most 2 ms).
  share      A agents of alice (one owner), each an --exec task that streams
             requests (max_tokens 64, a prompt of its own) through its own
             endpoint, one at a time, from a common start for S seconds. The
             tokens each got inside the window (content chunks: one per token
             that showed text), their spread around the mean (goal: each
             within 10% of its share), and the tokens/s of all together.

Clients are this file (`client ROLE ...`) run by the agent's runtime, with
sdbus and agentd from /usr/lib/agentd/python as the runtime has them. Times
are time.monotonic (one clock for the whole machine).

    /usr/bin/python3 bench/endpoint_inner.py N AGENTS SECONDS
"""

from __future__ import annotations

import asyncio
import grp
import http.client
import json
import os
import pwd
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, "/usr/lib/agentd/python")
HERE = Path(__file__).resolve()
OWNER = "alice"
ASK = [{"role": "user", "content": "Say one word."}]
BASE = "http://127.0.0.1:8080/v1"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))]


def ms(values: list[float]) -> dict[str, Any]:
    v = [x * 1000 for x in values]
    return {
        "n": len(v),
        "p50_ms": round(pct(v, 50), 3),
        "p95_ms": round(pct(v, 95), 3),
        "mean_ms": round(statistics.fmean(v), 3),
        "max_ms": round(max(v), 3),
    }


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sh(*argv: str, user: str | None = None, timeout: float = 600) -> str:
    cmd = ["runuser", "-u", user, "--", *argv] if user else list(argv)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode:
        raise RuntimeError(f"{cmd}: exit {r.returncode}: {r.stderr.strip()}")
    return r.stdout


# -- clients, in an agent's unit --------------------------------------------------------------
def endpoint(key: str | None = None) -> tuple[http.client.HTTPConnection, dict[str, str]]:
    base = os.environ.get("OPENAI_BASE_URL", BASE).removeprefix("http://").split("/")[0]
    host, port = base.split(":")
    headers = {
        "Authorization": f"Bearer {key or os.environ['OPENAI_API_KEY']}",
        "Content-Type": "application/json",
    }
    return http.client.HTTPConnection(host, int(port), timeout=300), headers


def post(conn: http.client.HTTPConnection, headers: dict[str, str], body: dict) -> bytes:
    conn.request("POST", "/v1/chat/completions", json.dumps(body), headers)
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {data[:300]!r}")
    return data


async def overhead(n: int, key: str) -> dict[str, Any]:
    from sdbus import sd_bus_open_system, set_default_bus

    from agentd.api.interfaces import BUS_NAME, ROOT_PATH, RuntimeInterface

    bus = sd_bus_open_system()
    set_default_bus(bus)
    rt = RuntimeInterface.new_proxy(BUS_NAME, ROOT_PATH, bus)
    options = {"max_tokens": ("u", 1), "temperature": ("d", 0.0), "persona": ("b", False)}
    conn, headers = endpoint(key)
    body = {"model": "m", "messages": ASK, "max_tokens": 1, "temperature": 0}
    think, http_ = [], []
    for i in range(n + 5):  # the first 5 of each warm the caches: not counted
        t0 = time.monotonic()
        await rt.think(json.dumps(ASK), options)
        t1 = time.monotonic()
        post(conn, headers, body)
        t2 = time.monotonic()
        if i >= 5:
            think.append(t1 - t0)
            http_.append(t2 - t1)
    return {"think": think, "endpoint": http_}


def share(start: float, seconds: float, index: int) -> dict[str, Any]:
    """Stream request after request; count the content chunks (tokens) that
    arrive inside the window, and stop at its end mid-answer."""
    conn, headers = endpoint()
    ask = [{"role": "user", "content": f"Agent {index}: count from 1 upwards, one per line."}]
    body = {"model": "m", "messages": ask, "max_tokens": 64, "temperature": 0.7, "stream": True}
    while time.monotonic() < start:
        time.sleep(0.005)
    end = start + seconds
    tokens = requests = 0
    while time.monotonic() < end:
        conn.request("POST", "/v1/chat/completions", json.dumps(body), headers)
        response = conn.getresponse()
        requests += 1
        while line := response.readline():
            if time.monotonic() >= end:
                break
            if line.startswith(b'data: {"') and b'"content": "' in line and b'"role"' not in line:
                tokens += 1
        else:
            continue
        conn.close()  # the window closed mid-answer: this request is cancelled
        break
    return {"tokens": tokens, "requests": requests, "end": time.monotonic()}


# -- orchestration, as root -------------------------------------------------------------------
def submit(agent: str, command: str) -> int:
    out = sh("agentctl", "task", "submit", f"bench {agent}", "--agent", agent,
             "--exec", command, user=OWNER)  # fmt: skip
    return int(out.strip())


def result(task: int, timeout: float) -> dict[str, Any]:
    wait = ["agentctl", "task", "wait", str(task), "--timeout", str(int(timeout))]
    subprocess.run(["runuser", "-u", OWNER, "--", *wait], capture_output=True, timeout=timeout + 60)
    t = json.loads(sh("agentctl", "task", "show", str(task), "--json", user=OWNER))
    out = json.loads(t["result"] or "{}")
    if t["status"] != "completed":
        raise RuntimeError(f"task {task}: {t['status']}: {out.get('stderr', '')[-2000:]}")
    return json.loads(out["stdout"])


def command(*args: str) -> str:
    return f"PYTHONPATH=/usr/lib/agentd/python python3 {HERE} client {' '.join(args)}"


def as_agent(name: str, *args: str) -> dict[str, Any]:
    """This file's client as NAME's user, in its unit's network namespace."""
    key = result(submit(name, 'printf \'"%s"\' "$OPENAI_API_KEY"'), 120)
    pid = sh("systemctl", "show", "-p", "MainPID", "--value", f"agent-{name}.service").strip()
    pw = pwd.getpwnam(f"agent-{name}")
    agents_gid = grp.getgrnam("agentd-agents").gr_gid
    out = sh("nsenter", "-t", pid, "-n", "--", "setpriv", f"--reuid={pw.pw_uid}",
             f"--regid={pw.pw_gid}", f"--groups={agents_gid}", "--", "env",
             "PYTHONPATH=/usr/lib/agentd/python", "/usr/bin/python3", str(HERE), "client",
             *args, key, timeout=3600)  # fmt: skip
    return json.loads(out)


def agents(count: int) -> list[str]:
    names = [f"ep-{i}" for i in range(count)]
    for name in names:
        sh("agentctl", "agent", "create", name, "--template", "sandbox", "--start", user=OWNER)
    return names


def main(n: int, count: int, seconds: int) -> dict[str, Any]:
    names = agents(count)
    report: dict[str, Any] = {"model": "default (SmolLM2-135M)", "n": n}
    log(f"overhead: {n} Think and {n} endpoint requests, alternated, in {names[0]}")
    raw = as_agent(names[0], "overhead", str(n))
    think, http_ = ms(raw["think"]), ms(raw["endpoint"])
    report["overhead"] = {
        "think": think,
        "endpoint": http_,
        "p95_difference_ms": round(http_["p95_ms"] - think["p95_ms"], 3),
        "p50_difference_ms": round(http_["p50_ms"] - think["p50_ms"], 3),
        "goal_p95_difference_ms": 2.0,
    }
    start = time.monotonic() + 15  # every task claimed and its client up by then
    log(f"share: {count} agents streaming for {seconds} s")
    tasks = [submit(a, command("share", repr(start), str(seconds), str(i)))
             for i, a in enumerate(names)]  # fmt: skip
    got = [result(t, seconds + 600) for t in tasks]
    tokens = [g["tokens"] for g in got]
    mean = statistics.fmean(tokens)
    report["share"] = {
        "agents": count,
        "seconds": seconds,
        "tokens": dict(zip(names, tokens, strict=True)),
        "requests": dict(zip(names, [g["requests"] for g in got], strict=True)),
        "worst_deviation_from_mean": round(max(abs(t - mean) / mean for t in tokens), 4),
        "goal_deviation": 0.10,
        "tokens_per_s_all": round(sum(tokens) / seconds, 2),
    }
    return report


if __name__ == "__main__":
    if sys.argv[1] == "client":
        role, args = sys.argv[2], sys.argv[3:]
        if role == "overhead":
            print(json.dumps(asyncio.run(overhead(int(args[0]), args[1]))))
        else:
            print(json.dumps(share(float(args[0]), float(args[1]), int(args[2]))))
    else:
        print(json.dumps(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])), indent=2))
