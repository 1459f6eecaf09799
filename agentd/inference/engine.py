"""A continuous-batching inference engine over llama-cpp-python's low-level API.

One model, one ``llama_context`` with ``n_seq_max`` sequences. Each request
gets a free sequence when it is admitted; every step is ONE ``llama_decode``
whose batch holds one token for each sequence that is generating plus chunks
of the prompts still being prefilled (within ``n_batch``). Requests join
between steps and leave when done. Which sequence a request gets, and which
part of its prompt it need not compute, is :mod:`agentd.inference.prefix`'s;
how it picks tokens, :mod:`~agentd.inference.sampling`'s; where its text
stops, :mod:`~agentd.inference.stops`'s.

Invariants:

- Greedy output does not depend on the batch: a request's tokens equal those
  of a single-sequence decode loop over the same model (one KV stream per
  sequence; see ``EngineConfig.kv_unified``).
- Scheduling: a bounded admission queue (``max_queue``, and shares of it for
  one ``owner`` and one ``agent`` key; beyond, :class:`Overloaded`) with
  round-robin admission across owners, then across each owner's agents
  (:mod:`~agentd.inference.fairqueue`), so an owner that floods the queue,
  with however many agents, delays another owner's request by at most one
  admission round.
- Threads: every decode of the context runs in the one decode thread (see
  :meth:`Engine._main` for the measurement), in turn with the embedding
  model's (:mod:`~agentd.inference.turns`). Callers may be in any thread;
  asyncio callers get their tokens through their own loop
  (:mod:`~agentd.inference.stream`), one hand-over per step and loop.
- Every request ends exactly once (a result, or an error then its end), even
  when the decode loop dies or the engine is closed: nobody waits forever.

This module imports nothing of the rest of agentd.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import itertools
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from agentd.inference import llama
from agentd.inference.config import EngineConfig
from agentd.inference.errors import (
    DecodeError,
    EngineClosed,
    EngineError,
    LoadError,
    RequestTooLong,
)
from agentd.inference.fairqueue import FairQueue, Limits, owner_key
from agentd.inference.llama import llama_cpp
from agentd.inference.prefix import Sequences
from agentd.inference.sampling import Sampler, SamplingParams
from agentd.inference.stops import find_stop, visible_end
from agentd.inference.stream import END, Outbox, Request, Stream, Token
from agentd.inference.tokens import Vocab
from agentd.inference.turns import Turns


class Engine:
    """Load a GGUF and serve requests from many agents in shared decode steps."""

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        config: EngineConfig | None = None,
        progress: Callable[[float], object] | None = None,
        turns: Turns | None = None,
    ):
        """Load the model (``progress(fraction)`` is called while it loads, in
        this thread; returning False aborts the load), start the decode thread
        and return once it has made its first decode. TURNS: shared with
        the embedding model, whose decodes alternate with this one's."""
        self.config = cfg = config or EngineConfig()
        self._turns = turns or Turns()
        if cfg.n_batch < cfg.n_seq_max:
            raise ValueError("n_batch must be at least n_seq_max (one token per sequence)")
        self.model_path = str(model_path)
        self._model = llama.load_model(self.model_path, progress)
        self._describe_model()
        self._ctx = self._new_context(cfg)
        self.n_ctx = llama_cpp.llama_n_ctx(self._ctx)
        self.n_ctx_per_seq = self.n_ctx // cfg.n_seq_max
        self._mem = llama.Memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(cfg.n_batch, 0, 1)

        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue = FairQueue(
            Limits(
                total=cfg.max_queue,
                per_owner=cfg.max_queue_per_owner or cfg.max_queue,
                per_agent=cfg.max_queue_per_agent or cfg.max_queue,
            )
        )
        self._seqs = Sequences(self._mem, cfg.n_seq_max, cfg.prefix_min, self._lock)
        self._active: list[Request] = []
        self._ids = itertools.count(1)
        self._closing = False
        self.steps = 0
        self.tokens_generated = 0
        self._outbox = Outbox()
        # (request id, agent, owner) of the latest admissions, for tests and
        # stats; owner is "agent:NAME" for a request without one
        self.admission_log: collections.deque[tuple[int, str, str]] = collections.deque(maxlen=1024)
        # Called in the decode thread after each admission round, before
        # cancelled requests leave and the step runs: lets a test act at a
        # known point of the loop instead of guessing a time.
        self.between_steps: Callable[[], None] | None = None
        self._start_decode_thread()

    def _describe_model(self) -> None:
        self.vocab = Vocab(self._model)
        self.n_vocab = self.vocab.n_vocab
        self.n_ctx_train = llama_cpp.llama_model_n_ctx_train(self._model)
        self.n_params = llama_cpp.llama_model_n_params(self._model)
        buf = ctypes.create_string_buffer(256)
        llama_cpp.llama_model_desc(self._model, buf, len(buf))
        self.description = buf.value.decode("utf-8", "replace")

    def _start_decode_thread(self) -> None:
        """Start the decode thread; return once it has made its first decode."""
        self._warm = threading.Event()
        self._warm_ok = False
        self._thread = threading.Thread(target=self._main, name="inference-decode", daemon=True)
        self._outbox.decode_thread = self._thread
        self._thread.start()
        self._warm.wait()
        if not self._warm_ok:
            self._thread.join()
            raise LoadError("the first decode failed")

    def _new_context(self, cfg: EngineConfig) -> Any:
        cp = llama_cpp.llama_context_default_params()
        cp.n_ctx = cfg.n_ctx_per_seq * cfg.n_seq_max
        cp.n_batch = cfg.n_batch
        cp.n_ubatch = cfg.n_batch
        cp.n_seq_max = cfg.n_seq_max
        cp.n_threads = cfg.n_threads
        cp.n_threads_batch = cfg.n_threads
        cp.no_perf = True
        if hasattr(cp, "kv_unified"):
            cp.kv_unified = cfg.kv_unified
        ctx = llama_cpp.llama_init_from_model(self._model, cp)
        if not ctx:
            llama_cpp.llama_model_free(self._model)
            raise LoadError("cannot create the llama context")
        return ctx

    @property
    def llama_model(self) -> Any:
        """The ``llama_model`` pointer, for a baseline that decodes on a
        context of its own (bench/rawgreedy.py)."""
        return self._model

    @property
    def prefix_reused(self) -> int:
        """Prompt tokens not computed thanks to prefix reuse."""
        return self._seqs.reused

    def _main(self) -> None:
        """The decode thread: warm up, then serve. Every decode of the context
        runs in this one thread: a decode in another thread (even once, such
        as a warm-up in the loading thread) leaves ggml's OpenMP with a second
        thread team and made every later step here about 30% slower (measured
        with 0.3.36 on 2 cores)."""
        self._warm_ok = self._warm_up()
        self._warm.set()
        if self._warm_ok:
            self._run()
        else:
            self._free()

    def _warm_up(self) -> bool:
        """One 1-token decode before serving: the first decode of a context
        costs about 0.4 s more than the next ones (measured), which the first
        request would otherwise pay in its time to first token."""
        b = self._batch
        b.token[0], b.pos[0], b.n_seq_id[0], b.logits[0] = 0, 0, 1, True
        b.seq_id[0][0] = 0
        b.n_tokens = 1
        with self._turns:
            if llama_cpp.llama_decode(self._ctx, b) != 0:
                return False
        self._mem.seq_rm(0)
        return True

    def _free(self) -> None:
        llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self._ctx)
        llama_cpp.llama_model_free(self._model)

    # ------------------------------------------------------------ vocabulary

    def tokenize(
        self, text: str, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        return self.vocab.tokenize(text, add_special, parse_special)

    def token_text(self, token: int) -> str:
        return self.vocab.token_text(token)

    def apply_chat_template(
        self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        return self.vocab.apply_chat_template(messages, add_generation_prompt)

    def chat_tokens(self, messages: Sequence[dict[str, str]]) -> list[int]:
        return self.vocab.chat_tokens(messages)

    # ------------------------------------------------------------ requests

    def sampler(self, params: SamplingParams) -> Sampler:
        """The sampler of a request with these params, for :meth:`submit`.
        Parses the grammar, if any (InvalidGrammar): up to tens of ms for the
        largest a JSON Schema may make (agentd.inference.schema), so the
        service calls this in a worker thread, not on its event loop."""
        return Sampler(params, self.vocab.handle)

    def submit(
        self,
        prompt: str | Sequence[int],
        params: SamplingParams | None = None,
        agent: str = "",
        loop: asyncio.AbstractEventLoop | None = None,
        owner: str | None = None,
        sampler: Sampler | None = None,
    ) -> Stream:
        """Queue a request of AGENT (of OWNER; None: the agent is its own
        owner); returns its Stream. Raises Overloaded, RequestTooLong,
        EngineClosed, InvalidGrammar. SAMPLER: made by :meth:`sampler` for
        these params (this call then owns it), else made here. Call from a
        coroutine (or pass ``loop``)."""
        params = params or SamplingParams()
        if sampler is not None and sampler.params is not params:
            sampler.close()
            raise ValueError("the sampler was made for other params")
        try:
            tokens = self.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
            self.check_length(tokens, params)
            if loop is None:
                loop = asyncio.get_running_loop()
            if sampler is None:
                sampler = self.sampler(params)  # parses the grammar: fails here
        except BaseException:
            if sampler is not None:
                sampler.close()
            raise
        req = Request(
            id=0, agent=agent, owner=owner, prompt=tokens, params=params, sampler=sampler, loop=loop
        )
        try:
            self._enqueue(req)
        except BaseException:
            sampler.close()
            raise
        return Stream(req, self._cancel)

    def check_length(self, tokens: list[int], params: SamplingParams) -> None:
        """ValueError (empty) or RequestTooLong: the prompt and max_tokens
        do not fit in one sequence."""
        if not tokens:
            raise ValueError("empty prompt")
        if len(tokens) + params.max_tokens > self.n_ctx_per_seq:
            raise RequestTooLong(
                f"{len(tokens)} prompt tokens + max_tokens {params.max_tokens}"
                f" > {self.n_ctx_per_seq} tokens per sequence"
            )

    def _enqueue(self, req: Request) -> None:
        with self._lock:
            if self._closing:
                raise EngineClosed("engine is closed")
            self._queue.push(req, free=len(self._seqs.free))
            req.id = next(self._ids)
            req.queued_at_submit = len(self._queue)
            self._wake.notify()

    def _cancel(self, req: Request) -> None:
        """A queued request ends here and now; an admitted one is flagged and
        leaves the decode loop before its next step."""
        with self._lock:
            req.cancelled = True
            if self._queue.remove(req):
                self._finish(req, "cancelled")
            self._wake.notify()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "queued": len(self._queue),
                "active": len(self._active),
                "steps": self.steps,
                "tokens_generated": self.tokens_generated,
                "free_sequences": len(self._seqs.free),
                "prefix_reused": self._seqs.reused,
            }

    def close(self) -> None:
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._wake.notify()
        self._thread.join()
        self._free()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _finish(self, req: Request, reason: str, error: BaseException | None = None) -> None:
        req.sampler.close()
        if error is not None:
            req.error = error
        req.result = req.make_result(reason)
        if error is not None:
            self._outbox.deliver(req, error)
        self._outbox.deliver(req, END)

    # ------------------------------------------------------------ decode loop

    def _release(self, req: Request, keep: bool = True) -> None:
        self._active.remove(req)
        self._seqs.release(req, keep)

    def _admit(self) -> None:
        """Round-robin over owners, then over the owner's agents (the fair
        queue's order). Runs with the lock held."""
        while self._seqs.free and self._queue:
            req = self._queue.pop()
            self._seqs.assign(req, self._active)
            req.admitted = time.monotonic()
            req.sampler.start(self._seed(req))
            kind, key = owner_key(req)
            self.admission_log.append(
                (req.id, req.agent, key if kind == "owner" else f"agent:{key}")
            )
            self._active.append(req)

    def _seed(self, req: Request) -> int:
        seed = req.params.seed if req.params.seed is not None else self.config.seed + req.id
        return seed & 0xFFFFFFFF

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self._closing and not self._queue and not self._active:
                        self._wake.wait()
                    if self._closing:
                        break
                    self._admit()
                if self.between_steps is not None:
                    self.between_steps()
                for req in [r for r in self._active if r.cancelled]:
                    self._release(req)
                    self._finish(req, "cancelled")
                if self._active:
                    self._step()
                self._outbox.flush()
        except BaseException as e:  # never leave callers waiting forever
            err = e if isinstance(e, EngineError) else DecodeError(f"decode loop died: {e!r}")
            with self._lock:
                self._closing = True
            for req in list(self._active):
                self._finish(req, "error", err)
            self._active.clear()
            raise
        finally:
            self._close_all()

    def _close_all(self) -> None:
        """The loop is over: whatever is queued or running fails with EngineClosed."""
        with self._lock:
            pending = self._queue.clear()
        for req in pending + list(self._active):
            if req.result is None:
                self._finish(req, "error", EngineClosed("engine closed"))
        self._active.clear()
        self._outbox.flush()

    def _step(self) -> None:
        for req in self._active:
            if req.prefix_src is not None:
                self._seqs.resolve(req, self._active)
        n, outputs = self._fill_batch()
        if n == 0:
            return
        self._batch.n_tokens = n
        with self._turns:
            rc = llama_cpp.llama_decode(self._ctx, self._batch)
        self.steps += 1
        if rc != 0:
            self._fail_step(DecodeError(f"llama_decode returned {rc}"), outputs)
            return
        for req, idx in outputs:
            ptr = llama_cpp.llama_get_logits_ith(self._ctx, idx)
            logits = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
            self._accept(req, req.sampler.sample(self._ctx, idx, logits))

    def _fill_batch(self) -> tuple[int, list[tuple[Request, int]]]:
        """The step's batch: one token for every sequence that is generating,
        then prompt chunks in the remaining room, oldest request first.
        Returns its size and which batch rows give which request a token."""
        b, n, cap = self._batch, 0, self.config.n_batch
        outputs: list[tuple[Request, int]] = []

        def put(tok: int, pos: int, seq: int, logits: bool) -> None:
            nonlocal n
            b.token[n], b.pos[n], b.n_seq_id[n], b.logits[n] = tok, pos, 1, logits
            b.seq_id[n][0] = seq
            n += 1

        for req in self._active:
            if req.prefill_pos >= len(req.prompt):
                outputs.append((req, n))
                put(req.last_token, req.n_past, req.seq, True)
                req.n_past += 1
        for req in self._active:
            if n >= cap:
                break
            remaining = len(req.prompt) - req.prefill_pos
            if remaining <= 0 or req.prefix_src is not None:
                continue
            take = min(remaining, cap - n)
            for i in range(take):
                last = req.prefill_pos + i == len(req.prompt) - 1
                if last:
                    outputs.append((req, n))
                put(req.prompt[req.prefill_pos + i], req.n_past, req.seq, last)
                req.n_past += 1
            req.prefill_pos += take
        return n, outputs

    def _fail_step(self, err: DecodeError, outputs: list[tuple[Request, int]]) -> None:
        """A failed decode fails every request of the batch; those still
        prefilling keep a partial cache: they are failed too, their sequences
        cleared."""
        for req, _ in outputs:
            self._release(req, keep=False)
            self._finish(req, "error", err)
        for req in list(self._active):
            self._release(req, keep=False)
            self._finish(req, "error", err)

    def _accept(self, req: Request, tok: int) -> None:
        """A sampled token: the end of the request (EOS, a stop string,
        max_tokens), or the next piece of its text."""
        p = req.params
        if req.first_token is None:
            req.first_token = time.monotonic()
        req.out_tokens.append(tok)
        self.tokens_generated += 1
        if p.stop_at_eos and self.vocab.is_eog(tok):
            self._end(req, tok, "eos")
            return
        req.text += req.decoder.decode(self.vocab.token_bytes(tok))
        req.last_token = tok
        cut = find_stop(req.text, req.emitted, p.stop)
        if cut is not None:
            req.text = req.text[:cut]
            self._end(req, tok, "stop")
        elif len(req.out_tokens) >= p.max_tokens:
            req.text += req.decoder.decode(b"", final=True)
            self._end(req, tok, "length")
        else:
            self._emit(req, tok, flush=False)

    def _end(self, req: Request, tok: int, reason: str) -> None:
        self._emit(req, tok, flush=True)
        self._release(req)
        self._finish(req, reason)

    def _emit(self, req: Request, tok: int, flush: bool) -> None:
        """Deliver the token with the text that can be shown now: everything
        except a tail that could still become a stop string."""
        end = len(req.text) if flush else visible_end(req.text, req.emitted, req.params.stop)
        piece = req.text[req.emitted : end]
        req.emitted = max(req.emitted, end)
        self._outbox.deliver(req, Token(id=tok, text=piece, index=len(req.out_tokens) - 1))
