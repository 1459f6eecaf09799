"""agentd.goals.plan: the plan schema, and validation that names every error."""

from __future__ import annotations

import json

import pytest

from agentd.goals.plan import MAX_STEPS, InvalidPlan, Plan, load, parse, schema

CAPS = ["general", "research", "write"]


def step(sid: str, after: list[str] | None = None, needs: list[str] | None = None) -> dict:
    return {
        "id": sid,
        "title": f"Do {sid}",
        "instructions": f"Carry out {sid}.",
        "needs": needs or [],
        "depends_on": after or [],
    }


def errors_of(answer: object, caps: list[str] = CAPS, max_steps: int = MAX_STEPS) -> tuple:
    with pytest.raises(InvalidPlan) as e:
        parse(answer if isinstance(answer, str) else json.dumps(answer), caps, max_steps)
    return e.value.errors


def test_a_valid_plan_is_put_in_dependency_order() -> None:
    answer = {
        "steps": [
            step("report", after=["a", "b"], needs=["write"]),
            step("a", needs=["research"]),
            step("b", after=["a"]),
        ]
    }
    plan = parse(json.dumps(answer), CAPS)
    assert [s.id for s in plan.steps] == ["a", "b", "report"]
    assert plan.step("report").depends_on == ("a", "b") and plan.step("a").needs == ("research",)
    assert plan.dependents("a") == ["b", "report"] and plan.dependents("report") == []
    assert parse(plan.to_json(), CAPS) == plan  # what is stored reads back the same


def test_every_error_is_named_for_the_planner() -> None:
    errs = errors_of(
        {
            "steps": [
                step("a", after=["a"]),
                step("b", after=["zzz"], needs=["fly"]),
                step("b"),
                {"id": "C!", "title": "", "instructions": "x", "needs": [], "depends_on": []},
                "not a step",
            ]
        }
    )
    text = "\n".join(errs)
    assert "step 'a' depends on itself" in text
    assert "step 'b' depends on 'zzz', which is not a step" in text
    assert "needs 'fly', which no template provides (there are: general, research, write)" in text
    assert "step id 'b' is used more than once" in text
    assert "step 3: id must be" not in text and "step 4: id must be" in text
    assert "title must be a non-empty string" in text and "step 5 is not an object" in text


def test_a_cycle_names_its_steps() -> None:
    errs = errors_of(
        {
            "steps": [
                step("a", after=["c"]),
                step("b", after=["a"]),
                step("c", after=["b"]),
                step("d"),
            ]
        }
    )
    assert errs == ("the steps a, b, c depend on each other in a cycle",)


@pytest.mark.parametrize(
    ("answer", "wanted"),
    [
        ("not json", "the answer is not JSON"),
        ("[1, 2]", "must be an object"),
        ({"steps": []}, "at least one step"),
        ({"plan": [step("a")]}, "at least one step"),
    ],
)
def test_what_is_not_a_plan_at_all(answer: object, wanted: str) -> None:
    assert wanted in errors_of(answer)[0]


def test_the_step_bound_and_field_bounds_hold() -> None:
    errs = errors_of({"steps": [step(f"s{i}") for i in range(4)]}, max_steps=3)
    assert errs == ("the plan has 4 steps; at most 3 are allowed",)
    long = step("a")
    long["instructions"] = "x" * 601
    long["extra"] = 1
    errs = errors_of({"steps": [long]})
    assert any("at most 600 characters" in e for e in errs)
    assert any("unknown field(s): extra" in e for e in errs)


def test_the_schema_bounds_what_the_model_may_write() -> None:
    """(tests/inference/test_grammar.py compiles it to a grammar.)"""
    s = schema(CAPS, max_steps=8)
    assert s["properties"]["steps"]["maxItems"] == 8
    props = s["properties"]["steps"]["items"]["properties"]
    assert props["needs"]["items"] == {"enum": CAPS}
    assert schema([], 3)["properties"]["steps"]["items"]["properties"]["needs"]["maxItems"] == 0
    assert isinstance(parse({"steps": [step("a")]}, []), Plan)


def test_a_re_plan_builds_on_done_steps_and_drops_those_it_restates() -> None:
    plan = parse(
        {"steps": [step("c", after=["a"]), step("d", after=["c", "b"])]}, CAPS, done=["a", "b"]
    )
    assert [s.id for s in plan.steps] == ["c", "d"]
    again = parse({"steps": [step("a"), step("c", after=["a"])]}, CAPS, done=["a"])
    assert [s.id for s in again.steps] == ["c"]  # "a" is done: restated, dropped
    errs = errors_of_done({"steps": [step("a"), step("e", after=["zz"])]}, done=["a"])
    assert errs == ("step 'e' depends on 'zz', which is not a step",)
    errs = errors_of_done({"steps": [step("a")]}, done=["a"])
    assert errs == ("every step of this plan is already done: plan the remaining work",)


def errors_of_done(answer: dict, done: list[str]) -> tuple:
    with pytest.raises(InvalidPlan) as e:
        parse(answer, CAPS, done=done)
    return e.value.errors


def test_a_stored_plan_loads_as_it_was() -> None:
    plan = parse({"steps": [step("b", after=["a"], needs=["write"]), step("a")]}, CAPS)
    assert load(plan.to_json()) == plan


def test_a_command_step_is_a_person_s_alone() -> None:
    cmd = dict(step("a"), exec="make test")
    assert parse({"steps": [cmd]}, CAPS, commands=True).step("a").exec == "make test"
    assert "unknown field(s): exec" in errors_of({"steps": [cmd]})[0]  # a planner's plan
    plan = parse({"steps": [cmd]}, CAPS, commands=True)
    assert (
        load(plan.to_json()) == plan
        and "exec" not in parse({"steps": [step("b")]}, CAPS).as_dict()["steps"][0]
    )


def test_a_report_request_fits_a_sequence_however_many_steps() -> None:
    from agentd.goals.model import Goal, GoalTask
    from agentd.goals.plan import Step
    from agentd.goals.prompt import REPORT_CHARS, report_request

    goal = Goal(
        1,
        1000,
        "Say many things",
        None,
        "pl",
        "running",
        None,
        1,
        0,
        "",
        0,
        100,
        None,
        None,
        0.0,
        0.0,
        None,
        1,
    )
    for n, shown in ((3, 3), (100, 100), (1000, 116)):
        steps = [Step(f"s{i}", f"Step {i}", "say") for i in range(n)]
        tasks = [
            GoalTask(
                i, "step", 1, f"s{i}", "completed", '{"answer": "' + "x" * 3000 + '"}', None, "w"
            )
            for i in range(n)
        ]
        text = report_request(goal, steps, tasks)
        assert sum(line.startswith("- s") for line in text.splitlines()) == shown
        assert len(text) < REPORT_CHARS + 400 + 30 * (n > 116), len(text)
        assert ("more steps, done; not shown" in text) == (shown < n)
