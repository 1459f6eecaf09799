"""The executor's model loop against a scripted think(): schemas asked for,
tools run between steps, the last step forced to answer, errors mapped."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from agentd.executor import MAX_STEPS, Executor, ModelError


class Script:
    def __init__(self, *answers: dict[str, Any] | Exception) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[list[dict[str, str]], dict[str, Any]]] = []

    async def __call__(
        self, messages: list[dict[str, str]], options: dict[str, Any]
    ) -> dict[str, Any]:
        self.calls.append(([dict(m) for m in messages], options))
        a = self.answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return {
            "text": json.dumps(a),
            "finish_reason": "eos",
            "prompt_tokens": 10,
            "completion_tokens": 5,
        }


def actions(script: Script, call: int) -> list[str]:
    """The actions the schema of that think() call allowed."""
    schema = json.loads(script.calls[call][1]["json_schema"])
    return [alt["properties"]["action"]["const"] for alt in schema["oneOf"]]


def run(ex: Executor, **task: Any):
    task.setdefault("id", 7)
    task.setdefault("title", "count the files")
    return asyncio.run(ex.run(task))


def test_a_direct_answer_completes_the_task(tmp_path: Path) -> None:
    think = Script({"action": "answer", "answer": "42"})
    out = run(Executor(tmp_path, [], think))
    assert out.status == "completed" and out.result["answer"] == "42"
    assert out.result["prompt_tokens"] == 10 and out.result["completion_tokens"] == 5
    assert actions(think, 0) == ["answer"]  # no tools: answer only
    assert think.calls[0][1]["task"] == 7


def test_shell_step_runs_in_the_home_and_feeds_back(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    think = Script({"action": "shell", "command": "ls"}, {"action": "answer", "answer": "1"})
    out = run(Executor(tmp_path, ["shell", "files"], think))
    assert out.status == "completed"
    assert out.result["steps"][0]["command"] == "ls"
    assert "a.txt" in out.result["steps"][0]["result"]
    second = think.calls[1][0]
    assert second[-1]["role"] == "user" and "a.txt" in second[-1]["content"]
    assert actions(think, 0) == ["answer", "shell", "write_file"]
    (shell,) = [
        alt
        for alt in json.loads(think.calls[0][1]["json_schema"])["oneOf"]
        if alt["properties"]["action"]["const"] == "shell"
    ]
    assert shell["required"] == ["action", "command"]  # a step carries its arguments


def test_the_last_step_must_answer(tmp_path: Path) -> None:
    steps = [{"action": "shell", "command": "true"}] * (MAX_STEPS - 1) + [
        {"action": "answer", "answer": "done"}
    ]
    think = Script(*steps)
    out = run(Executor(tmp_path, ["shell"], think))
    assert out.status == "completed" and out.result["answer"] == "done"
    assert actions(think, -1) == ["answer"]


def test_a_tool_the_template_lacks_is_not_run(tmp_path: Path) -> None:
    think = Script({"action": "shell", "command": "touch pwned"}, {"action": "answer"})
    out = run(Executor(tmp_path, [], think))
    assert not (tmp_path / "pwned").exists()
    assert "not available" in out.result["steps"][0]["result"]


def test_quota_blocks_and_other_model_errors_fail(tmp_path: Path) -> None:
    out = run(Executor(tmp_path, [], Script(ModelError("QuotaExceeded", "resets at X"))))
    assert out.status == "blocked" and "resets at X" in out.reason
    out = run(Executor(tmp_path, [], Script(ModelError("ModelUnavailable", "down"))))
    assert out.status == "failed" and "down" in out.error


def test_unparseable_answer_fails(tmp_path: Path) -> None:
    class Bad(Script):
        async def __call__(self, messages, options):
            return {"text": '{"action": "ans', "finish_reason": "length"}

    out = run(Executor(tmp_path, [], Bad()))
    assert out.status == "failed" and "not the JSON" in out.error
