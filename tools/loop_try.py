#!/usr/bin/python3
"""Try the agent loop on tasks of bench/agent_tasks, outside agentd, for tuning.

Starts agentd-inference on a GGUF (no systemd, no agentd), and runs each task's
free-form loop (agentd.agentloop, the runtime's own code) in a scratch home
holding the task's fixtures, as the current user, with a host that answers
think() from the service and prints every step; then the task's checker.
No approvals are asked (no rules), no owner answers (ask_owner ends the try).

This is a developer's bench, not the evaluation: bench/agents.py runs the
same tasks through agentd, in the systemd machine, as real agents. Use this to
see why a model fails a task, change the loop, and try again in seconds.

    PYTHONPATH=build/vendor AGENTD_LLAMA_VENDOR=build/vendor-llama \\
        /usr/bin/python3 tools/loop_try.py --gguf build/model-cache/models/X.gguf [TASK...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench" / "agent_tasks")]

import suite  # noqa: E402  (bench/agent_tasks/suite.py)

from agentd.agentloop.host import HostError, ModelError  # noqa: E402
from agentd.executor import Executor  # noqa: E402
from agentd.modelclient import ModelClient  # noqa: E402
from agentd.templates import Catalog  # noqa: E402


class LocalHost:
    """TaskHost over a local inference service; prints the steps."""

    def __init__(self, client: ModelClient, system_prompt: str, verbose: bool) -> None:
        self.client, self.system_prompt, self.verbose = client, system_prompt, verbose
        self.steps: list[dict[str, Any]] = []

    async def think(
        self, messages: list[dict[str, str]], options: dict[str, Any]
    ) -> dict[str, Any]:
        wire = {k: v for k, v in options.items() if k in ("max_tokens", "temperature")}
        if options.get("json_schema"):
            wire["json_schema"] = json.loads(options["json_schema"])
        if messages[0]["role"] != "system" and self.system_prompt:  # as agentd's persona
            messages = [{"role": "system", "content": self.system_prompt}, *messages]
        request = {"op": "generate", "agent": "try", "owner": "1", "messages": messages}
        if os.environ.get("LOOP_TRY_DUMP"):  # the whole prompt, as the model gets it
            print(json.dumps(request["messages"], indent=1, ensure_ascii=False), flush=True)
        async for event in self.client.request({**request, **wire}):
            if event.get("event") == "done":
                return event
            if event.get("event") == "error":
                raise ModelError(str(event.get("error")), str(event.get("message")))
        raise ModelError("ModelUnavailable", "the service ended without an answer")

    async def context(self, task: int) -> dict[str, Any]:
        return {}

    async def record_step(self, task: int, attempt: int, step: dict[str, Any]) -> None:
        self.steps.append(step)
        if self.verbose:
            args = json.dumps(step.get("arguments"), ensure_ascii=False)[:300]
            result = str(step.get("result", "")).replace("\n", "\n        ")[:600]
            print(f"  [{step.get('n')}] {step.get('tool')} {args}\n        {result}", flush=True)

    async def ask_owner(self, task: int, attempt: int, question: str) -> None:
        raise HostError("AskOwner", f"asked the owner: {question}")

    async def defer(self, task: int, attempt: int, seconds: float, reason: str) -> None:
        raise HostError("DeferTask", f"deferred: {reason}")

    async def request_approval(self, *_args: Any) -> int:
        raise HostError("RequestApproval", "asked for an approval")

    async def use_approval(self, *_args: Any) -> None:
        raise HostError("UseApproval", "no approvals here")

    async def remember(self, text: str, kind: str, task: int) -> dict[str, Any]:
        """No memory here: the lesson is printed with its step, and not kept."""
        return {"added": 0, "skipped": 0, "tokens": 0, "ids": []}

    async def recall(self, query: str, k: int, task: int) -> list[dict[str, Any]]:
        return []


async def try_task(client: ModelClient, task: suite.Task, verbose: bool) -> tuple[bool, str]:
    template = Catalog(REPO / "policies", Path("/nonexistent")).template(task.template)
    with tempfile.TemporaryDirectory(prefix="loop-try-") as tmp:
        home = Path(tmp)
        suite.place_fixtures(task, home)
        host = LocalHost(client, template.system_prompt, verbose)
        settings = {
            "profile": template.profile,
            "steps": template.steps,
            "persona": template.system_prompt,
        }
        executor = Executor(home, list(template.tools), host, settings)
        spec = {"id": 1, "attempts": 1, "title": task.title, "description": task.description}
        started = time.monotonic()
        try:
            outcome = await executor.run(spec)
        except HostError as e:
            return False, str(e)
        result = suite.Result(
            outcome.status,
            str(outcome.result.get("answer", "")),
            suite.collect_artifacts(home),
            home,
            outcome.error,
        )
        passed, why = suite.judge(task, result)
        took = time.monotonic() - started
        print(f"  answer: {result.answer[:300]!r}\n  {len(host.steps)} steps, {took:.1f} s")
        return passed, why


def serve(
    gguf: Path, work: Path, context: int, sequences: int
) -> tuple[subprocess.Popen[bytes], Path]:
    config = work / "agentd.toml"
    config.write_text(f'[model]\npath = "{gguf}"\ncontext = {context}\nsequences = {sequences}\n')
    socket = work / "socket"
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agentd.inference",
            "--config",
            str(config),
            "--socket",
            str(socket),
        ],
        env=env,
    )
    return proc, socket


async def wait_loaded(client: ModelClient, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("agentd-inference exited")
        try:
            show = await client.call({"op": "show"})
            if show.get("state") == "loaded":
                return
        except Exception:  # not listening yet
            pass
        await asyncio.sleep(0.5)
    raise SystemExit("the model did not load in 300 s")


async def main_async(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="loop-try-svc-"))
    proc, socket = serve(args.gguf.resolve(), work, args.context, args.sequences)
    client = ModelClient(socket)
    passed = 0
    tasks = suite.load(args.tasks or None)
    try:
        await wait_loaded(client, proc)
        for task in tasks:
            print(f"== {task.name} ({task.template})", flush=True)
            ok, why = await try_task(client, task, not args.quiet)
            passed += ok
            print(f"  {'PASS' if ok else 'FAIL'}: {why}", flush=True)
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{passed}/{len(tasks)} passed")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tasks", nargs="*", help="task names (default: all)")
    ap.add_argument("--gguf", type=Path, required=True)
    ap.add_argument("--context", type=int, default=4096)
    ap.add_argument("--sequences", type=int, default=2)
    ap.add_argument("--quiet", action="store_true", help="no steps, only the outcomes")
    args = ap.parse_args()
    # Killed, stop the service too: main_async's finally runs on SystemExit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
