"""Memory benchmark (issue 13): figures printed, never asserted.

1. Recall latency at --sizes chunks (default 10k and 100k) in one agent's
   memory, beside a 10k-chunk memory of another agent that must never be read:
   - baseline "exact": numpy brute force over the float vectors (in memory);
   - "vec0 float": plain sqlite-vec KNN over a float[384] vec0 table of the
     same vectors (no quantization, no partition), in this process;
   - "agentd": agentd.memory.search, as MemoryService runs it (binary-quantized
     candidates in the agent's partition, exact re-scoring, BM25 keyword
     search, reciprocal rank fusion), the query's words included.
   p50 and p99 wall-clock ms, and recall@10 of the vector part against exact.
   The vectors are synthetic (clusters of unit vectors; queries near a stored
   vector), because embedding 100k real texts takes hours on 2 cores; the goal
   is p50 <= 20 ms at 100k with recall@10 >= 0.95.
2. Ingest rate (chunks/s, embedding included) with 1 and 8 concurrent writers:
   MemoryService.add_document on real documents (this repository's docs and
   source, split into ~800-character chunks) embedded by agentd-inference
   (a subprocess, all-MiniLM-L6-v2 from `make model-minilm`) over its socket.
   Goal: >= 200 chunks/s on 2 cores.

    PYTHONPATH=build/vendor:build/vendor-llama /usr/bin/python3 bench/memory.py [--json F]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agentd.memory import MemoryService, search  # noqa: E402
from agentd.memory.model import Limits, Scope  # noqa: E402
from agentd.memory.schema import sqlite_vec_path  # noqa: E402
from agentd.memory.store import MemoryStore, NewChunk  # noqa: E402
from agentd.modelclient import ModelClient  # noqa: E402

DIM = 384
QUERIES = 100
MINILM = REPO / "build/model-cache/models/all-MiniLM-L6-v2.F16.gguf"
CHAT = REPO / "build/models/SmolLM2-135M-Instruct.Q4_1.gguf"
UNLIMITED = Limits(0, 0, 0, 0)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def corpus(n: int, rng: np.random.Generator) -> np.ndarray:
    """N unit vectors in clusters of ~50 (as texts on a few topics are)."""
    centres = rng.standard_normal((max(1, n // 50), DIM)).astype(np.float32)
    return unit(centres[rng.integers(0, len(centres), n)] + 0.8 * rng.standard_normal((n, DIM)))


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)) * 1000, 2)


def latency(n: int, work: Path) -> dict[str, Any]:
    rng, words = np.random.default_rng(n), random.Random(n)
    vocab = [f"w{i}" for i in range(5000)]
    x = corpus(n, rng)
    mine, other = Scope("agent", 1), Scope("agent", 2)
    store = MemoryStore(work / f"memory-{n}.db")
    started = time.perf_counter()
    for lo in range(0, n, 5000):
        batch = [
            NewChunk(f"s{i // 100}", i % 100, " ".join(words.choices(vocab, k=60)), f"{i:064x}",
                     x[i].tolist())
            for i in range(lo, min(n, lo + 5000))
        ]  # fmt: skip
        store.add(mine, batch, UNLIMITED)
    y = unit(rng.standard_normal((10_000, DIM)))
    store.add(
        other,
        [NewChunk("o", i, " ".join(words.choices(vocab, k=60)), f"o{i:063x}", y[i].tolist())
         for i in range(10_000)],
        UNLIMITED,
    )  # fmt: skip
    insert_s = time.perf_counter() - started
    ids = np.array([r[0] for r in store.query(
        "SELECT id FROM chunks WHERE scope_kind='agent' AND scope_id=1 ORDER BY id")])  # fmt: skip
    picks = rng.integers(0, n, QUERIES)
    queries = unit(x[picks] + 0.06 * rng.standard_normal((QUERIES, DIM)))

    exact_t, truth = [], []
    for q in queries:
        t = time.perf_counter()
        top = np.argpartition(-(x @ q), 10)[:10]
        exact_t.append(time.perf_counter() - t)
        truth.append(set(ids[top].tolist()))

    import apsw

    flat = apsw.Connection(str(work / f"flat-{n}.db"))
    flat.enableloadextension(True)
    flat.loadextension(sqlite_vec_path())
    flat.execute(f"CREATE VIRTUAL TABLE v USING vec0(embedding float[{DIM}])")
    with flat:
        flat.executemany(
            "INSERT INTO v(rowid, embedding) VALUES (?, ?)",
            ((int(i), x[k].tobytes()) for k, i in enumerate(ids)),
        )
    flat_t, flat_recall = [], []
    for q, tr in zip(queries, truth, strict=True):
        t = time.perf_counter()
        got = [r[0] for r in flat.execute(
            "SELECT rowid FROM v WHERE embedding MATCH ? AND k = 10", (q.tobytes(),))]  # fmt: skip
        flat_t.append(time.perf_counter() - t)
        flat_recall.append(len(set(got) & tr) / 10)
    flat.close()

    ours_t, ours_recall = [], []
    params = search.SearchParams()
    for q, tr in zip(queries, truth, strict=True):
        text = " ".join(words.choices(vocab, k=3))
        t = time.perf_counter()
        search.search(store, [mine], q.tolist(), text, 10, params)
        ours_t.append(time.perf_counter() - t)
        near = search.vector_candidates(store, [mine], q.tolist(), params.candidates)
        exact = search.cosines(store, near, q.tolist())
        ours_recall.append(len(set(sorted(near, key=lambda i: -exact[i])[:10]) & tr) / 10)
    store.close()
    out = {
        "chunks": n,
        "insert_s": round(insert_s, 1),
        "exact_numpy": {"p50_ms": pct(exact_t, 50), "p99_ms": pct(exact_t, 99), "recall@10": 1.0},
        "vec0_float": {"p50_ms": pct(flat_t, 50), "p99_ms": pct(flat_t, 99),
                       "recall@10": round(float(np.mean(flat_recall)), 3)},
        "agentd": {"p50_ms": pct(ours_t, 50), "p99_ms": pct(ours_t, 99),
                   "recall@10": round(float(np.mean(ours_recall)), 3),
                   "candidates": params.candidates},
    }  # fmt: skip
    out["agentd"]["p50_vs_exact"] = round(out["agentd"]["p50_ms"] / out["exact_numpy"]["p50_ms"], 2)
    return out


def documents() -> list[tuple[str, str]]:
    files = sorted([*REPO.glob("docs/*.md"), *REPO.glob("agentd/**/*.py"), REPO / "README.md"])
    texts = [(str(f.relative_to(REPO)), f.read_text()) for f in files]
    return [(name, text) for name, text in texts if text.strip()]


async def ingest(socket: Path, writers: int, work: Path) -> dict[str, Any]:
    client = ModelClient(socket)

    class Embedder:
        async def embed(self, texts: list[str]) -> Any:
            return await client.embed(texts, agent="bench")

    service = MemoryService(work / f"ingest-{writers}.db", Embedder(), limits=UNLIMITED)
    await service.open()
    docs = documents()
    started = time.perf_counter()

    async def writer(w: int) -> tuple[int, int]:
        chunks = tokens = 0
        for source, text in docs[w::writers]:
            r = await service.add_document(Scope("agent", w + 1), source, text)
            chunks, tokens = chunks + r.added, tokens + r.tokens
        return chunks, tokens

    done = await asyncio.gather(*(writer(w) for w in range(writers)))
    seconds = time.perf_counter() - started
    await service.close()
    chunks, tokens = sum(c for c, _ in done), sum(t for _, t in done)
    return {
        "writers": writers,
        "chunks": chunks,
        "tokens": tokens,
        "seconds": round(seconds, 1),
        "chunks_per_s": round(chunks / seconds, 1),
    }


def start_service(work: Path) -> tuple[subprocess.Popen[bytes], Path]:
    sock = work / "socket"
    conf = work / "inference.toml"
    conf.write_text(f'[model]\npath = "{CHAT}"\nembedding = "{MINILM}"\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), str(REPO / "build/vendor"), str(REPO / "build/vendor-llama")])}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentd.inference", "--config", str(conf), "--socket", str(sock),
         "--allow-uid", str(os.getuid())],
        env=env,
    )  # fmt: skip
    asyncio.run(wait_embedding(ModelClient(sock), proc))
    return proc, sock


async def wait_embedding(client: ModelClient, proc: subprocess.Popen[bytes]) -> None:
    """Until the service answers show with its embedding model loaded."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("agentd-inference exited (see its output above)")
        try:
            if (await client.call({"op": "show"})).get("embedding"):
                return
        except Exception:  # not listening yet
            pass
        await asyncio.sleep(0.5)
    raise SystemExit("the embedding model did not load in 300 s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="10000,100000")
    p.add_argument("--writers", default="1,8")
    p.add_argument("--skip-ingest", action="store_true")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "latency": [], "ingest": []}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        work = Path(tmp)
        for n in (int(s) for s in args.sizes.split(",")):
            r = latency(n, work)
            report["latency"].append(r)
            print(json.dumps(r), flush=True)
        if not args.skip_ingest:
            proc, sock = start_service(work)
            try:
                for w in (int(s) for s in args.writers.split(",")):
                    r = asyncio.run(ingest(sock, w, work))
                    report["ingest"].append(r)
                    print(json.dumps(r), flush=True)
            finally:
                proc.terminate()
                proc.wait(30)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
