"""Stop strings: where generated text ends, and how much of it may be shown.

Invariant: no text delivered to a caller contains a stop string, nor a
beginning of one that a later token could complete. A request's streamed
pieces therefore add up to its final text, which ends just before the first
stop string (tokens do not align with stop strings, so the text is cut, not
the tokens).

Pure functions over strings, without llama.cpp: the decode loop calls them
after each token.
"""

from __future__ import annotations

from collections.abc import Sequence


def find_stop(text: str, emitted: int, stops: Sequence[str]) -> int | None:
    """Where ``text`` ends if it now contains a stop string (the earliest),
    else None. Only the text not yet emitted is searched, plus an overlap as
    long as the longest stop string, since emitted text cannot hold one."""
    if not stops:
        return None
    start = max(0, emitted - max(len(s) for s in stops))
    hits = [i for s in stops if (i := text.find(s, start)) >= 0]
    return min(hits) if hits else None


def visible_end(text: str, emitted: int, stops: Sequence[str]) -> int:
    """How much of ``text`` can be shown now: all of it but a tail that is a
    beginning of some stop string (held back until the next token decides)."""
    end = len(text)
    for s in stops:
        for k in range(min(len(s) - 1, end - emitted), 0, -1):
            if text.endswith(s[:k]):
                end = min(end, len(text) - k)
                break
    return end
