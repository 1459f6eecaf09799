"""The socket server: connections, the four ops, and the service's life.

Invariants:

- The socket is mode 0600 in a 0700 directory, and every connection's peer
  UID (``SO_PEERCRED``) must be allowed: the kernel, not the request, says
  who asks (:mod:`~agentd.inference.conn`).
- One request per connection; a request that ends in an error gets exactly
  one ``error`` line, then the connection closes. A client that hangs up
  cancels its request (its sequence is freed for others).
- A bug in a handler fails that request (``Internal``), never the service.
- Nothing a request sends is worked on at length on the event loop: its
  JSON Schema is checked and compiled, its prompt tokenized and its grammar
  parsed in a worker thread (:meth:`Service._prepare`), so one request's
  schema does not hold up the other requests' tokens; embed's texts are
  tokenized in a worker thread too.
- ``embed`` without an embedding model is refused with ``NoEmbeddingModel``:
  the chat model never answers for it.
- systemd: ``READY=1`` once the socket listens; SIGTERM stops accepting,
  fails what is in flight with ``Unavailable`` and exits 0.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from agentd.inference.config import ModelConfig
from agentd.inference.conn import Conn, bind_socket, peer_uid, until_eof
from agentd.inference.embedder import Embedder
from agentd.inference.engine import Engine
from agentd.inference.errors import (
    DecodeError,
    EngineClosed,
    EngineError,
    InvalidGrammar,
    LoadError,
    Overloaded,
    RequestTooLong,
)
from agentd.inference.lifecycle import Busy, Models
from agentd.inference.protocol import (
    LINE_LIMIT,
    Embed,
    Generate,
    RequestError,
    check_show,
    decode,
    done_line,
    embedded_line,
    invalid,
    parse_embed,
    parse_generate,
    parse_reload,
    queued_line,
)
from agentd.inference.sampling import Sampler, SamplingParams
from agentd.inference.schema import GrammarCache
from agentd.inference.stream import Stream
from agentd.inference.unit import sd_notify

log = logging.getLogger("agentd.inference")

REQUEST_TIMEOUT_S = 30.0  # a connection must send its request line within this
STOP_GRACE_S = 5.0  # SIGTERM: how long in-flight handlers get to say goodbye
GRAMMAR_CACHE = 64  # JSON Schemas whose grammar is kept


class TokenRate:
    """Completion tokens over the last ``window`` seconds, in one-second buckets."""

    def __init__(self, window: int = 10) -> None:
        self.window = window
        self._buckets: collections.deque[list[int]] = collections.deque()

    def add(self, n: int, now: float | None = None) -> None:
        sec = int(time.monotonic() if now is None else now)
        if self._buckets and self._buckets[-1][0] == sec:
            self._buckets[-1][1] += n
        else:
            self._buckets.append([sec, n])
        self._prune(sec)

    def per_second(self, now: float | None = None) -> float:
        sec = int(time.monotonic() if now is None else now)
        self._prune(sec)
        return sum(n for _, n in self._buckets) / self.window

    def _prune(self, sec: int) -> None:
        while self._buckets and self._buckets[0][0] <= sec - self.window:
            self._buckets.popleft()


class Service:
    """The socket server and the model it serves."""

    def __init__(
        self, config_path: str, socket_path: str, allow_uids: set[int], config: ModelConfig
    ) -> None:
        self.socket_path = Path(socket_path)
        self.allow_uids = allow_uids
        self._stop = asyncio.Event()
        self.models = Models(config_path, config, self._stop)
        self.stopping = False
        self.started = time.time()
        self.requests_total = self.tokens_generated = self.prompt_tokens = 0
        self.embed_requests = self.embed_texts = self.embed_tokens = 0
        self.rate = TokenRate()
        self._handlers: set[asyncio.Task[None]] = set()
        self.grammars = GrammarCache(GRAMMAR_CACHE)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        await self.models.initial_load()
        if self._stop.is_set():
            return 0
        sock = bind_socket(self.socket_path)
        server = await asyncio.start_unix_server(self._handle, sock=sock, limit=LINE_LIMIT)
        log.info(
            "listening on %s (allowed uids: %s)",
            self.socket_path,
            ", ".join(map(str, sorted(self.allow_uids))),
        )
        sd_notify(f"READY=1\nSTATUS={self.models.status()}")
        await self._stop.wait()
        log.info("stopping")
        sd_notify("STOPPING=1\nSTATUS=stopping")
        await self._shutdown(server)
        return 0

    async def _shutdown(self, server: asyncio.AbstractServer) -> None:
        """Stop accepting, end every connection (generate requests get an
        ``Unavailable`` error line), then free the engines."""
        self.stopping = True
        server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=STOP_GRACE_S)
        await self.models.close()
        with contextlib.suppress(OSError):
            self.socket_path.unlink()

    # ------------------------------------------------------------ connections

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        conn = Conn(reader, writer)
        try:
            await self._serve(conn)
        except RequestError as e:
            log.warning("%s: %s", e.error, e)
            with contextlib.suppress(ConnectionError):
                await conn.send(e.line())
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception as e:  # a bug here must not take the service down
            log.exception("request failed")
            with contextlib.suppress(ConnectionError):
                await conn.send(RequestError("Internal", f"internal error: {e!r}").line())
        finally:
            self._handlers.discard(task)
            await conn.close()

    async def _serve(self, conn: Conn) -> None:
        uid = peer_uid(conn.writer)
        if uid not in self.allow_uids:
            raise RequestError("PermissionDenied", f"uid {uid} may not use this service")
        req = decode(await self._read_line(conn))
        if req is None:
            return
        op = req.get("op")
        if op == "generate":
            await self._generate(conn, parse_generate(req))
        elif op == "show":
            check_show(req)
            await conn.send(self.show())
        elif op == "embed":
            await self._embed(conn, parse_embed(req))
        elif op == "reload":
            await self._reload(conn, parse_reload(req))
        else:
            raise invalid(f"unknown op {op!r} (generate, embed, show, reload)")

    async def _read_line(self, conn: Conn) -> bytes:
        try:
            return await asyncio.wait_for(conn.reader.readline(), REQUEST_TIMEOUT_S)
        except TimeoutError:
            raise invalid(f"no request line within {REQUEST_TIMEOUT_S:g} s") from None
        except ValueError:  # the limit
            raise invalid(f"request line longer than {LINE_LIMIT} bytes") from None

    # ------------------------------------------------------------ generate

    async def _generate(self, conn: Conn, gen: Generate) -> None:
        loaded = self.models.current
        if loaded is None or self.stopping:
            raise RequestError(
                "Unavailable",
                f"no model is loaded ({self.models.config.path}); install it and reload",
            )
        loaded.enter()  # counted from now: a reload does not close it under us
        try:
            stream = await self._submit(loaded.engine, gen)
            await self._follow(conn, stream, gen)
        except asyncio.CancelledError:  # the service is stopping
            conn.send_nowait(
                RequestError(
                    "Unavailable",
                    "the inference service is stopping (the request did not complete)",
                ).line()
            )
            raise
        finally:
            loaded.leave()

    async def _follow(self, conn: Conn, stream: Stream, gen: Generate) -> None:
        """Stream the request's events; a client that hangs up cancels it."""
        watch = asyncio.create_task(until_eof(conn.reader))
        watch.add_done_callback(lambda _: stream.cancel())
        try:
            await self._stream(conn, stream, gen)
        finally:
            watch.cancel()
            stream.cancel()

    async def _submit(self, engine: Engine, gen: Generate) -> Stream:
        """Prepare in a worker thread, then queue."""
        try:
            tokens, params, sampler = await _in_worker(self._prepare, engine, gen)
            return engine.submit(tokens, params, agent=gen.agent, owner=gen.owner, sampler=sampler)
        except Overloaded as e:
            raise RequestError("Overloaded", str(e)) from None
        except RequestTooLong as e:
            raise RequestError("RequestTooLong", str(e)) from None
        except InvalidGrammar as e:
            raise RequestError("InvalidSchema", str(e)) from None
        except EngineClosed as e:
            raise RequestError("Unavailable", str(e)) from None
        except (EngineError, ValueError) as e:  # chat template, empty prompt
            raise invalid(str(e)) from None

    def _prepare(self, engine: Engine, gen: Generate) -> Prepared:
        """In a worker thread: the prompt's tokens (the context limit checked
        first, the cheap refusal), the schema's grammar (its limits checked
        before it is converted; cached) and the sampler (the grammar parsed).
        Messages of 0.85 MB (472k tokens) took 0.29 s to tokenize; the largest
        schemas allowed take up to ~0.1 s (agentd.inference.schema)."""
        if gen.messages is not None:
            tokens = engine.chat_tokens(gen.messages)
        else:
            assert gen.prompt is not None
            tokens = engine.tokenize(gen.prompt, add_special=True, parse_special=True)
        engine.check_length(tokens, gen.params)
        params = gen.params
        if gen.json_schema is not None:
            params = replace(params, grammar=self.grammars.compile(gen.json_schema))
        return tokens, params, engine.sampler(params)

    async def _stream(self, conn: Conn, stream: Stream, gen: Generate) -> None:
        self.requests_total += 1
        self.prompt_tokens += stream.prompt_tokens
        await conn.send(queued_line(stream))
        async for tokens in stream.chunks():
            self.tokens_generated += len(tokens)
            self.rate.add(len(tokens))
            await conn.send(*({"event": "token", "text": t.text} for t in tokens if t.text))
        try:
            r = await stream.result()
        except DecodeError as e:
            raise RequestError("Internal", str(e)) from None
        except EngineClosed as e:
            raise RequestError("Unavailable", str(e)) from None
        if r.finish_reason == "cancelled":  # the client went away
            log.debug(
                "generate #%d owner=%s agent=%s cancelled after %d tokens",
                r.request_id,
                gen.owner,
                gen.agent,
                r.completion_tokens,
            )
            return
        log.debug(
            "generate #%d owner=%s agent=%s prompt=%d completion=%d %s"
            " queued=%.3fs first=%.3fs total=%.3fs",
            r.request_id,
            gen.owner,
            gen.agent,
            r.prompt_tokens,
            r.completion_tokens,
            r.finish_reason,
            r.queued_s,
            r.first_token_s or 0,
            r.total_s,
        )
        await conn.send(done_line(r))

    # ------------------------------------------------------------ embed

    async def _embed(self, conn: Conn, emb: Embed) -> None:
        loaded = self.models.embedding
        if self.stopping:
            raise RequestError("Unavailable", "the inference service is stopping")
        if loaded is None:
            why = self.models.config.embedding or "none is configured"
            raise RequestError(
                "NoEmbeddingModel",
                f"no embedding model is loaded ({why}); install one "
                "(agentctl model install minilm) or set [model] embedding",
            )
        loaded.enter()  # counted from now: a reload does not close it under us
        try:
            await self._embed_on(conn, loaded.embedder, emb, str(loaded.info["name"]))
        except asyncio.CancelledError:  # the service is stopping
            conn.send_nowait(
                RequestError("Unavailable", "the inference service is stopping").line()
            )
            raise
        finally:
            loaded.leave()

    async def _embed_on(self, conn: Conn, embedder: Embedder, emb: Embed, name: str) -> None:
        """Tokenize in a worker thread, queue, wait; a client that hangs up
        takes its texts not yet computed out of the queue."""
        tokens, cut = await asyncio.to_thread(embedder.tokenize, emb.texts)
        try:
            fut = embedder.submit(tokens, cut, emb.key)
        except Overloaded as e:
            raise RequestError("Overloaded", str(e)) from None
        except EngineClosed as e:
            raise RequestError("Unavailable", str(e)) from None
        watch = asyncio.create_task(until_eof(conn.reader))
        try:
            either: list[asyncio.Future[Any]] = [fut, watch]
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
            fut.cancel()  # nothing if done
        if not fut.done() or fut.cancelled():
            return  # the client went away
        try:
            r = fut.result()
        except DecodeError as e:
            raise RequestError("Internal", str(e)) from None
        except EngineClosed as e:
            raise RequestError("Unavailable", str(e)) from None
        self.embed_requests += 1
        self.embed_texts += len(r.vectors)
        self.embed_tokens += r.tokens
        log.debug(
            "embed owner=%s agent=%s texts=%d tokens=%d queued=%.3fs total=%.3fs",
            *(emb.owner, emb.agent, len(r.vectors), r.tokens, r.queued_s, r.total_s),
        )
        line = embedded_line(r.vectors, r.tokens, r.truncated, name, embedder.dimensions, r.total_s)
        await conn.send(line)

    # ------------------------------------------------------------ show, reload

    def show(self) -> dict[str, Any]:
        models = self.models
        loaded = models.current
        stats = [e.stats() for e in models.engines()]
        state = "reloading" if models.reloading else ("loaded" if loaded else "unloaded")
        emb = models.embedding
        queued = sum(e.stats()["queued_texts"] for e in models.embedders())
        return {
            "event": "done",
            "state": state,
            "model": loaded.info if loaded else None,
            "embedding": emb.info if emb else None,
            "config": (loaded.config if loaded else models.config).as_dict(),
            "stats": {
                "queued": sum(s["queued"] for s in stats),
                "active": sum(s["active"] for s in stats),
                "requests_total": self.requests_total,
                "tokens_generated": self.tokens_generated,
                "prompt_tokens": self.prompt_tokens,
                "tokens_per_second": round(self.rate.per_second(), 1),
                "loaded_at": round(loaded.loaded_at, 3) if loaded else None,
                "embed_requests": self.embed_requests,
                "embed_texts": self.embed_texts,
                "embed_tokens": self.embed_tokens,
                "embed_queued_texts": queued,
                "uptime_s": round(time.time() - self.started, 1),
            },
        }

    async def _reload(self, conn: Conn, path: str | None) -> None:
        try:
            with self.models.one_reload():
                await self._do_reload(conn, path)
        except Busy as e:
            raise RequestError("Busy", str(e)) from None

    async def _do_reload(self, conn: Conn, path: str | None) -> None:
        try:
            kind, info, load_s = await self.models.reload(path, _progress_lines(conn))
            with contextlib.suppress(ConnectionError):
                await conn.send(
                    {"event": "done", "kind": kind, "model": info, "load_s": round(load_s, 3)}
                )
        except LoadError as e:
            raise RequestError("LoadError", str(e)) from None
        except asyncio.CancelledError:  # the service is stopping
            conn.send_nowait(
                RequestError(
                    "LoadError", "the inference service is stopping (nothing was loaded)"
                ).line()
            )
            raise


Prepared = tuple[list[int], SamplingParams, Sampler]


async def _in_worker(fn: Callable[..., Prepared], *args: Any) -> Prepared:
    """FN(*ARGS) in a worker thread. Cancelled meanwhile (the service
    stops), the thread runs on and the sampler it makes is freed."""
    fut = asyncio.get_running_loop().run_in_executor(None, fn, *args)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        fut.add_done_callback(_close_prepared)
        raise


def _close_prepared(fut: asyncio.Future[Prepared]) -> None:
    if not fut.cancelled() and fut.exception() is None:
        fut.result()[2].close()


def _progress_lines(conn: Conn) -> Callable[[float], None]:
    """A load's progress as ``progress`` lines, at most one per percent."""
    sent = -1

    def forward(fraction: float) -> None:
        nonlocal sent
        pct = int(fraction * 100)
        if pct > sent and not conn.gone:
            sent = pct
            conn.send_nowait({"event": "progress", "fraction": round(fraction, 3)})

    return forward
