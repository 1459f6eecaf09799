"""A request as the engine keeps it, and as its caller sees it.

Invariants:

- A request's caller receives, through an ``asyncio.Queue`` of its own event
  loop, its tokens in order, then possibly one exception, then exactly one
  end marker; nothing after. The decode thread never touches the queue: it
  hands items over with ``loop.call_soon_threadsafe`` (:func:`put_all`), all
  of one step's items for one loop in one call.
- :attr:`Request.result` is set once, when the request ends, before its end
  marker is sent.
"""

from __future__ import annotations

import asyncio
import codecs
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from agentd.inference.sampling import Sampler, SamplingParams

END = object()  # the last item of every request's queue


@dataclass(frozen=True)
class Token:
    """One generated token. ``text`` is the new visible text (may be empty
    while an incomplete UTF-8 sequence or a possible stop string is held back)."""

    id: int
    text: str
    index: int


@dataclass
class Result:
    request_id: int
    agent: str
    text: str
    tokens: list[int]
    finish_reason: str  # "stop" (stop string), "eos", "length", "cancelled", "error"
    prompt_tokens: int
    completion_tokens: int
    queued_s: float  # submit -> admitted
    first_token_s: float | None  # submit -> first token
    total_s: float
    # prompt tokens the engine computed: prompt_tokens less those whose KV
    # cache it reused from another sequence (agentd.inference.prefix)
    prompt_tokens_computed: int = 0


@dataclass(eq=False)
class Request:
    """One request's state; the decode thread's once it is admitted."""

    id: int
    agent: str
    prompt: list[int]
    params: SamplingParams
    sampler: Sampler
    loop: asyncio.AbstractEventLoop
    owner: str | None = None  # the fairness key above agent; None: the agent is its own
    aqueue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    submitted: float = field(default_factory=time.monotonic)
    admitted: float | None = None
    first_token: float | None = None
    seq: int = -1
    n_past: int = 0  # tokens of this sequence in the KV cache
    prefill_pos: int = 0  # next prompt token to feed
    # a running request whose first prefix_len prompt tokens this one will copy
    # once they are in its cache (it prefills nothing until then)
    prefix_src: Request | None = None
    prefix_len: int = 0
    reused: int = 0  # prompt tokens taken from another sequence's cache
    last_token: int = -1  # generated, not yet fed
    out_tokens: list[int] = field(default_factory=list)
    text: str = ""  # all decoded text so far
    emitted: int = 0  # chars of text already delivered
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace")
    )
    cancelled: bool = False
    result: Result | None = None
    error: BaseException | None = None
    queued_at_submit: int = 0  # requests waiting, this one included, when queued

    def make_result(self, reason: str) -> Result:
        """The request's result, ending now for ``reason``."""
        now = time.monotonic()
        return Result(
            request_id=self.id,
            agent=self.agent,
            text=self.text[: self.emitted] if reason != "stop" else self.text,
            tokens=list(self.out_tokens),
            finish_reason=reason,
            prompt_tokens=len(self.prompt),
            completion_tokens=len(self.out_tokens),
            queued_s=(self.admitted or now) - self.submitted,
            first_token_s=None if self.first_token is None else self.first_token - self.submitted,
            total_s=now - self.submitted,
            prompt_tokens_computed=len(self.prompt) - self.reused,
        )


def _put_all(items: list[tuple[Request, Any]]) -> None:
    """Runs in the caller's event loop: one step's items for its requests."""
    for req, item in items:
        req.aqueue.put_nowait(item)


class Outbox:
    """Items on their way to requests' callers. In the decode thread they are
    held until the end of the step (:meth:`flush`): one wake-up of each event
    loop per step instead of one per token."""

    def __init__(self) -> None:
        self.decode_thread: threading.Thread | None = None
        self._held: dict[asyncio.AbstractEventLoop, list[tuple[Request, Any]]] = {}

    def deliver(self, req: Request, item: Any) -> None:
        if threading.current_thread() is self.decode_thread:
            self._held.setdefault(req.loop, []).append((req, item))
            return
        self._post(req.loop, [(req, item)])

    def flush(self) -> None:
        held, self._held = self._held, {}
        for loop, items in held.items():
            self._post(loop, items)

    @staticmethod
    def _post(loop: asyncio.AbstractEventLoop, items: list[tuple[Request, Any]]) -> None:
        try:
            loop.call_soon_threadsafe(_put_all, items)
        except RuntimeError:  # the caller's loop is closed: nobody listens any more
            for req, _ in items:
                req.cancelled = True


class Stream:
    """Tokens of one request as they come (async iterator); ``result()`` at the end."""

    def __init__(self, req: Request, cancel: Callable[[Request], None]) -> None:
        self._req, self._cancel = req, cancel

    @property
    def request_id(self) -> int:
        return self._req.id

    @property
    def prompt_tokens(self) -> int:
        return len(self._req.prompt)

    @property
    def queued(self) -> int:
        """Requests that were waiting for a sequence when this one was queued,
        itself included."""
        return self._req.queued_at_submit

    def __aiter__(self) -> AsyncIterator[Token]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[Token]:
        q = self._req.aqueue
        while True:
            item = await q.get()
            if item is END:
                q.put_nowait(END)  # later iterations / result() see the end too
                return
            if isinstance(item, BaseException):
                q.put_nowait(END)
                raise item
            yield item

    async def chunks(self) -> AsyncIterator[list[Token]]:
        """Like iterating, but all tokens delivered so far come as one list, so
        a caller writing them to a socket makes one write per step (or fewer,
        when it falls behind), not one per token."""
        q = self._req.aqueue
        while True:
            items = [await q.get()]
            while not q.empty():
                items.append(q.get_nowait())
            tokens: list[Token] = []
            for item in items:
                if item is END or isinstance(item, BaseException):
                    if tokens:
                        yield tokens
                    q.put_nowait(END)
                    if item is not END:
                        raise item
                    return
                tokens.append(item)
            yield tokens

    async def result(self) -> Result:
        async for _ in self:
            pass
        if self._req.error is not None:
            raise self._req.error
        assert self._req.result is not None
        return self._req.result

    def cancel(self) -> None:
        self._cancel(self._req)
