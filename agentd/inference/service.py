"""agentd-inference: one GGUF model served on a Unix socket.

The contract is docs/inference-protocol.md: JSON lines, one request per
connection, ops ``generate`` (streamed), ``show`` and ``reload``. Requests go
to an :class:`~agentd.inference.engine.Engine` (continuous batching); this
module is the socket, the checks around it and the model's life cycle:

- the config is the ``[model]`` table of agentd's TOML file, nothing else;
  a bad value exits with EX_CONFIG (78) at start, or fails a reload;
- a missing (or unloadable) model does not stop the service: it starts
  "unloaded" and answers ``Unavailable`` until a ``reload`` loads one;
- ``reload`` loads the new engine in a worker thread while the old one
  serves, swaps, and closes the old one once its requests have finished;
- every connection's peer UID (``SO_PEERCRED``) must be allowed;
- systemd: ``READY=1`` once the socket listens, ``STATUS=`` lines, SIGTERM
  stops accepting, fails what is in flight and exits 0.

It imports nothing of agentd outside agentd.inference.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import math
import os
import signal
import socket
import stat
import struct
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from agentd.inference import model as gguf
from agentd.inference.engine import (
    DecodeError,
    Engine,
    EngineClosed,
    EngineConfig,
    EngineError,
    InvalidGrammar,
    LoadError,
    Overloaded,
    RequestTooLong,
    SamplingParams,
    Stream,
    schema_to_grammar,
)

log = logging.getLogger("agentd.inference")

DEFAULT_CONFIG = "/etc/agentd/agentd.toml"
DEFAULT_SOCKET = "/run/agentd-inference/socket"
DEFAULT_MODEL = f"/var/lib/agentd-models/{gguf.DEFAULT_FILENAME}"
EX_CONFIG = 78  # sysexits.h: configuration error
LINE_LIMIT = 1 << 20  # longest request line
REQUEST_TIMEOUT_S = 30.0  # a connection must send its request line within this
STOP_GRACE_S = 5.0  # SIGTERM: how long in-flight handlers get to say goodbye
MAX_STOP_STRINGS = 16
GRAMMAR_CACHE = 64


# ---------------------------------------------------------------- config


class ConfigError(Exception):
    """The [model] table has a bad key or value."""


def _default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ModelConfig:
    """The [model] table (docs/inference-protocol.md, Configuration)."""

    path: str = DEFAULT_MODEL
    context: int = 1024
    sequences: int = 16
    batch: int = 128
    threads: int = field(default_factory=_default_threads)
    max_queue: int = 64
    max_queue_per_agent: int = 16

    def engine_config(self) -> EngineConfig:
        return EngineConfig(n_seq_max=self.sequences, n_ctx_per_seq=self.context,
                            n_batch=self.batch, n_threads=self.threads,
                            max_queue=self.max_queue,
                            max_queue_per_agent=min(self.max_queue_per_agent, self.max_queue))

    def as_dict(self) -> dict[str, Any]:
        """What ``show`` reports as ``config``."""
        d = asdict(self)
        del d["path"]
        return d


# key: (lowest, highest) for the integers
_RANGES: dict[str, tuple[int, int]] = {
    "context": (64, 1 << 20), "sequences": (1, 256), "batch": (1, 1 << 16),
    "threads": (1, 1024), "max_queue": (1, 1 << 20), "max_queue_per_agent": (1, 1 << 20),
}


def parse_model_table(table: dict[str, Any]) -> ModelConfig:
    """Validate the [model] table; an unknown key is refused, as agentd refuses
    its own (a typo must not pass silently)."""
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key == "path":
            if not isinstance(value, str) or not value.startswith("/"):
                raise ConfigError("[model] path must be an absolute path (a string)")
            values[key] = value
        elif key in _RANGES:
            lo, hi = _RANGES[key]
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ConfigError(f"[model] {key} must be an integer in {lo}..{hi}, "
                                  f"not {value!r}")
            values[key] = value
        else:
            known = ", ".join(["path", *_RANGES])
            raise ConfigError(f"[model] {key}: unknown key (known: {known})")
    cfg = ModelConfig(**values)
    if cfg.batch < cfg.sequences:
        raise ConfigError(f"[model] batch ({cfg.batch}) must be at least sequences "
                          f"({cfg.sequences}): every sequence needs a slot in each step")
    return cfg


def load_config(path: str | os.PathLike[str]) -> ModelConfig:
    """The [model] table of the TOML file at ``path`` (defaults if the file or
    the table is absent); other tables are not looked at."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        log.info("%s does not exist: default model settings", path)
        return ModelConfig()
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from e
    table = doc.get("model", {})
    if isinstance(table, str):  # `model = "/path/to/x.gguf"`, the short form
        table = {"path": table}
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: model must be a table, or a GGUF file's path")
    try:
        return parse_model_table(table)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


# ---------------------------------------------------------------- errors and requests


class RequestError(Exception):
    """A request ends with an ``error`` line of this kind (the doc's table)."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(message)
        self.error = error

    def line(self) -> dict[str, Any]:
        return {"event": "error", "error": self.error, "message": str(self)}


def _invalid(message: str) -> RequestError:
    return RequestError("InvalidRequest", message)


_GENERATE_FIELDS = frozenset({"op", "agent", "messages", "prompt", "max_tokens", "temperature",
                              "top_p", "top_k", "seed", "stop", "json_schema"})


@dataclass(frozen=True)
class Generate:
    agent: str
    messages: list[dict[str, str]] | None
    prompt: str | None
    params: SamplingParams
    json_schema: dict[str, Any] | None


def _number(req: dict[str, Any], key: str, default: float) -> float:
    value = req.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _invalid(f"{key} must be a number")
    return float(value)


def _integer(req: dict[str, Any], key: str, default: int) -> int:
    value = req.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f"{key} must be an integer")
    return value


def _messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise _invalid("messages must be a non-empty list")
    for m in value:
        if (not isinstance(m, dict) or set(m) != {"role", "content"}
                or not isinstance(m["role"], str) or not isinstance(m["content"], str)):
            raise _invalid('each message must be {"role": string, "content": string}')
    return value


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if (not isinstance(value, list) or len(value) > MAX_STOP_STRINGS
            or not all(isinstance(s, str) for s in value)):
        raise _invalid(f"stop must be a list of at most {MAX_STOP_STRINGS} strings")
    return tuple(value)


def parse_generate(req: dict[str, Any]) -> Generate:
    """Check a generate request's fields (types and ranges; the context limit
    is the engine's)."""
    unknown = set(req) - _GENERATE_FIELDS
    if unknown:
        raise _invalid(f"unknown field(s): {', '.join(sorted(unknown))}")
    agent = req.get("agent", "")
    if not isinstance(agent, str) or len(agent) > 256:
        raise _invalid("agent must be a string (at most 256 characters)")
    if ("messages" in req) == ("prompt" in req):
        raise _invalid("exactly one of messages and prompt is required")
    messages = _messages(req["messages"]) if "messages" in req else None
    prompt = req.get("prompt")
    if messages is None and (not isinstance(prompt, str) or not prompt):
        raise _invalid("prompt must be a non-empty string")
    seed = req.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                             or not 0 <= seed < 1 << 64):
        raise _invalid("seed must be null or an integer in 0..2^64-1")
    schema = req.get("json_schema")
    if schema is not None and not isinstance(schema, dict):
        raise _invalid("json_schema must be null or an object")
    try:
        params = SamplingParams(
            max_tokens=_integer(req, "max_tokens", 128),
            temperature=_number(req, "temperature", 0.0), top_p=_number(req, "top_p", 1.0),
            top_k=_integer(req, "top_k", 0), seed=seed, stop=_stop(req.get("stop")))
    except ValueError as e:
        raise _invalid(str(e)) from None
    return Generate(agent, messages, prompt if messages is None else None, params, schema)


# ---------------------------------------------------------------- systemd


def sd_notify(state: str) -> bool:
    """Send ``state`` to systemd's notification socket, if there is one (the
    sd_notify protocol: one datagram to $NOTIFY_SOCKET; '@' is abstract)."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(state.encode())
        return True
    except OSError as e:
        log.debug("sd_notify %r: %s", state, e)
        return False


def peer_uid(writer: asyncio.StreamWriter) -> int:
    sock = writer.get_extra_info("socket")
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


# ---------------------------------------------------------------- the model


@dataclass(eq=False)
class Loaded:
    """A loaded engine, what ``show`` says about it, and its requests in flight
    (so a replaced engine is closed only once they are done)."""

    engine: Engine
    config: ModelConfig
    info: dict[str, Any]
    loaded_at: float
    inflight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def enter(self) -> None:
        self.inflight += 1
        self.idle.clear()

    def leave(self) -> None:
        self.inflight -= 1
        if self.inflight == 0:
            self.idle.set()


def load_model(cfg: ModelConfig, progress: Callable[[float], object] | None = None
               ) -> Loaded:
    """Describe and load the model of ``cfg`` (blocking: run it in a thread)."""
    if not os.path.exists(cfg.path):
        raise LoadError(f"{cfg.path}: no such file")
    try:
        info = gguf.describe(cfg.path)
    except gguf.ModelError as e:
        raise LoadError(str(e)) from e
    engine = Engine(cfg.path, cfg.engine_config(), progress=progress)
    return Loaded(engine=engine, config=cfg, loaded_at=time.time(), info={
        "path": info.path, "size": info.size, "architecture": info.architecture,
        "name": info.name, "quantization": info.file_type, "n_params": info.n_params,
        "context_train": info.n_ctx_train, "description": engine.description})


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


# ---------------------------------------------------------------- connections


class Conn:
    """One client connection: JSON lines out; writes after the peer left are
    dropped (the request is being cancelled anyway)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @property
    def gone(self) -> bool:
        return self.writer.is_closing()

    def send_nowait(self, *events: dict[str, Any]) -> None:
        if events and not self.gone:
            self.writer.write(b"".join(_line(e) for e in events))

    async def send(self, *events: dict[str, Any]) -> None:
        self.send_nowait(*events)
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await self.writer.wait_closed()


def _line(event: dict[str, Any]) -> bytes:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


async def _until_eof(reader: asyncio.StreamReader) -> None:
    """Returns when the client has closed (its half of) the connection."""
    with contextlib.suppress(OSError):
        while await reader.read(4096):
            pass


# ---------------------------------------------------------------- the service


class Service:
    """The socket server and the model it serves."""

    def __init__(self, config_path: str, socket_path: str, allow_uids: set[int],
                 config: ModelConfig) -> None:
        self.config_path, self.socket_path = config_path, Path(socket_path)
        self.allow_uids = allow_uids
        self.config = config
        self.current: Loaded | None = None
        self.retiring: set[Loaded] = set()
        self.reloading = False
        self.stopping = False
        self.started = time.time()
        self.requests_total = self.tokens_generated = self.prompt_tokens = 0
        self.rate = TokenRate()
        self._handlers: set[asyncio.Task[None]] = set()
        self._grammars: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._stop = asyncio.Event()

    # ------------------------------------------------------------ life cycle

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        await self._initial_load()
        if self._stop.is_set():
            return 0
        server = await self._listen()
        log.info("listening on %s (allowed uids: %s)", self.socket_path,
                 ", ".join(map(str, sorted(self.allow_uids))))
        sd_notify(f"READY=1\nSTATUS={self._status()}")
        await self._stop.wait()
        log.info("stopping")
        sd_notify("STOPPING=1\nSTATUS=stopping")
        await self._shutdown(server)
        return 0

    def _status(self) -> str:
        if self.current is None:
            return f"no model loaded ({self.config.path}); waiting for a reload"
        info = self.current.info
        return f"serving {info['name'] or info['path']} ({self.config.sequences} sequences)"

    def _abort_load(self, _fraction: float) -> bool:
        return not self._stop.is_set()

    async def _initial_load(self) -> None:
        if not os.path.exists(self.config.path):
            log.warning("model %s does not exist: starting without a model (install it, "
                        "then reload)", self.config.path)
            return
        sd_notify(f"STATUS=loading {self.config.path}")
        t0 = time.monotonic()
        try:
            self.current = await asyncio.to_thread(load_model, self.config, self._abort_load)
        except LoadError as e:
            if not self._stop.is_set():
                log.warning("cannot load the model: %s; starting without a model", e)
            return
        log.info("loaded %s in %.2f s", self.config.path, time.monotonic() - t0)

    async def _listen(self) -> asyncio.AbstractServer:
        sock = bind_socket(self.socket_path)
        return await asyncio.start_unix_server(self._handle, sock=sock, limit=LINE_LIMIT)

    async def _shutdown(self, server: asyncio.AbstractServer) -> None:
        """Stop accepting, end every connection (generate requests get an
        ``Unavailable`` error line), then free the engines."""
        self.stopping = True
        server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=STOP_GRACE_S)
        engines = [m.engine for m in [self.current, *self.retiring] if m is not None]
        self.current = None
        await asyncio.to_thread(lambda: [e.close() for e in engines])
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
        req = await self._read_request(conn)
        if req is None:
            return
        op = req.get("op")
        if op == "generate":
            await self._generate(conn, parse_generate(req))
        elif op == "show":
            if set(req) != {"op"}:
                raise _invalid("show takes no fields")
            await conn.send(self.show())
        elif op == "reload":
            await self._reload(conn, req)
        else:
            raise _invalid(f"unknown op {op!r} (generate, show, reload)")

    async def _read_request(self, conn: Conn) -> dict[str, Any] | None:
        try:
            line = await asyncio.wait_for(conn.reader.readline(), REQUEST_TIMEOUT_S)
        except TimeoutError:
            raise _invalid(f"no request line within {REQUEST_TIMEOUT_S:g} s") from None
        except ValueError:  # the limit
            raise _invalid(f"request line longer than {LINE_LIMIT} bytes") from None
        if not line.strip():
            return None
        try:
            req = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise _invalid(f"not a JSON line: {e}") from None
        if not isinstance(req, dict):
            raise _invalid("a request is a JSON object")
        return req

    # ------------------------------------------------------------ generate

    async def _generate(self, conn: Conn, gen: Generate) -> None:
        loaded = self.current
        if loaded is None or self.stopping:
            raise RequestError("Unavailable", f"no model is loaded ({self.config.path}); "
                               "install it and reload")
        stream = self._submit(loaded.engine, gen)
        loaded.enter()
        watch = asyncio.create_task(_until_eof(conn.reader))
        watch.add_done_callback(lambda _: stream.cancel())
        try:
            await self._stream(conn, stream, gen)
        except asyncio.CancelledError:  # the service is stopping
            stream.cancel()
            conn.send_nowait(RequestError("Unavailable", "the inference service is stopping "
                                          "(the request did not complete)").line())
            raise
        finally:
            watch.cancel()
            stream.cancel()
            loaded.leave()

    def _submit(self, engine: Engine, gen: Generate) -> Stream:
        """Tokenize and queue (synchronously: no other request can slip in
        between choosing the engine and counting this request on it)."""
        params = gen.params
        if gen.json_schema is not None:
            params = replace(params, grammar=self._grammar(gen.json_schema))
        try:
            if gen.messages is not None:
                tokens = engine.chat_tokens(gen.messages)
            else:
                assert gen.prompt is not None
                tokens = engine.tokenize(gen.prompt, add_special=True, parse_special=True)
            return engine.submit(tokens, params, agent=gen.agent)
        except Overloaded as e:
            raise RequestError("Overloaded", str(e)) from None
        except RequestTooLong as e:
            raise RequestError("RequestTooLong", str(e)) from None
        except InvalidGrammar as e:
            raise RequestError("InvalidSchema", str(e)) from None
        except EngineClosed as e:
            raise RequestError("Unavailable", str(e)) from None
        except (EngineError, ValueError) as e:  # chat template, empty prompt
            raise _invalid(str(e)) from None

    def _grammar(self, schema: dict[str, Any]) -> str:
        key = json.dumps(schema, sort_keys=True)
        gbnf = self._grammars.get(key)
        if gbnf is None:
            try:
                gbnf = schema_to_grammar(schema)
            except InvalidGrammar as e:
                raise RequestError("InvalidSchema", str(e)) from None
            self._grammars[key] = gbnf
            if len(self._grammars) > GRAMMAR_CACHE:
                self._grammars.popitem(last=False)
        self._grammars.move_to_end(key)
        return gbnf

    async def _stream(self, conn: Conn, stream: Stream, gen: Generate) -> None:
        self.requests_total += 1
        self.prompt_tokens += stream.prompt_tokens
        await conn.send({"event": "queued", "request_id": stream.request_id,
                         "prompt_tokens": stream.prompt_tokens, "queued": stream.queued})
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
            log.debug("generate #%d agent=%s cancelled after %d tokens", r.request_id,
                      gen.agent, r.completion_tokens)
            return
        log.debug("generate #%d agent=%s prompt=%d completion=%d %s queued=%.3fs "
                  "first=%.3fs total=%.3fs", r.request_id, gen.agent, r.prompt_tokens,
                  r.completion_tokens, r.finish_reason, r.queued_s, r.first_token_s or 0,
                  r.total_s)
        await conn.send({
            "event": "done", "text": r.text, "finish_reason": r.finish_reason,
            "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
            "queued_s": round(r.queued_s, 4),
            "first_token_s": None if r.first_token_s is None else round(r.first_token_s, 4),
            "total_s": round(r.total_s, 4)})

    # ------------------------------------------------------------ show

    def show(self) -> dict[str, Any]:
        loaded = self.current
        engines = [m.engine for m in [loaded, *self.retiring] if m is not None]
        stats = [e.stats() for e in engines]
        state = "reloading" if self.reloading else ("loaded" if loaded else "unloaded")
        return {"event": "done", "state": state,
                "model": loaded.info if loaded else None,
                "config": (loaded.config if loaded else self.config).as_dict(),
                "stats": {
                    "queued": sum(s["queued"] for s in stats),
                    "active": sum(s["active"] for s in stats),
                    "requests_total": self.requests_total,
                    "tokens_generated": self.tokens_generated,
                    "prompt_tokens": self.prompt_tokens,
                    "tokens_per_second": round(self.rate.per_second(), 1),
                    "loaded_at": round(loaded.loaded_at, 3) if loaded else None,
                    "uptime_s": round(time.time() - self.started, 1)}}

    # ------------------------------------------------------------ reload

    async def _reload(self, conn: Conn, req: dict[str, Any]) -> None:
        if set(req) - {"op", "path"}:
            raise _invalid("reload takes only path")
        path = req.get("path")
        if path is not None and (not isinstance(path, str) or not path.startswith("/")):
            raise _invalid("path must be an absolute path")
        if self.reloading:
            raise RequestError("Busy", "a reload is already in progress")
        self.reloading = True
        try:
            await self._do_reload(conn, path)
        except asyncio.CancelledError:  # the service is stopping
            conn.send_nowait(RequestError("LoadError", "the inference service is stopping "
                                          "(nothing was loaded)").line())
            raise
        finally:
            self.reloading = False

    async def _do_reload(self, conn: Conn, path: str | None) -> None:
        try:
            cfg = load_config(self.config_path)
        except ConfigError as e:
            raise RequestError("LoadError", f"bad configuration: {e}") from None
        if path:
            cfg = replace(cfg, path=path)
        sd_notify(f"STATUS=reloading: loading {cfg.path} (the current model serves)")
        t0 = time.monotonic()
        try:
            new = await self._load_with_progress(conn, cfg)
        except LoadError as e:
            sd_notify(f"STATUS={self._status()}")
            raise RequestError("LoadError", str(e)) from None
        load_s = time.monotonic() - t0
        old, self.current, self.config = self.current, new, cfg
        if old is not None:
            self.retiring.add(old)
            asyncio.get_running_loop().create_task(self._retire(old))
        log.info("reloaded: %s in %.2f s", cfg.path, load_s)
        sd_notify(f"STATUS={self._status()}")
        with contextlib.suppress(ConnectionError):
            await conn.send({"event": "done", "model": new.info, "load_s": round(load_s, 3)})

    async def _load_with_progress(self, conn: Conn, cfg: ModelConfig) -> Loaded:
        """Load in a worker thread; its progress callbacks become ``progress``
        lines (at most one per percent), written from this loop."""
        loop = asyncio.get_running_loop()
        sent = -1

        def forward(fraction: float) -> None:
            nonlocal sent
            pct = int(fraction * 100)
            if pct > sent and not conn.gone:
                sent = pct
                conn.send_nowait({"event": "progress", "fraction": round(fraction, 3)})

        def progress(fraction: float) -> bool:
            loop.call_soon_threadsafe(forward, fraction)
            return not self._stop.is_set()

        fut = loop.run_in_executor(None, load_model, cfg, progress)
        try:
            loaded = await asyncio.shield(fut)
        except asyncio.CancelledError:  # stopping: the thread goes on, its engine is closed
            fut.add_done_callback(_close_orphan)
            raise
        await asyncio.sleep(0)  # let the last progress lines go first
        return loaded

    async def _retire(self, old: Loaded) -> None:
        """Close a replaced engine once its requests have finished."""
        if old.inflight:
            await old.idle.wait()
        await asyncio.to_thread(old.engine.close)
        self.retiring.discard(old)
        log.info("previous model %s freed", old.info["path"])


def _close_orphan(fut: asyncio.Future[Loaded]) -> None:
    """A load whose reload was abandoned (SIGTERM): free what it made."""
    if not fut.cancelled() and fut.exception() is None:
        fut.result().engine.close()


# ---------------------------------------------------------------- the socket


def bind_socket(path: Path) -> socket.socket:
    """A listening socket at ``path``, mode 0600, its directory created (0700)
    if missing; a stale socket file is replaced, a live one is an error."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise OSError(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:  # nobody listens: stale
            path.unlink()
        else:
            raise OSError(f"another process is listening on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(128)
    sock.setblocking(False)
    return sock


# ---------------------------------------------------------------- main


_PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
               logging.CRITICAL: 2}


class _JournalFormatter(logging.Formatter):
    """``<priority>message`` lines: journald reads the priority prefix."""

    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITIES.get(record.levelno, 6)
        return "\n".join(f"<{prio}>{line}" for line in super().format(record).splitlines())


def _setup_logging(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter("agentd-inference: %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    log.setLevel(logging.DEBUG if debug else logging.INFO)
    # llama.cpp logs hundreds of lines at info and debug per model load
    logging.getLogger("agentd.inference.llama").setLevel(logging.WARNING)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="agentd-inference",
        description="Serve one GGUF model to agentd on a Unix socket "
                    "(docs/inference-protocol.md).")
    ap.add_argument("--config", default=DEFAULT_CONFIG,
                    help=f"TOML file whose [model] table is read (default {DEFAULT_CONFIG})")
    ap.add_argument("--socket", default=DEFAULT_SOCKET,
                    help=f"the socket to listen on (default {DEFAULT_SOCKET})")
    ap.add_argument("--allow-uid", type=int, action="append", metavar="UID",
                    help="a UID that may connect (repeatable; default: 0 only)")
    ap.add_argument("--debug", action="store_true",
                    help="log one line per request")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of /usr/libexec/agentd/agentd-inference."""
    args = parse_args(argv)
    _setup_logging(args.debug)
    try:
        config = load_config(args.config)
    except ConfigError as e:
        log.error("bad configuration: %s", e)
        return EX_CONFIG
    allow = set(args.allow_uid) if args.allow_uid else {0}
    service = Service(args.config, args.socket, allow, config)
    try:
        return asyncio.run(service.run())
    except OSError as e:
        log.error("%s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
