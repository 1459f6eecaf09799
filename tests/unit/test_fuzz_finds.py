"""What the D-Bus fuzz test (tests/integration/test_harden_fuzz.py) found, fixed and
pinned here without a bus: fds smuggled into variants, numbers past SQLite's
64 bits, JSON nested past the parser, a failed COMMIT's hooks."""

from __future__ import annotations

import os
from pathlib import Path

import apsw
import pytest

from agentd.api.access import close_fds
from agentd.chat import loads
from agentd.errors import InvalidArgument, NoSpace
from agentd.limits import INT_MAX, SPEC, check
from agentd.store import Store
from agentd.thinking import parse_messages


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_fds_in_variants_are_closed_wherever_they_sit() -> None:
    r, w = os.pipe()
    a, b = os.dup(r), os.dup(w)
    args = ({"x": ("h", r), "y": ("ah", [w, a])}, [("s", "h"), ("h", "not an fd")], ("h", b))
    close_fds(args)
    assert not any(is_open(fd) for fd in (r, w, a, b))


def test_a_struct_that_only_looks_like_a_variant_is_left_alone() -> None:
    r, w = os.pipe()
    try:
        close_fds([("name", r), ("h", str(w))])  # (ss) artifacts, and a name "h"
        assert is_open(r) and is_open(w)
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("value", [INT_MAX + 1, 2**64 - 1, {"after": ("at", [1, 2**64 - 1])}])
def test_numbers_past_64_bits_are_refused_before_the_engine(value: object) -> None:
    violation = check("spec", value, SPEC)
    assert violation is not None and "out of range" in violation.message()


def test_numbers_within_64_bits_pass() -> None:
    assert check("spec", {"after": ("at", [1, INT_MAX])}, SPEC) is None


def test_json_nested_past_the_parser_is_bad_input() -> None:
    with pytest.raises(ValueError, match="nested too deeply"):
        loads("[" * 20_000)
    with pytest.raises(InvalidArgument):
        parse_messages("[" * 20_000)


def test_a_failed_commit_rolls_back_and_forgets_its_hooks(tmp_path: Path) -> None:
    store = Store(tmp_path / "agentd.db")
    announced: list[str] = []
    real_execute = store.db.execute

    class Full:
        """The connection, but COMMIT finds the disk full."""

        def __getattr__(self, name: str) -> object:
            return getattr(store_db, name)

        def execute(self, sql: str, *args: object) -> object:
            if sql == "COMMIT":
                raise apsw.FullError("database or disk is full")
            return real_execute(sql, *args)

    store_db = store.db
    store.db = Full()  # type: ignore[assignment]
    with pytest.raises(NoSpace), store.transaction():
        store.execute("INSERT INTO meta VALUES ('k', 'v')")
        store.after_commit(lambda: announced.append("never stored"))
    store.db = store_db
    assert store.db.getautocommit()  # rolled back: no transaction left open
    with store.transaction():
        store.after_commit(lambda: announced.append("stored"))
    assert announced == ["stored"]
    assert store.scalar("SELECT value FROM meta WHERE key='k'") is None
    store.close()
