"""agentctl's house rules, checked on its source: no import circle, the command tree
assembled in agentctl.cli alone, sdbus only in agentctl.client, small modules.

The import graph is read from the source (every `import` statement, including
those inside functions), so a circle is found even where Python would happen
to resolve it because of the order modules are first imported in.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import click

import agentctl
from agentctl.cli import COMMANDS, cli

PACKAGE = Path(agentctl.__file__).parent
MAX_LINES = 500  # as tests/unit/test_house.py


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, path: Path) -> set[str]:
    """Every module NAME's source imports (absolute names), with their packages."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    with_packages = set()
    for module in found:
        parts = module.split(".")
        with_packages.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return with_packages


GRAPH = {name: imported(name, path) & set(MODULES) - {name} for name, path in MODULES.items()}


def test_no_import_circle() -> None:
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = "open"
        path.append(name)
        for dep in sorted(GRAPH[name]):
            if state.get(dep) == "open":
                circle = [*path[path.index(dep) :], dep]
                raise AssertionError("import circle: " + " -> ".join(circle))
            if dep not in state:
                visit(dep)
        path.pop()
        state[name] = "done"

    for name in MODULES:
        if name not in state:
            visit(name)


def test_only_the_entry_points_import_cli() -> None:
    importers = {name for name, deps in GRAPH.items() if "agentctl.cli" in deps}
    assert importers <= {"agentctl.__main__"}, importers


def test_commands_import_no_other_command_group() -> None:
    """Each noun's module stands alone (task may use its own task_wait and task_show)."""
    allowed = {
        ("agentctl.commands.task", "agentctl.commands.task_wait"),
        ("agentctl.commands.task", "agentctl.commands.task_show"),
    }
    for name, deps in GRAPH.items():
        if name.startswith("agentctl.commands."):
            others = {d for d in deps if d.startswith("agentctl.commands.")}
            assert {(name, d) for d in others} <= allowed, (name, others)


def test_sdbus_only_in_the_client() -> None:
    users = {name for name, path in MODULES.items() if "sdbus" in imported(name, path)}
    assert users == {"agentctl.client"}, users


def test_agentctl_loads_no_engine() -> None:
    """agentctl imports agentd's definitions (bus interfaces, rows, the task vocabulary,
    config constants), never the engine: checked in a fresh interpreter."""
    code = (
        "import sys, agentctl.cli; "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('agentd'))))"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
        ).stdout.split()
    )
    interfaces = {m for m in loaded if m.startswith("agentd.api.interfaces.")}
    assert loaded - interfaces <= {
        "agentd",
        "agentd.errors",
        "agentd.config",
        "agentd.approvalrules",  # agentd.config's [approval] table: stdlib only
        "agentd.plandefs",  # agentd.config's [plans] tables: stdlib and agentd.sizes
        "agentd.api",
        "agentd.api.errors",
        "agentd.api.interfaces",
        "agentd.api.rows",
        "agentd.tasks",
        "agentd.tasks.model",
        "agentd.sizes",
    }, loaded


def test_modules_are_small() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert not {n: s for n, s in sizes.items() if s > MAX_LINES}, sizes


def test_every_module_says_what_it_owns() -> None:
    missing = [
        name for name, path in MODULES.items() if not ast.get_docstring(ast.parse(path.read_text()))
    ]
    assert not missing, missing


def test_the_root_has_exactly_the_listed_commands() -> None:
    assert sorted(cli.commands) == sorted(c.name for c in COMMANDS if c.name)
    assert all(isinstance(c, click.Command) for c in COMMANDS)
    assert sorted(cli.commands) == [
        "agent",
        "approval",
        "audit",
        "chat",
        "events",
        "goal",
        "knowledge",
        "memory",
        "metrics",
        "model",
        "msg",
        "plan",
        "project",
        "quota",
        "serve",
        "session",
        "status",
        "task",
        "team",
        "template",
        "top",
        "usage",
    ]
