"""The models' life cycle in the service: the first load, reloads, retirement.

Two models, each optional: the chat model (``current``, an
:class:`~agentd.inference.engine.Engine`) and the embedding model
(``embedding``, an :class:`~agentd.inference.embedder.Embedder`), their
decodes taking turns (one :class:`~agentd.inference.turns.Turns`).

Invariants:

- A missing or unloadable model does not stop the service: it runs without
  one (``current`` or ``embedding`` is None) until a reload loads one.
- Each model is of its kind, by its GGUF header (agentd.inference.model):
  a reload with a path replaces the model of that file's kind; a chat model
  is never loaded as the embedding model, nor the reverse.
- A reload loads the new model in a worker thread while the current one
  serves, then swaps; the replaced one is closed only once its requests in
  flight have finished (:class:`InFlight` counts them). A failed reload
  changes nothing. One reload at a time (:class:`Busy`).
- A load abandoned because the service stops (SIGTERM) is aborted through
  llama.cpp's progress callback, and whatever it made is freed.
- systemd's ``STATUS=`` always says what is loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from agentd.inference import model as gguf
from agentd.inference.config import ConfigError, ModelConfig, load_config, resolve
from agentd.inference.embedder import Embedder
from agentd.inference.engine import Engine
from agentd.inference.errors import LoadError
from agentd.inference.turns import Turns
from agentd.inference.unit import sd_notify

log = logging.getLogger("agentd.inference")


_M = TypeVar("_M", bound="InFlight")


class Busy(Exception):
    """A reload is already in progress."""


@dataclass(eq=False)
class InFlight:
    """A loaded model's requests in flight (so that a replaced model is closed
    only once they are done)."""

    inflight: int = field(default=0, init=False)
    idle: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    def enter(self) -> None:
        self.inflight += 1
        self.idle.clear()

    def leave(self) -> None:
        self.inflight -= 1
        if self.inflight == 0:
            self.idle.set()

    def close(self) -> None:
        raise NotImplementedError


@dataclass(eq=False)
class Loaded(InFlight):
    """A loaded engine and what ``show`` says about it."""

    engine: Engine
    config: ModelConfig
    info: dict[str, Any]
    loaded_at: float

    def close(self) -> None:
        self.engine.close()


@dataclass(eq=False)
class LoadedEmbedder(InFlight):
    """A loaded embedding model and what ``show`` says about it."""

    embedder: Embedder
    info: dict[str, Any]
    loaded_at: float

    def close(self) -> None:
        self.embedder.close()


def _describe(path: str, kind: str) -> gguf.ModelInfo:
    if not os.path.exists(path):
        raise LoadError(f"{path}: no such file")
    try:
        info = gguf.describe(path)
    except gguf.ModelError as e:
        raise LoadError(str(e)) from e
    if info.kind != kind:
        where = "[model] embedding" if info.kind == "embedding" else "[model] path"
        raise LoadError(f"{path} is a{'n' if kind == 'chat' else ''} {info.kind} model: "
                        f"it belongs in {where}, not as the {kind} model")  # fmt: skip
    return info


def load_model(
    cfg: ModelConfig,
    progress: Callable[[float], object] | None = None,
    turns: Turns | None = None,
) -> Loaded:
    """Describe and load the model of ``cfg`` (blocking: run it in a thread)."""
    info = _describe(cfg.path, "chat")
    try:
        cfg = resolve(cfg, info)  # context and sequences from the model
    except ConfigError as e:
        raise LoadError(str(e)) from e
    engine = Engine(cfg.path, cfg.engine_config(), progress=progress, turns=turns)
    return Loaded(
        engine=engine,
        config=cfg,
        loaded_at=time.time(),
        info={
            "path": info.path,
            "size": info.size,
            "architecture": info.architecture,
            "name": info.name,
            "quantization": info.file_type,
            "n_params": info.n_params,
            "context_train": info.n_ctx_train,
            "description": engine.description,
        },
    )


def load_embedder(
    path: str,
    progress: Callable[[float], object] | None = None,
    turns: Turns | None = None,
) -> LoadedEmbedder:
    """Describe and load the embedding model at PATH (blocking)."""
    info = _describe(path, "embedding")
    emb = Embedder(path, progress=progress, turns=turns)
    return LoadedEmbedder(
        embedder=emb,
        loaded_at=time.time(),
        info={
            "path": info.path,
            "size": info.size,
            "architecture": info.architecture,
            "name": info.name,
            "quantization": info.file_type,
            "n_params": info.n_params,
            "dimensions": emb.dimensions,
            "pooling": emb.pooling,
            "context": emb.context,  # tokens per text; longer ones are cut
        },
    )


def _close_orphan(fut: asyncio.Future[Any]) -> None:
    """A load whose reload was abandoned (SIGTERM): free what it made."""
    if not fut.cancelled() and fut.exception() is None:
        fut.result().close()


class Models:
    """The models being served, and those replaced but still finishing."""

    def __init__(self, config_path: str, config: ModelConfig, stop: asyncio.Event) -> None:
        self.config_path, self.config = config_path, config
        self.current: Loaded | None = None
        self.embedding: LoadedEmbedder | None = None
        self.retiring: set[InFlight] = set()
        self.reloading = False
        self.turns = Turns()  # the engine's and the embedder's decodes, in turn
        self._stop = stop  # set: the service is stopping, abort loads
        self._tasks: set[asyncio.Task[None]] = set()

    def engines(self) -> list[Engine]:
        return [m.engine for m in [self.current, *self.retiring] if isinstance(m, Loaded)]

    def embedders(self) -> list[Embedder]:
        models = [self.embedding, *self.retiring]
        return [m.embedder for m in models if isinstance(m, LoadedEmbedder)]

    def status(self) -> str:
        if self.current is None:
            out = f"no model loaded ({self.config.path}); waiting for a reload"
        else:
            info, cfg = self.current.info, self.current.config
            out = (
                f"serving {info['name'] or info['path']} "
                f"({cfg.sequences} sequences of {cfg.context} tokens)"
            )
        if self.embedding is not None:
            out += f"; embeddings: {self.embedding.info['name'] or self.embedding.info['path']}"
        return out

    def _go_on(self, _fraction: float) -> bool:
        """A progress callback: False aborts the load."""
        return not self._stop.is_set()

    async def initial_load(self) -> None:
        await self._initial_chat()
        path = self.config.embedding
        if path is None or self._stop.is_set():
            return
        try:
            self.embedding = await asyncio.to_thread(load_embedder, path, self._go_on, self.turns)
        except LoadError as e:
            if not self._stop.is_set():
                log.warning("cannot load the embedding model: %s; starting without one", e)
            return
        log.info("loaded the embedding model %s", path)

    async def _initial_chat(self) -> None:
        if not os.path.exists(self.config.path):
            log.warning(
                "model %s does not exist: starting without a model (install it, then reload)",
                self.config.path,
            )
            return
        sd_notify(f"STATUS=loading {self.config.path}")
        t0 = time.monotonic()
        try:
            self.current = await asyncio.to_thread(load_model, self.config, self._go_on, self.turns)
        except LoadError as e:
            if not self._stop.is_set():
                log.warning("cannot load the model: %s; starting without a model", e)
            return
        log.info("loaded %s in %.2f s", self.config.path, time.monotonic() - t0)

    @contextlib.contextmanager
    def one_reload(self) -> Iterator[None]:
        """Held for the whole of a reload; Busy if another one holds it."""
        if self.reloading:
            raise Busy("a reload is already in progress")
        self.reloading = True
        try:
            yield
        finally:
            self.reloading = False

    async def reload(
        self, path: str | None, progress: Callable[[float], None]
    ) -> tuple[str, dict[str, Any], float]:
        """Load the configured models (or the one at ``path``, as the model of
        its kind), swap them in and retire the old ones; (the kind, what
        ``show`` says of the model, its load time). LoadError: the old ones
        still serve. ``progress(fraction)`` runs in this event loop."""
        try:
            cfg = load_config(self.config_path)
        except ConfigError as e:
            raise LoadError(f"bad configuration: {e}") from None
        kind = "chat"
        if path:
            kind = await asyncio.to_thread(_kind_of, path)
            if kind == "embedding":
                cfg = replace(self.config, embedding=path)
            else:
                cfg = replace(cfg, path=path)
        sd_notify(f"STATUS=reloading: loading {path or cfg.path} (the current model serves)")
        t0 = time.monotonic()
        try:
            chat, swap, emb = await self._load_both(cfg, progress, kind, bool(path))
        except LoadError:
            sd_notify(f"STATUS={self.status()}")
            raise
        load_s = time.monotonic() - t0
        self.config = cfg
        if chat is not None:
            self._retire_later(self.current)
            self.current = chat
        if swap:
            self._retire_later(self.embedding)
            self.embedding = emb
        log.info("reloaded: %s in %.2f s", path or cfg.path, load_s)
        sd_notify(f"STATUS={self.status()}")
        loaded = self.embedding if kind == "embedding" else self.current
        return kind, loaded.info if loaded is not None else {}, load_s

    async def _load_both(
        self, cfg: ModelConfig, progress: Callable[[float], None], kind: str, one: bool
    ) -> tuple[Loaded | None, bool, LoadedEmbedder | None]:
        """The new chat model (None: unchanged), whether the embedding model
        changes, and the new one (None: none configured any more). ONE: only
        the model of KIND; else the chat model, and the embedding model if
        its path changed."""
        chat: Loaded | None = None
        if kind == "chat":
            chat = await self._load_in_thread(lambda cb: load_model(cfg, cb, self.turns), progress)
        if one and kind == "chat":
            return chat, False, None
        old = self.embedding.info["path"] if self.embedding is not None else None
        if not one and cfg.embedding == old:  # a path given is loaded again (a new file)
            return chat, False, None
        if cfg.embedding is None:
            return chat, True, None
        path = cfg.embedding
        try:
            emb = await self._load_in_thread(
                lambda cb: load_embedder(path, cb, self.turns),
                progress if chat is None else (lambda _f: None),
            )
        except BaseException:
            if chat is not None:
                await asyncio.to_thread(chat.close)
            raise
        return chat, True, emb

    def _retire_later(self, old: InFlight | None) -> None:
        if old is None:
            return
        self.retiring.add(old)
        task = asyncio.get_running_loop().create_task(self._retire(old))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _load_in_thread(
        self, load: Callable[[Callable[[float], object]], _M], progress: Callable[[float], None]
    ) -> _M:
        """LOAD(callback) in a worker thread, whose progress callbacks are
        handed to this loop."""
        loop = asyncio.get_running_loop()

        def in_thread(fraction: float) -> bool:
            loop.call_soon_threadsafe(progress, fraction)
            return self._go_on(fraction)

        fut = loop.run_in_executor(None, load, in_thread)
        try:
            loaded = await asyncio.shield(fut)
        except asyncio.CancelledError:  # stopping: the thread goes on, its model is closed
            fut.add_done_callback(_close_orphan)
            raise
        await asyncio.sleep(0)  # let the last progress callbacks run first
        return loaded

    async def _retire(self, old: InFlight) -> None:
        """Close a replaced model once its requests have finished."""
        if old.inflight:
            await old.idle.wait()
        await asyncio.to_thread(old.close)
        self.retiring.discard(old)
        info = old.info if isinstance(old, Loaded | LoadedEmbedder) else {}
        log.info("previous model %s freed", info.get("path"))

    async def close(self) -> None:
        """Free every model (the service is stopping)."""
        models: list[InFlight] = [m for m in (self.current, self.embedding) if m is not None]
        models += list(self.retiring)
        self.current = self.embedding = None

        def close_all() -> None:
            for m in models:
                m.close()

        await asyncio.to_thread(close_all)


def _kind_of(path: str) -> str:
    """The kind of the model at PATH (LoadError if it cannot be read)."""
    if not os.path.exists(path):
        raise LoadError(f"{path}: no such file")
    try:
        return gguf.describe(path).kind
    except gguf.ModelError as e:
        raise LoadError(str(e)) from e
