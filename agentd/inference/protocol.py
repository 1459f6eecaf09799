"""The socket protocol (docs/inference-protocol.md): what a request may say,
and the lines a reply is made of.

Invariants:

- A request is one JSON object on one line; every field is checked here
  (type, range, no unknown field) before anything is queued, so a bad
  request gets an ``InvalidRequest`` line and costs the engine nothing.
  The context limit is the engine's to check (it knows the tokens), and
  ``json_schema``'s size and complexity are :mod:`agentd.inference.schema`'s
  (checked in a worker thread, before the schema is converted).
- Every failure a client sees is a :class:`RequestError`, whose ``error`` is
  one of the names in the doc's table; nothing else ends a reply but a
  ``done`` line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agentd.chat import check_messages
from agentd.inference.sampling import SamplingParams
from agentd.inference.stream import Result, Stream

LINE_LIMIT = 1 << 20  # longest request line
MAX_STOP_STRINGS = 16
MAX_AGENT = 256  # characters of an agent key
MAX_OWNER = 64  # characters of an owner key (agentd sends the owner's UID)
# embed: texts in one request, and UTF-8 bytes of one text. 64 x 8 KiB fits a
# request line (1 MiB) with room for JSON escapes; 8 KiB of English is about
# 2,000 tokens, beyond the 256 a text is cut to (a client splits long texts).
MAX_EMBED_TEXTS = 64
MAX_EMBED_TEXT_BYTES = 8192
EMBED_DECIMALS = 7  # of each vector component: 5e-8 of a unit vector's, float32's own

_GENERATE_FIELDS = frozenset(
    {
        "op",
        "agent",
        "owner",
        "messages",
        "prompt",
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "seed",
        "stop",
        "json_schema",
    }
)


class RequestError(Exception):
    """A request ends with an ``error`` line of this kind (the doc's table)."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(message)
        self.error = error

    def line(self) -> dict[str, Any]:
        return {"event": "error", "error": self.error, "message": str(self)}


def invalid(message: str) -> RequestError:
    return RequestError("InvalidRequest", message)


def encode(event: dict[str, Any]) -> bytes:
    """One reply line."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any] | None:
    """The request of a line; None for an empty line (the client has nothing
    to ask)."""
    if not line.strip():
        return None
    try:
        req = json.loads(line)
    except ValueError as e:  # not UTF-8, not JSON, an integer of over 4300 digits
        raise invalid(f"not a JSON line: {e}") from None
    except RecursionError:  # nested deeper than the decoder goes
        raise invalid("not a JSON line: nested too deeply") from None
    if not isinstance(req, dict):
        raise invalid("a request is a JSON object")
    return req


# ---------------------------------------------------------------- generate


@dataclass(frozen=True)
class Generate:
    agent: str
    owner: str | None  # None: the agent is its own owner (a client before owners)
    messages: list[dict[str, str]] | None
    prompt: str | None
    params: SamplingParams
    json_schema: dict[str, Any] | None


def _number(req: dict[str, Any], key: str, default: float) -> float:
    value = req.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise invalid(f"{key} must be a number")
    return float(value)


def _integer(req: dict[str, Any], key: str, default: int) -> int:
    value: object = req.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"{key} must be an integer")
    return value


def _messages(value: Any) -> list[dict[str, str]]:
    """agentd.chat's rules: the same agentd applies to its callers."""
    try:
        return check_messages(value)
    except ValueError as e:
        raise invalid(str(e)) from None


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if (
        not isinstance(value, list)
        or len(value) > MAX_STOP_STRINGS
        or not all(isinstance(s, str) for s in value)
    ):
        raise invalid(f"stop must be a list of at most {MAX_STOP_STRINGS} strings")
    return tuple(value)


def _seed(value: Any) -> int | None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 64
    ):
        raise invalid("seed must be null or an integer in 0..2^64-1")
    return value


def _params(req: dict[str, Any], seed: int | None) -> SamplingParams:
    try:
        return SamplingParams(
            max_tokens=_integer(req, "max_tokens", 128),
            temperature=_number(req, "temperature", 0.0),
            top_p=_number(req, "top_p", 1.0),
            top_k=_integer(req, "top_k", 0),
            seed=seed,
            stop=_stop(req.get("stop")),
        )
    except ValueError as e:
        raise invalid(str(e)) from None


def parse_generate(req: dict[str, Any]) -> Generate:
    """Check a generate request's fields (types and ranges; the context limit
    is the engine's)."""
    unknown = set(req) - _GENERATE_FIELDS
    if unknown:
        raise invalid(f"unknown field(s): {', '.join(sorted(unknown))}")
    agent, owner = _keys(req)
    if ("messages" in req) == ("prompt" in req):
        raise invalid("exactly one of messages and prompt is required")
    messages = _messages(req["messages"]) if "messages" in req else None
    prompt = req.get("prompt")
    if messages is None and (not isinstance(prompt, str) or not prompt):
        raise invalid("prompt must be a non-empty string")
    seed = _seed(req.get("seed"))
    schema = req.get("json_schema")
    if schema is not None and not isinstance(schema, dict):
        raise invalid("json_schema must be null or an object")
    params = _params(req, seed)
    return Generate(agent, owner, messages, prompt if messages is None else None, params, schema)


def queued_line(stream: Stream) -> dict[str, Any]:
    return {
        "event": "queued",
        "request_id": stream.request_id,
        "prompt_tokens": stream.prompt_tokens,
        "queued": stream.queued,
    }


def done_line(r: Result) -> dict[str, Any]:
    return {
        "event": "done",
        "text": r.text,
        "finish_reason": r.finish_reason,
        "prompt_tokens": r.prompt_tokens,
        "prompt_tokens_computed": r.prompt_tokens_computed,
        "completion_tokens": r.completion_tokens,
        "queued_s": round(r.queued_s, 4),
        "first_token_s": None if r.first_token_s is None else round(r.first_token_s, 4),
        "total_s": round(r.total_s, 4),
    }


# ---------------------------------------------------------------- embed


@dataclass(frozen=True)
class Embed:
    agent: str
    owner: str | None
    texts: list[str]

    @property
    def key(self) -> str:
        """Whose turn in the embedder's round-robin: the owner, else the agent."""
        return f"owner:{self.owner}" if self.owner is not None else f"agent:{self.agent}"


def _keys(req: dict[str, Any]) -> tuple[str, str | None]:
    agent = req.get("agent", "")
    if not isinstance(agent, str) or len(agent) > MAX_AGENT:
        raise invalid(f"agent must be a string (at most {MAX_AGENT} characters)")
    owner = req.get("owner")
    if owner is not None and (not isinstance(owner, str) or not 1 <= len(owner) <= MAX_OWNER):
        raise invalid(f"owner must be a string of 1..{MAX_OWNER} characters")
    return agent, owner


def parse_embed(req: dict[str, Any]) -> Embed:
    """Check an embed request: 1..MAX_EMBED_TEXTS strings of at most
    MAX_EMBED_TEXT_BYTES UTF-8 bytes each."""
    unknown = set(req) - {"op", "agent", "owner", "texts"}
    if unknown:
        raise invalid(f"unknown field(s): {', '.join(sorted(unknown))}")
    agent, owner = _keys(req)
    texts = req.get("texts")
    if (
        not isinstance(texts, list)
        or not 1 <= len(texts) <= MAX_EMBED_TEXTS
        or not all(isinstance(t, str) for t in texts)
    ):
        raise invalid(f"texts must be a list of 1..{MAX_EMBED_TEXTS} strings")
    for i, t in enumerate(texts):
        try:
            n = len(t.encode("utf-8"))
        except UnicodeEncodeError:  # a lone surrogate (\ud800) in the JSON
            raise invalid(f"texts[{i}] is not valid Unicode") from None
        if n > MAX_EMBED_TEXT_BYTES:
            raise invalid(
                f"texts[{i}] has {n} bytes; at most {MAX_EMBED_TEXT_BYTES} (split long texts)"
            )
    return Embed(agent, owner, texts)


def embedded_line(
    vectors: Sequence[np.ndarray[Any, Any]], tokens: int, truncated: list[int],
    model: str, dimensions: int, total_s: float,
) -> dict[str, Any]:  # fmt: skip
    return {
        "event": "done",
        "model": model,
        "dimensions": dimensions,
        "embeddings": [np.round(v.astype(np.float64), EMBED_DECIMALS).tolist() for v in vectors],
        "tokens": tokens,
        "truncated": truncated,
        "total_s": round(total_s, 4),
    }


# ---------------------------------------------------------------- show, reload


def check_show(req: dict[str, Any]) -> None:
    if set(req) != {"op"}:
        raise invalid("show takes no fields")


def parse_reload(req: dict[str, Any]) -> str | None:
    """The path a reload asks for; None: the configured one."""
    if set(req) - {"op", "path"}:
        raise invalid("reload takes only path")
    path = req.get("path")
    if path is not None and (not isinstance(path, str) or not path.startswith("/")):
        raise invalid("path must be an absolute path")
    return path
