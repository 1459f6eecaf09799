"""A World: agentd's engine over fakes of the system, shared by the unit tests.

Test modules import this, never each other.
"""

import asyncio
from pathlib import Path

from fakes import FakeAccounts, FakeHomes, FakeUnits

from agentd.audit import AuditLog
from agentd.config import Config
from agentd.policy import Caller
from agentd.registry import Registry
from agentd.store import Store
from agentd.templates import Catalog

REPO = Path(__file__).resolve().parents[2]
ROOT = Caller(0)
ALICE = Caller(1000, frozenset({1000}))
BOB = Caller(1001, frozenset({1001}))


class World:
    def __init__(self, tmp_path: Path, **cfg: object) -> None:
        self.cfg = Config(state_dir=tmp_path, admin_group="no-such-admin-group", **cfg)  # type: ignore[arg-type]
        self.accounts, self.homes, self.units = FakeAccounts(), FakeHomes(), FakeUnits()
        self.db = tmp_path / "agentd.db"
        self.reopen()

    def reopen(self) -> Registry:
        """A fresh registry over the same database and system: agentd restarted."""
        self.store = Store(self.db)
        self.audit = AuditLog(self.store, journal=None)
        self.reg = Registry(
            self.cfg,
            self.store,
            self.audit,
            self.accounts,
            self.homes,
            self.units,
            Catalog(REPO / "policies", self.db.parent / "etc"),
        )
        return self.reg

    def run(self, coro):
        return asyncio.run(coro)

    def audit_rows(self, action: str) -> list:
        return [e for e in self.audit.entries(limit=10000) if e.action == action]
