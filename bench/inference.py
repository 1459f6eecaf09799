"""Inference engine benchmark (issue 4): figures printed, never asserted.

In one process, with the default model (or --model):
  1. the raw single-sequence greedy decode loop over the low-level API (baseline);
  2. the engine with 1, 4, 8, 16 (and --max) concurrent requests from distinct
     agents: aggregate completion tokens/s, time to first token p50/p99, queue wait.

    PYTHONPATH=build/vendor-llama /usr/bin/python3 bench/inference.py [--tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("AGENTD_LLAMA_VENDOR", str(ROOT / "build" / "vendor-llama"))

from agentd.inference import model  # noqa: E402
from agentd.inference.engine import Engine, EngineConfig, RawGreedy, SamplingParams  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


async def run_concurrent(eng: Engine, prompt: list[int], n: int, tokens: int) -> dict:
    params = SamplingParams(max_tokens=tokens, stop_at_eos=False)
    t0 = time.monotonic()
    streams = [eng.submit(prompt, params, agent=f"agent{i}") for i in range(n)]
    results = await asyncio.gather(*(s.result() for s in streams))
    wall = time.monotonic() - t0
    done = sum(r.completion_tokens for r in results)
    ttft = [r.first_token_s * 1000 for r in results if r.first_token_s is not None]
    wait = [r.queued_s * 1000 for r in results]
    return {"clients": n, "tokens": done, "wall_s": round(wall, 3),
            "tok_s": round(done / wall, 1),
            "ttft_p50_ms": round(statistics.median(ttft), 1),
            "ttft_p99_ms": round(pct(ttft, 99), 1),
            "queue_wait_p99_ms": round(pct(wait, 99), 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--clients", default="1,4,8,16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128, help="engine n_batch")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args()
    path = args.model or model.install_default(ROOT / "build" / "models",
                                               ROOT / "build" / "model-cache")
    clients = [int(c) for c in args.clients.split(",")]
    eng = Engine(path, EngineConfig(n_seq_max=max(clients), n_ctx_per_seq=256, n_batch=args.batch,
                                    n_threads=args.threads, max_queue=256))
    prompt = eng.chat_tokens([{"role": "user", "content": "Tell me a story about a robot."}])
    print(f"model {eng.description}, {len(prompt)} prompt tokens, {args.tokens} tokens/request")
    loop = RawGreedy(eng)
    loop.run(prompt, 8, stop_at_eos=False)  # warm-up
    asyncio.run(run_concurrent(eng, prompt, 2, 8))  # warm-up
    # raw loop and engine with one client alternate, so drift on a shared
    # machine hits both; medians of --repeat runs
    raws, ones = [], []
    for _ in range(args.repeat):
        t0 = time.monotonic()
        loop.run(prompt, args.tokens, stop_at_eos=False)
        raws.append(args.tokens / (time.monotonic() - t0))
        ones.append(asyncio.run(run_concurrent(eng, prompt, 1, args.tokens))["tok_s"])
    loop.close()
    raw = statistics.median(raws)
    print(f"raw single-sequence loop: {raw:.1f} tok/s (prompt processing included), "
          f"engine with 1 client {statistics.median(ones):.1f} tok/s "
          f"(medians of {args.repeat} alternating runs)")
    rows = []
    print(f"{'clients':>7} {'tok/s':>8} {'vs raw':>7} {'TTFT p50':>9} {'TTFT p99':>9} "
          f"{'wait p99':>9}")
    for n in clients:
        r = asyncio.run(run_concurrent(eng, prompt, n, args.tokens))
        r["vs_raw"] = round(r["tok_s"] / raw, 2)
        rows.append(r)
        print(f"{n:>7} {r['tok_s']:>8} {r['vs_raw']:>6}x {r['ttft_p50_ms']:>7}ms "
              f"{r['ttft_p99_ms']:>7}ms {r['queue_wait_p99_ms']:>7}ms")
    eng.close()
    if args.json:
        Path(args.json).write_text(json.dumps({"raw_tok_s": round(raw, 1), "runs": rows},
                                              indent=1) + "\n")


if __name__ == "__main__":
    main()
