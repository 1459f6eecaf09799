"""agentd's side of agentd-inference's socket (docs/inference-protocol.md).

One connection per request: write one JSON line, read event lines until
`done` or `error`. The service may be restarting (systemd restarts it after a
crash): connecting is retried for a few seconds before the request fails with
ModelUnavailable. A connection lost mid-request is reported as
:class:`Interrupted`, carrying what was streamed so far, so the caller can
decide to retry (nothing shown yet) or fail cleanly (tokens already shown).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from .errors import AgentdError, InvalidArgument, ModelUnavailable, Overloaded

CONNECT_PATIENCE_S = 15.0  # systemd's RestartSec plus a model load, with room
LINE_LIMIT = 1 << 20

ModelEvent = dict[str, Any]  # one JSON line of the service's (docs/inference-protocol.md)
ModelStream = AsyncGenerator[ModelEvent, None]  # a stream of them, closed with aclose()


class Interrupted(ModelUnavailable):
    """The service went away in the middle of a request."""

    def __init__(self, message: str, streamed: str, completion_tokens: int) -> None:
        super().__init__(message)
        self.streamed = streamed
        self.completion_tokens = completion_tokens


_ERRORS: dict[str, type[AgentdError]] = {
    "InvalidRequest": InvalidArgument,
    "RequestTooLong": InvalidArgument,
    "InvalidSchema": InvalidArgument,
    "Overloaded": Overloaded,
    "Unavailable": ModelUnavailable,
    "LoadError": ModelUnavailable,
    "Busy": Overloaded,
}


def _error(event: dict[str, Any]) -> AgentdError:
    cls = _ERRORS.get(str(event.get("error")), ModelUnavailable)
    return cls(f"model: {event.get('message') or event.get('error')}")


class ModelClient:
    def __init__(self, socket_path: Path, patience_s: float = CONNECT_PATIENCE_S) -> None:
        self.socket_path = socket_path
        self.patience_s = patience_s

    async def _connect(
        self, patience_s: float | None = None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        deadline = time.monotonic() + (self.patience_s if patience_s is None else patience_s)
        delay = 0.1
        while True:
            try:
                return await asyncio.open_unix_connection(str(self.socket_path), limit=LINE_LIMIT)
            except (FileNotFoundError, ConnectionRefusedError) as e:
                if time.monotonic() + delay > deadline:
                    raise ModelUnavailable(
                        f"the inference service is not answering on {self.socket_path} "
                        f"({e.strerror}); see systemctl status agentd-inference.service"
                    ) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            except PermissionError:
                raise ModelUnavailable(f"{self.socket_path}: permission denied") from None

    async def request(
        self, message: dict[str, Any], patience_s: float | None = None
    ) -> ModelStream:
        """Send MESSAGE; yield every event line, the terminal one included.
        Raises the typed error of an `error` line, or Interrupted."""
        reader, writer = await self._connect(patience_s)
        streamed: list[str] = []
        try:
            writer.write(json.dumps(message).encode() + b"\n")
            await writer.drain()
            while True:
                line = await reader.readline()
                if not line:
                    raise Interrupted(
                        "the inference service stopped in the middle of the request",
                        "".join(streamed),
                        len(streamed),
                    )
                event = json.loads(line)
                kind = event.get("event")
                if kind == "error":
                    raise _error(event)
                if kind == "token":
                    streamed.append(event.get("text", ""))
                yield event
                if kind == "done":
                    return
        except (ConnectionResetError, BrokenPipeError) as e:
            raise Interrupted(
                f"the inference service went away ({e.strerror})", "".join(streamed), len(streamed)
            ) from None
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def call(self, message: dict[str, Any], patience_s: float = 2.0) -> dict[str, Any]:
        """A request whose answer is its terminal line (show): a question about
        the service's state should not wait long for it to come back."""
        last: dict[str, Any] = {}
        async for event in self.request(message, patience_s):
            last = event
        return last
