"""Helpers of the packaging tests: versions, the built packages, `make`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "build"
TOOLS = ("dpkg-buildpackage", "dh", "dh_python3", "rpmbuild", "lintian", "rpmlint", "man")

# agentctl's command tree is imported by the man page test (sdbus from build/vendor).
for _p in (REPO / "build" / "vendor", REPO):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))


def agentd_version() -> str:
    text = (REPO / "agentd" / "__init__.py").read_text()
    m = re.search(r'^__version__ = "([^"]+)"$', text, re.M)
    assert m, "no __version__ in agentd/__init__.py"
    return m.group(1)


def next_version(version: str) -> str:
    """0.1.0 -> 0.1.1: the version of the upgrade package."""
    head, _, last = version.rpartition(".")
    return f"{head}.{int(last) + 1}" if head else str(int(last) + 1)


@dataclass(frozen=True)
class Packages:
    version: str
    deb: Path
    rpm: Path
    next_version: str
    next_deb: Path
    cockpit_deb: Path  # cockpit-agentd, the Cockpit page (issue 17)
    cockpit_rpm: Path


def make(*args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    r = subprocess.run(
        ["make", "-C", str(REPO), "--no-print-directory", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if r.returncode:
        pytest.fail(
            f"make {' '.join(args)} failed ({r.returncode}):\n{r.stdout[-4000:]}\n"
            f"{r.stderr[-4000:]}",
            pytrace=False,
        )
