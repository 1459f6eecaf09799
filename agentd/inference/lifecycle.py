"""The model's life cycle in the service: the first load, reloads, retirement.

Invariants:

- A missing or unloadable model does not stop the service: it runs without
  one (``current`` is None) until a reload loads one.
- A reload loads the new engine in a worker thread while the current one
  serves, then swaps; the replaced engine is closed only once its requests in
  flight have finished (:class:`Loaded` counts them). A failed reload
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
from typing import Any

from agentd.inference import model as gguf
from agentd.inference.config import ConfigError, ModelConfig, load_config, resolve
from agentd.inference.engine import Engine
from agentd.inference.errors import LoadError
from agentd.inference.unit import sd_notify

log = logging.getLogger("agentd.inference")


class Busy(Exception):
    """A reload is already in progress."""


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


def load_model(cfg: ModelConfig, progress: Callable[[float], object] | None = None) -> Loaded:
    """Describe and load the model of ``cfg`` (blocking: run it in a thread)."""
    if not os.path.exists(cfg.path):
        raise LoadError(f"{cfg.path}: no such file")
    try:
        info = gguf.describe(cfg.path)
    except gguf.ModelError as e:
        raise LoadError(str(e)) from e
    try:
        cfg = resolve(cfg, info)  # context and sequences from the model
    except ConfigError as e:
        raise LoadError(str(e)) from e
    engine = Engine(cfg.path, cfg.engine_config(), progress=progress)
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


def _close_orphan(fut: asyncio.Future[Loaded]) -> None:
    """A load whose reload was abandoned (SIGTERM): free what it made."""
    if not fut.cancelled() and fut.exception() is None:
        fut.result().engine.close()


class Models:
    """The model being served, and those replaced but still finishing."""

    def __init__(self, config_path: str, config: ModelConfig, stop: asyncio.Event) -> None:
        self.config_path, self.config = config_path, config
        self.current: Loaded | None = None
        self.retiring: set[Loaded] = set()
        self.reloading = False
        self._stop = stop  # set: the service is stopping, abort loads
        self._tasks: set[asyncio.Task[None]] = set()

    def engines(self) -> list[Engine]:
        return [m.engine for m in [self.current, *self.retiring] if m is not None]

    def status(self) -> str:
        if self.current is None:
            return f"no model loaded ({self.config.path}); waiting for a reload"
        info, cfg = self.current.info, self.current.config
        return (
            f"serving {info['name'] or info['path']} "
            f"({cfg.sequences} sequences of {cfg.context} tokens)"
        )

    def _go_on(self, _fraction: float) -> bool:
        """A progress callback: False aborts the load."""
        return not self._stop.is_set()

    async def initial_load(self) -> None:
        if not os.path.exists(self.config.path):
            log.warning(
                "model %s does not exist: starting without a model (install it, then reload)",
                self.config.path,
            )
            return
        sd_notify(f"STATUS=loading {self.config.path}")
        t0 = time.monotonic()
        try:
            self.current = await asyncio.to_thread(load_model, self.config, self._go_on)
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
    ) -> tuple[Loaded, float]:
        """Load the configured model (or ``path``), swap it in and retire the
        old one; the new one and its load time. LoadError, the old one still
        serving. ``progress(fraction)`` runs in this event loop."""
        try:
            cfg = load_config(self.config_path)
        except ConfigError as e:
            raise LoadError(f"bad configuration: {e}") from None
        if path:
            cfg = replace(cfg, path=path)
        sd_notify(f"STATUS=reloading: loading {cfg.path} (the current model serves)")
        t0 = time.monotonic()
        try:
            new = await self._load_in_thread(cfg, progress)
        except LoadError:
            sd_notify(f"STATUS={self.status()}")
            raise
        load_s = time.monotonic() - t0
        old, self.current, self.config = self.current, new, cfg
        if old is not None:
            self.retiring.add(old)
            task = asyncio.get_running_loop().create_task(self._retire(old))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        log.info("reloaded: %s in %.2f s", cfg.path, load_s)
        sd_notify(f"STATUS={self.status()}")
        return new, load_s

    async def _load_in_thread(self, cfg: ModelConfig, progress: Callable[[float], None]) -> Loaded:
        """Load in a worker thread, whose progress callbacks are handed to
        this loop."""
        loop = asyncio.get_running_loop()

        def in_thread(fraction: float) -> bool:
            loop.call_soon_threadsafe(progress, fraction)
            return self._go_on(fraction)

        fut = loop.run_in_executor(None, load_model, cfg, in_thread)
        try:
            loaded = await asyncio.shield(fut)
        except asyncio.CancelledError:  # stopping: the thread goes on, its engine is closed
            fut.add_done_callback(_close_orphan)
            raise
        await asyncio.sleep(0)  # let the last progress callbacks run first
        return loaded

    async def _retire(self, old: Loaded) -> None:
        """Close a replaced engine once its requests have finished."""
        if old.inflight:
            await old.idle.wait()
        await asyncio.to_thread(old.engine.close)
        self.retiring.discard(old)
        log.info("previous model %s freed", old.info["path"])

    async def close(self) -> None:
        """Free every engine (the service is stopping)."""
        engines = self.engines()
        self.current = None

        def close_all() -> None:
            for e in engines:
                e.close()

        await asyncio.to_thread(close_all)
