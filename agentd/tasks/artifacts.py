"""Artifacts: files an agent reports with its result, checked, hashed and read.

Invariants, and why (agentd runs as root; the files belong to an agent, which is
not trusted, and which may change its home while agentd looks at it):
- An artifact is named by a path relative to the agent's home and is resolved
  beneath the home with no symbolic link followed in ANY component (openat2
  RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS, else a walk from
  directory descriptor to directory descriptor, each opened O_PATH|O_NOFOLLOW).
  "realpath, then open" is not enough: a directory swapped for a link between
  the two makes root open a file elsewhere. '..' and absolute paths are refused.
- The file is opened O_NOFOLLOW|O_NOCTTY|O_NONBLOCK (a FIFO or a terminal can
  neither hang agentd nor become its controlling terminal) and checked on the
  open descriptor (fstat): a regular file owned by the agent's UID.
- What agentd hashes is bounded before a byte is read: each artifact's st_size
  against MAX_ARTIFACT_SIZE, their sum against MAX_TASK_ARTIFACTS_SIZE (limits
  in tasks/model.py, with the measurement behind them). A sparse file counts at
  its st_size, so `truncate -s 16T` is refused at once, not hashed for hours.
  Hashing reads at most the st_size fstat gave: a file growing meanwhile does
  not make agentd read more. One report per agent is inspected at a time (a
  second concurrent one gets Busy, which the runtime retries), so thirty
  concurrent CompleteTask calls cost one report's hashing, not thirty.
- What is read back must still hash to what was registered (else Conflict):
  the owner gets the bytes the agent reported, or an error, never others.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import mimetypes
import os
import re
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

from ..agent import Agent
from ..errors import AgentdError, Busy, Conflict, InvalidArgument, PermissionDenied
from .model import (
    MAX_ARTIFACT_READ,
    MAX_ARTIFACT_SIZE,
    MAX_ARTIFACTS,
    MAX_TASK_ARTIFACTS_SIZE,
    Artifact,
)

_ARTIFACT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_PATH = 4096  # PATH_MAX: a longer path cannot name a file anyway
_CHUNK = 1 << 20

# The artifact itself: never a link, never blocking, never a controlling terminal.
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC
# Directories on the way (fallback walk): O_PATH opens nothing for real (no FIFO
# or device side effect) and, with O_NOFOLLOW, yields the link itself, seen by fstat.
_STEP_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_BASE_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

# openat2(2): include/uapi/linux/openat2.h; 437 on every architecture (5.6+).
_SYS_OPENAT2 = 437
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
_RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
# False once the kernel (< 5.6: ENOSYS) or a seccomp filter (EPERM) refused it.
use_openat2 = True


# -- the resolver ------------------------------------------------------------------------
def components(relative: str) -> list[str]:
    """RELATIVE's components, '.' and empty ones dropped; OSError EXDEV if it is
    absolute or has a '..' (it would leave the base), ENOENT if it names nothing."""
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    if relative.startswith("/") or ".." in parts:
        raise OSError(errno.EXDEV, "outside the directory it is resolved beneath", relative)
    if not parts:
        raise OSError(errno.ENOENT, "names no file", relative)
    return parts


def open_beneath(dirfd: int, relative: str, flags: int = FILE_FLAGS) -> int:
    """A descriptor of RELATIVE beneath DIRFD opened with FLAGS, no link followed in
    any component. OSError: ELOOP for a link on the way or at the end, EXDEV for
    a path leaving DIRFD, else what open(2) says."""
    global use_openat2
    parts = components(relative)
    if use_openat2:
        try:
            return _openat2(dirfd, "/".join(parts), flags, _RESOLVE)
        except OSError as e:
            if e.errno not in (errno.ENOSYS, errno.EPERM):
                raise
            use_openat2 = False
    return _walk(dirfd, parts, flags)


def _openat2(dirfd: int, relative: str, flags: int, resolve: int) -> int:
    how = _OpenHow(flags, 0, resolve)
    # syscall(2) reads every argument as a long: pass them so, never as C ints.
    fd = _libc.syscall(
        ctypes.c_long(_SYS_OPENAT2),
        ctypes.c_long(dirfd),
        ctypes.c_char_p(os.fsencode(relative)),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), relative)
    return int(fd)


def _walk(dirfd: int, parts: list[str], flags: int) -> int:
    """open_beneath without openat2: one component at a time from DIRFD."""
    current = dirfd
    try:
        for part in parts[:-1]:
            step = os.open(part, _STEP_FLAGS, dir_fd=current)
            if current != dirfd:
                os.close(current)
            current = step
            mode = os.fstat(step).st_mode
            if stat.S_ISLNK(mode):
                raise OSError(errno.ELOOP, "a symbolic link on the way", part)
            if not stat.S_ISDIR(mode):
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), part)
        return os.open(parts[-1], flags | os.O_NOFOLLOW, dir_fd=current)
    finally:
        if current != dirfd:
            os.close(current)


def _refusal(name: str, path: str, e: OSError) -> AgentdError:
    if e.errno == errno.ELOOP:
        return PermissionDenied(f"artifact {name!r} ({path}) goes through a symbolic link")
    if e.errno == errno.EXDEV:
        return PermissionDenied(f"artifact {name!r} ({path}) is outside the agent's home")
    return InvalidArgument(f"artifact {name!r} ({path}): {e.strerror or e}")


# -- checking a reported file --------------------------------------------------------------
def _check_file(name: str, path: str, st: os.stat_result, uid: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise InvalidArgument(f"artifact {name!r} ({path}) is not a regular file")
    if st.st_uid != uid:
        raise InvalidArgument(f"artifact {name!r} ({path}) is not owned by the agent")
    if st.st_size > MAX_ARTIFACT_SIZE:
        sparse = " (sparse, counted at its size)" if st.st_blocks * 512 < st.st_size // 2 else ""
        raise InvalidArgument(
            f"artifact {name!r} ({path}) is {st.st_size} bytes{sparse}, over the limit of "
            f"{MAX_ARTIFACT_SIZE} bytes ({_gib(MAX_ARTIFACT_SIZE)}) per artifact"
        )


def _over_task_limit(total: int) -> InvalidArgument:
    return InvalidArgument(
        f"the report's artifacts are {total} bytes together, over the limit of "
        f"{MAX_TASK_ARTIFACTS_SIZE} bytes ({_gib(MAX_TASK_ARTIFACTS_SIZE)}) per task"
    )


def _gib(n: int) -> str:
    return f"{n / 1024**3:g} GiB"


def _open_checked(homefd: int, name: str, path: str, uid: int) -> tuple[int, int]:
    """(descriptor, st_size) of the artifact at PATH, checked (_check_file)."""
    try:
        fd = open_beneath(homefd, path)
    except OSError as e:
        raise _refusal(name, path, e) from None
    try:
        st = os.fstat(fd)
        _check_file(name, path, st, uid)
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def hash_fd(fd: int, size: int) -> tuple[str, int]:
    """(sha256, bytes hashed) of at most SIZE bytes of FD, from its start."""
    digest, done = hashlib.sha256(), 0
    while done < size and (chunk := os.read(fd, min(_CHUNK, size - done))):
        digest.update(chunk)
        done += len(chunk)
    return digest.hexdigest(), done


# -- the report ---------------------------------------------------------------------------
_reporting: set[int] = set()
_reporting_lock = threading.Lock()


@contextlib.contextmanager
def _one_report_at_a_time(agent: Agent) -> Iterator[None]:
    with _reporting_lock:
        if agent.uid in _reporting:
            raise Busy(f"agent {agent.name} is already reporting artifacts; retry when it is done")
        _reporting.add(agent.uid)
    try:
        yield
    finally:
        with _reporting_lock:
            _reporting.discard(agent.uid)


def _checked_request(artifacts: list[tuple[str, str]]) -> None:
    """Everything that can be refused without touching a file."""
    if len(artifacts) > MAX_ARTIFACTS:
        raise InvalidArgument(f"at most {MAX_ARTIFACTS} artifacts per task")
    seen: set[str] = set()
    for name, path in artifacts:
        if not _ARTIFACT_RE.match(name or ""):
            raise InvalidArgument(f"artifact name {name[:200]!r} is invalid")
        if name in seen:
            raise InvalidArgument(f"artifact name {name!r} is reported twice")
        seen.add(name)
        if not path or len(path) > MAX_PATH or "\0" in path:
            raise InvalidArgument(f"artifact {name!r}: its path is empty, too long or has NUL")
        try:
            components(path)
        except OSError as e:
            raise _refusal(name, path, e) from None


def inspect(agent: Agent, artifacts: list[tuple[str, str]]) -> list[Artifact]:
    """Check each reported (name, path) is the agent's own regular file beneath its
    home, within the size limits; hash it. Blocking I/O: call it off the event loop."""
    _checked_request(artifacts)
    if not artifacts:
        return []
    home = os.path.realpath(agent.home)  # root's own path: only what is beneath is the agent's
    with _one_report_at_a_time(agent):
        try:
            homefd = os.open(home, _BASE_FLAGS)
        except OSError as e:
            raise InvalidArgument(f"the agent's home {home}: {e.strerror or e}") from None
        try:
            total = 0
            for name, path in artifacts:  # sizes first: refuse before reading a byte
                fd, size = _open_checked(homefd, name, path, agent.uid)
                os.close(fd)
                total += size
            if total > MAX_TASK_ARTIFACTS_SIZE:
                raise _over_task_limit(total)
            budget = MAX_TASK_ARTIFACTS_SIZE
            found = []
            for name, path in artifacts:  # then hash, re-checked: files may have changed
                art = _hash_one(homefd, home, name, path, agent.uid, budget)
                budget -= art.size
                found.append(art)
            return found
        finally:
            os.close(homefd)


def _hash_one(homefd: int, home: str, name: str, path: str, uid: int, budget: int) -> Artifact:
    fd, size = _open_checked(homefd, name, path, uid)
    try:
        if size > budget:
            raise _over_task_limit(MAX_TASK_ARTIFACTS_SIZE - budget + size)
        data_hash, done = hash_fd(fd, size)
    except OSError as e:
        raise _refusal(name, path, e) from None
    finally:
        os.close(fd)
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return Artifact(0, name, kind, os.path.join(home, *components(path)), done, data_hash)


# -- reading back -------------------------------------------------------------------------
def read(art: Artifact) -> bytes:
    """ART's bytes, if they fit a D-Bus message and still hash as registered.

    ART.path is absolute: the agent's home (as realpath gave it) joined with the
    checked relative path; rows from before this module stored realpath's answer,
    the same thing. It is resolved from / with no link followed anywhere, so a
    link the agent put in its home since cannot redirect the read; the bytes
    must still hash as registered, so nothing but what the agent reported (and
    could read) comes out, whoever owns the file now."""
    if art.size > MAX_ARTIFACT_READ:
        raise InvalidArgument(
            f"artifact {art.name!r} is {art.size} bytes, more than the {MAX_ARTIFACT_READ} "
            f"a D-Bus message may carry; as root, read {art.path}"
        )
    fd = _open_registered(art)
    try:
        data = _read_at_most(fd, art.size)
    finally:
        os.close(fd)
    if hashlib.sha256(data).hexdigest() != art.sha256:
        raise Conflict(f"artifact {art.name!r} changed since it was registered")
    return data


def copy(art: Artifact, dest: Path) -> str:
    """Copy ART into directory DEST (made root-only) and return the copy's path:
    opened as read() opens it, and kept only if it still hashes as registered.
    For the artifacts of a goal's sub-agent, which outlive its home."""
    fd = _open_registered(art)
    try:
        dest.mkdir(mode=0o700, parents=True, exist_ok=True)
        final = dest / art.name  # a checked name (_ARTIFACT_RE): one component
        part = dest / f".{art.name}.part"
        digest = hashlib.sha256()
        with open(part, "wb", opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW, 0o600)) as out:
            left = art.size
            while left and (chunk := os.read(fd, min(_CHUNK, left))):
                digest.update(chunk)
                out.write(chunk)
                left -= len(chunk)
            out.flush()
            os.fsync(out.fileno())
    finally:
        os.close(fd)
    if digest.hexdigest() != art.sha256:
        part.unlink(missing_ok=True)
        raise Conflict(f"artifact {art.name!r} changed since it was registered")
    os.replace(part, final)
    return str(final)


def _open_registered(art: Artifact) -> int:
    """ART's file, opened from / with no link followed, still its registered size."""
    if not art.path.startswith("/"):
        raise Conflict(f"artifact {art.name!r} has no absolute path on record")
    rootfd = os.open("/", _BASE_FLAGS)
    try:
        fd = open_beneath(rootfd, art.path[1:])
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EXDEV):
            raise Conflict(f"artifact {art.name!r}: a link is now in its path") from None
        raise InvalidArgument(f"artifact {art.name!r} cannot be read: {e.strerror or e}") from None
    finally:
        os.close(rootfd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != art.size:
            raise Conflict(f"artifact {art.name!r} changed since it was registered")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks, total = [], 0
    while total < limit and (chunk := os.read(fd, min(_CHUNK, limit - total))):
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)
