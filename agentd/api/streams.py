"""Streams handed out as file descriptors: chat tokens, reload progress, an
agent's streamed thinking (Runtime.ThinkStream).

A stream goes back as the read end of a fresh socketpair; agentd writes JSON
lines on its end from a background task. If the caller closes its end, the
next write fails, the stream is closed, and the request is cancelled in the
inference service. An agentd error in the middle of a stream is its last line,
{"event": "error", "error": NAME, "message": ...}. Polled: the same events,
read by long polls (Model.ChatStart / ChatRead), for Cockpit's page.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Callable

from ..errors import AgentdError, InvalidArgument, LimitExceeded
from ..modelclient import ModelStream

log = logging.getLogger("agentd")


class Streams:
    """Background writers of JSON-line streams handed out as file descriptors."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()

    def open(self, events: ModelStream) -> int:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        theirs.shutdown(socket.SHUT_WR)  # the caller only reads
        ours.shutdown(socket.SHUT_RD)
        task = asyncio.get_running_loop().create_task(self._pump(ours, events))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        fd = theirs.detach()
        # sd-bus duplicates the descriptor into the reply, which is built once
        # this method returns: close ours on the next loop turn.
        asyncio.get_running_loop().call_soon(_close, fd)
        return fd

    async def _pump(self, sock: socket.socket, events: ModelStream) -> None:
        _reader, writer = await asyncio.open_connection(sock=sock)
        try:
            async with contextlib.aclosing(events):
                try:
                    async for event in events:
                        writer.write(json.dumps(event).encode() + b"\n")
                        await writer.drain()
                except AgentdError as e:
                    error = {"event": "error", "error": e.name, "message": str(e)}
                    writer.write(json.dumps(error).encode() + b"\n")
                    await writer.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the caller went away: closing the events cancels the request
        except Exception:
            log.exception("stream writer failed")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=2)


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        socket.close(fd)


class Polled:
    """Streams read by long polls instead of a descriptor: for callers that
    cannot receive one (Cockpit's D-Bus channel carries no file descriptors).

    Invariants: a stream is readable only by the UID that started it (anyone
    else is told there is no such stream); ids are random (48 bits), not counted; its
    events are buffered until read, and a stream nobody reads for IDLE_S is
    closed, which cancels the request in the inference service, as closing a
    descriptor does; a UID holds at most PER_UID open streams.
    """

    IDLE_S = 60.0
    PER_UID = 8
    MOST_EVENTS = 4096  # one read's worth at the most (a token is an event)

    def __init__(self) -> None:
        self.streams: dict[int, _Stream] = {}

    def room(self, uid: int) -> None:
        """LimitExceeded if UID has PER_UID streams open: asked before the
        request is made (and its tokens held), not after."""
        if sum(1 for s in self.streams.values() if s.uid == uid) >= self.PER_UID:
            raise LimitExceeded(f"at most {self.PER_UID} chat streams open at once")

    async def open(self, uid: int, events: ModelStream) -> int:
        """Start reading EVENTS into a new stream of UID's. Returns once the
        reader has entered EVENTS, so that cancelling it later always runs the
        request's own cleanup (which settles its quota hold): a generator
        closed before its first step runs none of its code."""
        # random, and below 2^53 so that JavaScript (Cockpit) holds it exactly
        sid = int.from_bytes(os.urandom(6), "big") + 1
        stream = _Stream(uid, events, lambda: self._drop(sid))
        self.streams[sid] = stream
        await asyncio.sleep(0)  # the pump's first step: into the generator
        return sid

    async def read(self, uid: int, sid: int, wait_s: float) -> list[dict[str, object]]:
        """The events since the last read (waiting up to WAIT_S for one); the
        last one is done or error, after which the stream is gone."""
        stream = self._mine(uid, sid)
        events = await stream.read(wait_s, self.MOST_EVENTS)
        if stream.ended and not stream.buffer:
            self._drop(sid)
        return events

    async def cancel(self, uid: int, sid: int) -> None:
        stream = self._mine(uid, sid)
        self._drop(sid)
        await stream.close()

    def _mine(self, uid: int, sid: int) -> _Stream:
        stream = self.streams.get(sid)
        if stream is None or stream.uid != uid:
            raise InvalidArgument(f"no such chat stream: {sid}")
        return stream

    def _drop(self, sid: int) -> None:
        stream = self.streams.pop(sid, None)
        if stream is not None:
            stream.stop_idle()

    async def close(self) -> None:
        for sid in list(self.streams):
            stream = self.streams.pop(sid)
            await stream.close()


class _Stream:
    def __init__(self, uid: int, events: ModelStream, idle: Callable[[], None]) -> None:
        self.uid = uid
        self.events = events
        self.buffer: list[dict[str, object]] = []
        self.ended = False
        self.arrived = asyncio.Event()
        self.on_idle = idle
        loop = asyncio.get_running_loop()
        self.pump = loop.create_task(self._pump())
        self.idle: asyncio.TimerHandle | None = None
        self.touch()

    async def _pump(self) -> None:
        try:
            async with contextlib.aclosing(self.events):
                async for event in self.events:
                    self.buffer.append(event)
                    self.arrived.set()
        except AgentdError as e:
            self.buffer.append({"event": "error", "error": e.name, "message": str(e)})
        except Exception as e:  # the stream's end must be told, whatever it was
            log.exception("chat stream failed")
            self.buffer.append({"event": "error", "error": "Failed", "message": str(e)})
        finally:
            self.ended = True
            self.arrived.set()

    def touch(self) -> None:
        self.stop_idle()
        self.idle = asyncio.get_running_loop().call_later(Polled.IDLE_S, self._expire)

    def _expire(self) -> None:
        self.on_idle()
        self.pump.cancel()  # closes the model stream: the request is cancelled

    def stop_idle(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
            self.idle = None

    async def read(self, wait_s: float, most: int) -> list[dict[str, object]]:
        self.touch()
        if not self.buffer and not self.ended:
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), wait_s)
        out, self.buffer = self.buffer[:most], self.buffer[most:]
        self.touch()
        return out

    async def close(self) -> None:
        self.stop_idle()
        self.pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.pump
