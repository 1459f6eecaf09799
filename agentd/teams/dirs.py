"""A team's Unix group and shared directory, as the system holds them.

The group is ``agentd-team-NAME``: a reserved prefix, as agent accounts have
theirs (agentd.names), so a team never squats a group a package creates, and
agentd never adopts a group it did not make (an existing one is refused). The
directory is HOME_ROOT/.teams/NAME, root-owned, group the team's, mode 2770:
setgid, so what a member writes there belongs to the team's group; nobody
else may enter. The .teams directory is 0711 (pass through, not list), as
the homes root is. Units bind a member's teams in (agentd.sandbox); /home is a
tmpfs in every unit, so nobody else sees them at all.

A removed team's directory is archived like a kept home (agentd.homes: the
bounded helper, root-only tar under state_dir/archive, within the retention),
then deleted.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import subprocess
import time
from pathlib import Path
from typing import Protocol

from ..errors import AlreadyExists, InvalidName, SystemError_
from ..homes import ARCHIVE_SUFFIX, Homes

GROUP_PREFIX = "agentd-team-"
# groupadd takes names of up to 32 characters (agentd.names.ACCOUNT_MAX_LEN).
MAX_LEN = 32 - len(GROUP_PREFIX)
_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
DIR_MODE = 0o2770


def check_name(name: str) -> str:
    """Raise InvalidName unless NAME is a well-formed team name; return it."""
    if not isinstance(name, str) or not name:
        raise InvalidName("team name must not be empty")
    if len(name) > MAX_LEN:
        raise InvalidName(f"team name is {len(name)} characters, longer than {MAX_LEN}")
    if not _NAME_RE.match(name):
        raise InvalidName(
            f"team name {name!r} is invalid: use lowercase letters, digits and single "
            "hyphens, starting with a letter"
        )
    return name


def group_name(name: str) -> str:
    return GROUP_PREFIX + name


class Groups(Protocol):
    """What a team needs of agentd.accounts.Accounts."""

    def group_gid(self, name: str) -> int | None: ...
    async def add_group(self, name: str) -> int: ...
    async def delete_group(self, name: str) -> None: ...


class TeamDirs:
    """Team directories under ROOT (HOME_ROOT/.teams); archives in ARCHIVE_DIR."""

    def __init__(self, root: Path, archive_dir: Path, homes: Homes | None = None) -> None:
        self.root = root
        self.archive_dir = archive_dir
        # the same bounded helper and retention as homes, over this root
        self.work = homes or Homes(root, archive_dir)

    def path(self, name: str) -> Path:
        return self.root / name

    def make(self, name: str, gid: int) -> Path:
        """The team's empty directory, root:GID 2770; AlreadyExists if anything is
        at its path (agentd does not adopt a directory it did not make).

        agentd's own unit has RestrictSUIDSGID=yes: it may not set a setgid bit
        (chmod, mkdir with it: EPERM, measured in the machine). So ROOT is setgid
        (2711, made by the package's tmpfiles.d) and the directory is made by a
        child with umask 007 (0770, never agentd's umask, which other threads
        share): the kernel gives it the setgid bit of its parent, and chown
        keeps it on a directory."""
        self._root()
        path = self.path(name)
        if os.path.lexists(path):
            raise AlreadyExists(
                f"{path} already exists: agentd does not adopt a directory it did not make"
            )
        made = subprocess.run(
            ["mkdir", "--", str(path)], umask=0o007, capture_output=True, text=True, check=False
        )
        if made.returncode:
            raise SystemError_(f"mkdir {path} failed: {made.stderr.strip()}")
        os.chown(path, 0, gid, follow_symlinks=False)
        if stat.S_IMODE(os.lstat(path).st_mode) != DIR_MODE:
            try:
                os.chmod(path, DIR_MODE, follow_symlinks=False)  # outside agentd's unit
            except PermissionError:
                path.rmdir()
                raise SystemError_(
                    f"{self.root} is not setgid, and agentd may not make {path} so: run "
                    "`systemd-tmpfiles --create agentd.conf` (or chmod 2711 it)"
                ) from None
        return path

    def _root(self) -> None:
        """ROOT, 0711 and setgid where agentd may say so (its tmpfiles.d does)."""
        self.root.mkdir(mode=0o711, parents=True, exist_ok=True)
        if stat.S_IMODE(os.lstat(self.root).st_mode) != 0o2711:
            with contextlib.suppress(PermissionError):  # EPERM in agentd's own unit
                os.chmod(self.root, 0o2711)

    def is_ours(self, name: str, gid: int | None) -> bool:
        """A real directory, root's, of group GID at the team's path."""
        try:
            st = os.lstat(self.path(name))
        except FileNotFoundError:
            return False
        return stat.S_ISDIR(st.st_mode) and st.st_uid == 0 and (gid is None or st.st_gid == gid)

    def exists(self, name: str) -> bool:
        return os.path.lexists(self.path(name))

    async def archive_and_remove(self, name: str) -> str | None:
        """Archive the directory (nothing if it is empty) and delete it; the
        archive's path, or None. Raises SystemError_ (HomeWorkError) if the
        helper cannot: the directory is then left as it was."""
        if not self.exists(name):
            return None
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        dest = self.archive_dir / f"team-{name}-{stamp}{ARCHIVE_SUFFIX}"
        await self.work.archive(name, dest, skip_empty=True)
        await self.work.remove(name)
        if self.exists(name):
            raise SystemError_(f"{self.path(name)} could not be removed")
        return str(dest) if dest.exists() else None
