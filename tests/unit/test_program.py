"""A template's program under the runtime (agentd.program): started in the
agent's home with the endpoint's environment, under agentd.nobind, restarted
after a failure with a growing backoff, left alone after exit 0, and stopped
with its whole process group."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from agentd import program
from agentd.program import Program, argv_in


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(program, "BACKOFF_S", (0.01, 0.04))
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-agent-test")


def test_relative_programs_are_in_the_home_and_bare_names_in_path(tmp_path: Path) -> None:
    assert argv_in(tmp_path, ["bin/bot", "-v"]) == [str(tmp_path / "bin/bot"), "-v"]
    assert argv_in(tmp_path, ["python3", "bot.py"]) == ["python3", "bot.py"]
    assert argv_in(tmp_path, ["/usr/bin/env"]) == ["/usr/bin/env"]


def test_the_program_sees_the_endpoint_and_cannot_bind(tmp_path: Path) -> None:
    script = (
        "import json, os, socket\n"
        "s = socket.socket()\n"
        "try:\n"
        "    s.bind(('127.0.0.1', 0)); bound = True\n"
        "except OSError:\n"
        "    bound = False\n"
        "env = {k: os.environ.get(k) for k in ('OPENAI_BASE_URL', 'OPENAI_API_KEY', 'HOME')}\n"
        "json.dump({'env': env, 'bound': bound, 'cwd': os.getcwd()}, open('out.json', 'w'))\n"
    )
    (tmp_path / "bot.py").write_text(script)
    lines: list[str] = []
    p = Program(tmp_path, "scout", ["python3", "bot.py"], lines.append)
    asyncio.run(p.supervise())
    import json

    out = json.loads((tmp_path / "out.json").read_text())
    assert out["env"] == {
        "OPENAI_BASE_URL": "http://127.0.0.1:8080/v1",
        "OPENAI_API_KEY": "sk-agent-test",
        "HOME": str(tmp_path),
    }
    assert out["bound"] is False and out["cwd"] == str(tmp_path)
    assert p.runs == 1 and "not restarted" in lines[-1]


def test_a_failing_program_is_restarted_until_it_succeeds(tmp_path: Path) -> None:
    # fails twice (counting its runs in a file), then exits 0
    (tmp_path / "flaky.sh").write_text(
        'n=$(cat runs 2>/dev/null || echo 0); echo $((n+1)) > runs; [ "$n" -ge 2 ]\n'
    )
    lines: list[str] = []
    p = Program(tmp_path, "scout", ["/bin/sh", "flaky.sh"], lines.append)
    asyncio.run(asyncio.wait_for(p.supervise(), 20))
    assert p.runs == 3 and (tmp_path / "runs").read_text().strip() == "3"
    assert sum("restarting" in line for line in lines) == 2


def test_a_program_that_cannot_start_is_retried_saying_its_status(tmp_path: Path) -> None:
    lines: list[str] = []
    p = Program(tmp_path, "scout", ["./missing"], lines.append)

    async def body() -> None:
        task = asyncio.get_running_loop().create_task(p.supervise())
        async with asyncio.timeout(20):
            while sum("restarting" in line for line in lines) < 2:
                await asyncio.sleep(0.01)
        await p.stop()
        await asyncio.wait_for(task, 5)

    asyncio.run(body())
    # agentd.nobind's wrapper could not exec it: 127, as a shell says
    assert "program failed (status 127)" in "\n".join(lines)


def test_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    # the program starts a child that ignores nothing and sleeps: both must go
    (tmp_path / "tree.sh").write_text("sleep 300 & echo $! > child; wait\n")
    p = Program(tmp_path, "scout", ["/bin/sh", "tree.sh"], lambda _line: None)

    async def body() -> int:
        task = asyncio.get_running_loop().create_task(p.supervise())
        while not (tmp_path / "child").exists() or not (tmp_path / "child").read_text():
            await asyncio.sleep(0.01)
        child = int((tmp_path / "child").read_text())
        await p.stop()
        await asyncio.wait_for(task, 10)
        return child

    child = asyncio.run(body())
    with pytest.raises(ProcessLookupError):
        for _ in range(200):  # the group got SIGTERM: the child is gone, not a zombie of ours
            os.kill(child, 0)
            import time

            time.sleep(0.01)
