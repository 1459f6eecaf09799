"""The OpenAI-compatible endpoint: routes, the key, and streaming.

Served by an agent's runtime inside its unit (agentd.runtime; loopback of the
agent's own network namespace) and by `agentctl serve` for an owner's own
programs. Both forward every request to agentd as the one whose request it is
(Runtime.ThinkStream as the agent, Model.Chat as the owner), so agentd meters
it against the agent's and its owner's quotas exactly as its own thinking,
and refuses it the same way (a quota: 429).

Invariant: no request is answered without the key (Authorization: Bearer
KEY; 401 otherwise, compared in constant time), so a listener another local
user could reach still serves only whoever was handed the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from . import openai
from .http import EventStream, Request, Response, Server, json_response

Events = AsyncGenerator[dict[str, Any], None]
# (messages, Think options) -> the service's events (queued, token..., done);
# raises BackendError for a refusal before any event.
Backend = Callable[[list[dict[str, str]], dict[str, Any]], Awaitable[Events]]
# texts -> agentd's Embed result ({model, dimensions, embeddings, tokens, ...})
Embedder = Callable[[list[str]], Awaitable[dict[str, Any]]]
LINE_LIMIT = 1 << 20
log = logging.getLogger("agentd.endpoint")


class BackendError(Exception):
    """agentd refused (NAME: one of agentd.errors' names)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


async def fd_events(fd: int) -> Events:
    """The JSON lines agentd writes on the stream FD (taken over and closed);
    an `error` line is raised as BackendError. Closing the generator closes the
    stream, which cancels the request in agentd."""
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_connection(sock=sock, limit=LINE_LIMIT)
    try:
        while line := await reader.readline():
            event = json.loads(line)
            if event.get("event") == "error":
                raise BackendError(str(event.get("error")), str(event.get("message", "")))
            yield event
        raise BackendError("ModelUnavailable", "the model's stream ended without an answer")
    finally:
        writer.close()


def error_body(status: int, message: str) -> dict[str, Any]:
    return openai.ApiError(status, message).body()


class Endpoint:
    """The /v1 routes over BACKEND, for whoever holds KEY."""

    def __init__(
        self, backend: Backend, key: str, owned_by: str, embedder: Embedder | None = None
    ) -> None:
        self.backend = backend
        self.embedder = embedder
        self.key = key
        self.owned_by = owned_by
        self.server = Server(self.handle, error_body)

    async def start(self, host: str, port: int) -> int:
        return await self.server.start(host, port)

    async def close(self) -> None:
        await self.server.close()

    async def handle(self, request: Request, stream: EventStream) -> Response | None:
        try:
            return await self._handle(request, stream)
        except (ConnectionError, asyncio.CancelledError):
            raise  # the client or the server went away: nothing to answer
        except Exception as e:  # a bug, not the client's: say so, keep serving
            log.exception("endpoint: %s %s failed", request.method, request.path)
            error = openai.ApiError(500, f"internal error: {type(e).__name__}", "server_error")
            if stream.started:
                return None
            return json_response(500, error.body())

    async def _handle(self, request: Request, stream: EventStream) -> Response | None:
        try:
            self._authorize(request)
            return await self._route(request, stream)
        except openai.ApiError as e:
            if stream.started:  # mid-stream: the error is the stream's last event
                with contextlib.suppress(ConnectionError):
                    await stream.send(json.dumps(e.body()))
                    await stream.end()
                return None
            return json_response(e.status, e.body(), _auth_header(e))

    def _authorize(self, request: Request) -> None:
        import hmac  # first request only: the runtime's start does not pay for hashlib

        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), self.key):
            raise openai.ApiError(
                401,
                "Incorrect API key provided: use this agent's OPENAI_API_KEY.",
                code="invalid_api_key",
            )

    async def _route(self, request: Request, stream: EventStream) -> Response | None:
        path = request.path.rstrip("/")
        routes: dict[str, tuple[str, Callable[..., Awaitable[Response | None]]]] = {
            "/v1/models": ("GET", self._models),
            "/v1/chat/completions": ("POST", self._chat),
            "/v1/embeddings": ("POST", self._embeddings),
        }
        if path.startswith("/v1/models/"):
            return await self._model(request, path.removeprefix("/v1/models/"))
        if path not in routes:
            raise openai.ApiError(
                404, f"no route {request.method} {request.path}", code="not_found"
            )
        method, handler = routes[path]
        if request.method != method:
            raise openai.ApiError(405, f"{path} takes {method}")
        return await handler(request, stream)

    async def _models(self, _request: Request, _stream: EventStream) -> Response:
        return json_response(200, openai.models(self.owned_by))

    async def _model(self, _request: Request, name: str) -> Response:
        listed = openai.models(self.owned_by)["data"]
        if name != openai.MODEL_ID:
            raise openai.ApiError(404, f"The model '{name}' does not exist", code="model_not_found")
        return json_response(200, listed[0])

    async def _embeddings(self, request: Request, _stream: EventStream) -> Response:
        if self.embedder is None:
            raise openai.ApiError(404, "embeddings are not served here", code="not_found")
        texts, encoding = openai.embedding_request(_json(request))
        try:
            result = await self.embedder(texts)
        except BackendError as e:
            raise openai.from_agentd(e.name, str(e)) from None
        return json_response(200, openai.embeddings(result, encoding))

    async def _chat(self, request: Request, stream: EventStream) -> Response | None:
        chat = openai.chat_request(_json(request))
        events = await self._open(chat)
        async with contextlib.aclosing(events):
            if chat.stream:
                await self._stream(chat, events, stream)
                return None
            return await self._whole(chat, events)

    async def _open(self, chat: openai.ChatRequest) -> Events:
        try:
            return await self.backend(chat.messages, chat.options)
        except BackendError as e:
            raise openai.from_agentd(e.name, str(e)) from None

    async def _whole(self, chat: openai.ChatRequest, events: Events) -> Response:
        try:
            async for event in events:
                if event.get("event") == "done":
                    return json_response(
                        200, openai.completion(openai.completion_id(), chat.model, event)
                    )
        except BackendError as e:
            raise openai.from_agentd(e.name, str(e)) from None
        raise openai.ApiError(503, "the model ended without an answer", "server_error")

    async def _stream(self, chat: openai.ChatRequest, events: Events, out: EventStream) -> None:
        """Server-sent chunks as the tokens come. The head goes with the first
        token, so a refusal before it (a quota on the counted prompt, a prompt
        over the context) is still an HTTP error."""
        cid = openai.completion_id()
        try:
            async for event in events:
                kind = event.get("event")
                if kind == "token" and event.get("text"):
                    if not out.started:
                        await self._send(out, openai.chunk(cid, chat.model, _role()))
                    await self._send(out, openai.chunk(cid, chat.model, {"content": event["text"]}))
                elif kind == "done":
                    await self._finish(chat, cid, event, out)
                    return
        except BackendError as e:
            raise openai.from_agentd(e.name, str(e)) from None

    async def _finish(
        self, chat: openai.ChatRequest, cid: str, done: dict[str, Any], out: EventStream
    ) -> None:
        if not out.started:
            await self._send(out, openai.chunk(cid, chat.model, _role()))
        used = openai.usage(done)
        reason = openai.finish_reason(str(done.get("finish_reason")))
        last = openai.chunk(cid, chat.model, {}, reason, None if chat.include_usage else used)
        await self._send(out, last)
        if chat.include_usage:
            await self._send(out, openai.chunk(cid, chat.model, None, used=used))
        await out.send("[DONE]")
        await out.end()

    @staticmethod
    async def _send(out: EventStream, value: dict[str, Any]) -> None:
        await out.send(json.dumps(value, ensure_ascii=False))


def _json(request: Request) -> Any:
    try:
        return request.json()
    except (ValueError, RecursionError):
        raise openai.bad("the request body is not JSON") from None


def _role() -> dict[str, str]:
    return {"role": "assistant", "content": ""}


def _auth_header(e: openai.ApiError) -> dict[str, str]:
    return {"WWW-Authenticate": "Bearer"} if e.status == 401 else {}
