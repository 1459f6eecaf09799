"""The context's sequences and prompt prefix reuse.

A free sequence keeps the KV cache of its last request. A new request goes
to the free sequence whose cache shares the longest prefix with its prompt
(an agent's next turn, the same system prompt), or copies that prefix from
another sequence, free or running (for a running one, once it has computed
it: requests arriving together wait one step for the first one's prefill
instead of all computing the same tokens). Only the rest is prefilled.

Invariants:

- ``cached[seq]`` is exactly what the KV cache of a free sequence holds, from
  position 0; a sequence whose content is unknown (a failed decode) holds
  nothing. So a reused prefix gives the same tokens as computing the whole
  prompt (tests/inference/test_prefix.py).
- The last prompt token is never reused: it is fed again, for its logits.
- Reuse is all or nothing below ``prefix_min`` tokens: a short common prefix
  is not worth a sequence's cache (0 turns reuse off).
- :attr:`Sequences.free` is read by other threads (stats); it changes only
  under the engine's lock.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from agentd.inference.llama import Memory
from agentd.inference.stream import Request


def common_prefix(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    n = min(len(a), len(b), limit)
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Sequences:
    """Which sequences are free, what their caches hold, and who copies what."""

    def __init__(self, mem: Memory, n_seq: int, prefix_min: int, lock: threading.Lock) -> None:
        self._mem, self._lock = mem, lock
        self.prefix_min = prefix_min
        self.free = list(range(n_seq))  # least recently used first
        self._cached: list[list[int]] = [[] for _ in range(n_seq)]  # free ones' KV
        self.reused = 0  # prompt tokens not computed thanks to prefix reuse

    def assign(self, req: Request, active: list[Request]) -> None:
        """Give an admitted request a free sequence (caller holds the lock),
        with the longest prefix of its prompt that a free one holds, or
        plans to copy one from ``active``."""
        req.seq, shared = self._pick(req.prompt)
        self._mem.seq_rm(req.seq, shared)  # what this prompt does not share
        self._cached[req.seq] = []
        if shared:
            req.n_past = req.prefill_pos = shared
            req.reused = shared
            self.reused += shared
        elif self.prefix_min:
            self.plan(req, active)

    def _pick(self, prompt: list[int]) -> tuple[int, int]:
        """A free sequence for this prompt and how many tokens of its cache
        the prompt shares (0 unless at least prefix_min): the one sharing the
        most, else the least recently used."""
        limit = len(prompt) - 1  # the last prompt token is fed, for its logits
        best, best_len = self.free[0], 0
        if self.prefix_min:
            for seq in self.free:
                n = common_prefix(self._cached[seq], prompt, limit)
                if n > best_len:
                    best, best_len = seq, n
        if best_len < self.prefix_min:
            best, best_len = self.free[0], 0
        self.free.remove(best)
        return best, best_len

    def plan(self, req: Request, active: list[Request]) -> None:
        """Find the longest prefix of the prompt held by another sequence:
        copy it now from a free one, or wait for a running one to have it."""
        limit = len(req.prompt) - 1
        best_len = 0
        src: Request | int | None = None  # a running request, or a free sequence
        for other in active:
            if other is not req:
                n = common_prefix(other.prompt, req.prompt, limit)
                if n > best_len:
                    best_len, src = n, other
        for seq in self.free:
            n = common_prefix(self._cached[seq], req.prompt, limit)
            if n > best_len:
                best_len, src = n, seq
        if best_len < self.prefix_min or src is None:
            return
        if isinstance(src, int):
            self._copy(req, src, best_len)
        else:
            req.prefix_src, req.prefix_len = src, best_len

    def resolve(self, req: Request, active: list[Request]) -> None:
        """Before a step: copy the awaited prefix if its source has it in its
        cache now; if the source has finished, look again."""
        src = req.prefix_src
        assert src is not None
        if src.result is not None or src not in active:
            req.prefix_src = None
            self.plan(req, active)
        elif src.n_past >= req.prefix_len:
            req.prefix_src = None
            self._copy(req, src.seq, req.prefix_len)

    def _copy(self, req: Request, src_seq: int, n: int) -> None:
        """Positions 0..n-1 of ``src_seq`` become the request's. With one KV
        stream per sequence llama.cpp copies the whole stream (at the next
        decode, before the batch), then the tail beyond n is dropped."""
        self._mem.seq_cp(src_seq, req.seq)
        self._mem.seq_rm(req.seq, n)
        req.n_past = req.prefill_pos = n
        req.reused = n
        self.reused += n

    def release(self, req: Request, keep: bool = True) -> None:
        """Give the sequence back. Its cache keeps the request's tokens, for a
        later prompt that starts the same way, unless ``keep`` is False (after
        a failed decode its content is unknown)."""
        if keep and self.prefix_min:
            self._cached[req.seq] = (req.prompt + req.out_tokens)[: req.n_past]
        else:
            self._mem.seq_rm(req.seq)
            self._cached[req.seq] = []
        with self._lock:
            self.free.append(req.seq)
