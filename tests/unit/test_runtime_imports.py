"""The agent runtime's import diet: what `import agentd.runtime` may load.

Every agent start pays for the runtime's imports before it can register
(bench/runtime_start.py, bench/README.md). The other D-Bus interfaces, the
tool sandbox's ctypes (agentd.nobind), the task vocabulary, dataclasses, the
agent loop and its prompt, the approval gate (agentd.shellgate) and the fetch
tool's HTTP client and HTML parser are loaded only when first used; nothing
of the engine ever is. Checked in a fresh interpreter (sys.modules), as the
unit's launcher runs it: python3 -I.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import sdbus

import agentd
from agentd.api import interfaces

ROOT = str(Path(agentd.__file__).resolve().parents[1])
VENDOR = str(Path(sdbus.__file__).resolve().parents[1])

# Exactly the agentd modules an idle runtime needs up to its first claim.
RUNTIME_MODULES = {
    "agentd",
    "agentd.agentloop",
    "agentd.agentloop.host",
    "agentd.agentloop.tools",
    "agentd.api",
    "agentd.api.errors",
    "agentd.api.interfaces",
    "agentd.api.interfaces.common",
    "agentd.api.interfaces.runtime",
    "agentd.api.marshal",
    "agentd.errors",
    "agentd.executor",
    "agentd.runtime",
}
# Loaded on first use only (each measured with python3 -X importtime; see the modules).
LAZY = {
    "agentd.agentloop.fetch",
    "agentd.agentloop.loop",
    "agentd.agentloop.prompt",
    "agentd.shellgate",
    "html.parser",
    "http.client",
    "agentd.api.interfaces.agent",
    "agentd.api.interfaces.approvals",
    "agentd.api.interfaces.manager",
    "agentd.api.interfaces.memory",
    "agentd.api.interfaces.model",
    "agentd.api.interfaces.sessions",
    "agentd.api.interfaces.goals",
    "agentd.api.interfaces.tasks",
    "agentd.api.interfaces.teams",
    "agentd.api.interfaces.observe",
    "agentd.api.rows",
    "agentd.nobind",
    "agentd.tasks",
    "agentd.tasks.model",
    "ctypes",
    "dataclasses",
}
# Never in an agent's process: the engine, its store and its configuration.
ENGINE = {"apsw", "sqlite3", "tomllib", "agentd.store", "agentd.registry", "agentd.sandbox"}


def loaded_after(code: str) -> set[str]:
    """sys.modules of a fresh `python3 -I` after CODE (agentd and sdbus on sys.path)."""
    script = (
        f"import sys, json; sys.path[:0] = [{ROOT!r}, {VENDOR!r}]\n"
        f"{code}\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    r = subprocess.run(
        [sys.executable, "-I", "-c", script], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    return set(json.loads(r.stdout))


def test_importing_the_runtime_loads_only_what_registration_needs() -> None:
    mods = loaded_after("import agentd.runtime")
    assert {m for m in mods if m.startswith("agentd")} == RUNTIME_MODULES
    assert not mods & LAZY, sorted(mods & LAZY)
    assert not mods & ENGINE, sorted(mods & ENGINE)


def test_what_a_task_needs_still_loads_when_a_task_runs() -> None:
    """The lazy imports resolve: a shell tool run (nobind) and the artifact limits."""
    code = (
        "import asyncio, tempfile\n"
        "from pathlib import Path\n"
        "from agentd.executor import Executor\n"
        "home = Path(tempfile.mkdtemp())\n"
        "ex = Executor(home, ['shell'])\n"
        "out = asyncio.run(ex.run({'id': 1, 'exec': 'echo hi > $AGENTD_ARTIFACTS/a.txt'}))\n"
        "assert out.status == 'completed', out\n"
        "assert out.artifacts == [('a.txt', 'artifacts/a.txt')], out\n"
        "import shutil; shutil.rmtree(home)"
    )
    mods = loaded_after(code)
    assert {"agentd.nobind", "agentd.tasks.model"} <= mods


def test_a_free_form_task_loads_the_loop_but_not_the_fetch_tool() -> None:
    """The loop, its prompt and the gate load with the first free-form task;
    the web tool's modules only when an agent fetches."""
    code = (
        "import asyncio, json, tempfile\n"
        "from pathlib import Path\n"
        "from agentd.executor import Executor\n"
        "class Host:\n"
        "    async def context(self, task): return {'rules': {'tools': ['shell']}}\n"
        "    async def record_step(self, task, attempt, step): pass\n"
        "    steps = [{'tool': 'list_files', 'path': '.'}, {'tool': 'finish', 'answer': 'ok'}]\n"
        "    async def think(self, messages, options):\n"
        "        step = {'thought': '', **self.steps.pop(0)}\n"
        "        return {'text': json.dumps(step), 'finish_reason': 'stop'}\n"
        "home = Path(tempfile.mkdtemp())\n"
        "ex = Executor(home, ['files', 'web'], Host(), {'profile': 'online'})\n"
        "out = asyncio.run(ex.run({'id': 1, 'attempt': 1, 'title': 't'}))\n"
        "assert out.status == 'completed', out\n"
        "import shutil; shutil.rmtree(home)"
    )
    mods = loaded_after(code)
    assert {"agentd.agentloop.loop", "agentd.agentloop.prompt", "agentd.shellgate"} <= mods
    assert not mods & {"agentd.agentloop.fetch", "http.client", "html.parser"}


def test_the_interface_classes_load_together_on_first_use() -> None:
    mods = loaded_after("from agentd.api.interfaces import BUS_NAME")
    assert not mods & {m for m in LAZY if m.startswith("agentd.api")}
    mods = loaded_after(
        "from agentd.api.interfaces import ModelInterface\n"
        "import agentd.api.interfaces as i\n"
        "assert len([v for v in vars(i).values() if isinstance(v, type)]) == 12"
    )
    assert {m for m in LAZY if m.startswith("agentd.api.interfaces.")} <= mods


def test_the_package_still_names_every_interface_in_order() -> None:
    names = [c.__name__ for c in interfaces.INTERFACES]
    assert names == [
        "ManagerInterface",
        "RuntimeInterface",
        "TasksInterface",
        "AgentInterface",
        "ModelInterface",
        "ApprovalsInterface",
        "MemoryInterface",
        "SessionsInterface",
        "GoalsInterface",
        "TeamsInterface",
        "MessagesInterface",
        "ObserveInterface",
    ]
    assert interfaces.RuntimeInterface is interfaces.INTERFACES[1]
    for name in interfaces.__all__:
        assert getattr(interfaces, name) is not None
