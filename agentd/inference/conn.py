"""The socket and its connections: where the service listens, who is on
the other end, and JSON lines out.

Invariants:

- The socket is mode 0600 in a 0700 directory; a stale socket file is
  replaced, a live one (another service) is an error.
- A connection's peer UID comes from the kernel (``SO_PEERCRED``), never
  from what the peer says.
- Writes after the peer left are dropped (its request is being cancelled).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import struct
from pathlib import Path
from typing import Any

from agentd.inference.protocol import encode


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


def peer_uid(writer: asyncio.StreamWriter) -> int:
    sock = writer.get_extra_info("socket")
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


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
            self.writer.write(b"".join(encode(e) for e in events))

    async def send(self, *events: dict[str, Any]) -> None:
        self.send_nowait(*events)
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await self.writer.wait_closed()


async def until_eof(reader: asyncio.StreamReader) -> None:
    """Returns when the client has closed (its half of) the connection."""
    with contextlib.suppress(OSError):
        while await reader.read(4096):
            pass
