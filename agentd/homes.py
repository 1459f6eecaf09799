"""Agent homes: /home/agents/NAME, 0700, owned by the agent; made, archived, removed.

A home is written by its agent, so agentd treats it as hostile input. Making
one never adopts what is already there (a directory left by someone else
would hand its contents to the new agent): an existing path is refused. What
is slow or unbounded (walking, archiving, deleting a tree the agent shaped)
never runs on agentd's event loop: agentd.homework does it in a child process
in its own session, awaited asynchronously, bounded in time (killed with its
whole process group on timeout or cancellation) and in size (see
agentd.homework), at most two at a time. A failure is a typed HomeWorkError
with the reason; the caller decides (the registry keeps the agent
``removing`` for an administrator). What cannot be deleted can be set aside:
renamed, in one step, into a root-only directory beside the homes.

Archives are kept within a retention (issue 10, finding 9; agentd.toml
archive_retention_count, _bytes, _days): whenever one is written, and at
agentd's start, the oldest archives beyond any bound are deleted, so repeated
`rm --keep-home` cannot fill /var/lib/agentd. The archive just written is
always kept, whatever its size. Each deletion is reported to ``on_prune``
(agentd audits it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import stat
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import AlreadyExists, SystemError_

HOMEWORK = Path(__file__).with_name("homework.py")
# Homes set aside (a forced removal that could not delete, an orphan that could
# not be archived, a home in the way): root-only, never listed as a home.
ASIDE = ".removed"
GiB = 1 << 30


@dataclass(frozen=True)
class HomeLimits:
    """Bounds of the work on one home (the defaults are agentd's).

    archive_max_bytes: homes holding more data than this (allocated blocks:
    sparse holes are free) are not archived; the removal stops with the
    reason and the home intact, for the owner to remove without --keep-home
    or an administrator to force. Measured on the build machine: the helper
    archives ~65 MB/s (gzip on one core: 800 MB in 12.4 s), so 4 GiB takes
    about a minute; it deletes ~20,000 entries/s even 100,000 directories deep
    (200,001 entries in 10 s).
    archive_timeout, remove_timeout: seconds before the helper is killed, far
    above those rates so only a pathological home (millions of entries) hits
    them.
    """

    archive_max_bytes: int = 4 * GiB
    archive_timeout: float = 30 * 60
    remove_timeout: float = 30 * 60
    concurrent: int = 2


@dataclass(frozen=True)
class Retention:
    """How many archives are kept (0: that bound is off); agentd.config says why
    the defaults."""

    count: int = 100
    bytes: int = 20 * GiB
    days: int = 0


ARCHIVE_SUFFIX = ".tar.gz"  # what the registry names archives (a ".part" is in the making)
# Written beside an archive, its name's stem shared (agentd.memory: the agent's
# memory as JSON lines): counted with the archive and pruned with it.
COMPANION_SUFFIXES = (".memory.jsonl",)


def companions(archive: Path) -> list[Path]:
    """The files kept beside ARCHIVE (that may not exist)."""
    stem = archive.name.removesuffix(ARCHIVE_SUFFIX)
    return [archive.with_name(stem + suffix) for suffix in COMPANION_SUFFIXES]


Pruned = dict[str, object]  # one deleted archive: file, bytes, age_days, why


def _size(path: Path) -> int:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


class HomeWorkError(SystemError_):
    """The helper could not finish; ``kind``: too-big, too-deep, no-space,
    timeout, mount, changed, remove, tar, os, crashed."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Homes:
    """Agent homes under ROOT; archives of kept homes in ARCHIVE_DIR."""

    def __init__(
        self,
        root: Path,
        archive_dir: Path,
        limits: HomeLimits | None = None,
        helper: Sequence[str] | None = None,
        retention: Retention | None = None,
        on_prune: Callable[[list[Pruned]], None] | None = None,
    ) -> None:
        self.root = root
        self.archive_dir = archive_dir
        self.limits = limits or HomeLimits()
        self.retention = retention or Retention()
        self.on_prune = on_prune
        self.helper = list(helper or (sys.executable, "-I", str(HOMEWORK)))
        self._slots: asyncio.Semaphore | None = None

    def path(self, name: str) -> Path:
        return self.root / name

    def ensure_root(self) -> None:
        # 0711: agents and users may pass through but not list who exists.
        self.root.mkdir(mode=0o711, parents=True, exist_ok=True)
        os.chmod(self.root, 0o711)

    def make(self, name: str, uid: int, gid: int) -> Path:
        """A new, empty home; AlreadyExists if anything is at its path."""
        self.ensure_root()
        home = self.path(name)
        try:
            os.mkdir(home, 0o700)
        except FileExistsError:
            raise AlreadyExists(
                f"{home} already exists: agentd does not adopt a directory it did not "
                "make (an administrator may move it away)"
            ) from None
        os.chown(home, uid, gid, follow_symlinks=False)
        os.chmod(home, 0o700, follow_symlinks=False)
        return home

    def exists(self, name: str) -> bool:
        return os.path.lexists(self.path(name))

    def owner(self, name: str) -> int | None:
        try:
            return os.lstat(self.path(name)).st_uid
        except FileNotFoundError:
            return None

    def is_home_of(self, name: str, uid: int) -> bool:
        """A real directory (not a link) owned by UID is at NAME's home path."""
        try:
            st = os.lstat(self.path(name))
        except FileNotFoundError:
            return False
        return stat.S_ISDIR(st.st_mode) and st.st_uid == uid

    def names(self) -> list[str]:
        """Entries of the homes directory (not the set-aside one or dot names)."""
        try:
            return sorted(p.name for p in self.root.iterdir() if not p.name.startswith("."))
        except FileNotFoundError:
            return []

    # -- slow work, in the helper --------------------------------------------------
    async def remove(self, name: str) -> dict[str, object]:
        """Delete the home and everything in it (a link or file there: just it)."""
        return await self._work(
            ["remove", "--root", str(self.root), "--name", name], self.limits.remove_timeout
        )

    async def archive(self, name: str, dest: Path, skip_empty: bool = False) -> dict[str, object]:
        """Tar the home into DEST (root-only, atomic); nothing if DEST exists or
        there is no home (or, SKIP_EMPTY, an empty one: then a "note" says so).
        HomeWorkError when over the limits: nothing is kept."""
        self.archive_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        args = ["archive", "--root", str(self.root), "--name", name, "--dest", str(dest)]
        args += ["--max-bytes", str(self.limits.archive_max_bytes)]
        args += ["--skip-empty"] if skip_empty else []
        result = await self._work(args, self.limits.archive_timeout)
        if os.path.lexists(dest):
            await self.prune(keep=dest)
        return result

    async def usage(
        self, limits: dict[str, int], max_entries: int, seconds: float
    ) -> dict[str, dict[str, object]]:
        """Measure the homes named in LIMITS (name -> bytes) in one helper run:
        per home its bytes and entries, and "over" when it passed its limit
        (agentd.homework.usage). Not counted against the removal slots: the
        caller (agentd.diskwatch) bounds how many run."""
        args = ["usage", "--root", str(self.root), "--max-entries", str(max_entries)]
        args += ["--seconds", f"{seconds:g}"]
        for name, limit in limits.items():
            args += ["--home", f"{name}={limit}"]
        result = await self._run(args, seconds * len(limits) + 30)
        homes = result.get("homes")
        if not isinstance(homes, dict):
            raise HomeWorkError("crashed", "the usage helper gave no homes")
        return {str(k): v for k, v in homes.items() if isinstance(v, dict)}

    # -- archive retention ---------------------------------------------------------
    async def prune(self, keep: Path | None = None) -> list[Pruned]:
        """Delete archives beyond the retention, oldest first (never KEEP), in a
        thread (unlinking a big file takes a while); report them to on_prune."""
        pruned = await asyncio.to_thread(self.prune_archives, keep=keep)
        if pruned and self.on_prune is not None:
            self.on_prune(pruned)
        return pruned

    def prune_archives(self, now: float | None = None, keep: Path | None = None) -> list[Pruned]:
        """The retention, synchronously: what was deleted, oldest first."""
        now = time.time() if now is None else now
        found: list[tuple[float, int, str]] = []
        try:
            with os.scandir(self.archive_dir) as it:
                for entry in it:
                    st = entry.stat(follow_symlinks=False)
                    if entry.name.endswith(ARCHIVE_SUFFIX) and stat.S_ISREG(st.st_mode):
                        size = st.st_size + sum(map(_size, companions(Path(entry.path))))
                        found.append((st.st_mtime, size, entry.name))
        except FileNotFoundError:
            return []
        found.sort(reverse=True)  # newest first: the newest are kept
        r, kept, total, out = self.retention, 0, 0, []
        for mtime, size, name in found:
            age_days = (now - mtime) / 86400
            why = _beyond(r, kept, total + size, age_days)
            if not why or (keep is not None and name == keep.name):
                kept, total = kept + 1, total + size
                continue
            for path in (self.archive_dir / name, *companions(self.archive_dir / name)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            out.append({"file": name, "bytes": size, "age_days": round(age_days, 2), "why": why})
        return out[::-1]

    def set_aside(self, name: str, label: str) -> Path:
        """Rename the home into ROOT/.removed/LABEL-TIME (root-only), in one step."""
        aside = self.root / ASIDE
        with contextlib.suppress(FileExistsError):
            os.mkdir(aside, 0o700)
        st = os.lstat(aside)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
            raise SystemError_(f"{aside} is not a root-owned directory")
        os.chmod(aside, 0o700)
        dest = aside / f"{label}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
        n = 0
        while os.path.lexists(dest):
            n += 1
            dest = dest.with_name(f"{dest.name.rsplit('.', 1)[0]}.{n}")
        os.rename(self.path(name), dest)
        return dest

    async def _work(self, args: list[str], timeout: float) -> dict[str, object]:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limits.concurrent)
        async with self._slots:
            return await self._run(args, timeout)

    async def _run(self, args: list[str], timeout: float) -> dict[str, object]:
        proc = await asyncio.create_subprocess_exec(
            *self.helper,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group: tar and gzip die with it
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            raise HomeWorkError(
                "timeout", f"{args[0]} of the home did not end within {timeout:g} s; stopped"
            ) from None
        finally:  # timeout, cancellation or a crash: no helper, tar or gzip survives
            if proc.returncode is None or proc.returncode < 0:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            if proc.returncode is None:
                await proc.wait()
        return _result(args[0], proc.returncode or 0, out, err)


def _beyond(r: Retention, newer: int, total: int, age_days: float) -> str:
    """Which bound of R an archive passes ("count", "bytes", "days"; "" none):
    NEWER archives are kept before it, TOTAL bytes with it, AGE_DAYS old."""
    if r.count and newer >= r.count:
        return "count"
    if r.bytes and total > r.bytes:
        return "bytes"
    if r.days and age_days > r.days:
        return "days"
    return ""


def _result(what: str, rc: int, out: bytes, err: bytes) -> dict[str, object]:
    """The helper's JSON line, or a HomeWorkError saying why there is none."""
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else None
    except ValueError:
        result = None
    if not isinstance(result, dict):
        tail = " ".join(err.decode(errors="replace").split())[-500:]
        raise HomeWorkError("crashed", f"the {what} helper ended with {rc}: {tail or 'no output'}")
    if not result.get("ok"):
        raise HomeWorkError(str(result.get("error")), str(result.get("message"))[:1000])
    result.pop("ok")
    return result
