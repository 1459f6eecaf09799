"""What the model sees: the step schema, the task's first message, and the
conversation kept within the model's context.

- Each step's output is constrained by a JSON schema with one alternative per
  tool offered (the service turns it into a grammar): a short "thought", the
  "tool", then exactly that tool's arguments, all required. Free strings have
  no maxLength: llama.cpp nests one grammar group per allowed character (600
  is what agentd.inference.schema lets through), so max_tokens bounds them.
- The first message tells the model where it is: home, tools and their
  limits, network or not, the artifacts/ convention, the project, what the
  tasks it depends on found, the previous attempt's error, the owner's notes
  and answers; then the task, last, nearest to where it answers.
- Notes recalled from memory (agentd.agentloop.memory) go in the first
  message, before the task, labelled as possibly wrong or outdated.
- The prompt is kept within the context by trimming, never by failing: old
  tool output first (oldest first), then old steps' long arguments, then whole
  old steps, then the last results and the first message themselves (head
  and tail kept). Trimming goes down to TRIM_TO of the room at once and what
  is trimmed stays trimmed: the next steps' prompts then start with the same
  tokens, and the engine reuses their KV cache (prefix reuse) until the next
  trim.
- Tokens are estimated from characters (no tokenizer in an agent's runtime):
  TOKENS_PER_CHAR to start, conservative for English and code with SmolLM2's
  and Qwen2.5's tokenizers (~3-4 characters a token), then calibrated on each
  answer's prompt_tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .checks import failed

TOKENS_PER_CHAR = 0.4
MESSAGE_TOKENS = 8  # the chat template's tokens around each message
KEEP_LAST = 2  # steps whose output is trimmed last
TRIM_TO = 0.8  # of the room, when trimming is needed
THOUGHT_CHARS = 300
DEPEND_CHARS = 800  # of each dependency's result in the first message
MESSAGE_CHARS = 600  # of each message's body, in the prompt and read_messages
TASK_MARKER = "\n\nTask: "  # where the first message's task begins (Conversation.messages)
RELEASE_MARKERS = ("ask_owner", "approval", "deferred")  # steps that let the task go


def _text() -> dict[str, Any]:
    return {"type": "string", "minLength": 1}


TOOL_ARGS: dict[str, dict[str, Any]] = {
    "shell": {"command": _text()},
    "read_file": {"path": _text()},
    "list_files": {"path": _text()},
    "write_file": {"path": _text(), "content": {"type": "string"}},
    "fetch": {"url": _text()},
    "recall": {"query": _text()},
    "ask_owner": {"question": _text()},
    "delegate": {"steps": {"type": "array", "minItems": 1, "maxItems": 4, "items": _text()}},
    "send_message": {"to": _text(), "subject": {"type": "string"}, "body": _text()},
    "read_messages": {},
    "finish": {"answer": _text()},
}
TOOLS = tuple(TOOL_ARGS)


def step_schema(tools: list[str]) -> dict[str, Any]:
    """One step: {"thought", "tool", <that tool's arguments>}, one alternative per tool."""
    return {
        "oneOf": [
            {
                "type": "object",
                "properties": {
                    "thought": {"type": "string", "maxLength": THOUGHT_CHARS},
                    "tool": {"const": t},
                    **TOOL_ARGS[t],
                },
                "required": ["thought", "tool", *TOOL_ARGS[t]],
                "additionalProperties": False,
            }
            for t in tools
        ]
    }


def describe(tool: str, shell_timeout: float) -> str:
    return {
        "shell": f'shell {{"command"}}: run a /bin/sh command in your home; stopped after '
        f"{shell_timeout:g} s; you see its exit code and output (long output is cut)",
        "read_file": 'read_file {"path"}: show a text file',
        "list_files": 'list_files {"path"}: list a directory ("." is your home)',
        "write_file": 'write_file {"path", "content"}: create or replace a file',
        "fetch": 'fetch {"url"}: HTTP GET a web page (http or https only), shown as text',
        "recall": 'recall {"query"}: search your memory (lessons from your earlier tasks) '
        "and your owner's notes for what is relevant to the query",
        "delegate": 'delegate {"steps"}: give 1 to 4 independent parts of the task (each '
        "an instruction another agent can follow alone) to other agents; you wait, then "
        "see their results",
        "send_message": 'send_message {"to", "subject", "body"}: write to another agent '
        'of your team or owner by its name, or to your owner ("to": "@owner")',
        "read_messages": "read_messages {}: show the messages other agents and your owner "
        "sent you since",
        "ask_owner": 'ask_owner {"question"}: ask your owner, only if you cannot go on '
        "without them; the task waits for the answer",
        "finish": 'finish {"answer"}: end the task; the answer is its result: what you '
        "did and what you found",
    }[tool]


def example(tools: list[str]) -> list[str]:
    """A short run of another task, showing the shape of good steps: a small
    model copies a shown pattern far better than it follows described rules
    (Qwen2.5-Coder-1.5B read a file three times, then guessed its line count,
    until shown one; tools/loop_try.py, 2026-11-30)."""
    if "shell" in tools:
        return [
            'Example (another task: "How many .log files are in logs/, and which is the '
            'biggest?"):',
            '{"thought": "I list the logs by size, biggest first, and count them.", '
            '"tool": "shell", "command": "ls -S logs/*.log; ls logs/*.log | wc -l"}',
            "Result of your shell step: exit 0; logs/app.log logs/db.log logs/web.log 3",
            '{"thought": "The listing shows 3 files and app.log first by size.", '
            '"tool": "finish", "answer": "There are 3 .log files in logs/; the biggest is '
            'logs/app.log."}',
        ]
    if "write_file" in tools:
        return [
            'Example (another task: "Put the names in names.txt in a numbered list in list.md"):',
            '{"thought": "I read the names first.", "tool": "read_file", "path": "names.txt"}',
            "Result of your read_file step: Ada\nBo",
            '{"thought": "Two names; I write them numbered.", "tool": "write_file", '
            '"path": "artifacts/list.md", "content": "1. Ada\n2. Bo\n"}',
            "Result of your write_file step: wrote artifacts/list.md",
            '{"thought": "The list is written.", "tool": "finish", "answer": "Wrote '
            'artifacts/list.md: 1. Ada, 2. Bo."}',
        ]
    return []


def intro(
    task: dict[str, Any],
    ctx: dict[str, Any],
    tools: list[str],
    home: Path,
    network: str,
    limits: dict[str, Any],
    replies: list[dict[str, Any]],
    remembered: str = "",
) -> str:
    """The first message: the agent's situation, what it remembers, then the task."""
    lines = [
        "You are an agent working alone on a task in a Linux sandbox. You work in steps: "
        'each reply is one JSON object {"thought": ..., "tool": ..., and the tool\'s '
        "arguments}; you then see the tool's result. The thought says in one sentence "
        "what the last result told you and why you take this step.",
        # Said here, without the path: the 1.5B model told it only at the end (for
        # the prefix below) asked its owner instead of reading servers.txt, twice
        # (tests/integration/test_learning.py, slow, 2026-12-01).
        "Your home is the current directory: relative paths start there, and the "
        "files a task names are there.",
        {
            "none": "You have no network access.",
            "fetch": "You can read web pages with fetch.",
            "online": "Your commands may reach the network.",
        }[network],
        "Files you write under artifacts/ (e.g. artifacts/report.md) are given to your "
        "owner as the task's results.",
        "Tools:",
        *[f"- {describe(t, limits['shell_timeout'])}" for t in tools],
        f"You have at most {limits['steps']} steps and {limits['tokens']} tokens: check "
        "your work, then finish.",
        *example(tools),
        "How to work: find facts with the tools, never guess them."
        + (
            " Count, sum, sort and compare with a command (wc, sort, grep, python3), not "
            "by reading; read and write CSV and JSON with python3's csv and json modules. "
            "Run a script you write before you finish, and check its output."
            if "shell" in tools
            else ""
        )
        + " Never take the same step twice: its result will not change. When the task "
        "asks for a file, write it before you finish. The answer states the result "
        "itself (the numbers, names or lines asked for), not only what you did.",
        # After all that agents of one template share, so that the model service
        # reuses its KV cache for it (agentd.inference.prefix): second, the home
        # cut the prefix a goal's sub-agents share short (bench/README, "Goals").
        f"Your home: {home}",
    ]
    if ctx.get("project"):
        lines.append(f"Project: {ctx['project']}")
    deps = [d for d in ctx.get("depends") or [] if isinstance(d, dict)]
    if deps:
        lines.append("Results of the tasks this one depends on:")
        for d in deps:
            result = clip(str(d.get("result") or "(none)"), DEPEND_CHARS)
            files = ", ".join(str(n) for n in d.get("artifacts") or [])
            made = f" [its files, kept for your owner: {files}]" if files else ""
            lines.append(
                f"- task {d.get('id')} {d.get('title', '')!r} ({d.get('status')}): {result}{made}"
            )
    mail = [m for m in ctx.get("messages") or [] if isinstance(m, dict)]
    if mail:
        lines.append("Messages to you, unread until now:")
        lines += [f"- {shown_message(m)}" for m in mail]
    notes = [str(n) for n in (ctx.get("notes") or task.get("notes") or [])][:10]
    if notes:
        lines += ["Your owner's notes:", *[f"- {clip(n, 500)}" for n in notes]]
    if replies:
        lines.append("Your owner's answers:")
        lines += [
            f"- Q: {clip(str(r.get('question', '')), 300)} A: {r.get('answer', '')}"
            for r in replies
        ]
    if ctx.get("last_error"):
        lines.append(
            f"A previous attempt at this task failed: {clip(str(ctx['last_error']), 600)}. "
            "Do not repeat its mistake."
        )
    if remembered:
        lines.append(remembered)
    lines.append(f"{TASK_MARKER}{task.get('title', '')}")
    if task.get("description"):
        lines.append(str(task["description"]))
    return "\n".join(lines)


def clip(text: str, limit: int, tail: float = 1 / 3) -> str:
    """TEXT within LIMIT characters: its head and its tail, saying how much was cut."""
    if len(text) <= limit:
        return text
    keep_tail = int(limit * tail)
    keep_head = max(0, limit - keep_tail - 40)
    cut = len(text) - keep_head - keep_tail
    return f"{text[:keep_head]}\n[... {cut} characters cut ...]\n{text[len(text) - keep_tail :]}"


def shown(tool: str, result: str, left: int, title: str, chars: int) -> str:
    """A tool's result as the model sees it: named, with where it stands and
    the task restated. With bare output Qwen2.5-Coder-1.5B took the same
    step again and again (tools/loop_try.py, 2026-11-30); naming the result
    alone did not stop that (checks.repeated does), but is kept: the model sees
    which step each output answers."""
    after = (
        "the command failed: read its error, then run a corrected command"
        if tool == "shell" and failed(result)
        else "use this result, or finish with the answer"
    )
    tail = (
        f"\n[{left} steps left. Your task: {clip(title, 200)}. Next step: {after}.]"
        if left > 1
        else "\n[last step: finish now]"
    )
    return f"Result of your {tool} step:\n" + clip(result, chars) + tail


def step_message(step: dict[str, Any]) -> str:
    """A step as the model wrote it (thought, tool, arguments), compact JSON."""
    return json.dumps(step, ensure_ascii=False)


class Turn:
    __slots__ = ("full", "kind", "role", "shown")

    def __init__(self, role: str, full: str, kind: str) -> None:
        self.role = role
        self.full = full
        self.shown = full
        self.kind = kind  # intro | step | result | note


class Conversation:
    """The messages of one task; what is shown of each is trimmed in place."""

    def __init__(self, first: str, persona: str = "") -> None:
        self.turns = [Turn("user", first, "intro")]
        self.persona = persona  # the template's system prompt
        self.dropped = 0
        self.tokens_per_char = TOKENS_PER_CHAR

    def add(self, step: str, result: str) -> None:
        self.turns += [Turn("assistant", step, "step"), Turn("user", result, "result")]

    def messages(self) -> list[dict[str, str]]:
        """The first message's situation and rules as the system prompt (after
        the template's persona), its task as the user's first turn, the way chat
        models are trained. Measured on 6 pilot tasks with Qwen2.5-Coder-1.5B
        (tools/loop_try.py, 2026-11-30, one run each): 2 passed with all in one
        user turn, 2 with this, 3 with a variant (the rules as the system
        prompt, "Begin." as the task): within that model's run-to-run spread.
        If trimming cut the task's marker, the first message stays whole."""
        first, *rest = self.turns
        head, marker, task = first.shown.rpartition(TASK_MARKER)
        if marker and head:
            system = f"{self.persona}\n\n{head}" if self.persona else head
            opening = [
                {"role": "system", "content": system},
                {"role": "user", "content": marker.lstrip("\n") + task},
            ]
        else:
            opening = [{"role": first.role, "content": first.shown}]
        return opening + [{"role": t.role, "content": t.shown} for t in rest]

    def chars(self) -> int:
        return sum(len(t.shown) for t in self.turns)

    def estimate(self) -> int:
        return int(self.chars() * self.tokens_per_char) + MESSAGE_TOKENS * len(self.turns)

    def calibrate(self, prompt_tokens: int, chars: int) -> None:
        """What the service counted for CHARS characters (its system prompt and
        chat template included: conservative for the longer prompts to come)."""
        if prompt_tokens > 0 and chars > 0:
            self.tokens_per_char = min(1.0, max(0.15, prompt_tokens / chars * 1.05))

    def fit(self, room: int) -> bool:
        """Trim until the estimate is within ROOM tokens (to TRIM_TO of it when
        trimming at all); True if anything was trimmed."""
        if self.estimate() <= room:
            return False
        target = int(room * TRIM_TO)
        for stage in (self._old_results, self._old_steps, self._drop_oldest, self._last):
            stage(target)
            if self.estimate() <= target:
                break
        return True

    def _chars_over(self, target: int) -> int:
        return int((self.estimate() - target) / self.tokens_per_char) + 1

    def _pairs(self) -> list[tuple[Turn, Turn]]:
        body = self.turns[1:]
        return [(body[i], body[i + 1]) for i in range(0, len(body) - 1, 2)]

    def _old_results(self, target: int) -> None:
        for _step, result in self._pairs()[:-KEEP_LAST]:
            if self.estimate() <= target:
                return
            if len(result.shown) > 240:
                result.shown = clip(result.shown, 200)
        for _step, result in self._pairs()[:-KEEP_LAST]:
            if self.estimate() <= target:
                return
            result.shown = "[output trimmed]"

    def _old_steps(self, target: int) -> None:
        for step, _result in self._pairs()[:-KEEP_LAST]:
            if self.estimate() <= target:
                return
            if len(step.shown) > 300:
                step.shown = clip(step.shown, 240)

    def _drop_oldest(self, target: int) -> None:
        while len(self._pairs()) > KEEP_LAST and self.estimate() > target:
            del self.turns[1:3]
            self.dropped += 1
        if self.dropped:
            first = self.turns[0]
            first.shown = first.full + f"\n({self.dropped} earlier steps were dropped to fit.)"

    def _last(self, target: int) -> None:
        """Still over: the remaining steps' texts, then the first message itself."""
        while self.estimate() > target:
            longest = max(self.turns, key=lambda t: len(t.shown))
            if len(longest.shown) <= 200:
                return  # nothing left worth cutting: the model gets what fits best
            over = self._chars_over(target)
            keep = max(160, len(longest.shown) - over)
            tail = 0.6 if longest.kind == "intro" else 1 / 3  # the task is at the intro's end
            longest.shown = clip(longest.shown, keep, tail)


def shown_message(m: dict[str, Any]) -> str:
    """One message as the model sees it: who wrote, the subject, the body (cut)."""
    subject = str(m.get("subject") or "").strip()
    head = f"from {m.get('from')}" + (f" ({clip(subject, 120)})" if subject else "")
    return f"{head}: {clip(str(m.get('body') or ''), MESSAGE_CHARS)}"


# ------------------------------------------------------------------ resuming
def offered(tools: list[str], profile: str | None, memory: bool = False) -> list[str]:
    """The tools a template's names give: files -> read/list/write, shell, web ->
    fetch (not offline); recall when the agent has a memory; delegate; then
    ask_owner and finish always."""
    out = []
    if "shell" in tools:
        out.append("shell")
    if "files" in tools:
        out += ["read_file", "list_files", "write_file"]
    if "web" in tools and profile != "offline":
        out.append("fetch")
    if memory:
        out.append("recall")
    if "delegate" in tools:
        out.append("delegate")
    if "messages" in tools:
        out += ["send_message", "read_messages"]
    return [*out, "ask_owner", "finish"]


def chain_of(trace: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The steps this claim continues: those since the last attempt that ended
    otherwise than by letting the task go (asked, awaiting approval, deferred);
    empty when the last attempt itself ended so (it failed or its runtime died)."""
    chain: list[dict[str, Any]] = []
    for step in trace:
        new_attempt = bool(chain) and step.get("attempt") != chain[-1].get("attempt")
        if new_attempt and chain[-1].get("tool") not in RELEASE_MARKERS:
            chain = []
        chain.append(step)
    if chain and chain[-1].get("tool") not in RELEASE_MARKERS:
        return []
    return chain


def match_replies(
    chain: list[dict[str, Any]], replies: list[dict[str, Any]]
) -> tuple[dict[int, str], list[dict[str, Any]]]:
    """Which reply answers which ask_owner step (by question, else in order); the rest."""
    left = list(replies)
    answers: dict[int, str] = {}
    for i, s in enumerate(chain):
        if s.get("tool") != "ask_owner":
            continue
        q = str((s.get("arguments") or {}).get("question", ""))
        found = next((r for r in left if r.get("question") == q), None) or (
            left[0] if left else None
        )
        if found is not None:
            left.remove(found)
            answers[i] = str(found.get("answer", ""))
    return answers, left
