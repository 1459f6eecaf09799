"""The agent runtime's import diet: what `import agentd.runtime` may load.

Every agent start pays for the runtime's imports before it can register
(bench/runtime_start.py, bench/README.md). The other D-Bus interfaces, the
tool sandbox's ctypes (agentd.nobind), the task vocabulary and dataclasses are
loaded only when first used; nothing of the engine ever is. Checked in a
fresh interpreter (sys.modules), as the unit's launcher runs it: python3 -I.
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
    "agentd.api.interfaces.agent",
    "agentd.api.interfaces.manager",
    "agentd.api.interfaces.model",
    "agentd.api.interfaces.tasks",
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


def test_the_interface_classes_load_together_on_first_use() -> None:
    mods = loaded_after("from agentd.api.interfaces import BUS_NAME")
    assert not mods & {m for m in LAZY if m.startswith("agentd.api")}
    mods = loaded_after(
        "from agentd.api.interfaces import ModelInterface\n"
        "import agentd.api.interfaces as i\n"
        "assert len([v for v in vars(i).values() if isinstance(v, type)]) == 5"
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
    ]
    assert interfaces.RuntimeInterface is interfaces.INTERFACES[1]
    for name in interfaces.__all__:
        assert getattr(interfaces, name) is not None
