"""Group commit (issue 11): the writes of the requests served in one event loop
turn commit in one transaction, each reply waits for that commit, one
request's failure is its own, and a commit's failure is every request's."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from agentd.audit import AuditLog
from agentd.errors import NoSpace
from agentd.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "agentd.db")
    s.execute("CREATE TABLE t (v INTEGER)")
    return s


def count(store: Store) -> int:
    return int(store.scalar("SELECT count(*) FROM t"))


async def request(store: Store, work: Callable[[], None], replies: list[str], name: str) -> None:
    """What agentd.api.access does around a grouped method: work, then the reply
    once what it wrote is committed."""
    with store.grouped():
        work()
        await store.settled()
    replies.append(f"{name} after {store.commits} commits")


def insert(store: Store, v: int) -> Callable[[], None]:
    def work() -> None:
        with store.transaction():
            store.execute("INSERT INTO t VALUES (?)", (v,))

    return work


def test_requests_of_one_turn_commit_together_and_reply_after_it(store: Store) -> None:
    before = store.commits
    replies: list[str] = []

    async def main() -> None:
        await asyncio.gather(
            *(request(store, insert(store, i), replies, f"r{i}") for i in range(8))
        )

    asyncio.run(main())
    assert count(store) == 8
    assert store.commits == before + 1  # one fsync for eight requests
    assert replies == [f"r{i} after {before + 1} commits" for i in range(8)]


def test_a_failing_request_rolls_back_its_own_writes_only(store: Store) -> None:
    replies: list[str] = []

    def bad() -> None:
        with store.transaction():
            store.execute("INSERT INTO t VALUES (99)")
            raise ValueError("refused")

    async def main() -> list[object]:
        return await asyncio.gather(
            request(store, insert(store, 1), replies, "ok1"),
            request(store, bad, replies, "bad"),
            request(store, insert(store, 2), replies, "ok2"),
            return_exceptions=True,
        )

    results = asyncio.run(main())
    assert isinstance(results[1], ValueError)
    assert sorted(r[0] for r in store.db.execute("SELECT v FROM t")) == [1, 2]
    assert [r.split()[0] for r in replies] == ["ok1", "ok2"]


def test_a_failed_commit_fails_every_request_of_the_group(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    replies: list[str] = []
    real = store._commit

    def full() -> None:
        monkeypatch.setattr(store, "_commit", real)
        store._abort(NoSpace("the disk is full"))

    monkeypatch.setattr(store, "_commit", full)

    async def main() -> list[object]:
        return await asyncio.gather(
            *(request(store, insert(store, i), replies, f"r{i}") for i in range(3)),
            return_exceptions=True,
        )

    results = asyncio.run(main())
    assert all(isinstance(r, NoSpace) for r in results), results
    assert replies == [] and count(store) == 0
    assert not store.in_transaction()
    asyncio.run(request(store, insert(store, 7), replies, "later"))  # the next group works
    assert count(store) == 1


def test_a_direct_transaction_commits_the_open_group_first(store: Store) -> None:
    order: list[str] = []

    def grouped() -> None:
        insert(store, 1)()
        store.after_commit(lambda: order.append("group"))

    async def direct() -> None:  # another request, not grouped: the registry's intent row
        with store.transaction():
            store.execute("INSERT INTO t VALUES (2)")
            store.after_commit(lambda: order.append("direct"))
        order.append("direct returned")

    async def main() -> None:
        replies: list[str] = []
        # the direct one runs in the same turn, before the group's scheduled commit
        await asyncio.gather(request(store, grouped, replies, "g"), direct())

    before = store.commits
    asyncio.run(main())
    assert order == ["group", "direct", "direct returned"]
    assert count(store) == 2 and store.commits == before + 2


def test_hooks_run_after_the_group_commits_and_not_for_a_rolled_back_request(
    store: Store,
) -> None:
    seen: list[tuple[str, int]] = []

    def hooked(v: int, fail: bool) -> Callable[[], None]:
        def work() -> None:
            with store.transaction():
                store.execute("INSERT INTO t VALUES (?)", (v,))
                store.after_commit(lambda: seen.append(("hook", v)))
                if fail:
                    raise ValueError

        return work

    async def main() -> None:
        replies: list[str] = []
        await asyncio.gather(
            request(store, hooked(1, False), replies, "a"),
            request(store, hooked(2, True), replies, "b"),
            return_exceptions=True,
        )
        assert seen == [("hook", 1)]

    asyncio.run(main())


def test_the_audit_chain_holds_across_a_group(store: Store) -> None:
    audit = AuditLog(store, journal=None)
    replies: list[str] = []

    def row(i: int) -> Callable[[], None]:
        return lambda: audit.append("task.claim", actor_uid=70000 + i, task_id=i)

    async def main() -> None:
        await asyncio.gather(*(request(store, row(i), replies, str(i)) for i in range(5)))

    before = store.commits
    asyncio.run(main())
    assert store.commits == before + 1
    verdict = audit.verify()
    assert verdict.ok and verdict.checked == 5, verdict


def test_outside_a_request_each_transaction_commits_at_once(store: Store) -> None:
    before = store.commits
    insert(store, 1)()
    insert(store, 2)()
    assert store.commits == before + 2
