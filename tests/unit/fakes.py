"""In-memory stand-ins for the system (accounts, homes, systemd) so the
registry's logic, including crash recovery, is tested with no root and no bus."""

from __future__ import annotations

import hashlib
import math
import re
import threading
from pathlib import Path

from agentd.accounts import Account
from agentd.memory import EmbedResult
from agentd.units import UnitStatus


class Crash(BaseException):
    """Simulates agentd being killed: not an Exception, so nothing catches it."""


class FakeAccounts:
    def __init__(self, agents_group: str = "agentd-agents") -> None:
        self.users: dict[str, Account] = {}
        self.groups: dict[str, int] = {}
        self.foreign = {"root": 0, "daemon": 1}
        self.crash_after_group = False
        self.fail_useradd = False
        self.agents_group = agents_group

    def user(self, name: str) -> Account | None:
        return self.users.get(name)

    def id_taken(self, uid: int) -> bool:
        return (
            any(a.uid == uid for a in self.users.values())
            or uid in self.groups.values()
            or uid in self.foreign.values()
        )

    def group_exists(self, name: str) -> bool:
        return name in self.groups

    def agent_users(self, lo: int, hi: int) -> list[Account]:
        return [a for a in self.users.values() if lo <= a.uid <= hi]

    async def add(self, name: str, uid: int, home: Path) -> None:
        self.groups[name] = uid
        if self.crash_after_group:
            raise Crash()
        if self.fail_useradd:
            del self.groups[name]
            from agentd.errors import SystemError_

            raise SystemError_("useradd failed: simulated")
        self.users[name] = Account(name, uid, uid, str(home), "/usr/sbin/nologin")

    async def delete(self, name: str) -> None:
        self.users.pop(name, None)
        self.groups.pop(name, None)

    # a team's group (agentd.teams)
    def group_gid(self, name: str) -> int | None:
        return self.groups.get(name)

    async def add_group(self, name: str) -> int:
        gid = 900 + len(self.groups)
        self.groups[name] = gid
        return gid

    async def delete_group(self, name: str) -> None:
        self.groups.pop(name, None)


class FakeHomes:
    """Homes as a dict name -> owner UID. ``fail`` makes archive/remove raise
    HomeWorkError(kind) (e.g. "too-big"); ``aside`` records set-aside homes."""

    def __init__(self, root: Path = Path("/home/agents")) -> None:
        self.root = root
        self.homes: dict[str, int] = {}
        self.content: dict[str, bool] = {}
        self.archives: list[Path] = []
        self.aside: dict[str, int] = {}
        self.crash_on_make = False
        self.fail: dict[str, str] = {}  # "archive" | "remove" -> kind

    def path(self, name: str) -> Path:
        return self.root / name

    def make(self, name: str, uid: int, gid: int) -> Path:
        if self.crash_on_make:
            raise Crash()
        if name in self.homes:
            from agentd.errors import AlreadyExists

            raise AlreadyExists(f"{self.path(name)} already exists")
        self.homes[name] = uid
        return self.path(name)

    def exists(self, name: str) -> bool:
        return name in self.homes

    def owner(self, name: str) -> int | None:
        return self.homes.get(name)

    def is_home_of(self, name: str, uid: int) -> bool:
        return self.homes.get(name) == uid

    def _maybe_fail(self, what: str) -> None:
        if what in self.fail:
            from agentd.homes import HomeWorkError

            raise HomeWorkError(self.fail[what], f"simulated {what} failure: {self.fail[what]}")

    async def remove(self, name: str) -> dict[str, object]:
        self._maybe_fail("remove")
        self.homes.pop(name, None)
        return {"removed": 1}

    async def archive(self, name: str, dest: Path, skip_empty: bool = False) -> dict[str, object]:
        self._maybe_fail("archive")
        if name not in self.homes:
            return {"bytes": 0, "note": "no home to archive"}
        if skip_empty and not self.content.get(name):
            return {"bytes": 0, "note": "the home is empty: not archived"}
        if dest not in self.archives:
            self.archives.append(dest)
        return {"bytes": 1}

    def set_aside(self, name: str, label: str) -> Path:
        self.aside[label] = self.homes.pop(name)
        return self.root / ".removed" / label

    def names(self) -> list[str]:
        return sorted(self.homes)


class FakeUnits:
    def __init__(self) -> None:
        self.running: dict[str, list] = {}
        self.fail_start = False
        self.job_result = "done"
        self.jobs = 0

    def _job(self) -> str:
        self.jobs += 1
        return f"/org/freedesktop/systemd1/job/{self.jobs}"

    async def start_transient(self, unit: str, properties: list) -> str:
        if self.fail_start:
            from agentd.errors import SystemError_

            raise SystemError_(f"{unit} failed to start")
        if self.job_result == "done":
            self.running[unit] = properties
        return self._job()

    async def stop(self, unit: str, wait: bool = True) -> str:
        self.running.pop(unit, None)
        return self._job()

    async def wait_job(self, job: str) -> str:
        return self.job_result

    async def status(self, unit: str) -> UnitStatus:
        if unit in self.running:
            return UnitStatus("active", "running", 1234, 1 << 20, 10**9, 3)
        return UnitStatus()

    async def list_units(self, pattern: str) -> list[tuple[str, str]]:
        return [(u, "active") for u in self.running]


class BagOfWords:
    """Hashed bag of words, normalized: texts sharing words are near."""

    def __init__(self, dim: int = 384) -> None:
        self.dim = dim
        self.calls: list[list[str]] = []
        self.threads: list[int] = []

    async def embed(self, texts: list[str]) -> EmbedResult:
        self.calls.append(list(texts))
        self.threads.append(threading.get_ident())
        vectors, tokens = [], 0
        for text in texts:
            words = re.findall(r"\w+", text.lower())
            tokens += len(words) + 2
            v = [0.0] * self.dim
            for w in words:
                h = hashlib.sha256(w.encode()).digest()
                v[int.from_bytes(h[:4], "little") % self.dim] += 1.0 if h[4] & 1 else -1.0
            norm = math.sqrt(sum(x * x for x in v)) or 1.0
            vectors.append([x / norm for x in v] if any(v) else [1.0] + [0.0] * (self.dim - 1))
        return EmbedResult(vectors=vectors, tokens=tokens)
