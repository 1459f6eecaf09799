"""Packaging fixtures: the .deb and .rpm built once per session with `make deb` and
`make rpm` (plus a .deb of the next version, for the upgrade test), into build/.

Building needs the tools tools/deps.sh installs (debhelper, dh-python, rpm, ...),
not root; the install tests boot a machine and need root (marker `integration`).
"""

from __future__ import annotations

import shutil

import pytest
from packaging_helpers import BUILD, TOOLS, Packages, agentd_version, make, next_version


@pytest.fixture(scope="session")
def packages() -> Packages:
    """Build build/agentd_V_amd64.deb, build/agentd-V-1.x86_64.rpm and the .deb of
    the next version (VERSION=V+1), once per session."""
    missing = [t for t in TOOLS if shutil.which(t, path="/usr/sbin:/usr/bin:/sbin:/bin") is None]
    if missing:
        pytest.skip(f"packaging tools missing ({', '.join(missing)}): run tools/deps.sh")
    version = agentd_version()
    nxt = next_version(version)
    make("deb")
    make("rpm")
    make("deb", f"VERSION={nxt}")
    pkgs = Packages(
        version=version,
        deb=BUILD / f"agentd_{version}_amd64.deb",
        rpm=BUILD / f"agentd-{version}-1.x86_64.rpm",
        next_version=nxt,
        next_deb=BUILD / f"agentd_{nxt}_amd64.deb",
        cockpit_deb=BUILD / f"cockpit-agentd_{version}_all.deb",
        cockpit_rpm=BUILD / f"cockpit-agentd-{version}-1.noarch.rpm",
    )
    for p in (pkgs.deb, pkgs.rpm, pkgs.next_deb, pkgs.cockpit_deb, pkgs.cockpit_rpm):
        assert p.is_file(), f"make did not produce {p}"
    return pkgs
