"""Unix accounts for agents, made with the shadow tools (homes: agentd.homes).

groupadd/useradd/userdel take the /etc/passwd locks and keep nscd in step, so
agentd uses them rather than editing the files. One asyncio lock serialises
them: concurrent useradds would fight over the same lock files.

Every method takes the Unix account name (agentd.names.account_name of the
agent's name: ``agent-NAME``); agentd.accountnames renames accounts made
before that prefix, the only time a bare agent name is looked up.
"""

from __future__ import annotations

import asyncio
import grp
import pwd
from dataclasses import dataclass
from pathlib import Path

from . import names
from .errors import Busy, SystemError_
from .homes import Homes

__all__ = ["NOLOGIN", "Account", "Accounts", "Homes"]  # Homes: now agentd.homes

NOLOGIN = "/usr/sbin/nologin"
# Exit codes of useradd/userdel/groupdel meaning "no such account".
_GONE = {6}
# usermod's exit code when the user has processes ("user X is currently used by
# process N"): it renames no running user.
_USER_BUSY = 8


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str
    shell: str


async def _run(*argv: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace").strip()


class Accounts:
    """The real system: NSS look-ups and the shadow tools."""

    def __init__(self, agents_group: str) -> None:
        self.agents_group = agents_group
        self.lock = asyncio.Lock()

    # -- look-ups -------------------------------------------------------
    def user(self, name: str) -> Account | None:
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            return None
        return self._account(pw)

    def _account(self, pw: pwd.struct_passwd) -> Account:
        # No supplementary groups: nothing read them, and finding them parsed
        # the whole group file (getgrall) at every look-up: with 1,000 agents,
        # ~1,000 groups several times per creation, start and removal, and
        # ~1,000 x 1,000 in agent_users() at startup. (py-spy had put 15% of
        # agentd's main thread during bench/lifecycle.py's removals in user
        # and group look-ups.)
        return Account(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir, pw.pw_shell)

    def id_taken(self, uid: int) -> bool:
        """True if UID is a user or GID a group anywhere in NSS."""
        for lookup in (pwd.getpwuid, grp.getgrgid):
            try:
                lookup(uid)
                return True
            except KeyError:
                pass
        return False

    def group_exists(self, name: str) -> bool:
        return self.group_gid(name) is not None

    def group_gid(self, name: str) -> int | None:
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            return None

    def agent_users(self, lo: int, hi: int) -> list[Account]:
        """Users in the agent ID range that belong to the agents group."""
        try:
            members = set(grp.getgrnam(self.agents_group).gr_mem)
        except KeyError:
            members = set()
        return [
            self._account(pw)
            for pw in pwd.getpwall()
            if lo <= pw.pw_uid <= hi and pw.pw_name in members
        ]

    # -- changes --------------------------------------------------------
    async def add(self, name: str, uid: int, home: Path) -> None:
        """Group NAME (gid=UID) and user NAME, locked, nologin, no home made."""
        async with self.lock:
            rc, out = await _run("groupadd", "--system", "--gid", str(uid), name)
            if rc:
                raise SystemError_(f"groupadd {name} failed: {out}")
            rc, out = await _run(
                # -K: a system account above SYS_UID_MAX is intended, not worth a warning
                "useradd",
                "--system",
                "-K",
                f"SYS_UID_MAX={uid}",
                "--uid",
                str(uid),
                "--gid",
                str(uid),
                "--groups",
                self.agents_group,
                "--no-create-home",
                "--home-dir",
                str(home),
                "--shell",
                NOLOGIN,
                "--comment",
                f"agentd agent {names.agent_of_account(name) or name}",
                name,
            )
            if rc:
                await _run("groupdel", name)
                raise SystemError_(f"useradd {name} failed: {out}")

    async def add_group(self, name: str) -> int:
        """System group NAME (a team's: agentd.teams), its GID chosen by groupadd."""
        async with self.lock:
            rc, out = await _run("groupadd", "--system", name)
        gid = self.group_gid(name)
        if rc or gid is None:
            raise SystemError_(f"groupadd {name} failed: {out}")
        return gid

    async def delete(self, name: str) -> None:
        """Remove user and group NAME; absent ones are fine (idempotent)."""
        async with self.lock:
            rc, out = await _run("userdel", name)
            if rc and rc not in _GONE:
                raise SystemError_(f"userdel {name} failed: {out}")
            await self._delete_group(name)

    async def delete_group(self, name: str) -> None:
        """Remove group NAME alone (a half-renamed agent's); absent is fine."""
        async with self.lock:
            await self._delete_group(name)

    async def _delete_group(self, name: str) -> None:
        if self.group_exists(name):
            rc, out = await _run("groupdel", name)
            if rc and rc not in _GONE:
                raise SystemError_(f"groupdel {name} failed: {out}")

    async def rename_user(self, old: str, new: str) -> None:
        """usermod -l: the user keeps its UID, home and groups (the agents group's
        member list is renamed with it). Busy while it has processes."""
        async with self.lock:
            rc, out = await _run("usermod", "--login", new, old)
        if rc == _USER_BUSY:
            raise Busy(f"user {old} has processes: renamed at its next start ({out})")
        if rc:
            raise SystemError_(f"usermod --login {new} {old} failed: {out}")

    async def rename_group(self, old: str, new: str) -> None:
        """groupmod -n: the group keeps its GID."""
        async with self.lock:
            rc, out = await _run("groupmod", "--new-name", new, old)
        if rc:
            raise SystemError_(f"groupmod --new-name {new} {old} failed: {out}")
