#!/usr/bin/python3
"""Plan validity: how often a model's first plan for a goal is one agentd runs.

Issue 14: a planner answers under the plan's JSON schema (agentd.goals.plan),
and with the 1.5B model at least 95% of first answers must be valid DAGs
(agentd's own check: ids unique, dependencies that exist, no cycle, known
capabilities, at most 12 steps). Below that, agentd falls back to asking again
with the errors (three answers in all), then fails the goal saying why; this
measures that path too: an invalid first answer is asked again exactly as the
runner asks (agentd.goals.prompt with the errors as feedback).

For each intent below, the planner's request as agentd makes it: the planner
template's system prompt, agentd.goals.prompt.plan_request with the
capabilities of every shipped template but the planner's (as if the owner had
one agent of each), the schema, PLAN_TOKENS, temperature 0. Starts
agentd-inference on the GGUF (no systemd, no agentd; as bench/lessons.py).

    PYTHONPATH=build/vendor AGENTD_LLAMA_VENDOR=build/vendor-llama /usr/bin/python3 \\
        bench/plans.py --gguf build/model-cache/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tools")]

from loop_try import serve, wait_loaded  # noqa: E402  (the service, as the loop bench starts it)

from agentd.agentloop.planning import PLAN_TOKENS  # noqa: E402
from agentd.goals.model import MAX_ANSWERS, PLAN_CAPABILITY, Goal  # noqa: E402
from agentd.goals.plan import MAX_STEPS, InvalidPlan, Plan, parse, schema  # noqa: E402
from agentd.goals.prompt import plan_request  # noqa: E402
from agentd.modelclient import ModelClient  # noqa: E402
from agentd.templates import Catalog  # noqa: E402

INTENTS = (
    "Summarize the three quarterly reports in ~/reports and draft a one-page memo for the team",
    "Find which directories under ~/projects use the most disk and propose what to delete",
    "Check that our five web services answer on their health URLs and write a status note",
    "Research the current stable versions of Python, Node.js and Go and compare their "
    "release schedules",
    "Proofread the README and the user guide in ~/docs and list every unclear sentence",
    "Collect the error lines of today's logs in ~/logs, group them by cause, and suggest fixes",
    "Write a shell script that backs up ~/notes every night, test it, and document it",
    "Prepare a comparison table of three open-source password managers with sources",
    "Translate the onboarding checklist into plain English and make a printable version",
    "Audit the cron jobs on this machine and report which ones look unused",
    "Draft a blog post about our move to systemd units, with an outline first",
    "Turn the meeting notes in ~/meetings into a list of action items per person",
    "Check the CSV files in ~/data for malformed rows and write a cleaned copy of each",
    "Find out why the build in ~/app is slow and suggest three improvements",
    "Write release notes for version 2.1 from the git log in ~/app",
    "Plan a small team offsite: agenda, a budget table and an invitation email",
    "Read the five papers in ~/papers and write a related-work section citing them",
    "Inventory the installed packages, find the ones with known security updates, and "
    "write a patch plan",
    "Create a FAQ for new users from the support emails in ~/support",
    "Monitor the disk usage of / for an hour and report the trend",
)


def offered(catalog: Catalog) -> dict[str, str]:
    """As agentd.goals.runner.offered, for an owner with one agent of each template."""
    caps: dict[str, list[str]] = {}
    for t in catalog.templates():
        for cap in t.capabilities:
            if cap != PLAN_CAPABILITY:
                caps.setdefault(cap, []).append(t.description or t.name)
    return {cap: "; ".join(what) for cap, what in caps.items()}


def goal(n: int, intent: str, feedback: str = "") -> Goal:
    return Goal(
        id=n, owner_uid=1000, intent=intent, project_id=None, planner="planner",
        state="planning", plan=None, round=1, answers=0, feedback=feedback, approve_plan=0,
        max_agents=4, result=None, error=None, created_at=0.0, updated_at=0.0,
        finished_at=None, version=1,
    )  # fmt: skip


async def ask(client: ModelClient, persona: str, text: str, caps: dict[str, str]) -> dict:
    request = {
        "op": "generate",
        "agent": "planner",
        "owner": "1",
        "messages": [{"role": "system", "content": persona}, {"role": "user", "content": text}],
        "max_tokens": PLAN_TOKENS,
        "temperature": 0.0,
        "json_schema": schema(caps, MAX_STEPS),
    }
    async for event in client.request(request):
        if event.get("event") == "done":
            return event
    raise RuntimeError("no answer")


def width(plan: Plan) -> int:
    """Steps that need no other step: what can start at once."""
    return sum(1 for s in plan.steps if not s.depends_on)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    catalog = Catalog(REPO / "policies", Path("/nonexistent"))
    persona = catalog.template("planner").system_prompt
    caps = offered(catalog)
    intents = INTENTS[: args.limit or None]
    work = Path(tempfile.mkdtemp(prefix="plans-"))
    proc, socket = serve(args.gguf.resolve(), work, args.context, args.sequences)
    client = ModelClient(socket)
    gate = asyncio.Semaphore(args.sequences)
    results: list[dict[str, Any]] = []

    async def one(n: int, intent: str) -> None:
        row: dict[str, Any] = {"intent": intent, "answers": []}
        feedback = ""
        for _ in range(MAX_ANSWERS):
            async with gate:
                done = await ask(
                    client, persona, plan_request(goal(n, intent, feedback), caps, MAX_STEPS), caps
                )
            said = {
                "finish_reason": done.get("finish_reason"),
                "tokens": done.get("completion_tokens"),
            }
            try:
                plan = parse(str(done.get("text", "")), caps, MAX_STEPS)
            except InvalidPlan as e:
                said.update(valid=False, errors=list(e.errors))
                row["answers"].append(said)
                feedback = "\n".join(e.errors)
                continue
            said.update(valid=True, steps=len(plan.steps), width=width(plan), plan=plan.as_dict())
            row["answers"].append(said)
            break
        row["first_valid"] = row["answers"][0]["valid"]
        row["valid"] = row["answers"][-1]["valid"]
        results.append(row)
        last = row["answers"][-1]
        shown = (
            f"{last['steps']} steps, {last['width']} at once"
            if last["valid"]
            else last["errors"][0]
        )
        mark = "ok  " if row["valid"] else "FAIL"
        n_said = len(row["answers"])
        print(f"{mark} {n_said} answer(s)  {shown[:70]:<70} {intent[:50]}", flush=True)

    try:
        await wait_loaded(client, proc)
        started = time.monotonic()
        await asyncio.gather(*(one(n, intent) for n, intent in enumerate(intents, 1)))
        took = time.monotonic() - started
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    valid = [r for r in results if r["valid"]]
    plans = [r["answers"][-1] for r in valid]
    return {
        "gguf": args.gguf.name,
        "intents": len(results),
        "first_answer_valid": sum(r["first_valid"] for r in results),
        "first_answer_rate": round(
            sum(r["first_valid"] for r in results) / max(1, len(results)), 4
        ),
        "valid_within_answers": len(valid),
        "max_answers": MAX_ANSWERS,
        "mean_steps": round(sum(p["steps"] for p in plans) / max(1, len(plans)), 2),
        "plans_with_parallel_steps": sum(1 for p in plans if p["width"] > 1),
        "seconds": round(took, 1),
        "goal": 0.95,
        "results": results,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", type=Path, required=True)
    ap.add_argument("--context", type=int, default=4096)
    ap.add_argument("--sequences", type=int, default=4)
    ap.add_argument("--limit", type=int, default=0, help="the first N intents only")
    ap.add_argument("--json", type=Path, help="write the report here")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report = asyncio.run(run(args))
    print(
        f"{report['first_answer_valid']}/{report['intents']} first plans valid "
        f"({report['first_answer_rate']:.1%}; goal 95%), {report['valid_within_answers']} within "
        f"{MAX_ANSWERS} answers, {report['mean_steps']} steps a plan, "
        f"{report['plans_with_parallel_steps']} with steps at once, {report['seconds']} s"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
