"""A goal's plan: the JSON schema the planner answers under, and its validation.

Invariant: a plan agentd runs is a DAG of 1..max_steps steps, each with a unique
id, a title, instructions, capabilities that some template provides, and
dependencies on other steps of the same plan, without cycles. Pure functions
and no I/O, so the engine, the planner's runtime and the tests share them.

Why every error and not the first: they go back to the planner model in one
re-plan prompt, and a model fixes what it is told, not what it must guess.
The schema's bounds keep the grammar llama.cpp compiles small (agentd.inference
.schema refuses repetition counts over 640): a plan is a map, not the work.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_STEPS = 12  # the default bound (agentd.toml [goals] max_steps)
STEPS_CEILING = 64  # the most any configuration may allow
MAX_DEPENDS_ON = 8  # dependencies of one step
MAX_NEEDS = 4  # capabilities of one step
TITLE_CHARS = 120
INSTRUCTIONS_CHARS = 600
EXEC_CHARS = 4096
_ID = re.compile(r"^[a-z][a-z0-9_-]{0,15}$")
_ID_PATTERN = "^[a-z][a-z0-9_-]{0,15}$"


@dataclass(frozen=True)
class Step:
    """One step: what an agent with NEEDS is asked to do, once the steps it
    DEPENDS_ON are done (their results are its input)."""

    id: str
    title: str
    instructions: str
    needs: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    exec: str = ""  # a command instead of the model's work (a person's plan only)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "instructions": self.instructions,
            "needs": list(self.needs),
            "depends_on": list(self.depends_on),
        }
        if self.exec:
            out["exec"] = self.exec
        return out


@dataclass(frozen=True)
class Plan:
    """Valid steps in an order where each comes after all it depends on."""

    steps: tuple[Step, ...]

    def step(self, step_id: str) -> Step:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    def dependents(self, step_id: str) -> list[str]:
        """The steps that depend on STEP_ID, directly or not, in plan order."""
        hit = {step_id}
        out = []
        for s in self.steps:
            if hit.intersection(s.depends_on):
                hit.add(s.id)
                out.append(s.id)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"steps": [s.as_dict() for s in self.steps]}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), ensure_ascii=False, separators=(",", ":"))


class InvalidPlan(ValueError):
    """A plan agentd will not run; ERRORS say each thing wrong, for the planner."""

    def __init__(self, errors: Sequence[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = tuple(errors)


def schema(capabilities: Iterable[str], max_steps: int = MAX_STEPS) -> dict[str, Any]:
    """The JSON schema a plan is generated under: CAPABILITIES are the names
    some template provides (an empty list: a step needs nothing special)."""
    caps = sorted(set(capabilities))
    needs: dict[str, Any] = {"type": "array", "maxItems": MAX_NEEDS}
    needs["items"] = {"enum": caps} if caps else {"type": "string", "maxLength": 0}
    if not caps:
        needs["maxItems"] = 0
    step = {
        "type": "object",
        "properties": {
            "id": {"type": "string", "pattern": _ID_PATTERN},
            "title": {"type": "string", "minLength": 1, "maxLength": TITLE_CHARS},
            "instructions": {"type": "string", "minLength": 1, "maxLength": INSTRUCTIONS_CHARS},
            "needs": needs,
            "depends_on": {
                "type": "array",
                "maxItems": MAX_DEPENDS_ON,
                "items": {"type": "string", "pattern": _ID_PATTERN},
            },
        },
        "required": ["id", "title", "instructions", "needs", "depends_on"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {
            "steps": {"type": "array", "minItems": 1, "maxItems": max_steps, "items": step}
        },
        "required": ["steps"],
        "additionalProperties": False,
    }


def load(text: str) -> Plan:
    """A stored plan (checked when it was made), as it was: not checked again
    against today's templates (a step's task is, when it is submitted)."""
    data = json.loads(text)
    return Plan(
        tuple(
            Step(
                s["id"],
                s["title"],
                s["instructions"],
                tuple(s["needs"]),
                tuple(s["depends_on"]),
                s.get("exec", ""),
            )
            for s in data["steps"]
        )
    )


def parse(
    answer: str | Mapping[str, Any],
    capabilities: Iterable[str],
    max_steps: int = MAX_STEPS,
    done: Iterable[str] = (),
    commands: bool = False,
) -> Plan:
    """ANSWER (the planner's JSON text, or it decoded) as a Plan; InvalidPlan
    with every error found if it is not one agentd can run. DONE: the ids of
    steps an earlier plan of the goal completed, which a step may depend on
    (a re-plan builds on them) and no step may be named. COMMANDS: a step may
    run a command ("exec", as a task's) instead of the model's work: a
    person's own plan may, a planner's may not (its schema has no exec)."""
    data = _decode(answer)
    raw = data.get("steps")
    if not isinstance(raw, list) or not raw:
        raise InvalidPlan(['the plan must be an object {"steps": [...]} with at least one step'])
    errors: list[str] = []
    if len(raw) > max_steps:
        errors.append(f"the plan has {len(raw)} steps; at most {max_steps} are allowed")
    known = set(capabilities)
    steps: list[Step] = []
    for n, item in enumerate(raw[: max(max_steps, 1) * 2], 1):
        step = _step(n, item, known, errors, commands)
        if step is not None:
            steps.append(step)
    finished = set(done)
    # A re-plan that lists a step already done again restates it: it is done,
    # and dropped (the 1.5B model did so in all three answers of a re-plan, and
    # the goal failed for it: tests/integration/test_goals.py, slow).
    restated = len(steps)
    steps = [s for s in steps if s.id not in finished]
    if restated and not steps:
        errors.append("every step of this plan is already done: plan the remaining work")
    ids = [s.id for s in steps]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        errors.append(f"step id {dup!r} is used more than once")
    for s in steps:
        for dep in s.depends_on:
            if dep == s.id:
                errors.append(f"step {s.id!r} depends on itself")
            elif dep not in ids and dep not in finished:
                errors.append(f"step {s.id!r} depends on {dep!r}, which is not a step")
    if errors:
        raise InvalidPlan(errors)
    ordered = _order(steps, finished)
    return Plan(tuple(ordered))


def _decode(answer: str | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(answer, Mapping):
        return answer
    try:
        data = json.loads(answer)
    except (ValueError, TypeError):
        raise InvalidPlan(["the answer is not JSON"]) from None
    if not isinstance(data, dict):
        raise InvalidPlan(['the plan must be an object {"steps": [...]}'])
    return data


def _step(
    n: int, item: object, known: set[str], errors: list[str], commands: bool = False
) -> Step | None:
    """Step N of the answer, its errors added to ERRORS (the step still counts
    for the id and dependency checks); None if it is not an object."""
    if not isinstance(item, dict):
        errors.append(f"step {n} is not an object")
        return None
    sid = item.get("id")
    if not isinstance(sid, str) or not _ID.match(sid):
        errors.append(f"step {n}: id must be a short lowercase name like 's{n}'")
        sid = f"#{n}"
    name = f"step {sid!r}"
    title = _text(item.get("title"), f"{name}: title", TITLE_CHARS, errors)
    instructions = _text(
        item.get("instructions"), f"{name}: instructions", INSTRUCTIONS_CHARS, errors
    )
    needs = _names(item.get("needs", []), f"{name}: needs", MAX_NEEDS, errors)
    for cap in needs:
        if cap not in known:
            offered = ", ".join(sorted(known)) or "none"
            errors.append(
                f"{name} needs {cap!r}, which no template provides (there are: {offered})"
            )
    deps = _names(item.get("depends_on", []), f"{name}: depends_on", MAX_DEPENDS_ON, errors)
    command = ""
    if commands and "exec" in item:
        command = _text(item["exec"], f"{name}: exec", EXEC_CHARS, errors)
    extra = (
        set(item)
        - {"id", "title", "instructions", "needs", "depends_on"}
        - ({"exec"} if commands else set())
    )
    if extra:
        errors.append(f"{name} has unknown field(s): {', '.join(sorted(extra))}")
    return Step(
        sid, title, instructions, tuple(sorted(set(needs))), tuple(dict.fromkeys(deps)), command
    )


def _text(value: object, what: str, limit: int, errors: list[str]) -> str:
    if not isinstance(value, str) or not value.strip():
        errors.append(f"{what} must be a non-empty string")
        return ""
    if len(value) > limit or "\0" in value:
        errors.append(f"{what} must be at most {limit} characters of text")
        return ""
    return value.strip()


def _names(value: object, what: str, most: int, errors: list[str]) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        errors.append(f"{what} must be a list of names")
        return []
    if len(value) > most:
        errors.append(f"{what} has {len(value)} names; at most {most}")
        return []
    return list(value)


def _order(steps: list[Step], finished: set[str]) -> list[Step]:
    """STEPS in dependency order (Kahn's algorithm, stable: the planner's order
    among ready steps; FINISHED steps count as placed); InvalidPlan naming the
    steps on a cycle if there is one."""
    pending = {s.id: set(s.depends_on) - finished for s in steps}
    ordered: list[Step] = []
    placed: set[str] = set()
    while len(ordered) < len(steps):
        ready = [s for s in steps if s.id not in placed and pending[s.id] <= placed]
        if not ready:
            stuck = [s.id for s in steps if s.id not in placed]
            raise InvalidPlan([f"the steps {', '.join(stuck)} depend on each other in a cycle"])
        for s in ready:
            placed.add(s.id)
            ordered.append(s)
    return ordered
