"""A conversation as agentd and agentd-inference accept it: one rule set.

[{"role": "system"|"user"|"assistant", "content": "..."}, ...], 1 to
MAX_MESSAGES messages of at most MAX_CHARS characters each. agentd checks what
callers send (Chat, Think) and the inference service checks again what
reaches its socket, with the same function: a separate process trusts no
one. Dependency-free: the inference service imports nothing of the engine.
"""

from __future__ import annotations

import json
import re

ROLES = ("system", "user", "assistant")
MAX_MESSAGES = 256
MAX_CHARS = 64 * 1024

Message = dict[str, str]

# How the inference service refuses a prompt too long for a sequence's context
# (agentd.inference.engine); its callers learn the real sizes from it:
# groups 1-3 are the prompt's tokens, max_tokens and the tokens per sequence.
TOO_LONG = re.compile(r"(\d+) prompt tokens \+ max_tokens (\d+) > (\d+) tokens per sequence")


def loads(text: str) -> object:
    """json.loads for text from callers: a value nested too deep for the parser
    (RecursionError, e.g. 20,000 brackets) is bad input like any other."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def check_messages(value: object) -> list[Message]:
    """VALUE as a list of messages (copies with exactly role and content);
    ValueError, with a message for the caller, if it is not one."""
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_MESSAGES:
        raise ValueError(f"messages must be a list of 1..{MAX_MESSAGES} objects")
    out: list[Message] = []
    for m in value:
        if (
            not isinstance(m, dict)
            or set(m) != {"role", "content"}
            or m["role"] not in ROLES
            or not isinstance(m["content"], str)
        ):
            raise ValueError(
                'each message must be {"role": system|user|assistant, "content": string}'
            )
        if len(m["content"]) > MAX_CHARS:
            raise ValueError(f"a message is longer than {MAX_CHARS} characters")
        out.append({"role": m["role"], "content": m["content"]})
    return out
