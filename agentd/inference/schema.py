"""JSON Schemas from agents, made into grammars within limits.

An agent's ``json_schema`` becomes GBNF (llama-cpp-python's converter), then
llama.cpp parses that GBNF into a grammar sampler. Both run in the service
for an agent it does not trust, and a small schema can make either costly:

- ``{"type": "string", "maxLength": 20000}`` (38 bytes) converts to a GBNF
  20,000 parentheses deep, and llama.cpp's recursive grammar parser then
  overflows its stack: the service died with SIGSEGV (measured, 0.3.36:
  "maxLength" 1,200 was refused by llama.cpp, 20,000 killed the service).
- the converter's work grows with the schema's size and, for optional
  properties, with its square (512 optional properties: 0.28 s).
- each live grammar costs every decode step: an ``enum`` of 1,024 strings
  sharing a prefix made each token of that request 0.08-0.10 s instead of
  0.012 s, and the decode loop samples every request of the batch in turn,
  so everybody's tokens slowed down with it.

Invariants:

- :func:`check_schema` bounds the schema before the converter sees it: its
  size as compact JSON, its nesting, its properties, enum values,
  alternatives, repetition counts (``maxLength`` and the like, and ``{m,n}``
  in patterns), pattern length and numbers; and it allows only local
  ``$ref`` (``#/...``): nothing is fetched. It walks iteratively (no
  recursion) and stops at the first limit passed.
- :func:`check_grammar` bounds the GBNF before llama.cpp parses it: size,
  rules and nesting of groups (the parser's recursion).
- Every refusal is :class:`SchemaTooComplex` (an :class:`InvalidGrammar`,
  the protocol's ``InvalidSchema``) naming the limit and its value.
- Nothing here runs on the service's event loop: the service calls
  :meth:`GrammarCache.compile` in a worker thread (the cache is thread-safe).

The limits and the costs they allow are in docs/inference-protocol.md
(JSON Schema limits). Dependency-free but for llama-cpp-python's converter.
"""

from __future__ import annotations

import collections
import json
import math
import re
import threading
from typing import Any

from agentd.inference.errors import InvalidGrammar

MAX_SCHEMA_BYTES = 16 * 1024  # the schema as compact JSON
MAX_SCHEMA_DEPTH = 32  # nested objects and arrays of the schema's JSON
MAX_SCHEMA_NODES = 4096  # JSON values in the schema, all told
MAX_PROPERTIES = 256  # names under "properties", all objects together
MAX_ENUM_VALUES = 128  # "enum" values and "const", all together
MAX_ALTERNATIVES = 64  # anyOf/oneOf/allOf branches and "type" lists, all together
MAX_REPEAT = 640  # maxLength, maxItems, ... and {m,n}: agentd's own step schema uses 600
MAX_PATTERN = 512  # characters of one "pattern"
MAX_INTEGER = 10**18  # magnitude of any number in the schema
MAX_GRAMMAR_BYTES = 256 * 1024
MAX_GRAMMAR_RULES = 2048
MAX_GRAMMAR_NESTING = 700  # groups inside each other (MAX_REPEAT deep, and some)
# Measured (2 cores, 0.3.36), the costliest schemas found within these limits:
# 256 optional properties with long names (13 KiB): convert 0.062 s, grammar
# check 0.007 s, llama.cpp parse 0.007 s; 100 required properties each with
# "maxLength": 256 (GBNF 213 KiB, groups 256 deep): convert 0.001 s, check
# 0.021 s, parse 0.041 s; 64 anyOf branches: parse 0.032 s. So up to ~0.1 s
# of a worker thread, never of the event loop. (maxLength 600, the executor's
# answer: 600 groups deep, parsed by llama.cpp as before these limits; 1,200
# is refused by llama.cpp itself, 20,000 crashed it.) Their requests then decoded at
# 0.011-0.019 s a token, as free text does (the 128 enum values included).

REPEAT_KEYS = frozenset(
    {"minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"}
    | {"minContains", "maxContains"}
)
_QUANTIFIER = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")


class SchemaTooComplex(InvalidGrammar):
    """A JSON Schema (or its grammar) passes one of this module's limits."""


def _too(what: str, limit: int) -> SchemaTooComplex:
    return SchemaTooComplex(f"JSON Schema too complex: {what} (at most {limit})")


class _Budget:
    """What the walk has counted so far; raises at the first limit passed."""

    def __init__(self) -> None:
        self.nodes = self.properties = self.enums = self.alternatives = 0

    def add(self, attr: str, n: int, limit: int, what: str) -> None:
        value = getattr(self, attr) + n
        if value > limit:
            raise _too(what, limit)
        setattr(self, attr, value)


def _check_pattern(pattern: str) -> None:
    if len(pattern) > MAX_PATTERN:
        raise _too(f"a pattern of {len(pattern)} characters", MAX_PATTERN)
    for m in _QUANTIFIER.finditer(pattern):
        for n in m.groups():
            if n and int(n) > MAX_REPEAT:
                raise _too(f"a repetition of {n} in a pattern", MAX_REPEAT)


def _check_number(value: float) -> None:
    if not math.isfinite(value) or abs(value) > MAX_INTEGER:
        raise _too(f"a number of magnitude {value:.3g}", MAX_INTEGER)


def _check_keyword(key: str, value: Any, budget: _Budget) -> None:
    """The limits on one keyword of a schema object."""
    if key == "properties" and isinstance(value, dict):
        budget.add("properties", len(value), MAX_PROPERTIES, "too many properties")
    elif key == "enum" and isinstance(value, list):
        budget.add("enums", len(value), MAX_ENUM_VALUES, "too many enum values")
    elif key == "const":
        budget.add("enums", 1, MAX_ENUM_VALUES, "too many enum values")
    elif key in ("anyOf", "oneOf", "allOf", "type") and isinstance(value, list):
        budget.add("alternatives", len(value), MAX_ALTERNATIVES, "too many alternatives")
    elif key in REPEAT_KEYS and isinstance(value, int | float) and value > MAX_REPEAT:
        raise _too(f"{key} {value}", MAX_REPEAT)
    elif key == "pattern" and isinstance(value, str):
        _check_pattern(value)
    elif key == "$ref" and (not isinstance(value, str) or not value.startswith("#")):
        raise SchemaTooComplex("only local $ref (#/...) is allowed")


def check_schema(schema: Any) -> None:
    """Refuse (SchemaTooComplex, InvalidGrammar) a schema over the limits,
    before anything converts it. Iterative, bounded by MAX_SCHEMA_NODES."""
    if not isinstance(schema, dict):
        raise InvalidGrammar("a JSON Schema must be an object")
    budget = _Budget()
    stack: list[tuple[Any, int]] = [(schema, 1)]
    while stack:
        value, depth = stack.pop()
        budget.add("nodes", 1, MAX_SCHEMA_NODES, "too many values")
        if isinstance(value, dict | list) and depth > MAX_SCHEMA_DEPTH:
            raise _too(f"nested deeper than {MAX_SCHEMA_DEPTH}", MAX_SCHEMA_DEPTH)
        if isinstance(value, dict):
            for key, item in value.items():
                _check_keyword(key, item, budget)
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            _check_number(value)
    size = len(json.dumps(schema, separators=(",", ":")).encode())
    if size > MAX_SCHEMA_BYTES:
        raise _too(f"{size} bytes", MAX_SCHEMA_BYTES)


def _nesting(gbnf: str) -> int:
    """The deepest nesting of parenthesised groups in GBNF text, outside
    string literals, character classes and comments."""
    depth = deepest = 0
    i, n = 0, len(gbnf)
    while i < n:
        c = gbnf[i]
        if c in '"[':
            close = '"' if c == '"' else "]"
            i += 1
            while i < n and gbnf[i] != close:
                i += 2 if gbnf[i] == "\\" else 1
        elif c == "#":
            while i < n and gbnf[i] != "\n":
                i += 1
        elif c == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif c == ")":
            depth -= 1
        i += 1
    return deepest


def check_grammar(gbnf: str) -> None:
    """Refuse GBNF that llama.cpp should not be asked to parse (its parser
    recurses once per group: ~20,000 nested groups overflowed its stack)."""
    size = len(gbnf.encode())
    if size > MAX_GRAMMAR_BYTES:
        raise _too(f"its grammar has {size} bytes", MAX_GRAMMAR_BYTES)
    rules = gbnf.count("::=")
    if rules > MAX_GRAMMAR_RULES:
        raise _too(f"its grammar has {rules} rules", MAX_GRAMMAR_RULES)
    depth = _nesting(gbnf)
    if depth > MAX_GRAMMAR_NESTING:
        raise _too(f"its grammar nests {depth} groups", MAX_GRAMMAR_NESTING)


def schema_to_grammar(schema: dict[str, Any]) -> str:
    """GBNF text for a JSON Schema (llama-cpp-python's converter), or
    InvalidGrammar: the converter's errors vary (ValueError, KeyError, ...).
    No limits here: :func:`compile_schema` is the checked way."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    if not isinstance(schema, dict):
        raise InvalidGrammar("a JSON Schema must be an object")
    try:
        grammar: str = json_schema_to_gbnf(json.dumps(schema))
        return grammar
    except RecursionError as e:
        raise InvalidGrammar("JSON Schema nested too deeply") from e
    except Exception as e:
        raise InvalidGrammar(f"unsupported JSON Schema: {e}") from e


def compile_schema(schema: Any) -> str:
    """The checked GBNF of a schema: limits, conversion, the grammar's limits.
    Blocking (see the module's measurements): call it in a worker thread."""
    check_schema(schema)
    gbnf = schema_to_grammar(schema)
    check_grammar(gbnf)
    return gbnf


class GrammarCache:
    """The last ``size`` schemas' grammars (refusals are not kept: they are
    cheap to find again, and an agent could fill the cache with them).
    Thread-safe: compilations run in worker threads."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._grammars: collections.OrderedDict[str, str] = collections.OrderedDict()

    def compile(self, schema: Any) -> str:
        check_schema(schema)  # bounds the key's cost too
        key = json.dumps(schema, sort_keys=True)
        with self._lock:
            gbnf = self._grammars.get(key)
            if gbnf is not None:
                self._grammars.move_to_end(key)
                return gbnf
        gbnf = schema_to_grammar(schema)
        check_grammar(gbnf)
        with self._lock:
            self._grammars[key] = gbnf
            while len(self._grammars) > self.size:
                self._grammars.popitem(last=False)
        return gbnf
