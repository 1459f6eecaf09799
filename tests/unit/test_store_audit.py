from pathlib import Path

import pytest

from agentd.audit import AuditLog
from agentd.errors import InvalidConfig
from agentd.store import SCHEMA_VERSION, Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "agentd.db")


def test_schema_is_migrated_and_wal(store: Store, tmp_path: Path) -> None:
    assert store.version == SCHEMA_VERSION
    assert store.scalar("PRAGMA journal_mode") == "wal"
    assert (tmp_path / "agentd.db").stat().st_mode & 0o077 == 0
    store.close()
    assert Store(tmp_path / "agentd.db").version == SCHEMA_VERSION  # reopen: no re-migration


def test_newer_schema_is_refused(store: Store, tmp_path: Path) -> None:
    store.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    store.close()
    with pytest.raises(InvalidConfig, match="newer"):  # exit 78, like a bad config
        Store(tmp_path / "agentd.db")


def test_transaction_rolls_back_and_drops_hooks(store: Store) -> None:
    fired = []
    with pytest.raises(ValueError), store.transaction():
        store.execute("INSERT INTO meta VALUES ('k', 'v')")
        store.after_commit(lambda: fired.append(1))
        raise ValueError
    assert store.scalar("SELECT count(*) FROM meta") == 0
    assert fired == []


def _log(store: Store) -> tuple[AuditLog, list]:
    sent: list = []
    return AuditLog(store, journal=lambda **f: sent.append(f)), sent


def test_chain_verifies_and_goes_to_journal(store: Store) -> None:
    log, sent = _log(store)
    for i in range(5):
        log.append("agent.create", actor_uid=1000, agent=f"a{i}", agent_uid=70000 + i)
    verdict = log.verify()
    assert verdict.ok and verdict.checked == 5
    assert sent[0]["AGENT_NAME"] == "a0" and sent[0]["AGENT_UID"] == 70000
    assert sent[0]["AGENTD_AUDIT_HASH"] == log.entries()[0].hash
    assert [e.agent for e in log.entries(after=3)] == ["a3", "a4"]


def test_modified_row_is_detected(store: Store) -> None:
    log, _ = _log(store)
    for i in range(4):
        log.append("agent.start", actor_uid=0, agent=f"a{i}")
    store.execute("UPDATE audit SET actor_uid=1000 WHERE seq=2")
    verdict = log.verify()
    assert not verdict.ok and verdict.bad_seq == 2 and "modified" in verdict.message


def test_deleted_rows_are_detected(store: Store) -> None:
    log, _ = _log(store)
    for i in range(4):
        log.append("agent.start", actor_uid=0, agent=f"a{i}")
    store.execute("DELETE FROM audit WHERE seq=3")
    assert "missing" in log.verify().message
    store.execute("DELETE FROM audit WHERE seq=4")  # now the tail is gone too
    assert not log.verify().ok


def test_journal_failure_does_not_lose_the_row(store: Store) -> None:
    def broken(**fields: object) -> None:
        raise OSError("journald down")

    log = AuditLog(store, journal=broken)
    log.append("agent.create", actor_uid=0, agent="x")
    assert log.verify().ok and log.verify().checked == 1
