"""The OpenAI-compatible endpoint (agentd.endpoint) against a scripted backend.

The official openai client (build/test-clients, `make test-clients`) talks to
the endpoint on loopback: a chat, a stream with usage, a schema, stop strings,
the refusals it must understand (401, 429 insufficient_quota, 400
context_length_exceeded); then raw HTTP for what a client library hides
(bounds, keep-alive, a client that goes away mid-stream).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agentd.endpoint.app import BackendError, Endpoint, fd_events
from agentd.endpoint.http import MAX_BODY

CLIENTS = Path(__file__).resolve().parents[2] / "build" / "test-clients"
if CLIENTS.is_dir() and str(CLIENTS) not in sys.path:
    # first: its typing_extensions is newer than Debian's (a superset of it)
    sys.path.insert(0, str(CLIENTS))
openai = pytest.importorskip("openai", reason="make test-clients (tools/test.sh does)")

KEY = "sk-test-0123456789abcdef"


class Script:
    """A backend: the events of one answer, and what it was asked."""

    def __init__(self, *tokens: str, reason: str = "eos", refuse: BackendError | None = None):
        self.tokens = tokens
        self.reason = reason
        self.refuse = refuse
        self.fail_after: BackendError | None = None
        self.asked: list[tuple[list[dict[str, str]], dict[str, Any]]] = []
        self.closed = asyncio.Event()
        self.gate: asyncio.Event | None = None  # set: tokens wait for it after the first

    async def __call__(self, messages: list[dict[str, str]], options: dict[str, Any]) -> Any:
        self.asked.append((messages, options))
        if self.refuse is not None:
            raise self.refuse
        return self.events()

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        try:
            yield {"event": "queued", "prompt_tokens": 11}
            for i, t in enumerate(self.tokens):
                if i == 1 and self.gate is not None:
                    await self.gate.wait()
                yield {"event": "token", "text": t}
            if self.fail_after is not None:
                raise self.fail_after
            yield {
                "event": "done",
                "text": "".join(self.tokens),
                "finish_reason": self.reason,
                "prompt_tokens": 11,
                "completion_tokens": len(self.tokens),
            }
        finally:
            self.closed.set()


async def serving(script: Script, body: Any, embedder: Any = None) -> Any:
    endpoint = Endpoint(script, KEY, "agent test", embedder)
    port = await endpoint.start("127.0.0.1", 0)
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0)
    try:
        return await body(client, port)
    finally:
        await client.close()
        await endpoint.close()


def run(script: Script, body: Any, embedder: Any = None) -> Any:
    return asyncio.run(serving(script, body, embedder))


def test_a_chat_with_the_official_client_gives_the_answer_and_its_usage() -> None:
    script = Script("Hel", "lo")

    async def body(client: Any, _port: int) -> Any:
        return await client.chat.completions.create(
            model="whatever", messages=[{"role": "user", "content": "hi"}], max_tokens=7
        )

    got = run(script, body)
    assert got.choices[0].message.content == "Hello"
    assert got.choices[0].finish_reason == "stop"
    assert got.model == "whatever"
    assert (got.usage.prompt_tokens, got.usage.completion_tokens, got.usage.total_tokens) == (
        11,
        2,
        13,
    )
    messages, options = script.asked[0]
    assert messages == [{"role": "user", "content": "hi"}]
    assert options["max_tokens"] == 7 and options["persona"] is False


def test_a_stream_comes_as_chunks_and_reports_usage_when_asked() -> None:
    script = Script("a", "b", "c", reason="length")

    async def body(client: Any, _port: int) -> Any:
        stream = await client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        return [c async for c in stream]

    chunks = run(script, body)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "abc"
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert reasons[-1] == "length" and set(reasons[:-1]) == {None}  # cut by max_tokens: said
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 3


def test_a_stream_without_include_usage_still_reports_it_on_its_last_chunk() -> None:
    async def body(client: Any, _port: int) -> Any:
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        return [c async for c in stream]

    chunks = run(Script("x"), body)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].usage.total_tokens == 12


def test_response_format_and_stop_reach_agentd_as_think_options() -> None:
    script = Script('{"a": 1}')
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}

    async def body(client: Any, _port: int) -> Any:
        return await client.chat.completions.create(
            model="m",
            messages=[
                {"role": "developer", "content": "be brief"},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "give "}, {"type": "text", "text": "a"}],
                },
            ],
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
            stop="END",
            temperature=0,
        )

    got = run(script, body)
    assert json.loads(got.choices[0].message.content) == {"a": 1}
    messages, options = script.asked[0]
    assert messages == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "give a"},
    ]
    assert json.loads(options["json_schema"]) == schema
    assert options["stop"] == ["END"] and options["temperature"] == 0.0


def test_a_wrong_key_is_401_and_the_backend_is_never_asked() -> None:
    script = Script("x")

    async def body(_client: Any, port: int) -> Any:
        other = openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-not-it", max_retries=0
        )
        try:
            with pytest.raises(openai.AuthenticationError) as e:
                await other.models.list()
            with pytest.raises(openai.AuthenticationError):
                await other.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "hi"}]
                )
            return e.value
        finally:
            await other.close()

    err = run(script, body)
    assert err.status_code == 401 and err.code == "invalid_api_key"
    assert script.asked == []


def test_over_quota_is_429_insufficient_quota() -> None:
    script = Script(refuse=BackendError("QuotaExceeded", "agent scout: 10 of 10 tokens used"))

    async def body(client: Any, _port: int) -> Any:
        with pytest.raises(openai.RateLimitError) as e:
            await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        return e.value

    err = run(script, body)
    assert err.status_code == 429 and err.code == "insufficient_quota"
    assert "10 of 10 tokens" in err.message


def test_a_prompt_over_the_context_is_400_saying_the_sizes() -> None:
    refusal = BackendError(
        "InvalidArgument", "model: 5000 prompt tokens + max_tokens 1024 > 4096 tokens per sequence"
    )

    async def body(client: Any, _port: int) -> Any:
        with pytest.raises(openai.BadRequestError) as e:
            await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}]
            )
        return e.value

    err = run(Script(refuse=refusal), body)
    assert err.code == "context_length_exceeded"
    assert "maximum context length is 4096" in err.message and "6024" in err.message


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"n": 2}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 100_000}, "max_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"frobnicate": 1}, "frobnicate"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"stop": [1, None]}, "stop"),
        ({"stop": ["x"] * 17}, "stop"),
        ({"stop": [""]}, "stop"),
    ],
)
def test_what_agentd_cannot_do_is_refused_400_naming_the_parameter(
    extra: dict[str, Any], param: str
) -> None:
    script = Script("x")

    async def body(client: Any, _port: int) -> Any:
        with pytest.raises(openai.BadRequestError) as e:
            await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}], extra_body=extra
            )
        return e.value

    assert run(script, body).param == param
    assert script.asked == []


def test_an_error_in_the_middle_of_a_stream_is_its_last_event() -> None:
    script = Script("a", "b")
    script.fail_after = BackendError("ModelUnavailable", "the model service restarted")

    async def body(client: Any, _port: int) -> Any:
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}], stream=True
        )
        with pytest.raises(openai.APIError) as e:
            async for _ in stream:
                pass
        return e.value

    assert "restarted" in str(run(script, body))


class Embedder:
    def __init__(self, refuse: BackendError | None = None) -> None:
        self.refuse = refuse
        self.asked: list[list[str]] = []

    async def __call__(self, texts: list[str]) -> dict[str, Any]:
        self.asked.append(texts)
        if self.refuse is not None:
            raise self.refuse
        vectors = [[0.5, -0.25, float(i)] for i in range(len(texts))]
        return {"model": "mini", "dimensions": 3, "embeddings": vectors, "tokens": 7}


def test_embeddings_in_both_encodings_the_client_decodes() -> None:
    embedder = Embedder()

    async def body(client: Any, _port: int) -> Any:
        default = await client.embeddings.create(model="m", input=["a", "b"])  # base64
        floats = await client.embeddings.create(model="m", input="c", encoding_format="float")
        return default, floats

    default, floats = run(Script(), body, embedder)
    assert [d.embedding for d in default.data] == [[0.5, -0.25, 0.0], [0.5, -0.25, 1.0]]
    assert default.usage.prompt_tokens == 7 and default.model == "mini"
    assert floats.data[0].embedding == [0.5, -0.25, 0.0]
    assert embedder.asked == [["a", "b"], ["c"]]


def test_embeddings_refusals_and_absence() -> None:
    async def tokens(client: Any, _port: int) -> Any:
        with pytest.raises(openai.BadRequestError) as e:
            await client.embeddings.create(model="m", input=[[1, 2, 3]])
        return e.value

    async def refused(client: Any, _port: int) -> Any:
        with pytest.raises(openai.InternalServerError) as e:
            await client.embeddings.create(model="m", input="x")
        return e.value

    async def absent(client: Any, _port: int) -> Any:
        with pytest.raises(openai.NotFoundError) as e:
            await client.embeddings.create(model="m", input="x")
        return e.value

    assert run(Script(), tokens, Embedder()).param == "input"
    none = Embedder(BackendError("NoEmbeddingModel", "model: no embedding model is loaded"))
    assert run(Script(), refused, none).code == "no_embedding_model"
    assert run(Script(), absent).status_code == 404


def test_a_failure_of_the_endpoints_own_is_a_500_and_it_keeps_serving() -> None:
    class Broken(Script):
        async def __call__(self, messages: Any, options: Any) -> Any:
            raise TypeError("a bug")

    async def body(client: Any, _port: int) -> Any:
        with pytest.raises(openai.InternalServerError) as e:
            await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}]
            )
        listed = await client.models.list()  # the server still answers
        return e.value, [m.id for m in listed.data]

    err, models = run(Broken(), body)
    assert err.status_code == 500 and "TypeError" in err.message and models == ["agentd"]


# -- raw HTTP: what a client library does not show ----------------------------------


async def exchange(port: int, data: bytes, reads: int = 1) -> list[bytes]:
    """Send DATA; read REPLIES responses (by Content-Length)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = []
    try:
        writer.write(data)
        await writer.drain()
        for _ in range(reads):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            out.append(head + await reader.readexactly(length))
    finally:
        writer.close()
        await writer.wait_closed()
    return out


def request(method: str, path: str, body: bytes = b"", key: str = KEY, extra: str = "") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def test_raw_http_bounds_routes_and_keep_alive() -> None:
    chat = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}]}).encode()

    async def body(_client: Any, port: int) -> Any:
        two = await exchange(
            port, request("GET", "/v1/models") + request("POST", "/v1/chat/completions", chat), 2
        )
        head = f"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n"
        big = await exchange(port, head.encode())
        chunked = await exchange(
            port, b"POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        missing = await exchange(port, request("GET", "/v1/nothing"))
        wrong = await exchange(port, request("GET", "/v1/chat/completions"))
        notjson = await exchange(port, request("POST", "/v1/chat/completions", b"{nope"))
        return two, big[0], chunked[0], missing[0], wrong[0], notjson[0]

    two, big, chunked, missing, wrong, notjson = run(Script("ok"), body)
    assert two[0].startswith(b"HTTP/1.1 200") and b'"id": "agentd"' in two[0]
    assert two[1].startswith(b"HTTP/1.1 200") and b'"content": "ok"' in two[1]  # same connection
    assert big.startswith(b"HTTP/1.1 413")
    assert chunked.startswith(b"HTTP/1.1 411")
    assert missing.startswith(b"HTTP/1.1 404") and wrong.startswith(b"HTTP/1.1 405")
    assert notjson.startswith(b"HTTP/1.1 400") and b"not JSON" in notjson


def test_a_client_gone_mid_stream_closes_the_request_to_agentd() -> None:
    script = Script("a", "b", "c")
    script.gate = asyncio.Event()
    chat = json.dumps(
        {"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    ).encode()

    async def body(_client: Any, port: int) -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request("POST", "/v1/chat/completions", chat))
        await reader.readuntil(b'"content": "a"')  # the first token came
        writer.close()
        await writer.wait_closed()
        script.gate.set()  # the next token's write finds the client gone
        await asyncio.wait_for(script.closed.wait(), 10)
        return script.closed.is_set()

    assert run(script, body)


def test_fd_events_reads_agentd_stream_lines_and_raises_its_error_line() -> None:
    import socket

    async def body() -> tuple[list[str], BackendError]:
        ours, theirs = socket.socketpair()
        ours.sendall(
            b'{"event": "queued"}\n{"event": "token", "text": "x"}\n'
            b'{"event": "error", "error": "QuotaExceeded", "message": "over"}\n'
        )
        ours.close()
        seen = []
        with pytest.raises(BackendError) as e:
            async for event in fd_events(theirs.detach()):
                seen.append(event["event"])
        return seen, e.value

    seen, err = asyncio.run(body())
    assert seen == ["queued", "token"] and err.name == "QuotaExceeded"
