"""How a request picks its next token: greedy, seeded top-k/top-p/temperature,
or constrained by a grammar.

Invariants:

- Greedy (temperature 0) is the argmax of the logits: a request's tokens do
  not depend on what else is in the batch, and equal a single-sequence
  decode loop's.
- A sampled request draws from its own generator, seeded by its ``seed``
  (else the engine's seed plus its request id): the same seed gives the same
  tokens, batched or not.
- A grammar (GBNF, root rule ``root``) is parsed when the request's
  :class:`Sampler` is made, before it is queued, so a bad one fails there
  (:class:`InvalidGrammar`), not in the decode loop; it is first held to
  :func:`~agentd.inference.schema.check_grammar`'s limits (llama.cpp's parser
  recurses per group and crashed on deep ones). The service makes samplers
  in a worker thread (``Engine.sampler``), not on its event loop. At
  admission it becomes part of a llama.cpp sampler chain (grammar, then
  greedy or top-k/top-p/temperature/dist), which also advances the grammar
  with each token. Its native samplers are freed exactly
  once, whichever way the request ends (:meth:`Sampler.close`).
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from agentd.inference.errors import InvalidGrammar
from agentd.inference.llama import capture_log, llama_cpp
from agentd.inference.schema import check_grammar, schema_to_grammar

__all__ = ["Sampler", "SamplingParams", "grammar_sampler", "sample_logits", "schema_to_grammar"]

Logits = npt.NDArray[np.float32]  # one output's scores: llama.cpp's float[n_vocab]


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 128
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_at_eos: bool = True
    grammar: str | None = None  # GBNF text, root rule "root"

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ValueError("temperature >= 0, 0 < top_p <= 1, top_k >= 0")
        object.__setattr__(self, "stop", tuple(s for s in self.stop if s))


def grammar_sampler(vocab: Any, grammar: str) -> Any:
    """A llama.cpp grammar sampler for GBNF text, or InvalidGrammar with
    llama.cpp's reasons."""
    if not grammar.strip():
        raise InvalidGrammar("empty grammar")
    check_grammar(grammar)
    with capture_log() as log:
        smpl = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
    if not smpl:
        why = "; ".join(line for line in log if "failed to parse" not in line)
        raise InvalidGrammar(f"invalid grammar: {why or 'llama.cpp refused it'}")
    return smpl


def sample_logits(p: SamplingParams, rng: np.random.Generator | None, logits: Logits) -> int:
    """Greedy, or a draw from the top-k / top-p of the tempered distribution."""
    if p.temperature <= 0:
        return int(np.argmax(logits))
    assert rng is not None
    x = logits.astype(np.float64) / p.temperature
    if p.top_k and p.top_k < x.size:
        idx = np.argpartition(x, -p.top_k)[-p.top_k :]
    else:
        idx = np.arange(x.size)
    xs = x[idx]
    order = np.argsort(-xs)
    idx, xs = idx[order], xs[order]
    probs = np.exp(xs - xs[0])
    probs /= probs.sum()
    if p.top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(probs), p.top_p)) + 1
        idx, probs = idx[:keep], probs[:keep] / probs[:keep].sum()
    return int(idx[rng.choice(len(idx), p=probs)])


def _grammar_allows(grammar: Any, tok: int, logit: float) -> bool:
    data = llama_cpp.llama_token_data(tok, logit, 0.0)
    arr = llama_cpp.llama_token_data_array(ctypes.pointer(data), 1, -1, False)
    llama_cpp.llama_sampler_apply(grammar, ctypes.byref(arr))
    return not math.isinf(arr.data[0].logit)


class Sampler:
    """The token picker of one request: created at submit (the grammar
    parsed), started at admission, closed when the request ends."""

    def __init__(self, params: SamplingParams, vocab: Any) -> None:
        self.params = params
        self._grammar = (
            grammar_sampler(vocab, params.grammar) if params.grammar is not None else None
        )
        self._chain: Any = None  # owns self._grammar once made
        self._rng: np.random.Generator | None = None

    @property
    def native(self) -> str | None:
        """The llama.cpp sampler held: "grammar" (queued), "chain" (admitted)
        or None (none needed, or freed)."""
        if self._chain is not None:
            return "chain"
        return "grammar" if self._grammar is not None else None

    def start(self, seed: int) -> None:
        """At admission: the seeded generator, the grammar's chain."""
        if self.params.temperature > 0:
            self._rng = np.random.default_rng(seed)
        if self._grammar is not None:
            self._chain = self._make_chain(seed)

    def _make_chain(self, seed: int) -> Any:
        """The grammar (taken over by the chain), then greedy, or top-k /
        top-p / temperature / seeded draw."""
        p = self.params
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        parts = [self._grammar]
        if p.temperature <= 0:
            parts.append(llama_cpp.llama_sampler_init_greedy())
        else:
            if p.top_k:
                parts.append(llama_cpp.llama_sampler_init_top_k(p.top_k))
            if p.top_p < 1.0:
                parts.append(llama_cpp.llama_sampler_init_top_p(p.top_p, 1))
            parts.append(llama_cpp.llama_sampler_init_temp(p.temperature))
            parts.append(llama_cpp.llama_sampler_init_dist(seed))
        for part in parts:
            llama_cpp.llama_sampler_chain_add(chain, part)
        return chain

    def sample(self, ctx: Any, idx: int, logits: Logits) -> int:
        """The next token from output ``idx`` of the last decode."""
        if self._chain is None:
            return sample_logits(self.params, self._rng, logits)
        return self._sample_grammar(ctx, idx, logits)

    def _sample_grammar(self, ctx: Any, idx: int, logits: Logits) -> int:
        """Sample with the chain, which also advances its grammar. Greedy
        first tries the plain argmax against the grammar alone (one
        candidate instead of the whole vocabulary): the same token whenever
        the grammar allows it, at a fraction of the cost."""
        if self.params.temperature <= 0:
            tok = int(np.argmax(logits))
            if _grammar_allows(self._grammar, tok, float(logits[tok])):
                llama_cpp.llama_sampler_accept(self._chain, tok)
                return tok
        return int(llama_cpp.llama_sampler_sample(self._chain, ctx, idx))

    def close(self) -> None:
        """Free the native samplers (the chain frees its grammar); idempotent."""
        native = self._chain if self._chain is not None else self._grammar
        if native is not None:
            llama_cpp.llama_sampler_free(native)
        self._chain = self._grammar = None
