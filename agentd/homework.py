"""agentd's home worker: archive or delete one agent home, in a process of its own.

agentd runs this file as root (``python3 -I homework.py remove|archive ...``) in
a new session, so it, tar and gzip form one process group, and awaits it
without blocking its event loop; on a timeout or a cancellation agentd kills
the whole group. A home is written by its agent, an adversary: it may be
100,000 directories deep, hold a 16 TiB sparse file, symbolic links to
/etc, sockets and FIFOs. So:

- the walk is iterative: no recursion at any depth, and at most three
  descriptors open (the directory being read, its scandir copy, and one
  child or ".." while moving); going up opens ".." and checks its device and
  inode against the ones recorded on the way down, so a renamed directory
  stops the walk instead of sending it elsewhere;
- it never follows a symbolic link (O_NOFOLLOW, lstat, unlink) and never
  leaves the home's filesystem (a mount point inside stops a removal; the
  archive skips it, tar --one-file-system);
- the archive is bounded: the home's data is measured first in allocated
  blocks (a hole costs nothing, so a sparse file counts for what it stores)
  and the archive is refused before anything is written when that exceeds
  --max-bytes; the compressed stream is counted as it is written and
  stopped at the same bound; sparse files are archived sparse
  (tar --sparse finds the data with SEEK_DATA/SEEK_HOLE: a 16 TiB hole
  takes milliseconds); free space is checked first;
- the process lowers its CPU and I/O priority where the kernel lets it.

``usage`` measures homes for agentd.diskwatch the same careful way (one walk
per home, iterative, never following a link or leaving the filesystem) and
stops a home's walk as soon as it is over its limit in bytes or entries or
has taken its time: the answer needed is "over or not", so an agent cannot
make the measurement cost more than its own limit.

It imports only the standard library: -I keeps PYTHONPATH out, and nothing of
agentd is needed. It prints one JSON line on stdout, ``{"ok": true, ...}``
(exit 0) or ``{"ok": false, "error": KIND, "message": ...}`` (exit 1).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import resource
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
CHUNK = 1 << 20
# Kept free in the archive's filesystem beyond the archive itself.
RESERVE = 64 << 20
# GNU tar 1.34 walks recursively on its 8 MiB stack: measured here, 30,000
# levels archive in 1.1 s, 100,000 crash it (SIGSEGV). Deeper homes are refused
# with a clear reason before tar starts.
MAX_ARCHIVE_DEPTH = 10_000
# ioprio_set(IOPRIO_WHO_PROCESS, 0, IOPRIO_CLASS_IDLE << 13), by architecture.
IOPRIO_SET = {"x86_64": 251, "aarch64": 30}


class Failure(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass
class Frame:
    """A directory on the way down: its name in its parent, its identity, and
    the subdirectories still to visit (name, inode)."""

    name: str
    dev: int
    ino: int
    pending: list[tuple[str, int]] = field(default_factory=list)


Visit = Callable[[int, list[Frame]], list[tuple[str, int]]]
Leave = Callable[[int, str], None]


def shown(stack: list[Frame], name: str = "") -> str:
    """A path for messages, bounded: a deep path keeps its tail."""
    path = "/".join([f.name for f in stack] + ([name] if name else []))
    return path if len(path) <= 200 else "..." + path[-197:]


def open_dir(dir_fd: int, name: str, dev: int, ino: int) -> int:
    """Open NAME under DIR_FD as a directory, never through a link, and check
    it is the one seen when its parent was read."""
    try:
        fd = os.open(name, OPEN_DIR, dir_fd=dir_fd)
    except OSError as e:
        raise Failure("changed", f"cannot open directory {name!r}: {e.strerror}") from None
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (dev, ino):
        os.close(fd)
        raise Failure("changed", f"directory {name!r} changed while agentd walked it")
    return fd


def walk(root_fd: int, name: str, visit: Visit, leave: Leave, skip_gone: bool = False) -> None:
    """Depth first over the directory NAME under ROOT_FD, one directory open.

    visit(fd, stack) reads the directory on top of STACK and returns the
    subdirectories to descend into; leave(parent_fd, name) runs once a
    directory and everything below it are done (bottom-up). SKIP_GONE: a
    subdirectory deleted or replaced since it was listed is passed over."""
    st = os.lstat(name, dir_fd=root_fd)
    fd = open_dir(root_fd, name, st.st_dev, st.st_ino)
    stack = [Frame(name, st.st_dev, st.st_ino)]
    try:
        stack[0].pending = visit(fd, stack)
        while True:
            top = stack[-1]
            if top.pending:
                sub, ino = top.pending.pop()
                try:
                    child = open_dir(fd, sub, top.dev, ino)
                except Failure:
                    if skip_gone:
                        continue
                    raise
                os.close(fd)
                fd = child
                stack.append(Frame(sub, top.dev, ino))
                stack[-1].pending = visit(fd, stack)
                continue
            stack.pop()
            if not stack:
                break
            parent = open_dir(fd, "..", stack[-1].dev, stack[-1].ino)
            os.close(fd)
            fd = parent
            leave(fd, top.name)
    finally:
        os.close(fd)
    leave(root_fd, name)


# -- remove ----------------------------------------------------------------------
def remove(root: str, name: str) -> dict[str, Any]:
    """Delete ROOT/NAME and everything under it, bottom-up, on its filesystem."""
    root_fd = os.open(root, OPEN_DIR)
    try:
        try:
            st = os.lstat(name, dir_fd=root_fd)
        except FileNotFoundError:
            return {"ok": True, "removed": 0, "note": "no home"}
        if not stat.S_ISDIR(st.st_mode):  # a file or link where the home was: just it
            os.unlink(name, dir_fd=root_fd)
            return {"ok": True, "removed": 1}
        count = [0]

        def visit(fd: int, stack: list[Frame]) -> list[tuple[str, int]]:
            subdirs = []
            with os.scandir(fd) as entries:
                for entry in entries:
                    est = entry.stat(follow_symlinks=False)
                    if not stat.S_ISDIR(est.st_mode):
                        unlink(fd, entry.name, stack)
                    elif est.st_dev != stack[0].dev:
                        raise Failure(
                            "mount", f"{shown(stack, entry.name)} is a mount point: not removed"
                        )
                    else:
                        subdirs.append((entry.name, est.st_ino))
                    count[0] += 1
            return subdirs

        def unlink(fd: int, entry: str, stack: list[Frame]) -> None:
            try:
                os.unlink(entry, dir_fd=fd)
            except FileNotFoundError:
                pass
            except OSError as e:
                raise Failure(
                    "remove", f"cannot delete {shown(stack, entry)}: {e.strerror}"
                ) from None

        def leave(parent_fd: int, sub: str) -> None:
            try:
                os.rmdir(sub, dir_fd=parent_fd)
            except OSError as e:
                raise Failure("remove", f"cannot delete directory {sub!r}: {e.strerror}") from None

        walk(root_fd, name, visit, leave)
        return {"ok": True, "removed": count[0] + 1}
    finally:
        os.close(root_fd)


# -- archive ---------------------------------------------------------------------
def measure(root_fd: int, name: str, max_bytes: int) -> tuple[int, int]:
    """(bytes of data, entries) under NAME: allocated blocks, each inode once,
    plus a tar header per entry; Failure("too-big") as soon as over MAX_BYTES."""
    total, entries = [0], [0]
    # (device, inode): on overlayfs a file reports its layer's device, which
    # differs from its directory's (only directories carry the overlay's), so
    # only a directory on another device is a mount point to skip.
    seen: set[tuple[int, int]] = set()

    def visit(fd: int, stack: list[Frame]) -> list[tuple[str, int]]:
        if len(stack) > MAX_ARCHIVE_DEPTH:
            raise Failure(
                "too-deep",
                f"the home is more than {MAX_ARCHIVE_DEPTH} directories deep: "
                "tar cannot archive it",
            )
        subdirs = []
        with os.scandir(fd) as it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                if st.st_dev != stack[0].dev and stat.S_ISDIR(st.st_mode):
                    continue  # a mount point: tar --one-file-system skips it too
                entries[0] += 1
                if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                total[0] += st.st_blocks * 512 + 512
                if total[0] > max_bytes:
                    raise Failure(
                        "too-big",
                        f"the home holds more than {max_bytes} bytes of data, "
                        "the archive limit: it was not archived",
                    )
                if stat.S_ISDIR(st.st_mode):
                    subdirs.append((entry.name, st.st_ino))
        return subdirs

    walk(root_fd, name, visit, lambda _fd, _name: None)
    return total[0], entries[0]


def _drain(stream: IO[bytes], keep: bytearray, limit: int = 4096) -> None:
    """Read STREAM to its end, keeping its first LIMIT bytes (tar's messages)."""
    while chunk := stream.read(CHUNK):
        keep += chunk[: max(0, limit - len(keep))]


def archive(
    root: str, name: str, dest: str, max_bytes: int, skip_empty: bool = False
) -> dict[str, Any]:
    """ROOT/NAME as DEST (gzip'ed tar, 0600), atomically: DEST.part, fsync, rename.
    SKIP_EMPTY: an empty home is not archived (a note says so)."""
    if os.path.lexists(dest):
        return {"ok": True, "bytes": os.lstat(dest).st_size, "note": "archive exists"}
    root_fd = os.open(root, OPEN_DIR)
    try:
        try:
            st = os.lstat(name, dir_fd=root_fd)
        except FileNotFoundError:
            return {"ok": True, "bytes": 0, "note": "no home to archive"}
        if not stat.S_ISDIR(st.st_mode):
            return {"ok": True, "bytes": 0, "note": "the home is not a directory: not archived"}
        data, entries = measure(root_fd, name, max_bytes)
    finally:
        os.close(root_fd)
    if skip_empty and entries == 0:
        return {"ok": True, "bytes": 0, "note": "the home is empty: not archived"}
    parent = os.path.dirname(dest) or "."
    vfs = os.statvfs(parent)
    if vfs.f_bavail * vfs.f_frsize < data + RESERVE:
        raise Failure("no-space", f"{parent} has too little free space for a {data}-byte archive")
    written = _write_archive(root, name, dest, max_bytes)
    return {"ok": True, "bytes": written, "data_bytes": data, "entries": entries}


def _write_archive(root: str, name: str, dest: str, max_bytes: int) -> int:
    part = dest + ".part"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(part)
    out = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    done = False
    try:
        written = _run_tar(root, name, out, max_bytes)
        os.fsync(out)
        os.rename(part, dest)
        dir_fd = os.open(os.path.dirname(dest) or ".", OPEN_DIR)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        done = True
        return written
    finally:
        os.close(out)
        if not done:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part)


def _run_tar(root: str, name: str, out: int, max_bytes: int) -> int:
    argv = [
        "tar", "--create", "--file=-", "--gzip", "--sparse", "--one-file-system",
        "--numeric-owner", "--directory", root, "--", name,
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    messages = bytearray()
    reader = threading.Thread(target=_drain, args=(proc.stderr, messages), daemon=True)
    reader.start()
    written, ended = 0, False
    try:
        while chunk := proc.stdout.read(CHUNK):
            written += len(chunk)
            if written > max_bytes:
                raise Failure(
                    "too-big",
                    f"the archive grew past {max_bytes} bytes, the limit: it was not kept",
                )
            view = memoryview(chunk)
            while view:
                view = view[os.write(out, view) :]
        ended = True
    finally:
        if not ended:  # stopped early: tar (and its gzip, by SIGPIPE) go too
            proc.kill()
        proc.stdout.close()
        rc = proc.wait()
        reader.join(5)
    # tar: 1 is "some files differed" (changed as read), 2 and up fatal
    if rc not in (0, 1):
        text = bytes(messages).decode(errors="replace").strip()[-1000:]
        how = f"was killed by signal {-rc}" if rc < 0 else f"exited with {rc}"
        raise Failure("tar", f"tar {how}" + (f": {text}" if text else ""))
    return written


# -- usage -----------------------------------------------------------------------
# What stops a home's measurement, reported as the reason it is over.
OVER_KINDS = ("bytes", "entries", "slow", "changed")
# A walk that finds a directory renamed under it starts again, this many times.
USAGE_TRIES = 3


def usage(root: str, name: str, limit: int, max_entries: int, seconds: float) -> dict[str, Any]:
    """Disk used by ROOT/NAME: allocated blocks (st_blocks * 512: a sparse hole
    costs nothing), each inode once, on the home's filesystem, and entries.
    Stops as soon as the bytes pass LIMIT or the entries MAX_ENTRIES, or after
    SECONDS: then "over" says which ("changed": renamed under every try)."""
    root_fd = os.open(root, OPEN_DIR)
    try:
        try:
            st = os.lstat(name, dir_fd=root_fd)
        except FileNotFoundError:
            return {"bytes": 0, "entries": 0, "note": "no home"}
        if not stat.S_ISDIR(st.st_mode):
            return {"bytes": st.st_blocks * 512, "entries": 0, "note": "not a directory"}
        deadline = time.monotonic() + seconds
        for _ in range(USAGE_TRIES):
            result = _measure_usage(root_fd, name, st.st_blocks * 512, limit, max_entries, deadline)
            if result.get("over") != "changed":
                break
        return result
    finally:
        os.close(root_fd)


def _measure_usage(
    root_fd: int, name: str, start: int, limit: int, max_entries: int, deadline: float
) -> dict[str, Any]:
    total, entries = [start], [0]
    seen: set[tuple[int, int]] = set()  # (device, inode): see measure()

    def visit(fd: int, stack: list[Frame]) -> list[tuple[str, int]]:
        subdirs = []
        with os.scandir(fd) as it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # deleted since the directory was read
                    continue
                if st.st_dev != stack[0].dev and stat.S_ISDIR(st.st_mode):
                    continue  # a mount point inside is not the home's disk
                entries[0] += 1
                if entries[0] > max_entries:
                    raise Failure("entries", f"more than {max_entries} entries")
                if entries[0] % 4096 == 0 and time.monotonic() > deadline:
                    raise Failure("slow", "not measured in the time allowed")
                if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                total[0] += st.st_blocks * 512
                if total[0] > limit:
                    raise Failure("bytes", f"more than {limit} bytes")
                if stat.S_ISDIR(st.st_mode):
                    subdirs.append((entry.name, st.st_ino))
        if time.monotonic() > deadline:
            raise Failure("slow", "not measured in the time allowed")
        return subdirs

    try:
        walk(root_fd, name, visit, lambda _fd, _name: None, skip_gone=True)
    except Failure as e:
        if e.kind not in OVER_KINDS:
            raise
        return {"bytes": total[0], "entries": entries[0], "over": e.kind, "message": e.message}
    return {"bytes": total[0], "entries": entries[0]}


def usage_all(
    root: str, homes: list[tuple[str, int]], max_entries: int, seconds: float
) -> dict[str, Any]:
    """usage() of each (NAME, LIMIT) in HOMES, one after the other; a home that
    cannot be read gets an "error" of its own, the others are still measured."""
    out: dict[str, Any] = {}
    for name, limit in homes:
        try:
            out[name] = usage(root, name, limit, max_entries, seconds)
        except Failure as e:
            out[name] = {"error": e.message}
        except OSError as e:
            out[name] = {"error": f"{e.strerror or e}"}
    return {"ok": True, "homes": out}


def _home_arg(text: str) -> tuple[str, int]:
    name, _, limit = text.rpartition("=")
    if not name or "/" in name or name in (".", "..") or not limit.isdigit():
        raise argparse.ArgumentTypeError(f"not NAME=BYTES: {text!r}")
    return name, int(limit)


# -- the process -----------------------------------------------------------------
def lower_priority(max_file: int | None, io_idle: bool = True) -> None:
    """Nice 19, idle I/O class (IO_IDLE), no core, files no bigger than MAX_FILE:
    best effort (agentd.service's seccomp filter may refuse each with EPERM)."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, 19)
    number = IOPRIO_SET.get(platform.machine()) if io_idle else None
    if number is not None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).syscall(number, 1, 0, 3 << 13)
    limits = [(resource.RLIMIT_CORE, 0)]
    if max_file is not None:
        limits.append((resource.RLIMIT_FSIZE, max_file))
    for which, value in limits:
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(which, (value, value))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="homework", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    rm = sub.add_parser("remove", help="delete ROOT/NAME")
    ar = sub.add_parser("archive", help="archive ROOT/NAME to DEST")
    for p in (rm, ar):
        p.add_argument("--root", required=True)
        p.add_argument("--name", required=True)
    ar.add_argument("--dest", required=True)
    ar.add_argument("--max-bytes", type=int, required=True)
    ar.add_argument("--skip-empty", action="store_true")
    us = sub.add_parser("usage", help="measure homes ROOT/NAME against their limits")
    us.add_argument("--root", required=True)
    us.add_argument("--home", type=_home_arg, action="append", default=[], help="NAME=BYTES")
    us.add_argument("--max-entries", type=int, required=True)
    us.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args(argv)
    if args.command != "usage" and ("/" in args.name or args.name in ("", ".", "..")):
        parser.error(f"not a name: {args.name!r}")
    try:
        if args.command == "usage":
            # Not the idle I/O class: starved on a busy disk, a walk would run out
            # of time and stop an agent that is within its limit.
            lower_priority(0, io_idle=False)
            result = usage_all(args.root, args.home, args.max_entries, args.seconds)
        elif args.command == "remove":
            lower_priority(None)
            result = remove(args.root, args.name)
        else:
            lower_priority(args.max_bytes + CHUNK)
            result = archive(args.root, args.name, args.dest, args.max_bytes, args.skip_empty)
    except Failure as e:
        result = {"ok": False, "error": e.kind, "message": e.message}
    except OSError as e:
        result = {"ok": False, "error": "os", "message": f"{e.strerror or e}: {e.filename or ''}"}
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
