"""Just enough HTTP/1.1 for an OpenAI-compatible endpoint, on asyncio streams.

Why not a library: the endpoint runs inside every agent's unit, in the
runtime, whose imports every agent start pays for (tests/unit/
test_runtime_imports.py); http.server is thread-based and blocking, and
aiohttp is not a dependency of agentd. What the OpenAI clients send is small:
a request line, headers, a body of Content-Length bytes (never chunked), and
keep-alive. What they read: a body with Content-Length, or server-sent events
in chunked transfer encoding.

Invariants: a request's head and body are bounded (MAX_HEAD, MAX_BODY) and
read within READ_TIMEOUT_S, so a slow or hostile client holds a connection,
not memory or the runtime; at most MAX_CONNECTIONS are open at once (more are
answered 503 and closed); every response says its length or is chunked, so a
connection is reused only when the client and the server both know where the
last response ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

MAX_HEAD = 16 * 1024  # request line and headers
MAX_BODY = 2 * 1024 * 1024  # a chat request (messages are bounded to 256 KiB by agentd)
READ_TIMEOUT_S = 30.0
MAX_CONNECTIONS = 64

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


class HttpError(Exception):
    """A request the server cannot read: answered STATUS and the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Request:
    # plain classes, not dataclasses: the runtime's start does not import dataclasses
    __slots__ = ("body", "headers", "method", "path")

    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.path = path
        self.headers = headers  # lower-case names
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def keep_alive(self) -> bool:
        return self.headers.get("connection", "").lower() != "close"


class Response:
    """A whole response (a stream is written by its handler: EventStream)."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or {}


class EventStream:
    """Writes server-sent events as HTTP chunks; the head goes with the first."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.started = False

    async def start(self) -> None:
        if not self.started:
            self.started = True
            self.writer.write(
                _head(
                    200,
                    {
                        "Content-Type": "text/event-stream",
                        "Cache-Control": "no-cache",
                        "Transfer-Encoding": "chunked",
                    },
                )
            )

    async def send(self, data: str) -> None:
        """One event (`data: DATA`); ConnectionError when the client went away."""
        await self.start()
        payload = f"data: {data}\n\n".encode()
        self.writer.write(b"%x\r\n%s\r\n" % (len(payload), payload))
        await self.writer.drain()

    async def end(self) -> None:
        await self.start()
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()


# A handler answers with a Response, or writes a stream itself and returns None.
Handler = Callable[[Request, EventStream], Awaitable[Response | None]]


def json_response(status: int, value: Any, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(value, ensure_ascii=False).encode()
    return Response(status, body, headers=headers or {})


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _encode(response: Response, keep_alive: bool) -> bytes:
    headers = {
        "Content-Type": response.content_type,
        "Content-Length": str(len(response.body)),
        **response.headers,
    }
    if not keep_alive:
        headers["Connection"] = "close"
    return _head(response.status, headers) + response.body


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request on a connection; None when the client closed it."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if not e.partial.strip():
            return None
        raise HttpError(400, "the request ended in its head") from None
    except asyncio.LimitOverrunError:
        raise HttpError(400, "the request head is too long") from None
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise HttpError(400, "not an HTTP request line") from None
    if not version.startswith("HTTP/1."):
        raise HttpError(400, "only HTTP/1.x is served")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(":")
            if not sep:
                raise HttpError(400, "a header line without a colon")
            headers[name.strip().lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise HttpError(411, "send the body with Content-Length, not chunked")
    body = b""
    if method in ("POST", "PUT", "PATCH"):
        body = await _body(reader, headers)
    return Request(method, target.split("?", 1)[0], headers, body)


async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    try:
        length = int(headers.get("content-length", ""))
    except ValueError:
        raise HttpError(411, "a Content-Length is required") from None
    if not 0 <= length <= MAX_BODY:
        raise HttpError(413, f"the body is over {MAX_BODY} bytes")
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise HttpError(400, "the body ended early") from None


class Server:
    """Serves HANDLER on host:port until closed."""

    def __init__(self, handler: Handler, error_body: Callable[[int, str], Any]) -> None:
        self.handler = handler
        self.error_body = error_body  # (status, message) -> the JSON error object
        self.open = 0
        self.server: asyncio.Server | None = None
        self.connections: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> int:
        """Listen; return the port (PORT 0: one the kernel chose)."""
        self.server = await asyncio.start_server(self._connection, host, port, limit=MAX_HEAD)
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and end every connection (a request in flight is
        cancelled, which cancels its model request)."""
        if self.server is not None:
            self.server.close()
        for task in list(self.connections):
            task.cancel()
        if self.connections:
            await asyncio.wait(self.connections, timeout=2)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        task = asyncio.current_task()
        if task is not None:
            self.connections.add(task)
        try:
            if self.open > MAX_CONNECTIONS:
                await self._refuse(writer, 503, "too many connections to this endpoint")
                return
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        finally:
            self.open -= 1
            self.connections.discard(task)  # type: ignore[arg-type]
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                async with asyncio.timeout(READ_TIMEOUT_S):
                    request = await read_request(reader)
            except TimeoutError:
                await self._refuse(writer, 408, "the request did not arrive in time")
                return
            except HttpError as e:
                await self._refuse(writer, e.status, str(e))
                return
            if request is None:
                return
            stream = EventStream(writer)
            response = await self.handler(request, stream)
            if response is None:  # streamed, chunked: the connection stays usable
                if not stream.started:
                    return
                continue
            writer.write(_encode(response, request.keep_alive))
            await writer.drain()
            if not request.keep_alive:
                return

    async def _refuse(self, writer: asyncio.StreamWriter, status: int, message: str) -> None:
        response = json_response(status, self.error_body(status, message))
        writer.write(_encode(response, keep_alive=False))
        await writer.drain()
