"""agentd's side of agentd-inference's socket (docs/inference-protocol.md).

One connection per request: write one JSON line, read event lines until
`done` or `error`. The service may be restarting (systemd restarts it after a
crash): connecting is retried for a few seconds before the request fails with
ModelUnavailable. A connection lost mid-request is reported as
:class:`Interrupted`, carrying what was streamed so far, so the caller can
decide to retry (nothing shown yet) or fail cleanly (tokens already shown).

:meth:`ModelClient.embed` asks for sentence vectors (the ``embed`` op): the
same errors, plus :class:`NoEmbeddingModel` when the service has none.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import AgentdError, InvalidArgument, ModelUnavailable, NoEmbeddingModel, Overloaded

CONNECT_PATIENCE_S = 15.0  # systemd's RestartSec plus a model load, with room
LINE_LIMIT = 4 << 20  # a reply line: 64 vectors of 4,096 dimensions fit
EMBED_ATTEMPTS = 2  # an embed cut by a service restart is asked once more

ModelEvent = dict[str, Any]  # one JSON line of the service's (docs/inference-protocol.md)
ModelStream = AsyncGenerator[ModelEvent, None]  # a stream of them, closed with aclose()


class Interrupted(ModelUnavailable):
    """The service went away in the middle of a request."""

    def __init__(self, message: str, streamed: str, completion_tokens: int) -> None:
        super().__init__(message)
        self.streamed = streamed
        self.completion_tokens = completion_tokens


@dataclass(frozen=True)
class Embeddings:
    """One vector per text (L2-normalized, in order), the tokens computed
    (what quotas meter), the texts cut to the model's context, the model."""

    vectors: list[list[float]]
    tokens: int
    truncated: list[int]
    model: str
    dimensions: int


_ERRORS: dict[str, type[AgentdError]] = {
    "InvalidRequest": InvalidArgument,
    "RequestTooLong": InvalidArgument,
    "InvalidSchema": InvalidArgument,
    "Overloaded": Overloaded,
    "Unavailable": ModelUnavailable,
    "LoadError": ModelUnavailable,
    "Busy": Overloaded,
    "NoEmbeddingModel": NoEmbeddingModel,
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

    async def embed(
        self, texts: Sequence[str], agent: str = "", owner: str | None = None
    ) -> Embeddings:
        """The vectors of TEXTS (at most 64, of 8 KiB each: the service's
        bounds, docs/inference-protocol.md), computed with other callers'
        texts; AGENT and OWNER take turns as in generation. Raises as
        :meth:`request` does (InvalidArgument, Overloaded, ModelUnavailable,
        NoEmbeddingModel, Interrupted)."""
        message: dict[str, Any] = {"op": "embed", "agent": agent, "texts": list(texts)}
        if owner is not None:
            message["owner"] = owner
        for attempt in range(1, EMBED_ATTEMPTS + 1):
            try:
                done = await self.call(message, patience_s=self.patience_s)
                break
            except Interrupted:  # restarted mid-request: embedding is idempotent, ask again
                if attempt == EMBED_ATTEMPTS:
                    raise
        return Embeddings(
            vectors=done["embeddings"],
            tokens=int(done["tokens"]),
            truncated=list(done.get("truncated", [])),
            model=str(done.get("model", "")),
            dimensions=int(done.get("dimensions", 0)),
        )
