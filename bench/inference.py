"""Inference benchmark (issue 4): figures printed, never asserted.

One run, the default model (or --model), greedy, story prompts (chat template,
a system message, one user message; no request stops early at end of text in
practice, so every request makes --tokens tokens):
  1. baseline: the raw single-sequence greedy decode loop over the low-level
     API (RawGreedy, bench/rawgreedy.py; prompt processing included), in this process, where no
     other thread decodes (its model of its own: see Engine._main on why);
  2. agentd-inference, the real service (a subprocess, `python3 -m
     agentd.inference`) over its Unix socket, with 1 client; runs alternate
     with the baseline, medians of --repeat;
  3. the service with 4, 8, 16, 32 concurrent clients (distinct agents):
     aggregate completion tokens/s, time to first token (client side: request
     sent -> first token line) p50/p99, queue wait (the service's `queued_s`)
     p50/p99, and ratios to the baseline; in two prompt scenarios:
       - "distinct": every agent its own system prompt (agentd's default
         persona, "You are <agent>, ..."): nothing to share between requests;
       - "shared": agents of one template, the same system prompt (24 tokens
         after the template's own), each its own question: the engine's
         prefix reuse computes the system prompt once per run.
     Every run's prompts start with a run number, so no run reuses the
     cache of another (nor does the 1-client run, which is thus comparable
     with the baseline, which computes its whole prompt too).

    PYTHONPATH=build/vendor /usr/bin/python3 bench/inference.py [--tokens 64] [--json F]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("AGENTD_LLAMA_VENDOR", str(ROOT / "build" / "vendor-llama"))

from rawgreedy import RawGreedy  # noqa: E402  (bench/, this script's directory)

from agentd.inference import model  # noqa: E402
from agentd.inference.config import EngineConfig  # noqa: E402
from agentd.inference.engine import Engine  # noqa: E402

TOPICS = [
    "a robot",
    "a lighthouse keeper",
    "a lost cat",
    "a dragon",
    "a baker",
    "a pirate ship",
    "a time traveller",
    "a small village",
    "a clockmaker",
    "a snowstorm",
    "an old tree",
    "a detective",
    "a space station",
    "a violin",
    "a desert caravan",
    "a river",
    "a painter",
    "a haunted house",
    "a king",
    "a mountain climber",
    "a submarine",
    "a garden",
    "a train journey",
    "a wizard",
    "a fox",
    "a library",
    "an island",
    "a musician",
    "a storm at sea",
    "a young inventor",
    "a circus",
    "a forest spirit",
]
SHARED_PERSONA = (
    "You are a storyteller agent of the agentd fleet. You write short, vivid "
    "stories for children, in plain English."
)
GOALS = {"overhead_1_client": 0.10, "speedup_16_clients": 1.8, "ttft_p99_16_clients_ms": 500}
_runs = itertools.count(1)


def messages(scenario: str, client: int, run: int) -> list[dict[str, str]]:
    """The chat of one request; ``run`` first so no two runs share a prefix."""
    system = (
        f"Run {run}. {SHARED_PERSONA}"
        if scenario == "shared"
        else f"Run {run}. You are agent{client}, a helpful assistant."
    )
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": f"Tell me a story about {TOPICS[client % len(TOPICS)]}."},
    ]


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


class Service:
    """agentd-inference in a subprocess on a temporary socket; ready when it
    says READY=1 on our notify socket."""

    def __init__(self, path: str, args: argparse.Namespace, tmp: Path) -> None:
        self.socket = tmp / "socket"
        cfg = tmp / "agentd.toml"
        cfg.write_text(
            f'[model]\npath = "{path}"\ncontext = {args.context}\n'
            f"sequences = {args.sequences}\nbatch = {args.batch}\n"
            f"threads = {args.threads}\nmax_queue = 256\n"
            f"max_queue_per_agent = 16\n"
        )
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(tmp / "notify"))
        env = dict(
            os.environ,
            NOTIFY_SOCKET=str(tmp / "notify"),
            PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        )
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agentd.inference",
                "--config",
                str(cfg),
                "--socket",
                str(self.socket),
                "--allow-uid",
                str(os.getuid()),
            ],
            env=env,
        )
        notify.settimeout(1)
        try:
            while True:
                try:
                    if b"READY=1" in notify.recv(4096):
                        break
                except TimeoutError:
                    if self.proc.poll() is not None:
                        raise RuntimeError("agentd-inference exited") from None
        finally:
            notify.close()

    async def generate(self, agent: str, chat: list[dict[str, str]], tokens: int) -> dict[str, Any]:
        """One request; client-side time to first token and the done line."""
        t0 = time.monotonic()
        reader, writer = await asyncio.open_unix_connection(str(self.socket), limit=1 << 20)
        writer.write(
            json.dumps(
                {"op": "generate", "agent": agent, "messages": chat, "max_tokens": tokens}
            ).encode()
            + b"\n"
        )
        first = None
        try:
            while line := await reader.readline():
                event = json.loads(line)
                if event["event"] == "token" and first is None:
                    first = time.monotonic() - t0
                elif event["event"] in ("done", "error"):
                    break
        finally:
            writer.close()
        if event["event"] != "done":
            raise RuntimeError(f"service: {event}")
        return {**event, "ttft_s": first if first is not None else event["total_s"]}

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


async def run_service(svc: Service, n: int, tokens: int, scenario: str) -> dict[str, Any]:
    run = next(_runs)
    t0 = time.monotonic()
    results = await asyncio.gather(
        *(svc.generate(f"agent{i}", messages(scenario, i, run), tokens) for i in range(n))
    )
    wall = time.monotonic() - t0
    done = sum(r["completion_tokens"] for r in results)
    ttft = [r["ttft_s"] * 1000 for r in results]
    wait = [r["queued_s"] * 1000 for r in results]
    return {
        "scenario": scenario,
        "clients": n,
        "tokens": done,
        "wall_s": round(wall, 3),
        "tok_s": round(done / wall, 1),
        "ttft_p50_ms": round(statistics.median(ttft), 1),
        "ttft_p99_ms": round(pct(ttft, 99), 1),
        "queue_wait_p50_ms": round(statistics.median(wait), 1),
        "queue_wait_p99_ms": round(pct(wait, 99), 1),
    }


def baselines(
    path: str, svc: Service, raw_prompts: list[list[int]], args: argparse.Namespace
) -> tuple[float, dict[str, Any]]:
    """Raw loop and service with one client, alternating so drift on a shared
    machine hits both; medians. Each raw run has a prompt of its own, as each
    service run has (the same text but for the run number)."""
    raw_loop = RawGreedy.standalone(path, n_threads=args.threads, n_batch=args.batch)
    raw_loop.run(raw_prompts[0], 8, stop_at_eos=False)  # warm-up
    asyncio.run(run_service(svc, 2, 8, "distinct"))
    raws, ones = [], []
    for prompt in raw_prompts[1:]:
        t0 = time.monotonic()
        n = len(raw_loop.run(prompt, args.tokens))
        raws.append(n / (time.monotonic() - t0))
        ones.append(asyncio.run(run_service(svc, 1, args.tokens, "distinct")))
    raw_loop.close()
    one = sorted(ones, key=lambda r: r["tok_s"])[len(ones) // 2]
    return round(statistics.median(raws), 1), one


def goals(raw: float, rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r in rows:
        key = f"{r['scenario']}: "
        if r["clients"] == 1:
            overhead = round(1 - r["tok_s"] / raw, 3)
            out[key + "overhead_1_client"] = {
                "measured": overhead,
                "goal": GOALS["overhead_1_client"],
                "met": overhead <= GOALS["overhead_1_client"],
            }
        if r["clients"] == 16:
            out[key + "speedup_16_clients"] = {
                "measured": r["vs_raw"],
                "goal": GOALS["speedup_16_clients"],
                "met": r["vs_raw"] >= GOALS["speedup_16_clients"],
            }
            out[key + "ttft_p99_16_clients_ms"] = {
                "measured": r["ttft_p99_ms"],
                "goal": GOALS["ttft_p99_16_clients_ms"],
                "met": r["ttft_p99_ms"] <= GOALS["ttft_p99_16_clients_ms"],
            }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--tokens", type=int, default=64, help="completion tokens per request")
    ap.add_argument("--clients", default="4,8,16,32")
    ap.add_argument("--scenarios", default="distinct,shared")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128, help="the service's [model] batch")
    ap.add_argument("--sequences", type=int, default=16, help="the service's sequences")
    ap.add_argument("--context", type=int, default=256, help="the service's context")
    ap.add_argument("--repeat", type=int, default=3, help="runs of the one-client figures")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args()
    path = args.model or str(
        model.install_default(ROOT / "build" / "models", ROOT / "build" / "model-cache")
    )
    # prompts as tokens, from an engine closed at once: its decode thread must
    # be gone before the raw loop decodes in this one
    with Engine(path, EngineConfig(n_seq_max=1, n_ctx_per_seq=256)) as eng:
        raw_prompts = [
            eng.chat_tokens(messages("distinct", 0, 10_000 + i)) for i in range(args.repeat + 1)
        ]
        shared = [eng.chat_tokens(messages("shared", i, 1)) for i in range(2)]
        desc = eng.description
    n_shared = next(i for i, (a, b) in enumerate(zip(*shared, strict=False)) if a != b)
    print(
        f"model {desc}, {args.tokens} tokens/request; prompts of about "
        f"{len(raw_prompts[0])} tokens (shared scenario: {len(shared[0])}, the first "
        f"{n_shared} the same); service: {args.sequences} sequences, batch {args.batch}, "
        f"{args.threads} threads"
    )
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        svc = Service(path, args, Path(tmp))
        try:
            raw, one = baselines(path, svc, raw_prompts, args)
            print(
                f"raw single-sequence loop {raw} tok/s (prompt processing included; "
                f"median of {args.repeat} runs alternating with the 1-client runs)"
            )
            rows = [one]
            for scenario in args.scenarios.split(","):
                rows += [
                    asyncio.run(run_service(svc, int(n), args.tokens, scenario))
                    for n in args.clients.split(",")
                ]
        finally:
            svc.stop()
    print_table(raw, rows)
    met = goals(raw, rows)
    for name, g in met.items():
        print(
            f"goal {name}: {g['measured']} (goal {g['goal']}): {'met' if g['met'] else 'NOT met'}"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "model": desc,
                    "prompt_tokens": len(raw_prompts[0]),
                    "shared_prompt_tokens": [len(shared[0]), n_shared],
                    "tokens_per_request": args.tokens,
                    "sequences": args.sequences,
                    "batch": args.batch,
                    "threads": args.threads,
                    "repeat": args.repeat,
                    "raw_tok_s": raw,
                    "service": rows,
                    "goals": met,
                },
                indent=1,
            )
            + "\n"
        )


def print_table(raw: float, rows: list[dict[str, Any]]) -> None:
    print(
        f"{'prompts':>8} {'clients':>7} {'tok/s':>7} {'vs raw':>7} {'TTFT p50':>9} "
        f"{'TTFT p99':>9} {'wait p50':>9} {'wait p99':>9} {'tokens':>7}"
    )
    for r in rows:
        r["vs_raw"] = round(r["tok_s"] / raw, 2)
        print(
            f"{r['scenario']:>8} {r['clients']:>7} {r['tok_s']:>7} {r['vs_raw']:>6}x "
            f"{r['ttft_p50_ms']:>7}ms {r['ttft_p99_ms']:>7}ms {r['queue_wait_p50_ms']:>7}ms "
            f"{r['queue_wait_p99_ms']:>7}ms {r['tokens']:>7}"
        )


if __name__ == "__main__":
    main()
