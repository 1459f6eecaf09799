"""The OpenAI chat completions API in agentd's terms, and back: one translation.

A request is checked here (400 with OpenAI's error object for what agentd
cannot do: tools, n > 1, logprobs, content that is not text), becoming the
messages and options of agentd's Think; the service's events become a
chat.completion or chat.completion.chunk objects. Nothing is cut silently:
an answer that reached max_tokens says finish_reason "length", a prompt longer
than the context is a 400 saying the sizes (code context_length_exceeded), and
usage is always reported (on the last chunk of a stream, or in a chunk of its
own when stream_options.include_usage asks for it, as OpenAI does).

Pure functions: the server (agentd.endpoint.app) and its tests use them alike.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any, NamedTuple

DEFAULT_MAX_TOKENS = 1024  # when the request says none: told back by "length"
MAX_TOKENS = 4096  # agentd.thinking's bound
MODEL_ID = "agentd"  # the one shared model, whatever name a client asks for
# Fields a client may send that change nothing here (OpenAI's defaults, or
# bookkeeping); anything else unknown is refused, so nothing is ignored by surprise.
IGNORED = frozenset({"user", "store", "metadata", "parallel_tool_calls", "service_tier"})
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
# How the inference service says a prompt does not fit (agentd.chat.TOO_LONG)
TOO_LONG = re.compile(r"(\d+) prompt tokens \+ max_tokens (\d+) > (\d+) tokens per sequence")


class ApiError(Exception):
    """An error as OpenAI's API answers one: HTTP status, type, code, param."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.code = code
        self.param = param

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": str(self),
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def bad(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, code=code, param=param)


# agentd's error names (agentd.errors) as OpenAI's statuses and types
_AGENTD: dict[str, tuple[int, str, str | None]] = {
    "InvalidArgument": (400, "invalid_request_error", None),
    "QuotaExceeded": (429, "insufficient_quota", "insufficient_quota"),
    "LimitExceeded": (429, "rate_limit_exceeded", "rate_limit_exceeded"),
    "Overloaded": (503, "server_error", "overloaded"),
    "ModelUnavailable": (503, "server_error", "model_unavailable"),
    "PermissionDenied": (403, "permission_error", None),
    "NoEmbeddingModel": (503, "server_error", "no_embedding_model"),
}


def from_agentd(name: str, message: str) -> ApiError:
    """agentd's refusal NAME as the API error a client expects."""
    if name == "InvalidArgument" and (m := TOO_LONG.search(message)):
        prompt, completion, context = (int(g) for g in m.groups())
        return bad(
            f"This model's maximum context length is {context} tokens. However, you "
            f"requested {prompt + completion} tokens ({prompt} in the messages, "
            f"{completion} in the completion). Please reduce the length of the "
            "messages or the completion.",
            param="messages",
            code="context_length_exceeded",
        )
    status, type_, code = _AGENTD.get(name, (500, "server_error", None))
    return ApiError(status, message, type_, code)


class ChatRequest(NamedTuple):
    model: str
    messages: list[dict[str, str]]
    options: dict[str, Any]  # agentd's Think options
    stream: bool
    include_usage: bool


def chat_request(body: Any) -> ChatRequest:
    """A POST /v1/chat/completions body, checked (ApiError 400 otherwise)."""
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object")
    _refuse_unsupported(body)
    model = body.get("model", MODEL_ID)
    if not isinstance(model, str):
        raise bad("model must be a string", "model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad("stream must be a boolean", "stream")
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise bad("stream_options must be an object", "stream_options")
    return ChatRequest(
        model or MODEL_ID,
        _messages(body.get("messages")),
        _options(body),
        stream,
        bool(stream_options.get("include_usage", False)),
    )


def _refuse_unsupported(body: dict[str, Any]) -> None:
    if body.get("tools") or body.get("functions"):
        raise bad("tools and functions are not supported by this endpoint", "tools")
    if body.get("n", 1) != 1:
        raise bad("n must be 1: this endpoint gives one choice", "n")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise bad("logprobs are not supported by this endpoint", "logprobs")
    for key in ("presence_penalty", "frequency_penalty"):
        if body.get(key, 0) not in (0, 0.0):
            raise bad(f"{key} is not supported by this endpoint (only 0)", key)
    known = {
        "model", "messages", "stream", "stream_options", "max_tokens",
        "max_completion_tokens", "temperature", "top_p", "stop", "response_format",
        "seed", "n", "logprobs", "top_logprobs", "presence_penalty",
        "frequency_penalty", "tools", "functions", "tool_choice", "function_call",
    }  # fmt: skip
    unknown = sorted(set(body) - known - IGNORED)
    if unknown:
        raise bad(f"Unrecognized request argument supplied: {', '.join(unknown)}", unknown[0])


def _content(value: Any, index: int) -> str:
    """A message's content: a string, or text parts joined."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise bad("only text content parts are supported", f"messages[{index}].content")
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise bad("a message's content must be a string or text parts", f"messages[{index}].content")


def _messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise bad("messages must be a non-empty array", "messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise bad(
                "each message needs a role of system, developer, user or assistant "
                "(tool messages are not supported)",
                f"messages[{i}].role",
            )
        out.append({"role": ROLES[m["role"]], "content": _content(m.get("content"), i)})
    return out


def _options(body: dict[str, Any]) -> dict[str, Any]:
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise bad("max_tokens must be a positive integer", "max_tokens")
    if max_tokens > MAX_TOKENS:
        raise bad(f"max_tokens is at most {MAX_TOKENS} here", "max_tokens")
    temperature = body.get("temperature", 1.0)
    if temperature is None:
        temperature = 1.0
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise bad("temperature must be a number", "temperature")
    if not 0 <= temperature <= 2:
        raise bad("temperature must be between 0 and 2", "temperature")
    options: dict[str, Any] = {
        "max_tokens": max_tokens,
        "temperature": float(temperature),
        "persona": False,  # the client's messages as they are: its framework's prompt
    }
    stop = body.get("stop")
    if stop is not None:
        options["stop"] = _stop(stop)
    schema = _schema(body.get("response_format"))
    if schema is not None:
        options["json_schema"] = json.dumps(schema)
    return options


MAX_STOP = 16  # agentd.thinking's bounds, checked here so a bad one is a 400
MAX_STOP_CHARS = 256


def _stop(value: Any) -> list[str]:
    stops = [value] if isinstance(value, str) else value
    if (
        not isinstance(stops, list)
        or len(stops) > MAX_STOP
        or not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in stops)
    ):
        raise bad(
            f"stop must be a string or at most {MAX_STOP} strings of 1..{MAX_STOP_CHARS} "
            "characters",
            "stop",
        )
    return stops


def _schema(fmt: Any) -> dict[str, Any] | None:
    """response_format as the JSON Schema the answer is constrained to."""
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise bad("response_format must be an object", "response_format")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise bad("response_format.json_schema.schema must be an object", "response_format")
        schema: dict[str, Any] = spec["schema"]
        return schema
    raise bad("response_format.type must be text, json_object or json_schema", "response_format")


# -- answers ------------------------------------------------------------------------


def completion_id() -> str:
    return "chatcmpl-" + os.urandom(12).hex()


def finish_reason(service: str) -> str:
    """The service's reasons (eos, stop, length) as OpenAI's (stop, length)."""
    return "length" if service == "length" else "stop"


def usage(done: dict[str, Any]) -> dict[str, int]:
    prompt = int(done.get("prompt_tokens", 0))
    completion = int(done.get("completion_tokens", 0))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def completion(cid: str, model: str, done: dict[str, Any]) -> dict[str, Any]:
    """The chat.completion object of the service's `done` event."""
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": done.get("text", "")},
                "logprobs": None,
                "finish_reason": finish_reason(str(done.get("finish_reason"))),
            }
        ],
        "usage": usage(done),
        "system_fingerprint": None,
    }


def chunk(
    cid: str,
    model: str,
    delta: dict[str, str] | None,
    reason: str | None = None,
    used: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One chat.completion.chunk: a delta, the last one (REASON), or usage alone
    (DELTA None: no choices, as OpenAI's include_usage chunk)."""
    out: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}],
    }
    if used is not None:
        out["usage"] = used
    return out


# -- embeddings --------------------------------------------------------------------


def embedding_request(body: Any) -> tuple[list[str], str]:
    """A POST /v1/embeddings body: the texts and the encoding_format."""
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object")
    unknown = sorted(set(body) - {"input", "model", "encoding_format", "dimensions", "user"})
    if unknown:
        raise bad(f"Unrecognized request argument supplied: {', '.join(unknown)}", unknown[0])
    texts = body.get("input")
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise bad("input must be a string or an array of strings (not tokens)", "input")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise bad("encoding_format must be float or base64", "encoding_format")
    if body.get("dimensions") is not None:
        raise bad("dimensions cannot be chosen: the model's are given", "dimensions")
    return texts, encoding


def embeddings(result: dict[str, Any], encoding: str) -> dict[str, Any]:
    """agentd's Embed result as OpenAI's embeddings list (base64: the float32
    little-endian bytes, as OpenAI sends them)."""
    vectors = result["embeddings"]
    if encoding == "base64":
        import base64
        import struct

        vectors = [base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() for v in vectors]
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)
        ],
        "model": result.get("model") or MODEL_ID,
        "usage": {"prompt_tokens": result["tokens"], "total_tokens": result["tokens"]},
    }


def models(owned_by: str) -> dict[str, Any]:
    """GET /v1/models: the one model every request goes to."""
    return {
        "object": "list",
        "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": owned_by}],
    }
