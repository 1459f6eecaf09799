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
from collections.abc import Sequence
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
    ) -> None:
        self.root = root
        self.archive_dir = archive_dir
        self.limits = limits or HomeLimits()
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
        return await self._work(args, self.limits.archive_timeout)

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
