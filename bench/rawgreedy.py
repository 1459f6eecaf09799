"""The baseline of the inference tests and benchmark: greedy single-sequence
decoding over llama-cpp-python's low-level API, with none of the engine.

Invariant: this is what the engine's greedy output must equal (the tests
compare token for token) and what its throughput is measured against (the
benchmark), so it shares nothing with the engine but the model: no batching,
no prefix reuse, no sampler, a context of its own with one sequence.

Not part of agentd: imported by bench/inference.py (its directory is on
sys.path as the script's) and by tests/inference (conftest.py puts bench/ on
sys.path).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from agentd.inference import llama
from agentd.inference.engine import Engine
from agentd.inference.errors import DecodeError, LoadError
from agentd.inference.llama import llama_cpp


class RawGreedy:
    """Greedy single-sequence decode on its own context: the engine's model
    (not its queue), or with :meth:`standalone` a model of its own, for a
    process where no other thread decodes (see ``Engine._main`` on why that
    matters)."""

    def __init__(
        self,
        engine: Engine | None,
        n_ctx: int = 512,
        n_batch: int = 128,
        n_threads: int | None = None,
        model: Any = None,
    ) -> None:
        self._own_model = model if engine is None else None
        self.model = engine.llama_model if engine is not None else model
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        threads = n_threads or (engine.config.n_threads if engine is not None else 2)
        cp = llama_cpp.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = cp.n_ubatch = n_batch
        cp.n_seq_max = 1
        cp.n_threads = cp.n_threads_batch = threads
        self.n_batch = n_batch
        self.ctx = llama_cpp.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise LoadError("cannot create a context")
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, 1)

    @classmethod
    def standalone(
        cls,
        model_path: str | os.PathLike[str],
        n_threads: int = 2,
        n_ctx: int = 512,
        n_batch: int = 128,
    ) -> RawGreedy:
        model = llama.load_model(str(model_path))
        return cls(None, n_ctx=n_ctx, n_batch=n_batch, n_threads=n_threads, model=model)

    def run(self, prompt: Sequence[int], max_tokens: int, stop_at_eos: bool = True) -> list[int]:
        batch = self.batch
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)
        out: list[int] = []
        pending, pos = list(prompt), 0
        while len(out) < max_tokens:
            toks, pending = pending[: self.n_batch], pending[self.n_batch :]
            for i, t in enumerate(toks):
                batch.token[i] = t
                batch.pos[i] = pos + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = not pending and i == len(toks) - 1
            batch.n_tokens = len(toks)
            if llama_cpp.llama_decode(self.ctx, batch) != 0:
                raise DecodeError("llama_decode failed")
            pos += len(toks)
            if pending:
                continue
            logits = np.ctypeslib.as_array(
                llama_cpp.llama_get_logits_ith(self.ctx, len(toks) - 1), shape=(self.n_vocab,)
            )
            tok = int(np.argmax(logits))
            out.append(tok)
            if stop_at_eos and llama_cpp.llama_vocab_is_eog(self.vocab, tok):
                break
            pending = [tok]
        return out

    def close(self) -> None:
        llama_cpp.llama_batch_free(self.batch)
        llama_cpp.llama_free(self.ctx)
        if self._own_model is not None:
            llama_cpp.llama_model_free(self._own_model)


def raw_greedy(
    engine: Engine, prompt: Sequence[int], max_tokens: int, stop_at_eos: bool = True
) -> list[int]:
    """The greedy tokens of ``prompt`` on a context of its own, with the
    engine's model."""
    raw = RawGreedy(engine, n_ctx=max(256, len(prompt) + max_tokens + 8))
    try:
        return raw.run(prompt, max_tokens, stop_at_eos)
    finally:
        raw.close()
