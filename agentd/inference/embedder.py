"""The embedding model: texts to L2-normalized vectors, the texts of several
requests computed together in one ``llama_decode``.

One ``llama_context`` with embeddings on and the model's pooling (mean for
all-MiniLM-L6-v2; mean too for a model that names none), in one thread of
its own (``inference-embed``), where every decode of it runs.

Invariants:

- Each text is a sequence of its own, whole, in one decode: an encoder's
  attention is not causal, so a sequence cannot span two decodes. A decode
  holds at most ``context`` tokens (the longest text) and ``n_seq`` texts.
- Texts of several requests share a decode, picked round-robin across
  owners (the agent for a request without one), one text of each per round,
  oldest request first within an owner: a request of many texts delays
  another owner's text by at most one decode. A round stops at the first
  text that does not fit, so no text waits behind smaller ones forever.
- Decodes take turns with the generation engine's (:mod:`~agentd.inference.turns`).
- A text of more tokens than ``context`` (256) is cut to it (its first
  tokens and its last, the separator), as sentence-transformers cuts; the
  result says which texts were cut.
- Bounded: at most ``max_queue`` texts wait; beyond, ``EmbedOverloaded``
  (an ``Overloaded``).
- Every request ends exactly once, with its vectors or an error (DecodeError,
  EngineClosed), also when the thread dies or the embedder is closed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agentd.inference import llama
from agentd.inference.errors import DecodeError, EmbedOverloaded, EngineClosed, LoadError
from agentd.inference.llama import llama_cpp
from agentd.inference.tokens import Vocab
from agentd.inference.turns import Turns

# 256 tokens a text: what sentence-transformers cuts all-MiniLM-L6-v2's texts
# to (its position embeddings go to 512), so vectors agree with it; and a
# decode, which generation's steps wait for, stays short: one text of 256
# tokens took 0.17-0.21 s on one core here (512 tokens: 0.30 s).
EMBED_CONTEXT = 256
# One compute thread: ggml then runs no OpenMP team of its own (a second team,
# beside the generation engine's, made every generation step ~30% slower:
# agentd.inference.engine), and one thread was faster than two here, on the
# 2 cores shared with other work (F16, sentences of 12 tokens, three runs):
# one sentence alone 11-15 ms (two threads: 42-60 ms), 6.6-11.4 ms a
# sentence in batches of 8 or 64 (two threads: 21-40 ms).
EMBED_THREADS = 1
EMBED_SEQUENCES = 64  # texts in one decode: 64 sentences of 8 tokens fill it
EMBED_QUEUE = 1024  # texts waiting: 16 requests of the most texts one may send


@dataclass(frozen=True)
class Embedded:
    """One request's answer: a vector per text, in order."""

    vectors: list[np.ndarray[Any, np.dtype[np.float32]]]
    tokens: int  # tokens computed, [CLS] and [SEP] included: what quotas meter
    truncated: list[int]  # indexes of the texts cut to ``context`` tokens
    queued_s: float
    total_s: float


@dataclass(eq=False)
class _Job:
    key: str
    texts: list[list[int]]
    truncated: list[int]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Embedded]
    vectors: list[Any] = field(default_factory=list)
    next: int = 0  # the next text to put in a decode
    done: int = 0  # texts whose vector is in
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None


def _resolve(fut: asyncio.Future[Embedded], value: Embedded | BaseException) -> None:
    if fut.done():
        return
    if isinstance(value, BaseException):
        fut.set_exception(value)
    else:
        fut.set_result(value)


class Embedder:
    """Load a GGUF embedding model and embed texts in shared decodes."""

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        n_threads: int = EMBED_THREADS,
        progress: Callable[[float], object] | None = None,
        turns: Turns | None = None,
        context: int = EMBED_CONTEXT,
        n_seq: int = EMBED_SEQUENCES,
        max_queue: int = EMBED_QUEUE,
    ) -> None:
        """Load the model (``progress`` as for the engine), make the context,
        start the thread; return once it has made its first decode."""
        self.model_path = str(model_path)
        self.turns = turns or Turns()
        self.max_queue = max_queue
        self._model = llama.load_model(self.model_path, progress)
        self.vocab = Vocab(self._model)
        n_out = getattr(llama_cpp, "llama_model_n_embd_out", llama_cpp.llama_model_n_embd)
        self.dimensions = int(n_out(self._model))
        self.context = min(context, llama_cpp.llama_model_n_ctx_train(self._model) or context)
        self.n_seq = n_seq
        self._ctx = self._new_context(n_threads)
        self.pooling = {1: "mean", 2: "cls", 3: "last"}[llama_cpp.llama_pooling_type(self._ctx)]
        mem = (
            llama_cpp.llama_get_memory(self._ctx)
            if hasattr(llama_cpp, "llama_get_memory")
            else None
        )
        self._mem = mem or None  # an encoder has none (BERT); a decoder's is cleared
        self._batch = llama_cpp.llama_batch_init(self.context, 0, 1)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._owners: collections.OrderedDict[str, collections.deque[_Job]] = (
            collections.OrderedDict()
        )
        self._queued = 0  # texts not yet in a decode
        self._closing = False
        self.decodes = self.texts_embedded = self.tokens_embedded = 0
        self._warm = threading.Event()
        self._warm_ok = False
        self._thread = threading.Thread(target=self._main, name="inference-embed", daemon=True)
        self._thread.start()
        self._warm.wait()
        if not self._warm_ok:
            self._thread.join()
            raise LoadError("the first embedding decode failed")

    def _new_context(self, n_threads: int) -> Any:
        """A context with embeddings on: the model's pooling, or mean pooling
        for a model that names none; a reranker (pooling "rank") is refused."""
        for pooling in (
            llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED,
            llama_cpp.LLAMA_POOLING_TYPE_MEAN,
        ):
            cp = llama_cpp.llama_context_default_params()
            cp.n_ctx = cp.n_batch = cp.n_ubatch = self.context
            cp.n_seq_max = self.n_seq
            cp.n_threads = cp.n_threads_batch = n_threads
            cp.embeddings = True
            cp.pooling_type = pooling
            cp.no_perf = True
            if hasattr(cp, "kv_unified"):  # a decoder's cache: one stream of `context` tokens
                cp.kv_unified = True  # (per sequence, it would be padded to 256 tokens each)
            ctx = llama_cpp.llama_init_from_model(self._model, cp)
            if not ctx:
                break
            kind = llama_cpp.llama_pooling_type(ctx)
            if kind in (1, 2, 3):
                return ctx
            llama_cpp.llama_free(ctx)
            if kind == llama_cpp.LLAMA_POOLING_TYPE_RANK:
                break
        llama_cpp.llama_model_free(self._model)
        raise LoadError(f"{self.model_path}: cannot make an embedding context for this model")

    def _main(self) -> None:
        """The embed thread: a warm-up decode (the first one of a context costs
        more; measured 0.4 s for generation's), then serve."""
        b = self._batch
        b.token[0], b.pos[0], b.n_seq_id[0], b.logits[0] = 0, 0, 1, True
        b.seq_id[0][0] = 0
        b.n_tokens = 1
        with self.turns:
            self._warm_ok = llama_cpp.llama_decode(self._ctx, b) == 0
        self._clear()
        self._warm.set()
        if self._warm_ok:
            self._run()
        else:
            self._free()

    def _clear(self) -> None:
        if self._mem is not None:
            llama_cpp.llama_memory_clear(self._mem, True)

    def _free(self) -> None:
        llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self._ctx)
        llama_cpp.llama_model_free(self._model)

    # ------------------------------------------------------------ requests

    def tokenize(self, texts: Sequence[str]) -> tuple[list[list[int]], list[int]]:
        """Each text's tokens (with the model's special tokens), cut to
        ``context``; and the indexes of those cut. Thread-safe (the service
        runs it in a worker thread: 64 texts of 8 KiB took 45-115 ms here)."""
        out, cut = [], []
        for i, text in enumerate(texts):
            toks = self.vocab.tokenize(text, add_special=True, parse_special=False)
            if len(toks) > self.context:
                toks = toks[: self.context - 1] + toks[-1:]
                cut.append(i)
            out.append(toks)
        return out, cut

    def submit(
        self,
        tokens: list[list[int]],
        truncated: list[int],
        key: str,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> asyncio.Future[Embedded]:
        """Queue the texts' TOKENS (from :meth:`tokenize`) of owner KEY; a
        future of their vectors, on LOOP (the running one). Cancelling the
        future takes the texts not yet computed out. EmbedOverloaded, EngineClosed."""
        loop = loop or asyncio.get_running_loop()
        if not tokens or any(not t or len(t) > self.context for t in tokens):
            raise ValueError("each text must have 1..context tokens")
        job = _Job(key, tokens, truncated, loop, loop.create_future())
        job.vectors = [None] * len(tokens)
        with self._lock:
            if self._closing:
                raise EngineClosed("the embedding model is closed")
            if self._queued + len(tokens) > self.max_queue:
                raise EmbedOverloaded(self._queued, self.max_queue)
            self._owners.setdefault(key, collections.deque()).append(job)
            self._queued += len(tokens)
            self._wake.notify()
        job.future.add_done_callback(lambda f: self._cancel(job) if f.cancelled() else None)
        return job.future

    def _cancel(self, job: _Job) -> None:
        with self._lock:
            q = self._owners.get(job.key)
            if q is not None and job in q:
                q.remove(job)
                self._queued -= len(job.texts) - job.next
                if not q:
                    del self._owners[job.key]

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "queued_texts": self._queued,
                "decodes": self.decodes,
                "texts_embedded": self.texts_embedded,
                "tokens_embedded": self.tokens_embedded,
            }

    def close(self) -> None:
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._wake.notify()
        self._thread.join()  # the thread frees the context and the model

    # ------------------------------------------------------------ the thread

    def _take(self) -> list[tuple[_Job, int]]:
        """The next decode's texts: round-robin over owners, one text of each
        owner's oldest request per round, until one does not fit. Lock held."""
        picked: list[tuple[_Job, int]] = []
        room = self.context
        while self._owners and len(picked) < self.n_seq:
            key, q = next(iter(self._owners.items()))
            job = q[0]
            n = len(job.texts[job.next])
            if n > room:
                break
            picked.append((job, job.next))
            room -= n
            job.next += 1
            self._queued -= 1
            if job.started is None:
                job.started = time.monotonic()
            if job.next == len(job.texts):
                q.popleft()
            if q:
                self._owners.move_to_end(key)
            else:
                del self._owners[key]
        return picked

    def _run(self) -> None:
        picked: list[tuple[_Job, int]] = []
        try:
            while True:
                with self._lock:
                    while not self._closing and not self._owners:
                        self._wake.wait()
                    if self._closing:
                        break
                    picked = self._take()
                self._decode(picked)
                picked = []
        except BaseException as e:  # never leave a caller waiting
            err = DecodeError(f"embedding loop died: {e!r}")
            for job, _ in picked:
                job.loop.call_soon_threadsafe(_resolve, job.future, err)
            raise
        finally:
            with self._lock:
                self._closing = True
                left = [job for q in self._owners.values() for job in q]
                self._owners.clear()
                self._queued = 0
            for job in left:
                job.loop.call_soon_threadsafe(
                    _resolve, job.future, EngineClosed("the embedding model was closed")
                )
            self._free()

    def _decode(self, picked: list[tuple[_Job, int]]) -> None:
        b, n = self._batch, 0
        for seq, (job, i) in enumerate(picked):
            for pos, tok in enumerate(job.texts[i]):
                b.token[n], b.pos[n], b.n_seq_id[n], b.logits[n] = tok, pos, 1, True
                b.seq_id[n][0] = seq
                n += 1
        b.n_tokens = n
        with self.turns:
            rc = llama_cpp.llama_decode(self._ctx, b)
        self.decodes += 1
        failed: set[int] = set()
        for seq, (job, i) in enumerate(picked):
            ptr = llama_cpp.llama_get_embeddings_seq(self._ctx, seq) if rc == 0 else None
            if not ptr:
                if id(job) not in failed:
                    failed.add(id(job))
                    self._fail(job, DecodeError(f"llama_decode returned {rc}"))
                continue
            v = np.ctypeslib.as_array(ptr, shape=(self.dimensions,)).astype(np.float32)
            norm = float(np.linalg.norm(v))
            job.vectors[i] = v / norm if norm > 0 else v
            job.done += 1
            self.texts_embedded += 1
            self.tokens_embedded += len(job.texts[i])
            if job.done == len(job.texts):
                self._deliver(job)
        self._clear()

    def _fail(self, job: _Job, err: BaseException) -> None:
        """A failed decode fails its requests (their other texts are dropped)."""
        self._cancel(job)
        job.loop.call_soon_threadsafe(_resolve, job.future, err)

    def _deliver(self, job: _Job) -> None:
        now = time.monotonic()
        result = Embedded(
            vectors=job.vectors,
            tokens=sum(len(t) for t in job.texts),
            truncated=job.truncated,
            queued_s=(job.started or now) - job.submitted,
            total_s=now - job.submitted,
        )
        with contextlib.suppress(RuntimeError):  # the caller's loop is gone
            job.loop.call_soon_threadsafe(_resolve, job.future, result)
