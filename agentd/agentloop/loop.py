"""The agent loop: a free-form task worked on in model steps, each one tool.

Invariants, and why:
- Every step is recorded (host.record_step) before the loop acts on what it
  asks for when that lets the task go (ask_owner, an approval), so that the
  next claim rebuilds the conversation from the trace and continues where it
  stopped, with the owner's answer or the approval's outcome in context.
- A gated action (agentd.shellgate.needs_approval) runs only after
  host.use_approval has committed its approval as used: a `used` approval is
  never run again (the runtime may have died after using it), and each
  approval is used at most once by this loop.
- The prompt never outgrows the context (prompt.Conversation.fit); a step cut
  at max_tokens is asked again once with more room; a request the service
  finds too long teaches the loop the real context size and is asked again.
- The task never fails for running out: the last allowed step, and the one
  after the token budget is spent, may only finish.
- Transient model errors (Overloaded, ModelUnavailable, a lost bus) defer the
  task with backoff; a quota blocks it; a model that cannot produce a valid
  step fails it after MAX_INVALID tries, saying so.
- Memory (agentd.agentloop.memory) never fails a task: notes recalled before
  the first step are recorded once and rebuilt on resume; a task that ended
  leaves a lesson, or a step saying why not.

Tried and left out: a plan before the first step (tools/loop_try.py, 1.5B
model, 2026-11-30): in plain text the model wrote steps and made-up results;
as JSON it still wrote "0 2 * * 1-5" for "02:30", and its arrays took minutes.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..chat import TOO_LONG
from . import checks, delegate, messages, planning, prompt
from .host import ModelError, Outcome, TaskHost
from .memory import Memory, is_auto
from .prompt import chain_of, match_replies, offered
from .steps import InvalidStep, parse, within_step_limit
from .tools import ARTIFACTS_DIR, SHELL_TIMEOUT_S, Toolbox, collect, snapshot

STEPS = 10  # model steps per task, unless the template says
TASK_TOKENS = 20_000  # prompt + completion tokens per task, unless said
CONTEXT_TOKENS = 2048  # the model's context when nobody says (SmolLM2-135M)
MARGIN_TOKENS = 48  # the estimate's error, on top of the calibration
RESULT_CHARS = 4000  # of a step's result recorded in the trace
STEP_BYTES = 15 * 1024  # a recorded step's JSON: agentd refuses over 16 KiB
STEP_ARG_CHARS = 4000
MAX_INVALID = 3  # invalid steps in a row before the task fails
# This many steps refused as repeats (checks.repeated): the next may only finish.
# SmolLM2-135M repeated `echo` for all 10 steps of "Say hello to the team".
REPEATS = 3
# A repeated step is first asked again this many times with some temperature:
# greedy decoding gives the same step for the same prompt, a sample may not.
RESAMPLES, RESAMPLE_TEMPERATURE = 2, 0.7
TOO_LONG_RETRIES = 2
TRANSIENT = ("Overloaded", "ModelUnavailable", "Failed")
BACKOFF_S, BACKOFF_MAX_S = 10.0, 600.0

Gate = Callable[[dict[str, Any], str, dict[str, Any]], "str | None"]


def default_gate(rules: dict[str, Any], tool: str, arguments: dict[str, Any]) -> str | None:
    from .. import shellgate  # the GATE's parser: loaded with the first gated check

    return shellgate.needs_approval(rules, tool, arguments)


class AgentLoop:
    def __init__(
        self,
        home: Path,
        settings: dict[str, Any],
        host: TaskHost,
        toolbox: Toolbox | None = None,
        gate: Gate | None = None,
        aborted: Callable[[int], bool] | None = None,
    ) -> None:
        self.home = home
        self.settings = settings
        self.host = host
        self.toolbox = toolbox or Toolbox(home)
        self.gate = gate or default_gate
        self.aborted = aborted or (lambda _tid: False)
        self.context_tokens = int(settings.get("context_tokens") or CONTEXT_TOKENS)

    # ------------------------------------------------------------------ one task
    async def run(self, task: dict[str, Any]) -> Outcome:
        run = _Run(self, task)
        return await run.go()

    def step_tokens(self) -> int:
        """max_tokens of a step: room for a small file, a quarter of the context."""
        return max(64, min(768, self.context_tokens // 4))


class _Run:
    """One claim of one task."""

    tools: list[str]  # set in go(); typed here for agentd.agentloop.memory
    budget: int
    conv: prompt.Conversation

    def __init__(self, loop: AgentLoop, task: dict[str, Any]) -> None:
        self.loop = loop
        self.host = loop.host
        self.task = task
        self.tid = int(task["id"])
        self.attempt = int(task.get("attempt") or 1)
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0, "computed_tokens": 0}
        self.steps = 0
        self.n = 0  # the last step number in the trace
        self.used: set[int] = set()  # approvals this run used or answered from
        self.actions: list[tuple[str, str]] = []  # this run's steps, as (tool, arguments)
        self.repeats = 0  # steps refused as repeats: a looping model is made to finish
        self.reminded: set[str] = set()  # files the model was told of (_before_finish)
        self.outputs: dict[checks.Action, str] = {}  # each action's last result
        self.memory = Memory(self)  # recalled notes, the recall tool, the lesson

    async def go(self) -> Outcome:
        # The prompt says to write under artifacts/: it must exist, or `cmd > artifacts/x`
        # fails and small models write elsewhere (tools/loop_try.py, 2026-11-30).
        with contextlib.suppress(OSError):
            (self.loop.home / ARTIFACTS_DIR).mkdir(exist_ok=True)
        ctx = await self.host.context(self.tid)
        settings = self.loop.settings
        if planning.role(ctx):  # a goal's planner: one answer, no tools
            return await planning.answer(
                self.host, self.task, ctx, str(settings.get("persona") or "")
            )
        self.ctx = ctx
        self.tools = offered(
            list(settings.get("tools", [])), settings.get("profile"), self.memory.on
        )
        self.max_steps = max(1, int(settings.get("steps") or STEPS))
        self.budget = int(ctx.get("budget") or settings.get("task_tokens") or TASK_TOKENS)
        trace = [s for s in ctx.get("trace") or [] if isinstance(s, dict)]
        self.n = max([int(s.get("n") or 0) for s in trace], default=0)
        chain = chain_of(trace)
        answers, other_replies = match_replies(chain, list(ctx.get("replies") or []))
        network = (
            "fetch"
            if "fetch" in self.tools
            else "none"
            if settings.get("profile", "offline") == "offline"
            else "online"
        )
        limits = {"steps": self.max_steps, "tokens": self.budget, "shell_timeout": SHELL_TIMEOUT_S}
        persona = str(settings.get("persona") or "")
        situation = (ctx, self.tools, self.loop.home, network, limits, other_replies)
        first = len(prompt.intro(self.task, *situation)) + len(persona)
        notes = await self.memory.prefill(chain, first)  # may take recall from self.tools
        self.conv = prompt.Conversation(prompt.intro(self.task, *situation, notes), persona)
        pending = self._rebuild(chain, answers)
        before = snapshot(self.loop.home / "artifacts")
        since_ns = int(float(chain[0].get("at") or 0) * 1e9) if chain else 0
        try:
            outcome = await self._work(pending)
        except ModelError as e:
            outcome = await self._model_error(e, chain)
        if outcome.status in ("completed", "failed"):  # not when it waits: it is not over
            await self.memory.lesson(outcome)
            found, left_out = collect(self.loop.home, before, since_ns)
            outcome.artifacts = found
            if left_out:
                outcome.result["artifacts_left_out"] = left_out
        return outcome

    def _rebuild(
        self, chain: list[dict[str, Any]], answers: dict[int, str]
    ) -> dict[str, Any] | None:
        """The conversation so far from the trace; the step still waiting for an
        answer (the last one, if it let the task go), to resolve first."""
        pending = None
        for i, s in enumerate(chain):
            tool = str(s.get("tool"))
            args = dict(s.get("arguments") or {})
            last = i == len(chain) - 1
            self._count(s)
            if tool in ("deferred", "error", "lesson") or is_auto(s):
                self.steps += tool == "error"
                continue
            if tool == "approval":
                if last:
                    pending = s
                continue  # the next step resolved it: that one is in the conversation
            self.steps += 1
            if tool == "denied":
                tool, args = str(args.get("tool")), dict(args.get("arguments") or {})
            result = str(s.get("result") or "")
            if s.get("tool") == "ask_owner":
                result = (
                    f"The owner answered: {answers[i]}"
                    if i in answers
                    else "The owner gave no answer: decide yourself or finish."
                )
            elif tool != "finish":  # a repeat across claims is a repeat too
                self.actions.append(checks.action(tool, args))
                self.outputs[self.actions[-1]] = result
            self.conv.add(self._said(s.get("thought"), tool, args), result)
        return pending

    def _count(self, s: dict[str, Any]) -> None:
        for k in self.usage:
            self.usage[k] += int(s.get(k) or 0)

    @staticmethod
    def _said(thought: Any, tool: str, args: dict[str, Any]) -> str:
        return prompt.step_message({"thought": str(thought or ""), "tool": tool, **args})

    # ------------------------------------------------------------------ the loop
    async def _work(self, pending: dict[str, Any] | None) -> Outcome:
        if pending is not None:
            inner = dict(pending.get("arguments") or {})
            tool, args = str(inner.get("tool")), dict(inner.get("arguments") or {})
            self.steps += 1  # the step that asked is counted once it is resolved
            self.actions.append(checks.action(tool, args))
            done = await self._act(tool, args, pending.get("thought"), {}, resumed=True)
            if done is not None:
                return done
        invalid = 0
        while True:
            if self.loop.aborted(self.tid):
                return Outcome("released", reason="aborted")
            spent = self.usage["prompt_tokens"] + self.usage["completion_tokens"]
            final = (
                self.steps + 1 >= self.max_steps or spent >= self.budget or self.repeats >= REPEATS
            )
            tools = ["finish"] if final else self.tools
            started = time.monotonic()
            try:
                heat = RESAMPLE_TEMPERATURE if invalid else 0.0  # greedy gave an invalid one
                step, usage = await self._think(tools, final, spent >= self.budget, heat)
                step, usage = await self._unrepeated(step, usage, tools, spent >= self.budget)
            except InvalidStep as e:
                invalid += 1
                self.steps += 1
                said = {"text": prompt.clip(e.text, 400)}
                await self._record("error", said, str(e), e.usage, started)
                self.conv.add(e.text or "(nothing)", f"error: {e}. Reply with one valid step.")
                if invalid >= MAX_INVALID:
                    return Outcome(
                        "failed",
                        result=self._result(""),
                        error=f"the model did not produce a valid step after {invalid} tries: {e}",
                    )
                continue
            invalid = 0
            self.steps += 1
            tool = str(step.pop("tool"))
            thought = step.pop("thought", "")
            if tool == "finish":
                answer = str(step.get("answer", ""))
                note = None if final else self._before_finish()
                if note is not None:  # refused: the model is told why
                    await self._record("finish", step, note, usage, started, thought)
                    self.conv.add(self._said(thought, tool, step), self._shown(tool, note))
                    continue
                await self._record("finish", step, answer, usage, started, thought)
                return Outcome("completed", result=self._result(answer))
            action = checks.action(tool, step)
            repeated = checks.repeated(self.actions, action)
            self.actions.append(action)
            if repeated:  # not run again: told so, the model must move on
                self.repeats += 1
                failed = checks.failed(self.outputs.get(action, ""))
                note = checks.REPEATED_FAILURE if failed else checks.REPEATED
                await self._record(tool, step, note, usage, started, thought)
                self.conv.add(self._said(thought, tool, step), self._shown(tool, note))
                continue
            done = await self._act(tool, step, thought, usage, started=started)
            if done is not None:
                return done

    async def _tool(self, tool: str, args: dict[str, Any]) -> str:
        if tool == "delegate":  # through agentd, not in the home (agentd.agentloop.delegate)
            return await delegate.run(self.host, self.tid, self.attempt, args)
        if tool in messages.TOOLS:  # so are messages (agentd.agentloop.messages)
            return await messages.TOOLS[tool](self.host, args)
        return await self.loop.toolbox.run(self.tid, tool, args)

    async def _act(
        self,
        tool: str,
        args: dict[str, Any],
        thought: Any,
        usage: dict[str, int],
        started: float | None = None,
        resumed: bool = False,
    ) -> Outcome | None:
        """Run one tool step (asking first if it is gated); an Outcome if the
        task is let go, None to go on."""
        started = time.monotonic() if started is None else started
        if tool == "ask_owner":
            question = str(args.get("question", ""))
            await self._record("ask_owner", args, "", usage, started, thought)
            await self.host.ask_owner(self.tid, self.attempt, question)
            return Outcome("released", reason=f"question: {question}")
        if tool == "recall":  # never gated (agentd.agentloop.memory)
            await self.memory.recall_step(args, thought, usage, started)
            return None
        rules = self.ctx.get("rules") or {}
        why = self.loop.gate(rules, tool, args)
        recorded = tool
        if why is None:
            result = await self._tool(tool, args)
        else:
            approval = self._approval(tool, args)
            status = approval.get("status") if approval else None
            if status == "granted":
                assert approval is not None
                self.used.add(int(approval["id"]))
                await self.host.use_approval(int(approval["id"]), self.attempt)
                result = await self._tool(tool, args)
            elif status == "denied":
                assert approval is not None
                reason = str(approval.get("reason") or "no reason given")
                recorded, result = "denied", f"denied by the owner: {reason}. Do something else."
            elif status == "used":
                assert approval is not None
                self.used.add(int(approval["id"]))
                recorded = "denied"
                result = (
                    "not run again: this exact action was approved and already run in an "
                    "earlier attempt; its result is unknown. Check its effect another way."
                )
            else:
                inner = {"tool": tool, "arguments": args, "why": why}
                note = f"waiting for the owner's approval: {why}"
                await self._record("approval", inner, note, usage, started, thought)
                await self.host.request_approval(self.tid, self.attempt, tool, args)
                return Outcome("released", reason=note)
        self.outputs[checks.action(tool, args)] = result
        rec_args = {"tool": tool, "arguments": args} if recorded == "denied" else args
        await self._record(
            recorded, rec_args, result, usage if not resumed else {}, started, thought
        )
        self.conv.add(self._said(thought, tool, args), self._shown(tool, result))
        return None

    def _approval(self, tool: str, args: dict[str, Any]) -> dict[str, Any] | None:
        """The approval for exactly this action that this run has not used yet:
        granted first, then denied, then used."""
        found = [
            a
            for a in self.ctx.get("approvals") or []
            if a.get("tool") == tool
            and a.get("arguments") == args
            and int(a["id"]) not in self.used
        ]
        for status in ("granted", "denied", "used"):
            for a in found:
                if a.get("status") == status:
                    return dict(a)
        return None

    def _before_finish(self) -> str | None:
        """Why a finish is refused, once per file: a file the task names is
        missing, or a script written was never run (agentd.agentloop.checks)."""
        missing = [p for p in checks.unwritten(self.task, self.loop.home) if p not in self.reminded]
        if missing:
            self.reminded.update(missing)
            return checks.NOT_WRITTEN.format(", ".join(missing))
        if "shell" in self.tools:
            for path, command in checks.untested(self.actions).items():
                if path not in self.reminded:
                    self.reminded.add(path)
                    return checks.UNTESTED.format(path=path, run=command)
        return None

    async def _unrepeated(
        self, step: dict[str, Any], usage: dict[str, int], tools: list[str], broke: bool
    ) -> tuple[dict[str, Any], dict[str, int]]:
        """STEP, or when it repeats a step whose result cannot have changed, a
        fresh sample (RESAMPLES tries); the repeat itself if none differs."""
        for _ in range(RESAMPLES):
            args = {k: v for k, v in step.items() if k not in ("tool", "thought")}
            if step.get("tool") == "finish" or not checks.repeated(
                self.actions, checks.action(str(step.get("tool")), args)
            ):
                break
            again, more = await self._think(tools, False, broke, RESAMPLE_TEMPERATURE)
            usage = {k: usage.get(k, 0) + more.get(k, 0) for k in (*usage, *more)}
            step = again
        return step, usage

    def _shown(self, tool: str, result: str) -> str:
        left = self.max_steps - self.steps
        chars = max(300, int(self.loop.context_tokens * 0.75))
        return prompt.shown(tool, result, left, str(self.task.get("title", "")), chars)

    def _result(self, answer: str) -> dict[str, Any]:
        return {"answer": answer, "steps": self.steps, **self.usage}

    async def _record(
        self,
        tool: str,
        args: dict[str, Any],
        result: str,
        usage: dict[str, int],
        started: float,
        thought: Any = "",
        **extra: Any,  # a recall's "memories" or "error"
    ) -> None:
        self.n += 1
        step = {
            "n": self.n,
            "attempt": self.attempt,
            "tool": tool,
            "arguments": args,
            "result": result[:RESULT_CHARS],
            "prompt_tokens": int(usage.get("prompt_tokens", 0)),
            "computed_tokens": int(usage.get("computed_tokens", 0)),
            "completion_tokens": int(usage.get("completion_tokens", 0)),
            "seconds": round(time.monotonic() - started, 3),
            "at": time.time(),
        }
        if thought:
            step["thought"] = str(thought)[: prompt.THOUGHT_CHARS]
        step.update(extra)
        await self.host.record_step(
            self.tid, self.attempt, within_step_limit(step, STEP_ARG_CHARS, STEP_BYTES)
        )

    # ------------------------------------------------------------------ the model
    async def _think(
        self, tools: list[str], final: bool, broke: bool, temperature: float = 0.0
    ) -> tuple[dict[str, Any], dict[str, int]]:
        """One valid step, and the tokens it cost; InvalidStep (with .usage) if none."""
        schema = json.dumps(prompt.step_schema(tools))
        max_tokens = self.loop.step_tokens()
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "computed_tokens": 0}
        if final and self.conv.turns[-1].role == "user":
            why = "your token budget is spent" if broke else "this is your last step"
            self.conv.turns[-1].shown += f"\n[{why}: finish now with your answer]"
        answer: dict[str, Any] = {}
        for attempt in (1, 2):
            answer = await self._ask(schema, max_tokens, temperature)
            for k, a in (
                ("prompt_tokens", "prompt_tokens"),
                ("completion_tokens", "completion_tokens"),
                ("computed_tokens", "prompt_tokens_computed"),
            ):
                usage[k] += int(answer.get(a) or 0)
                self.usage[k] += int(answer.get(a) or 0)
            cut = answer.get("finish_reason") == "length"
            if cut and attempt == 1 and not checks.degenerate(str(answer.get("text", ""))):
                max_tokens = min(max_tokens * 2, self.loop.context_tokens // 2)
                continue
            break
        text = str(answer.get("text", ""))
        try:
            return parse(text, tools, answer.get("finish_reason")), usage
        except InvalidStep as e:
            e.usage = usage
            raise

    async def _ask(self, schema: str, max_tokens: int, temperature: float) -> dict[str, Any]:
        """Think, with the prompt fitted to the context; a prompt the service finds
        too long teaches the real context size and token count, and is fitted again."""
        for tries in range(TOO_LONG_RETRIES + 1):
            room = self.loop.context_tokens - max_tokens - MARGIN_TOKENS
            self.conv.fit(max(64, room))
            messages = self.conv.messages()
            chars = sum(len(m["content"]) for m in messages)
            options: dict[str, Any] = {"max_tokens": max_tokens, "json_schema": schema}
            options["task"] = self.tid
            if temperature > 0:
                options["temperature"] = temperature
            try:
                answer = await self.host.think(messages, options)
            except ModelError as e:
                m = TOO_LONG.search(str(e))
                if e.name != "InvalidArgument" or m is None or tries == TOO_LONG_RETRIES:
                    raise
                self.conv.calibrate(int(m.group(1)), chars)
                self.loop.context_tokens = min(self.loop.context_tokens, int(m.group(3)))
                max_tokens = min(max_tokens, max(32, self.loop.context_tokens // 4))
                continue
            self.conv.calibrate(int(answer.get("prompt_tokens") or 0), chars)
            if answer.get("context_tokens"):  # the hook: a service that says its context
                self.loop.context_tokens = int(answer["context_tokens"])
            return answer
        raise AssertionError("unreachable")

    async def _model_error(self, e: ModelError, chain: list[dict[str, Any]]) -> Outcome:
        if e.name == "QuotaExceeded":  # agentd resumes it at the reset
            return Outcome("blocked", reason=str(e))
        if e.name in TRANSIENT:
            waits = sum(1 for s in chain if s.get("tool") == "deferred")
            seconds = min(BACKOFF_MAX_S, BACKOFF_S * 2**waits)
            reason = f"the model is busy or away ({e.name}: {e}); again in {seconds:g} s"
            await self._record("deferred", {"seconds": seconds}, reason, {}, time.monotonic())
            await self.host.defer(self.tid, self.attempt, seconds, reason)
            return Outcome("released", reason=reason)
        return Outcome("failed", result=self._result(""), error=f"model: {e}")
