"""The agent task suite: what a task is, and what its checker sees.

Each task is a directory here: ``task.toml`` (title, description as a user
writes it, the template of the agent that gets it), ``fixtures/`` (files put
in the agent's home before the task, owned by the agent), ``check.py``
(``check(result) -> (passed, reason)``), ``reference.sh`` (a solution: run in a
copy of the fixtures, its stdout is the answer, files it writes under
``artifacts/`` are the artifacts) and ``wrong.sh`` (a plausible wrong
solution).

Invariant (tests/unit/test_agent_tasks_suite.py): every checker passes on its
reference solution and fails on an empty result and on the wrong solution, so
no checker can pass a task vacuously. A checker reads only the task's own
answer, artifacts and files: fixture and output names are unique across the
suite, since tasks of one template share one agent's home.

Stdlib only: the runner imports it inside the machine with /usr/bin/python3.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent
TEMPLATES = ("sandbox", "ops", "writing")
DEFAULT_TIMEOUT = 600.0  # seconds a task may take in the runner
NOBODY = 65534


@dataclass
class Result:
    """How a task ended, as its owner sees it."""

    status: str  # completed, failed, dead_lettered, cancelled, timeout
    answer: str  # the final answer (free-form) or an --exec task's stdout
    artifacts: dict[str, bytes] = field(default_factory=dict)
    home: Path = Path("/nonexistent")  # the agent's home (read as root)
    error: str = ""

    def file(self, name: str) -> bytes | None:
        """Output NAME: the artifact of that name, else artifacts/NAME in the home."""
        if name in self.artifacts:
            return self.artifacts[name]
        path = self.home / "artifacts" / name
        return path.read_bytes() if path.is_file() else None

    def text(self, name: str) -> str | None:
        data = self.file(name)
        return None if data is None else data.decode(errors="replace")


Check = Callable[[Result], tuple[bool, str]]


@dataclass(frozen=True)
class Task:
    name: str
    title: str
    description: str
    template: str
    timeout: float
    dir: Path

    @property
    def fixtures(self) -> Path:
        return self.dir / "fixtures"

    def fixture_names(self) -> list[str]:
        """Top-level names this task puts in the home."""
        return sorted(p.name for p in self.fixtures.iterdir()) if self.fixtures.is_dir() else []

    def checker(self) -> Check:
        spec = importlib.util.spec_from_file_location(
            f"agent_task_{self.name}", self.dir / "check.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        check: Check = module.check
        return check


def load(names: list[str] | None = None) -> list[Task]:
    """The suite's tasks (all, or NAMES in that order)."""
    found = {}
    for d in sorted(TASKS_DIR.iterdir()):
        if not (d / "task.toml").is_file():
            continue
        spec = tomllib.loads((d / "task.toml").read_text())
        template = spec["template"]
        if template not in TEMPLATES:
            raise ValueError(f"{d.name}: unknown template {template!r}")
        found[d.name] = Task(
            d.name,
            spec["title"],
            spec["description"].strip(),
            template,
            float(spec.get("timeout", DEFAULT_TIMEOUT)),
            d,
        )
    if not names:
        return list(found.values())
    missing = [n for n in names if n not in found]
    if missing:
        raise KeyError(f"no such task: {', '.join(missing)}")
    return [found[n] for n in names]


def judge(task: Task, result: Result) -> tuple[bool, str]:
    """Passed only if the task completed and its checker agrees; never raises."""
    if result.status != "completed":
        return False, f"task {result.status}: {result.error}"[:300]
    try:
        passed, reason = task.checker()(result)
    except Exception as e:  # a checker crashing on odd output is a failed task
        return False, f"checker: {type(e).__name__}: {e}"[:300]
    return bool(passed), reason


def artifact_name(relative: Path) -> str:
    """The name agentd gives artifacts/RELATIVE (agentd.executor._artifact_name)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", str(relative))
    if not name[:1].isalnum():
        name = "f" + name
    return name[:128]


def collect_artifacts(home: Path) -> dict[str, bytes]:
    root = home / "artifacts"
    if not root.is_dir():
        return {}
    return {
        artifact_name(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def place_fixtures(task: Task, home: Path) -> None:
    if task.fixtures.is_dir():
        shutil.copytree(task.fixtures, home, dirs_exist_ok=True)


def run_solution(task: Task, script: str, home: Path) -> Result:
    """Run SCRIPT (reference.sh, wrong.sh) of TASK in HOME holding its fixtures."""
    place_fixtures(task, home)
    r = subprocess.run(
        ["bash", str(task.dir / script)],
        cwd=home,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOME": str(home)},
    )
    if r.returncode != 0:
        raise RuntimeError(f"{task.name}/{script} exited {r.returncode}: {r.stderr[-500:]}")
    return Result("completed", r.stdout, collect_artifacts(home), home)


# ------------------------------------------------------------- checker helpers
def run_untrusted(
    argv: list[str], cwd: Path, timeout: float = 30, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run code an agent wrote: as nobody when we are root (inside the machine)."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(cwd)}
    try:
        return subprocess.run(
            prefix + argv,
            cwd=cwd,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", f"timed out after {timeout}s")


def scratch() -> tempfile.TemporaryDirectory[str]:
    """A temporary directory that run_untrusted's user may write."""
    tmp = tempfile.TemporaryDirectory(prefix="agent-check-")
    os.chmod(tmp.name, 0o777)
    return tmp


def numbers(text: str) -> list[float]:
    """Every number in TEXT (1,234.5 and 1234.5 alike)."""
    out = []
    for m in re.finditer(r"-?\d[\d,]*(?:\.\d+)?", text):
        raw = m.group().replace(",", "")
        try:
            out.append(float(raw))
        except ValueError:
            continue
    return out


def has_number(text: str, value: float, tolerance: float = 1e-6) -> bool:
    return any(abs(n - value) <= tolerance for n in numbers(text))


def count_near(text: str, word: str, value: int) -> bool:
    """TEXT says VALUE for WORD: the first number after it ("ERROR: 4",
    "errors | 4"), or a number right before it ("4 errors"; not "4, ERROR")."""
    w = re.escape(word)
    for m in re.finditer(rf"(?i)\b{w}\w*[^0-9\n]{{0,25}}?(\d[\d,]*)", text):
        if m.group(1).replace(",", "") == str(value):
            return True
    return re.search(rf"(?i)(?<![\d.,]){value}\b[^0-9\n,;.]{{0,12}}\b{w}", text) is not None
