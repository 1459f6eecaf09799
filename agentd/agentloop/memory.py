"""Memory in the agent loop: notes recalled before the first step, the recall
tool, and the lesson stored when a task ends (issue 13; TaskHost.recall and
TaskHost.remember, Runtime.Recall and Runtime.Remember).

Invariants, and why:
- Memory never fails a task: a recall or a lesson that fails (agentd refusing,
  the embedder away, an answer that does not parse) is recorded as a trace
  step saying why, a lesson's also on stderr (the journal), and the task goes
  on or ends as it would have.
- The notes recalled before the first step are recorded once, as a trace step
  (tool "recall", arguments {"query", "auto": true}) holding exactly what was
  shown ("memories", each with its text as shown); a resumed claim rebuilds
  the same first message from it and never recalls again, so the prompt's
  prefix, and the engine's KV cache of it, stays the same.
- The notes take at most PREFILL_SHARE of the context (fewer of them, the
  last one cut, when they would take more) and are labelled as possibly wrong
  or outdated: they are other tasks' findings and the owner's documents.
- The recall tool is never gated: it reads only what agentd scopes to the
  agent (its own memory, its owner's knowledge) and changes nothing.
- A lesson is asked only of a task that ended (completed or failed: not one
  that waits for its owner, an approval or the model), under a two-field JSON
  schema whose string is bounded (maxLength) so that max_tokens does not cut
  plain text; a cut one is closed and kept. Its tokens count against the
  task's budget, and it is not asked once the budget is spent.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any

from . import checks, prompt
from .host import HostError, ModelError, Outcome

if TYPE_CHECKING:  # the loop imports this module
    from .loop import _Run

RECALL_K = 5
QUERY_CHARS = 1000  # agentd takes 4,096 bytes of a query: 1,000 characters always fit
PREFILL_SHARE = 0.25  # of the context, at most, for the notes recalled before the first step
# The first message with the notes takes at most this much of the prompt's room:
# the notes are not cut at the first step by the estimate before calibration.
FIRST_ROOM = 0.9
PREFILL_CHARS = 4000  # whatever the context: the step that records them stays within 16 KiB
MEMORIES_BYTES = 10 * 1024  # the recorded notes as JSON (agentd keeps steps of 16 KiB)
HIT_CHARS = 1000  # of one note (agentd's chunks are about 800 characters)
MIN_HIT_CHARS = 200  # a note that would be cut shorter is left out
TOOL_CHARS = 3600  # of a recall tool's result (the loop records 4,000 characters of one)
HEADING_CHARS = 120
# agentd has no memory for this agent, or this runtime's agentd has no Recall:
# the recall tool is not offered and no lesson is asked.
UNAVAILABLE = frozenset(
    {
        "MemoryUnavailable",
        "NoEmbeddingModel",
        "PermissionDenied",
        "Unsupported",  # a host without remember/recall
        "org.freedesktop.DBus.Error.UnknownMethod",
    }
)
NOTES = (
    "Remembered notes (from your earlier tasks and your owner's documents; they may be "
    "outdated: check what matters if you can, and if you cannot, rely on them):"
)
NOTHING = "nothing relevant remembered"

LESSON_TOKENS = 160  # {"worked": false, "lesson": "<300 characters>"}: ~100 tokens of English
LESSON_CHARS = 300
ANSWER_CHARS = 300  # of a completed task's answer, stored with its lesson
LESSON_SCHEMA = json.dumps(
    {
        "type": "object",
        "properties": {
            "worked": {"type": "boolean"},
            "lesson": {"type": "string", "minLength": 1, "maxLength": LESSON_CHARS},
        },
        "required": ["worked", "lesson"],
        "additionalProperties": False,
    }
)
ASK_LESSON = (
    "The task is over: {how}. Write one lesson for your memory, for the next task like "
    "this one: in one or two sentences, what the task asked, what worked or failed (the "
    'command, file or approach), and the answer. Reply with JSON {{"worked": true or '
    'false, "lesson": "..."}}.'
)


def enabled(settings: dict[str, Any]) -> bool:
    """The agent has a memory unless its settings say "memory": false."""
    return settings.get("memory", True) is not False


def is_auto(step: dict[str, Any]) -> bool:
    """STEP is the recall made before the first step (not one the model asked for)."""
    args = step.get("arguments")
    return step.get("tool") == "recall" and isinstance(args, dict) and args.get("auto") is True


# ------------------------------------------------------------------ what the model sees
def label(m: dict[str, Any]) -> str:
    """Where a note comes from: [knowledge: notes.md > Backups], [lesson: task/12]."""
    kind = str(m.get("kind") or "")
    if m.get("scope") == "knowledge":
        where = "knowledge"
    else:  # the agent's own: its lessons and facts, and documents its owner gave it
        where = kind if kind in ("lesson", "fact") else "memory"
    source = str(m.get("source") or "")
    if source and source != kind:
        where += f": {source}"
    if m.get("heading"):
        where += " > " + _cut(str(m["heading"]), HEADING_CHARS)
    return f"[{where}]"


def _cut(text: str, most: int) -> str:
    text = text.strip()
    return text if len(text) <= most else text[: max(0, most - 1)].rstrip() + "…"


def _ref(hit: dict[str, Any]) -> dict[str, Any]:
    """What the trace keeps of a hit to say which memory it was."""
    ref = {k: hit.get(k) for k in ("id", "scope", "kind", "source", "heading")}
    if isinstance(hit.get("score"), int | float):
        ref["score"] = round(float(hit["score"]), 4)
    return ref


def select(hits: list[dict[str, Any]], chars: int) -> list[dict[str, Any]]:
    """The best hits that fit CHARS characters (labels included), the last one
    cut if at least MIN_HIT_CHARS of it fit, each with its text as shown."""
    used: list[dict[str, Any]] = []
    left = chars
    for hit in hits:
        text = str(hit.get("text") or "").strip()
        if not text:
            continue
        room = min(HIT_CHARS, left - len(label(hit)) - 3)
        if len(text) > room and room < MIN_HIT_CHARS:
            break
        note = {**_ref(hit), "text": _cut(text, room)}
        if len(json.dumps([*used, note], ensure_ascii=False).encode()) > MEMORIES_BYTES:
            break
        used.append(note)
        left -= len(label(note)) + 3 + len(note["text"])
    return used


def notes(used: list[dict[str, Any]]) -> str:
    """The first message's part for the notes USED (select's)."""
    if not used:
        return ""
    return NOTES + "\n" + "\n\n".join(f"{label(m)} {m.get('text', '')}" for m in used)


def listing(hits: list[dict[str, Any]], chars: int) -> str:
    """The recall tool's result: each hit labelled, all of them within CHARS."""
    hits = [h for h in hits if str(h.get("text") or "").strip()]
    if not hits:
        return NOTHING
    each = max(MIN_HIT_CHARS, chars // len(hits))
    return "\n\n".join(f"{label(h)} {_cut(str(h['text']), each - len(label(h)) - 3)}" for h in hits)


def summary(used: list[dict[str, Any]]) -> str:
    """The recall step's result in the trace: which memories were shown."""
    if not used:
        return NOTHING
    listed = "; ".join(f"#{m.get('id')} {label(m)}" for m in used)
    return f"{len(used)} remembered notes shown: {listed}"


def warn(tid: int, message: str) -> None:
    print(f"task {tid}: {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ in the loop
class Memory:
    """One run's memory: the notes before the first step, the recall tool, the lesson."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.on = enabled(run.loop.settings)
        self.unavailable = ""  # why agentd has no memory for this agent, if it said so

    def _lost(self, name: str) -> None:
        """agentd has no memory for the agent (NAME): no recall tool, no lesson."""
        if name in UNAVAILABLE:
            self.unavailable = name
            if "recall" in self.run.tools:
                self.run.tools.remove("recall")

    async def _recall(self, query: str) -> list[dict[str, Any]]:
        """host.recall; HostError for whatever goes wrong (a host without it: Unsupported)."""
        try:
            hits = await self.run.host.recall(query[:QUERY_CHARS], RECALL_K, self.run.tid)
        except HostError:
            raise
        except (AttributeError, NotImplementedError) as e:
            raise HostError("Unsupported", f"this runtime cannot recall: {e}") from None
        except Exception as e:  # never the task's end: reported in the step
            raise HostError("Failed", f"{type(e).__name__}: {e}") from None
        return [h for h in hits if isinstance(h, dict)] if isinstance(hits, list) else []

    async def prefill(self, chain: list[dict[str, Any]], first: int) -> str:
        """The notes for the first message (FIRST characters without them): from
        the chain's recall step when the task is resumed, else recalled now and
        recorded."""
        run = self.run
        if not self.on:
            return ""
        if chain:
            auto = next((s for s in chain if is_auto(s)), None)
            if auto is None:
                return ""
            self._lost(str(auto.get("error") or ""))
            used = [m for m in auto.get("memories") or [] if isinstance(m, dict)]
            return notes(used)
        title, description = run.task.get("title") or "", run.task.get("description") or ""
        query = _cut(f"{title}\n{description}", QUERY_CHARS)
        if not query:
            return ""
        args = {"query": query, "auto": True}
        started = time.monotonic()
        try:
            hits = await self._recall(query)
        except HostError as e:
            self._lost(e.name)
            result = f"recall failed ({e.name}): {e}; working without remembered notes"
            await run._record("recall", args, result, {}, started, error=e.name)
            return ""
        used = select(hits, self.room(first) - len(NOTES))
        await run._record("recall", args, summary(used), {}, started, memories=used)
        return notes(used)

    def room(self, first: int) -> int:
        """Characters for the notes: PREFILL_SHARE of the context, and no more
        than leaves the first message within FIRST_ROOM of the prompt's room, as
        estimated before any answer calibrates it (agentd.agentloop.prompt)."""
        from .loop import MARGIN_TOKENS  # loaded: the loop is what runs this

        context = self.run.loop.context_tokens
        prompt_room = (context - self.run.loop.step_tokens() - MARGIN_TOKENS) * FIRST_ROOM
        share = min(context * PREFILL_SHARE, prompt_room - first * prompt.TOKENS_PER_CHAR)
        return min(PREFILL_CHARS, int(share / prompt.TOKENS_PER_CHAR))

    async def recall_step(
        self, args: dict[str, Any], thought: Any, usage: dict[str, int], started: float
    ) -> None:
        """The recall tool: the hits, shown to the model and recorded with their ids."""
        run = self.run
        extra: dict[str, Any] = {}
        try:
            hits = await self._recall(str(args.get("query", "")))
            chars = min(TOOL_CHARS, max(300, int(run.loop.context_tokens * 0.75)) - 150)
            result = listing(hits, chars)
            extra["memories"] = [_ref(h) for h in hits if str(h.get("text") or "").strip()]
        except HostError as e:
            self._lost(e.name)  # the next steps are not offered it
            result, extra["error"] = f"error: recall failed ({e.name}): {e}", e.name
        run.outputs[checks.action("recall", args)] = result
        await run._record("recall", args, result, usage, started, thought, **extra)
        run.conv.add(run._said(thought, "recall", args), run._shown("recall", result))

    # -------------------------------------------------------------- the lesson
    async def lesson(self, outcome: Outcome) -> None:
        """Ask the model for the task's lesson and store it; a step either way."""
        run = self.run
        if not self.on:
            return
        started = time.monotonic()
        spent = run.usage["prompt_tokens"] + run.usage["completion_tokens"]
        if self.unavailable:
            why = f"not asked: the agent has no memory ({self.unavailable})"
            await run._record("lesson", {}, why, {}, started)
            return
        if spent >= run.budget:
            why = f"not asked: the task's token budget is spent ({spent} of {run.budget} tokens)"
            await run._record("lesson", {}, why, {}, started)
            return
        how = (
            "you finished it with the answer above"
            if outcome.status == "completed"
            else f"it failed ({prompt.clip(outcome.error, 300)})"
        )
        self._ask_turn(ASK_LESSON.format(how=how), outcome)
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "computed_tokens": 0}
        args: dict[str, Any] = {}
        try:
            answer = await run._ask(LESSON_SCHEMA, LESSON_TOKENS, 0.0)
            for k, a in (
                ("prompt_tokens", "prompt_tokens"),
                ("completion_tokens", "completion_tokens"),
                ("computed_tokens", "prompt_tokens_computed"),
            ):
                usage[k] = int(answer.get(a) or 0)
            worked, text = parse_lesson(str(answer.get("text", "")), answer.get("finish_reason"))
            args = {"worked": worked, "lesson": text}
            stored = await run.host.remember(self.text(outcome, worked, text), "lesson", run.tid)
            result = stored_as(stored)
        except (ModelError, HostError) as e:
            result = f"not stored: {e.name}: {e}"
        except ValueError as e:  # the answer did not parse
            result = f"not stored: {e}"
        except Exception as e:  # a host without remember, a bug: reported, never the task's end
            result = f"not stored: {type(e).__name__}: {e}"
        for k in usage:
            run.usage[k] += usage[k]
            if k in outcome.result:
                outcome.result[k] = run.usage[k]
        if result.startswith("not stored"):
            warn(run.tid, f"lesson {result}")
        await run._record("lesson", args, result, usage, started)

    def _ask_turn(self, request: str, outcome: Outcome) -> None:
        """The request, as the conversation's next user turn (after the finish step)."""
        conv = self.run.conv
        if outcome.status == "completed":
            answer = str(outcome.result.get("answer", ""))
            conv.add(self.run._said("", "finish", {"answer": answer}), request)
            return
        last = conv.turns[-1]
        last.full += f"\n\n{request}"
        last.shown += f"\n\n{request}"

    def text(self, outcome: Outcome, worked: bool, lesson: str) -> str:
        """What is stored: the task's title and outcome make it found again by the
        next similar task (by its words and its meaning), the answer itself (the
        fact a later task may need: measured 2026-12-01, the 1.5B model's lesson
        said how it found a server's name, not the name), then the lesson."""
        title = _cut(str(self.run.task.get("title") or ""), 200)
        verdict = "worked" if worked else "did not work"
        text = f"Task: {title}\nOutcome: {outcome.status}; what was tried {verdict}.\n"
        answer = str(outcome.result.get("answer") or "").strip()
        if outcome.status == "completed" and answer:
            text += f"Answer: {_cut(answer, ANSWER_CHARS)}\n"
        return text + lesson


def parse_lesson(text: str, finish_reason: Any) -> tuple[bool, str]:
    """(worked, lesson) from the model's answer; ValueError saying why not."""
    try:
        data = json.loads(text, strict=False)
    except ValueError:
        data = _closed(text) if finish_reason == "length" else None
    if not isinstance(data, dict) or not str(data.get("lesson") or "").strip():
        cut = " (cut at max_tokens)" if finish_reason == "length" else ""
        raise ValueError(f"the lesson is not the JSON asked for{cut}: {_cut(text, 200)!r}")
    return data.get("worked") is True, _cut(str(data["lesson"]), LESSON_CHARS + 10)


def _closed(text: str) -> dict[str, Any] | None:
    """An answer cut inside its lesson, closed (what was said is kept)."""
    for candidate in (text + '"}', text[:-1] + '"}', text + "}"):
        try:
            data = json.loads(candidate, strict=False)
        except ValueError:
            continue
        if isinstance(data, dict):
            return data
    return None


def stored_as(result: dict[str, Any]) -> str:
    ids = [f"#{i}" for i in result.get("ids") or []]
    if ids:
        return f"stored as memory {', '.join(ids)} ({int(result.get('tokens') or 0)} tokens)"
    if result.get("skipped"):
        return "already remembered: the same lesson is stored"
    return "nothing stored"
