"""A continuous-batching inference engine over llama-cpp-python's low-level API.

One model, one ``llama_context`` with ``n_seq_max`` sequences. Each request
gets a free sequence id when it is admitted; every step is ONE ``llama_decode``
whose batch holds one token for each sequence that is generating plus chunks
of the prompts still being prefilled (within ``n_batch``). Requests join
between steps and leave when done.

Prompt prefix reuse: a free sequence keeps the KV cache of its last request.
A new request goes to the free sequence whose cache shares the longest prefix
with its prompt (an agent's next turn, the same system prompt), or copies that
prefix from another sequence, free or running (for a running one, once it has
computed it: requests arriving together wait one step for the first one's
prefill instead of all computing the same tokens). Only the rest is prefilled.

Scheduling: a bounded admission queue (``max_queue``; a full queue refuses
with :class:`Overloaded`) with round-robin admission across the ``agent`` key
of the requests, so an agent that floods the queue delays another agent's
request by at most one admission round.

Threads: the decode loop runs in one worker thread. Callers may be in any
thread; asyncio callers get their tokens through ``loop.call_soon_threadsafe``
into an ``asyncio.Queue`` (:meth:`Engine.submit` returns a :class:`Stream`,
an async iterator of :class:`Token`). What one step produces for one event
loop is handed over in one call, not one per token.

Structured output: a request with ``SamplingParams.grammar`` (GBNF text; see
:func:`schema_to_grammar` for JSON Schema) is sampled by its own llama.cpp
sampler chain (grammar, then greedy or top-k/top-p/temperature/dist), which
also advances the grammar with each token. The grammar is parsed at submit
time, so a bad one raises :class:`InvalidGrammar` there.

llama.cpp's own log goes to the ``agentd.inference.llama`` logger (its debug
and info chatter is dropped unless that logger is enabled for it).

This module imports nothing of the rest of agentd.
"""

from __future__ import annotations

import asyncio
import codecs
import collections
import ctypes
import itertools
import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_vendor = os.environ.get("AGENTD_LLAMA_VENDOR")
if _vendor and _vendor not in sys.path:
    sys.path.insert(0, _vendor)

import llama_cpp  # noqa: E402

_llama_log = logging.getLogger("agentd.inference.llama")
# ggml_log_level: 1 debug, 2 info, 3 warn, 4 error, 5 continues the previous line
_LLAMA_LEVELS = {1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
_log_state = threading.local()


@llama_cpp.llama_log_callback
def _llama_log_cb(level: int, text: bytes, _user_data: Any) -> None:
    """Route llama.cpp's log lines to Python logging (and to a capture, if one
    is open in this thread, so errors such as a grammar's can be reported)."""
    lvl = getattr(_log_state, "last", logging.DEBUG) if level == 5 else (
        _LLAMA_LEVELS.get(level, logging.DEBUG))
    _log_state.last = lvl
    msg = text.decode("utf-8", "replace").rstrip("\n")
    capture = getattr(_log_state, "capture", None)
    if capture is not None and lvl >= logging.WARNING and msg.strip():
        capture.append(msg.strip())
    if msg and _llama_log.isEnabledFor(lvl):
        _llama_log.log(lvl, "%s", msg)


llama_cpp.llama_log_set(_llama_log_cb, None)


@contextmanager
def _capture_llama_log() -> Iterator[list[str]]:
    lines: list[str] = []
    _log_state.capture = lines
    try:
        yield lines
    finally:
        _log_state.capture = None


class EngineError(Exception):
    """Base class of the engine's errors."""


class Overloaded(EngineError):
    """The admission queue is full; retry later."""

    def __init__(self, queued: int, limit: int) -> None:
        super().__init__(f"inference queue full ({queued}/{limit} requests waiting)")
        self.queued, self.limit = queued, limit


class RequestTooLong(EngineError):
    """Prompt plus max_tokens does not fit in one sequence's context."""


class EngineClosed(EngineError):
    """The engine is stopped (or stopping); no request is accepted."""


class LoadError(EngineError):
    """The model or the context could not be created."""


class DecodeError(EngineError):
    """llama_decode failed; the requests in that batch are failed with it."""


class Cancelled(EngineError):
    """The request was cancelled by its caller."""


class InvalidGrammar(EngineError):
    """A GBNF grammar (or a JSON Schema meant to become one) cannot be used."""


def schema_to_grammar(schema: dict[str, Any]) -> str:
    """GBNF text for a JSON Schema (llama-cpp-python's converter), or
    InvalidGrammar: the converter's errors vary (ValueError, KeyError, ...)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    if not isinstance(schema, dict):
        raise InvalidGrammar("a JSON Schema must be an object")
    try:
        return json_schema_to_gbnf(json.dumps(schema))
    except RecursionError as e:
        raise InvalidGrammar("JSON Schema nested too deeply") from e
    except Exception as e:
        raise InvalidGrammar(f"unsupported JSON Schema: {e}") from e


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


@dataclass(frozen=True)
class EngineConfig:
    n_seq_max: int = 16
    n_ctx_per_seq: int = 1024
    n_batch: int = 128  # bigger prefills at once delay every sequence's next token
    n_threads: int = 2
    max_queue: int = 64
    max_queue_per_agent: int | None = None  # None: max_queue
    # One KV stream per sequence (False) is what the tests verify: batched greedy
    # output equals one-at-a-time. True (one shared buffer) was faster at 16
    # sequences here but gave different tokens in a batch with 0.3.36: do not use.
    kv_unified: bool = False
    seed: int = 0
    # Prompt prefix reuse: a request whose prompt starts with at least this many
    # tokens that another sequence already holds (a finished request's, kept
    # in its free sequence, or a running one's) takes their KV cache instead of
    # computing it again. 0: never.
    prefix_min: int = 16


_END = object()


class Stream:
    """Tokens of one request as they come (async iterator); ``result()`` at the end."""

    def __init__(self, engine: Engine, req: _Request) -> None:
        self._engine, self._req = engine, req

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
        assert q is not None
        while True:
            item = await q.get()
            if item is _END:
                q.put_nowait(_END)  # later iterations / result() see the end too
                return
            if isinstance(item, BaseException):
                q.put_nowait(_END)
                raise item
            yield item

    async def chunks(self) -> AsyncIterator[list[Token]]:
        """Like iterating, but all tokens delivered so far come as one list, so
        a caller writing them to a socket makes one write per step (or fewer,
        when it falls behind), not one per token."""
        q = self._req.aqueue
        assert q is not None
        while True:
            items = [await q.get()]
            while not q.empty():
                items.append(q.get_nowait())
            tokens: list[Token] = []
            for item in items:
                if item is _END or isinstance(item, BaseException):
                    if tokens:
                        yield tokens
                    q.put_nowait(_END)
                    if item is not _END:
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
        self._engine._cancel(self._req)


@dataclass(eq=False)
class _Request:
    id: int
    agent: str
    prompt: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop | None
    aqueue: asyncio.Queue[Any] | None
    done_event: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.monotonic)
    admitted: float | None = None
    first_token: float | None = None
    seq: int = -1
    n_past: int = 0  # tokens of this sequence in the KV cache
    prefill_pos: int = 0  # next prompt token to feed
    # a running request whose first prefix_len prompt tokens this one will copy
    # once they are in its cache (it prefills nothing until then)
    prefix_src: _Request | None = None
    prefix_len: int = 0
    last_token: int = -1  # generated, not yet fed
    out_tokens: list[int] = field(default_factory=list)
    text: str = ""  # all decoded text so far
    emitted: int = 0  # chars of text already delivered
    decoder: Any = None
    rng: Any = None
    cancelled: bool = False
    result: Result | None = None
    error: BaseException | None = None
    sync_tokens: list[Token] = field(default_factory=list)
    # the grammar sampler until admission, then the chain that owns it
    sampler: Any = None
    grammar: Any = None  # the grammar sampler inside ``sampler`` once it is a chain
    queued_at_submit: int = 0  # requests waiting, this one included, when queued


class Engine:
    """Load a GGUF and serve requests from many agents in shared decode steps."""

    def __init__(self, model_path: str | os.PathLike[str], config: EngineConfig | None = None,
                 progress: Callable[[float], object] | None = None):
        """Load the model (``progress(fraction)`` is called while it loads, in
        this thread; returning False aborts the load), start the decode thread
        and return once it has made its first decode."""
        self.config = cfg = config or EngineConfig()
        self.model_path = str(model_path)
        llama_cpp.llama_backend_init()
        mp = llama_cpp.llama_model_default_params()
        mp.n_gpu_layers = 0
        cb = _progress_callback(progress) if progress is not None else None
        if cb is not None:
            mp.progress_callback = cb
        with _capture_llama_log() as log:
            self._model = llama_cpp.llama_model_load_from_file(self.model_path.encode(), mp)
        if not self._model:
            why = f": {log[-1]}" if log else ""
            raise LoadError(f"cannot load model {self.model_path}{why}")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self.n_ctx_train = llama_cpp.llama_model_n_ctx_train(self._model)
        self.n_params = llama_cpp.llama_model_n_params(self._model)
        buf = ctypes.create_string_buffer(256)
        llama_cpp.llama_model_desc(self._model, buf, len(buf))
        self.description = buf.value.decode("utf-8", "replace")

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
        self._ctx = llama_cpp.llama_init_from_model(self._model, cp)
        if not self._ctx:
            llama_cpp.llama_model_free(self._model)
            raise LoadError("cannot create the llama context")
        self.n_ctx = llama_cpp.llama_n_ctx(self._ctx)
        self.n_ctx_per_seq = self.n_ctx // cfg.n_seq_max
        self._mem = llama_cpp.llama_get_memory(self._ctx) if hasattr(
            llama_cpp, "llama_get_memory") else None
        self._batch = llama_cpp.llama_batch_init(cfg.n_batch, 0, 1)
        self._chat_template = self._meta_str("tokenizer.chat_template")
        self._compiled_template: Any = None
        self._bos = self.token_text(llama_cpp.llama_vocab_bos(self._vocab))
        self._eos = self.token_text(llama_cpp.llama_vocab_eos(self._vocab))

        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queues: collections.OrderedDict[str, collections.deque[_Request]] = (
            collections.OrderedDict())
        self._n_queued = 0
        if cfg.n_batch < cfg.n_seq_max:
            raise ValueError("n_batch must be at least n_seq_max (one token per sequence)")
        self._free_seqs = list(range(cfg.n_seq_max))  # least recently used first
        self._cached: list[list[int]] = [[] for _ in range(cfg.n_seq_max)]  # free ones' KV
        self.prefix_reused = 0  # prompt tokens not computed thanks to prefix reuse
        self._active: list[_Request] = []
        self._ids = itertools.count(1)
        self._closing = False
        self.steps = 0
        self.tokens_generated = 0
        self._outbox: dict[asyncio.AbstractEventLoop, list[tuple[_Request, Any]]] = {}
        # (request id, agent) of the latest admissions, for tests and stats
        self.admission_log: collections.deque[tuple[int, str]] = collections.deque(maxlen=1024)
        self._warm = threading.Event()
        self._warm_ok = False
        self._thread = threading.Thread(target=self._main, name="inference-decode", daemon=True)
        self._thread.start()
        self._warm.wait()
        if not self._warm_ok:
            self._thread.join()
            raise LoadError("the first decode failed")

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
        if llama_cpp.llama_decode(self._ctx, b) != 0:
            return False
        self._seq_rm(0)
        return True

    def _free(self) -> None:
        llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self._ctx)
        llama_cpp.llama_model_free(self._model)

    # ------------------------------------------------------------ vocabulary

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True
                 ) -> list[int]:
        data = text.encode("utf-8")
        n_max = len(data) + 8
        arr = (llama_cpp.llama_token * n_max)()
        n = llama_cpp.llama_tokenize(self._vocab, data, len(data), arr, n_max,
                                     add_special, parse_special)
        if n < 0:
            n_max = -n
            arr = (llama_cpp.llama_token * n_max)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), arr, n_max,
                                         add_special, parse_special)
        return list(arr[:n])

    def token_bytes(self, token: int, special: bool = False) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def token_text(self, token: int) -> str:
        return self.token_bytes(token, special=True).decode("utf-8", "replace")

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.token_bytes(t) for t in tokens).decode("utf-8", "replace")

    def _meta_str(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(1 << 16)
        n = llama_cpp.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):
            buf = ctypes.create_string_buffer(n + 1)
            llama_cpp.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", "replace")

    def apply_chat_template(self, messages: Sequence[dict[str, str]],
                            add_generation_prompt: bool = True) -> str:
        """Format chat messages with the model's own (jinja2) chat template."""
        import jinja2.sandbox

        if self._chat_template is None:
            raise EngineError("the model has no chat template")

        def raise_exception(msg: str) -> None:
            raise EngineError(f"chat template: {msg}")

        if self._compiled_template is None:  # compiling costs more than rendering
            env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True,
                                                               lstrip_blocks=True)
            self._compiled_template = env.from_string(self._chat_template)
        return self._compiled_template.render(
            messages=list(messages), add_generation_prompt=add_generation_prompt,
            bos_token=self._bos, eos_token=self._eos, raise_exception=raise_exception)

    def chat_tokens(self, messages: Sequence[dict[str, str]]) -> list[int]:
        return self.tokenize(self.apply_chat_template(messages), add_special=False,
                             parse_special=True)

    # ------------------------------------------------------------ requests

    def submit(self, prompt: str | Sequence[int], params: SamplingParams | None = None,
               agent: str = "", loop: asyncio.AbstractEventLoop | None = None) -> Stream:
        """Queue a request; returns its Stream. Raises Overloaded, RequestTooLong,
        EngineClosed. Call from a coroutine (or pass ``loop``)."""
        params = params or SamplingParams()
        tokens = self.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        if not tokens:
            raise ValueError("empty prompt")
        if len(tokens) + params.max_tokens > self.n_ctx_per_seq:
            raise RequestTooLong(f"{len(tokens)} prompt tokens + max_tokens {params.max_tokens}"
                                 f" > {self.n_ctx_per_seq} tokens per sequence")
        if loop is None:
            loop = asyncio.get_running_loop()
        req = _Request(id=0, agent=agent, prompt=tokens, params=params, loop=loop,
                       aqueue=asyncio.Queue())
        self._enqueue(req)
        return Stream(self, req)

    def check_grammar(self, grammar: str) -> None:
        """Raise InvalidGrammar unless llama.cpp accepts this GBNF text."""
        llama_cpp.llama_sampler_free(self._grammar_sampler(grammar))

    def _grammar_sampler(self, grammar: str) -> Any:
        if not grammar.strip():
            raise InvalidGrammar("empty grammar")
        with _capture_llama_log() as log:
            smpl = llama_cpp.llama_sampler_init_grammar(
                self._vocab, grammar.encode("utf-8"), b"root")
        if not smpl:
            why = "; ".join(line for line in log if "failed to parse" not in line)
            raise InvalidGrammar(f"invalid grammar: {why or 'llama.cpp refused it'}")
        return smpl

    def generate_sync(self, prompt: str | Sequence[int], params: SamplingParams | None = None,
                      agent: str = "", timeout: float | None = None) -> Result:
        """Blocking variant for threads without an event loop."""
        params = params or SamplingParams()
        tokens = self.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        if len(tokens) + params.max_tokens > self.n_ctx_per_seq:
            raise RequestTooLong("prompt + max_tokens does not fit one sequence")
        req = _Request(id=0, agent=agent, prompt=tokens, params=params, loop=None, aqueue=None)
        self._enqueue(req)
        if not req.done_event.wait(timeout):
            self._cancel(req)
            req.done_event.wait()
        if req.error is not None:
            raise req.error
        assert req.result is not None
        return req.result

    def _enqueue(self, req: _Request) -> None:
        """Queue the request (its grammar parsed first, so a bad one fails here)."""
        if req.params.grammar is not None:
            req.sampler = self._grammar_sampler(req.params.grammar)
        try:
            self._enqueue_locked(req)
        except BaseException:
            self._free_sampler(req)
            raise

    def _enqueue_locked(self, req: _Request) -> None:
        with self._lock:
            if self._closing:
                raise EngineClosed("engine is closed")
            if self._n_queued >= self.config.max_queue:
                raise Overloaded(self._n_queued, self.config.max_queue)
            q = self._queues.get(req.agent)
            per_agent = self.config.max_queue_per_agent
            if per_agent is not None and q is not None and len(q) >= per_agent:
                raise Overloaded(len(q), per_agent)
            req.id = next(self._ids)
            self._queues.setdefault(req.agent, collections.deque()).append(req)
            self._n_queued += 1
            req.queued_at_submit = self._n_queued
            self._wake.notify()

    def _cancel(self, req: _Request) -> None:
        with self._lock:
            req.cancelled = True
            q = self._queues.get(req.agent)
            if q is not None and req in q:
                q.remove(req)
                self._n_queued -= 1
                if not q:
                    del self._queues[req.agent]
                self._finish(req, "cancelled")
            self._wake.notify()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"queued": self._n_queued, "active": len(self._active),
                    "steps": self.steps, "tokens_generated": self.tokens_generated,
                    "free_sequences": len(self._free_seqs),
                    "prefix_reused": self.prefix_reused}

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

    # ------------------------------------------------------------ delivery

    def _deliver(self, req: _Request, item: Any) -> None:
        """Hand an item to the request's caller. In the decode thread items are
        held until the end of the step (:meth:`_flush`): one wake-up of each
        event loop per step instead of one per token."""
        if req.loop is None:
            if isinstance(item, Token):
                req.sync_tokens.append(item)
            return
        if threading.current_thread() is self._thread:
            self._outbox.setdefault(req.loop, []).append((req, item))
            return
        self._post(req.loop, [(req, item)])

    def _flush(self) -> None:
        outbox, self._outbox = self._outbox, {}
        for loop, items in outbox.items():
            self._post(loop, items)

    @staticmethod
    def _post(loop: asyncio.AbstractEventLoop, items: list[tuple[_Request, Any]]) -> None:
        try:
            loop.call_soon_threadsafe(_put_all, items)
        except RuntimeError:  # the caller's loop is closed: nobody listens any more
            for req, _ in items:
                req.cancelled = True

    def _free_sampler(self, req: _Request) -> None:
        if req.sampler is not None:
            llama_cpp.llama_sampler_free(req.sampler)
            req.sampler = req.grammar = None

    def _finish(self, req: _Request, reason: str, error: BaseException | None = None) -> None:
        now = time.monotonic()
        self._free_sampler(req)
        if error is not None:
            req.error = error
        req.result = Result(
            request_id=req.id, agent=req.agent, text=req.text[:req.emitted]
            if reason != "stop" else req.text, tokens=list(req.out_tokens),
            finish_reason=reason, prompt_tokens=len(req.prompt),
            completion_tokens=len(req.out_tokens),
            queued_s=(req.admitted or now) - req.submitted,
            first_token_s=None if req.first_token is None else req.first_token - req.submitted,
            total_s=now - req.submitted)
        if error is not None:
            self._deliver(req, error)
        self._deliver(req, _END)
        req.done_event.set()

    # ------------------------------------------------------------ decode loop

    def _seq_rm(self, seq: int, p0: int = -1) -> None:
        """Drop positions p0.. of a sequence from the cache (all of it: -1)."""
        if self._mem is not None:
            llama_cpp.llama_memory_seq_rm(self._mem, seq, p0, -1)
        else:  # older 0.3.x
            llama_cpp.llama_kv_self_seq_rm(self._ctx, seq, p0, -1)

    def _release(self, req: _Request, keep: bool = True) -> None:
        """Give the sequence back. Its cache keeps the request's tokens, for a
        later prompt that starts the same way, unless ``keep`` is False (after
        a failed decode its content is unknown)."""
        self._active.remove(req)
        if keep and self.config.prefix_min:
            self._cached[req.seq] = (req.prompt + req.out_tokens)[:req.n_past]
        else:
            self._seq_rm(req.seq)
            self._cached[req.seq] = []
        with self._lock:
            self._free_seqs.append(req.seq)

    def _pick_seq(self, prompt: list[int]) -> tuple[int, int]:
        """A free sequence for this prompt and how many tokens of its cache
        the prompt shares (0 unless at least prefix_min): the one sharing the
        most, else the least recently used."""
        limit = len(prompt) - 1  # the last prompt token is fed, for its logits
        best, best_len = self._free_seqs[0], 0
        if self.config.prefix_min:
            for seq in self._free_seqs:
                n = _common_prefix(self._cached[seq], prompt, limit)
                if n > best_len:
                    best, best_len = seq, n
        if best_len < self.config.prefix_min:
            best, best_len = self._free_seqs[0], 0
        self._free_seqs.remove(best)
        return best, best_len

    def _plan_prefix(self, req: _Request) -> None:
        """Find the longest prefix of the prompt held by another sequence:
        copy it now from a free one, or wait for a running one to have it."""
        limit = len(req.prompt) - 1
        best_len, src = 0, None
        for other in self._active:
            if other is not req:
                n = _common_prefix(other.prompt, req.prompt, limit)
                if n > best_len:
                    best_len, src = n, other
        for seq in self._free_seqs:
            n = _common_prefix(self._cached[seq], req.prompt, limit)
            if n > best_len:
                best_len, src = n, seq
        if best_len < self.config.prefix_min or src is None:
            return
        if isinstance(src, int):
            self._copy_prefix(req, src, best_len)
        else:
            req.prefix_src, req.prefix_len = src, best_len

    def _resolve_prefix(self, req: _Request) -> None:
        """Before a step: copy the awaited prefix if its source has it in its
        cache now; if the source has finished, look again."""
        src = req.prefix_src
        assert src is not None
        if src.result is not None or src not in self._active:
            req.prefix_src = None
            self._plan_prefix(req)
        elif src.n_past >= req.prefix_len:
            req.prefix_src = None
            self._copy_prefix(req, src.seq, req.prefix_len)

    def _copy_prefix(self, req: _Request, src_seq: int, n: int) -> None:
        """Positions 0..n-1 of ``src_seq`` become the request's. With one KV
        stream per sequence llama.cpp copies the whole stream (at the next
        decode, before the batch), then the tail beyond n is dropped."""
        if self._mem is not None:
            llama_cpp.llama_memory_seq_cp(self._mem, src_seq, req.seq, -1, -1)
        else:
            llama_cpp.llama_kv_self_seq_cp(self._ctx, src_seq, req.seq, -1, -1)
        self._seq_rm(req.seq, n)
        req.n_past = req.prefill_pos = n
        self.prefix_reused += n

    def _admit(self) -> None:
        """Round-robin over agents: take the head of the first agent's queue,
        then move that agent to the back."""
        while self._free_seqs and self._queues:
            agent, q = next(iter(self._queues.items()))
            req = q.popleft()
            self._n_queued -= 1
            if q:
                self._queues.move_to_end(agent)
            else:
                del self._queues[agent]
            req.seq, shared = self._pick_seq(req.prompt)
            self._seq_rm(req.seq, shared)  # what this prompt does not share
            self._cached[req.seq] = []
            if shared:
                req.n_past = req.prefill_pos = shared
                self.prefix_reused += shared
            elif self.config.prefix_min:
                self._plan_prefix(req)
            req.admitted = time.monotonic()
            req.decoder = codecs.getincrementaldecoder("utf-8")("replace")
            if req.params.temperature > 0:
                req.rng = np.random.default_rng(self._seed(req))
            if req.sampler is not None:
                req.grammar = req.sampler
                req.sampler = self._sampler_chain(req)
            self.admission_log.append((req.id, agent))
            self._active.append(req)

    def _seed(self, req: _Request) -> int:
        seed = req.params.seed if req.params.seed is not None else self.config.seed + req.id
        return seed & 0xFFFFFFFF

    def _sampler_chain(self, req: _Request) -> Any:
        """The request's chain: its grammar (taken over by the chain), then
        greedy, or top-k / top-p / temperature / seeded draw."""
        p = req.params
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        parts = [req.grammar]
        if p.temperature <= 0:
            parts.append(llama_cpp.llama_sampler_init_greedy())
        else:
            if p.top_k:
                parts.append(llama_cpp.llama_sampler_init_top_k(p.top_k))
            if p.top_p < 1.0:
                parts.append(llama_cpp.llama_sampler_init_top_p(p.top_p, 1))
            parts.append(llama_cpp.llama_sampler_init_temp(p.temperature))
            parts.append(llama_cpp.llama_sampler_init_dist(self._seed(req)))
        for part in parts:
            llama_cpp.llama_sampler_chain_add(chain, part)
        return chain

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self._closing and not self._queues and not self._active:
                        self._wake.wait()
                    if self._closing:
                        break
                    self._admit()
                for req in [r for r in self._active if r.cancelled]:
                    self._release(req)
                    self._finish(req, "cancelled")
                if self._active:
                    self._step()
                self._flush()
        except BaseException as e:  # never leave callers waiting forever
            err = e if isinstance(e, EngineError) else DecodeError(f"decode loop died: {e!r}")
            with self._lock:
                self._closing = True
            for req in list(self._active):
                self._finish(req, "error", err)
            self._active.clear()
            raise
        finally:
            with self._lock:
                pending = [r for q in self._queues.values() for r in q]
                self._queues.clear()
                self._n_queued = 0
            for req in pending + list(self._active):
                if req.result is None:
                    self._finish(req, "error", EngineClosed("engine closed"))
            self._active.clear()
            self._flush()

    def _step(self) -> None:
        b = self._batch
        n = 0
        cap = self.config.n_batch
        outputs: list[tuple[_Request, int]] = []

        def put(tok: int, pos: int, seq: int, logits: bool) -> None:
            nonlocal n
            b.token[n] = tok
            b.pos[n] = pos
            b.n_seq_id[n] = 1
            b.seq_id[n][0] = seq
            b.logits[n] = logits
            n += 1

        for req in self._active:
            if req.prefix_src is not None:
                self._resolve_prefix(req)
        # 1. one token for every sequence that is generating
        for req in self._active:
            if req.prefill_pos >= len(req.prompt):
                outputs.append((req, n))
                put(req.last_token, req.n_past, req.seq, True)
                req.n_past += 1
        # 2. prompt chunks in the remaining room, oldest request first
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
        if n == 0:
            return
        b.n_tokens = n
        rc = llama_cpp.llama_decode(self._ctx, b)
        self.steps += 1
        if rc != 0:
            err = DecodeError(f"llama_decode returned {rc}")
            for req, _ in outputs:
                self._release(req, keep=False)
                self._finish(req, "error", err)
            # requests still prefilling keep a partial cache: restart them cleanly
            for req in list(self._active):
                self._release(req, keep=False)
                self._finish(req, "error", err)
            return
        for req, idx in outputs:
            ptr = llama_cpp.llama_get_logits_ith(self._ctx, idx)
            logits = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
            if req.sampler is not None:
                tok = self._sample_grammar(req, idx, logits)
            else:
                tok = self._sample(req, logits)
            self._accept(req, tok)

    def _sample_grammar(self, req: _Request, idx: int, logits: np.ndarray) -> int:
        """Sample with the request's chain, which also advances its grammar.
        Greedy first tries the plain argmax against the grammar alone (one
        candidate instead of the whole vocabulary): the same token whenever
        the grammar allows it, at a fraction of the cost."""
        if req.params.temperature <= 0:
            tok = int(np.argmax(logits))
            if self._grammar_allows(req.grammar, tok, float(logits[tok])):
                llama_cpp.llama_sampler_accept(req.sampler, tok)
                return tok
        return int(llama_cpp.llama_sampler_sample(req.sampler, self._ctx, idx))

    @staticmethod
    def _grammar_allows(grammar: Any, tok: int, logit: float) -> bool:
        data = llama_cpp.llama_token_data(tok, logit, 0.0)
        arr = llama_cpp.llama_token_data_array(ctypes.pointer(data), 1, -1, False)
        llama_cpp.llama_sampler_apply(grammar, ctypes.byref(arr))
        return not math.isinf(arr.data[0].logit)

    def _sample(self, req: _Request, logits: np.ndarray) -> int:
        p = req.params
        if p.temperature <= 0:
            return int(np.argmax(logits))
        x = logits.astype(np.float64) / p.temperature
        if p.top_k and p.top_k < x.size:
            idx = np.argpartition(x, -p.top_k)[-p.top_k:]
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
        return int(idx[req.rng.choice(len(idx), p=probs)])

    def _accept(self, req: _Request, tok: int) -> None:
        now = time.monotonic()
        p = req.params
        if req.first_token is None:
            req.first_token = now
        if p.stop_at_eos and llama_cpp.llama_vocab_is_eog(self._vocab, tok):
            req.out_tokens.append(tok)
            self.tokens_generated += 1
            self._emit(req, tok, flush=True)
            self._release(req)
            self._finish(req, "eos")
            return
        req.out_tokens.append(tok)
        self.tokens_generated += 1
        req.text += req.decoder.decode(self.token_bytes(tok))
        req.last_token = tok
        # stop strings: search the text not yet emitted (plus overlap)
        if p.stop:
            start = max(0, req.emitted - max(len(s) for s in p.stop))
            hits = [i for s in p.stop if (i := req.text.find(s, start)) >= 0]
            if hits:
                req.text = req.text[:min(hits)]
                self._emit(req, tok, flush=True)
                self._release(req)
                self._finish(req, "stop")
                return
        if len(req.out_tokens) >= p.max_tokens:
            req.text += req.decoder.decode(b"", final=True)
            self._emit(req, tok, flush=True)
            self._release(req)
            self._finish(req, "length")
            return
        self._emit(req, tok, flush=False)

    def _emit(self, req: _Request, tok: int, flush: bool) -> None:
        """Deliver the token with the text that can be shown now: everything
        except a tail that could still become a stop string."""
        end = len(req.text)
        if not flush and req.params.stop:
            for s in req.params.stop:
                for k in range(min(len(s) - 1, end - req.emitted), 0, -1):
                    if req.text.endswith(s[:k]):
                        end = min(end, len(req.text) - k)
                        break
        piece = req.text[req.emitted:end]
        req.emitted = max(req.emitted, end)
        self._deliver(req, Token(id=tok, text=piece, index=len(req.out_tokens) - 1))


def _common_prefix(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    n = min(len(a), len(b), limit)
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _put_all(items: list[tuple[_Request, Any]]) -> None:
    """Runs in the caller's event loop: one step's items for its requests."""
    for req, item in items:
        assert req.aqueue is not None
        req.aqueue.put_nowait(item)


def _progress_callback(progress: Callable[[float], object]) -> Any:
    """A llama.cpp progress callback around ``progress``; an exception in it
    must not abort the load (ctypes would return false)."""

    def call(fraction: float, _user_data: Any) -> bool:
        try:
            return progress(float(fraction)) is not False
        except Exception:
            return True

    return llama_cpp.llama_progress_callback(call)


class RawGreedy:
    """Baseline for tests and the benchmark: greedy single-sequence decode over
    the low-level API on its own context: the engine's model (not its queue),
    or with :meth:`standalone` a model of its own, for a process where no
    other thread decodes (see :meth:`Engine._main` on why that matters)."""

    def __init__(self, engine: Engine | None, n_ctx: int = 512, n_batch: int = 128,
                 n_threads: int | None = None, model: Any = None) -> None:
        self._own_model = model if engine is None else None
        self.model = engine._model if engine is not None else model
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
    def standalone(cls, model_path: str | os.PathLike[str], n_threads: int = 2,
                   n_ctx: int = 512, n_batch: int = 128) -> RawGreedy:
        llama_cpp.llama_backend_init()
        mp = llama_cpp.llama_model_default_params()
        mp.n_gpu_layers = 0
        model = llama_cpp.llama_model_load_from_file(str(model_path).encode(), mp)
        if not model:
            raise LoadError(f"cannot load model {model_path}")
        return cls(None, n_ctx=n_ctx, n_batch=n_batch, n_threads=n_threads, model=model)

    def run(self, prompt: Sequence[int], max_tokens: int, stop_at_eos: bool = True
            ) -> list[int]:
        batch = self.batch
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)
        out: list[int] = []
        pending, pos = list(prompt), 0
        while len(out) < max_tokens:
            toks, pending = pending[:self.n_batch], pending[self.n_batch:]
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
                llama_cpp.llama_get_logits_ith(self.ctx, len(toks) - 1), shape=(self.n_vocab,))
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


def raw_greedy(engine: Engine, prompt: Sequence[int], max_tokens: int,
               stop_at_eos: bool = True) -> list[int]:
    raw = RawGreedy(engine, n_ctx=max(256, len(prompt) + max_tokens + 8))
    try:
        return raw.run(prompt, max_tokens, stop_at_eos)
    finally:
        raw.close()
