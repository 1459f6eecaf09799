"""What of a session goes into the next prompt: pure rules, no I/O.

The prompt is the persona (with the summary of folded turns appended), the
unfolded turns whole, then the new message. Its size is estimated from its
characters and the session's tokens per character, which agentd learns from
what the service counted for the session's last prompt (calibrated upward:
the estimate must not fall short, or the service refuses the prompt). When
the estimate passes the room the context leaves after the answer, the oldest
turns are folded, whole exchanges at a time, keeping the last exchange whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MESSAGE_TOKENS = 8  # a message's role markers and separators (ChatML: 5)
FRAME_TOKENS = 48  # BOS, the generation prompt, slack (agentd.thinking.PROMPT_FRAME)
# Before any measurement: English with SmolLM2's and Qwen2.5's tokenizers is
# 0.20-0.25 tokens per byte (agentd.thinking's table); code 0.27, CJK 0.61.
# 0.5 folds early on a first long message rather than being refused.
DEFAULT_TOKENS_PER_CHAR = 0.5
MIN_TOKENS_PER_CHAR = 0.15
KEEP_TURNS = 2  # the last exchange always goes whole
# a summary's longest: the folding schema's maxLength, which agentd's grammar
# limits to 640 (agentd.inference.schema); ~100 words
SUMMARY_CHARS = 640
SUMMARY_HEADING = "Earlier in this conversation (a summary):"


@dataclass(frozen=True)
class Turn:
    seq: int
    role: str  # user | assistant
    content: str


def prompt(persona: str, summary: str, turns: Sequence[Turn], message: str) -> list[dict[str, str]]:
    """The messages of the next request."""
    system = f"{persona}\n\n{SUMMARY_HEADING}\n{summary}" if summary else persona
    return [
        {"role": "system", "content": system},
        *({"role": t.role, "content": t.content} for t in turns),
        {"role": "user", "content": message},
    ]


def estimate(messages: Sequence[dict[str, str]], tokens_per_char: float) -> int:
    chars = sum(len(m["content"]) for m in messages)
    return FRAME_TOKENS + MESSAGE_TOKENS * len(messages) + int(chars * tokens_per_char) + 1


def to_fold(
    persona: str,
    summary: str,
    turns: Sequence[Turn],
    message: str,
    room: int,
    tokens_per_char: float,
) -> int:
    """How many of the oldest TURNS to fold so that the prompt fits ROOM tokens:
    0 if it fits as it is; whole exchanges, leaving at least KEEP_TURNS. A
    prompt that does not fit even then is the service's to refuse."""
    n = 0
    while True:
        # once anything is folded the summary may grow to its longest
        shown = summary if n == 0 else "x" * max(len(summary), SUMMARY_CHARS)
        messages = prompt(persona, shown, turns[n:], message)
        if estimate(messages, tokens_per_char) <= room or len(turns) - n <= KEEP_TURNS:
            return n
        n += 2 if len(turns) - n > KEEP_TURNS + 1 else 1


def batches(turns: Sequence[Turn], chars: int) -> list[list[Turn]]:
    """TURNS in order, in groups of at most CHARS characters of content (a
    longer turn is cut to CHARS // 2 where it is shown to the summarizer)."""
    out: list[list[Turn]] = []
    size = 0
    for t in turns:
        t = Turn(t.seq, t.role, cut(t.content, chars // 2))
        if out and size + len(t.content) <= chars:
            out[-1].append(t)
            size += len(t.content)
        else:
            out.append([t])
            size = len(t.content)
    return out


def cut(text: str, most: int) -> str:
    return text if len(text) <= most else text[: max(0, most - 15)] + " [...cut]"


def calibrated(prompt_tokens: int, messages: Sequence[dict[str, str]]) -> float:
    """Tokens per character the service counted for MESSAGES (its frame
    included: an overestimate for longer prompts), never under the floor."""
    chars = sum(len(m["content"]) for m in messages)
    if prompt_tokens <= 0 or chars <= 0:
        return DEFAULT_TOKENS_PER_CHAR
    return max(MIN_TOKENS_PER_CHAR, round(prompt_tokens / chars * 1.1, 4))


def title(message: str) -> str:
    """A session's title: the first line of its first message."""
    line = next((ln.strip() for ln in message.splitlines() if ln.strip()), "")
    return cut(line, 80)
