"""The engine's errors: one base class, one subclass per way a request or a
load can fail.

Invariant: every error the engine raises to a caller, or hands to a request's
stream, is an :class:`EngineError`, so the service maps each kind to one
protocol error (docs/inference-protocol.md) and nothing else leaks out.

Dependency-free, so that every module of the package can import it without
an import cycle.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class of the engine's errors."""


class Overloaded(EngineError):
    """The admission queue (``scope`` "queue"), or the share of it that one
    owner or one agent may hold ("owner", "agent"), is full; retry later."""

    def __init__(self, queued: int, limit: int, scope: str = "queue", total: int = 0) -> None:
        if scope == "queue":
            why = f"inference queue full ({queued}/{limit} requests waiting)"
        else:
            why = (
                f"this {scope}'s share of the inference queue is full ({queued}/{limit}"
                f" requests waiting: one {scope} may hold at most {limit} of the"
                f" {total} places, so that others keep room)"
            )
        super().__init__(f"{why}; retry later")
        self.queued, self.limit, self.scope = queued, limit, scope


class EmbedOverloaded(Overloaded):
    """The embedder's queue of texts is full; retry later."""

    def __init__(self, queued: int, limit: int) -> None:
        EngineError.__init__(
            self, f"embedding queue full ({queued}/{limit} texts waiting); retry later"
        )
        self.queued, self.limit, self.scope = queued, limit, "embedding"


class RequestTooLong(EngineError):
    """Prompt plus max_tokens does not fit in one sequence's context."""


class EngineClosed(EngineError):
    """The engine is stopped (or stopping); no request is accepted."""


class LoadError(EngineError):
    """The model or the context could not be created."""


class DecodeError(EngineError):
    """llama_decode failed; the requests in that batch are failed with it."""


class InvalidGrammar(EngineError):
    """A GBNF grammar (or a JSON Schema meant to become one) cannot be used."""
