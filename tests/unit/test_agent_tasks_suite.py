"""The agent task suite (bench/agent_tasks) checks itself: every task loads,
and every checker passes its reference solution and fails both an empty
result and a plausible wrong one, so no task can be passed vacuously.

The solutions are bash scripts run in a temporary copy of the task's
fixtures (as the runner puts them in the agent's home); a checker sees what
the runner gives it (the answer, the artifacts, the home).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench" / "agent_tasks"))

import suite  # noqa: E402  (bench/agent_tasks/suite.py)

TASKS = suite.load()
IDS = [t.name for t in TASKS]


def test_suite_is_big_enough_and_uses_every_template() -> None:
    assert len(TASKS) >= 24
    assert {t.template for t in TASKS} == set(suite.TEMPLATES)


def test_tasks_read_like_a_user_wrote_them() -> None:
    for t in TASKS:
        assert 10 <= len(t.title) <= 80, t.name
        assert len(t.description) >= 60, t.name
        assert "--exec" not in t.description and "{" not in t.title, t.name
        for script in ("check.py", "reference.sh", "wrong.sh"):
            assert (t.dir / script).is_file(), f"{t.name}/{script}"


def test_fixture_names_are_unique_across_the_suite() -> None:
    """Tasks of one template share an agent's home: no task may see another's files."""
    seen: dict[str, str] = {}
    for t in TASKS:
        for name in t.fixture_names():
            assert name not in seen, f"{name}: fixture of {seen.get(name)} and {t.name}"
            assert name != "artifacts", t.name
            seen[name] = t.name


def test_load_by_name_keeps_order_and_refuses_unknown() -> None:
    assert [t.name for t in suite.load(IDS[:2][::-1])] == IDS[:2][::-1]
    with pytest.raises(KeyError):
        suite.load(["no-such-task"])


@pytest.mark.parametrize("task", TASKS, ids=IDS)
def test_reference_passes(task: suite.Task, tmp_path: Path) -> None:
    result = suite.run_solution(task, "reference.sh", tmp_path)
    passed, reason = suite.judge(task, result)
    assert passed, f"{task.name}: reference failed: {reason}"


@pytest.mark.parametrize("task", TASKS, ids=IDS)
def test_empty_result_fails(task: suite.Task, tmp_path: Path) -> None:
    """The fixtures untouched, no artifact, an answer that says nothing."""
    suite.place_fixtures(task, tmp_path)
    for answer in ("", "Done."):
        passed, reason = suite.judge(task, suite.Result("completed", answer, {}, tmp_path))
        assert not passed, f"{task.name}: passed an empty result ({answer!r})"
        assert reason


@pytest.mark.parametrize("task", TASKS, ids=IDS)
def test_wrong_solution_fails(task: suite.Task, tmp_path: Path) -> None:
    result = suite.run_solution(task, "wrong.sh", tmp_path)
    passed, reason = suite.judge(task, result)
    assert not passed, f"{task.name}: wrong solution passed"
    assert reason


@pytest.mark.parametrize("task", TASKS, ids=IDS)
def test_a_task_that_did_not_complete_fails_even_with_right_outputs(
    task: suite.Task, tmp_path: Path
) -> None:
    result = suite.run_solution(task, "reference.sh", tmp_path)
    result.status, result.error = "failed", "out of steps"
    passed, reason = suite.judge(task, result)
    assert not passed and reason.startswith("task failed")


def test_a_crashing_checker_is_a_failure_not_an_error(tmp_path: Path) -> None:
    task = next(t for t in TASKS if t.name == "csv-to-json")
    result = suite.Result("completed", "", {"people.json": b"\xff\xfe not json"}, tmp_path)
    passed, reason = suite.judge(task, result)
    assert not passed and reason


def test_helpers() -> None:
    assert suite.numbers("1,234.5 and -7 and 3.") == [1234.5, -7.0, 3.0]
    assert suite.count_near("ERROR: 4, WARNING: 2", "error", 4)
    assert suite.count_near("there are 4 errors", "error", 4)
    assert not suite.count_near("WARNING: 4, ERROR: 2", "error", 4)
    assert not suite.count_near("ERROR: 14", "error", 4)
    assert suite.artifact_name(Path("sub dir/x.json")) == "sub_dir_x.json"
    assert suite.artifact_name(Path(".hidden")) == "f.hidden"
