"""Artifacts: files an agent reports with its result, checked, hashed and read.

Invariants, and why (agentd runs as root; the files belong to an agent, which is
not trusted):
- An artifact is a regular file owned by the agent, inside the agent's home once
  every link is resolved: an agent cannot make agentd hash, or later read out for
  its owner, a file that is not the agent's own.
- Files are opened without following a link in the last component (O_NOFOLLOW)
  and the type and owner are checked on the open descriptor (fstat), so a file
  swapped for a link or another file after the path check is refused, not read.
  O_NONBLOCK keeps a FIFO from hanging agentd.
- What is read back must still hash to what was registered (else Conflict):
  the owner gets the bytes the agent reported, or an error, never others.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import re
import stat
from pathlib import Path

from ..agent import Agent
from ..errors import Conflict, InvalidArgument, PermissionDenied
from .model import MAX_ARTIFACT_READ, MAX_ARTIFACTS, Artifact

_ARTIFACT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def inspect(agent: Agent, artifacts: list[tuple[str, str]]) -> list[Artifact]:
    """Check each reported (name, path) is the agent's own regular file in its
    home; hash it. Blocking I/O: call it off the event loop."""
    if len(artifacts) > MAX_ARTIFACTS:
        raise InvalidArgument(f"at most {MAX_ARTIFACTS} artifacts per task")
    home = os.path.realpath(agent.home)
    return [_inspect_one(agent, home, name, path) for name, path in artifacts]


def _inspect_one(agent: Agent, home: str, name: str, path: str) -> Artifact:
    if not _ARTIFACT_RE.match(name or ""):
        raise InvalidArgument(f"artifact name {name!r} is invalid")
    real = os.path.realpath(os.path.join(home, path))
    if not real.startswith(home + os.sep):
        raise PermissionDenied(f"artifact {name!r} is outside the agent's home")
    try:
        data_hash, size = hash_nofollow(Path(real), agent.uid)
    except OSError as e:
        raise InvalidArgument(f"artifact {name!r} ({path}): {e.strerror or e}") from None
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return Artifact(0, name, kind, real, size, data_hash)


def read(art: Artifact) -> bytes:
    """ART's bytes, if they fit a D-Bus message and still hash as registered."""
    if art.size > MAX_ARTIFACT_READ:
        raise InvalidArgument(
            f"artifact {art.name!r} is {art.size} bytes, more than the {MAX_ARTIFACT_READ} "
            f"a D-Bus message may carry; as root, read {art.path}"
        )
    data = read_nofollow(Path(art.path), art.size + 1)
    if hashlib.sha256(data).hexdigest() != art.sha256:
        raise Conflict(f"artifact {art.name!r} changed since it was registered")
    return data


def _open_nofollow(path: Path) -> int:
    """Open PATH for reading without following a link in its last component."""
    return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)


def hash_nofollow(path: Path, uid: int) -> tuple[str, int]:
    """(sha256, size) of PATH, a regular file owned by UID; OSError if not."""
    fd = _open_nofollow(path)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(0, "not a regular file")
        if st.st_uid != uid:
            raise OSError(0, "not owned by the agent")
        digest, size = hashlib.sha256(), 0
        while chunk := os.read(fd, 1 << 20):
            digest.update(chunk)
            size += len(chunk)
        return digest.hexdigest(), size
    finally:
        os.close(fd)


def read_nofollow(path: Path, limit: int) -> bytes:
    """At most LIMIT bytes of PATH, not following a final link."""
    fd = _open_nofollow(path)
    try:
        chunks, total = [], 0
        while total < limit and (chunk := os.read(fd, min(1 << 20, limit - total))):
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
