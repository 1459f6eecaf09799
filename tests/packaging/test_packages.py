"""The built packages, checked from the outside: lintian and rpmlint, then what
dpkg-deb and rpm say the packages contain, depend on and run (no RPM-based system
runs here, so the .rpm is judged by `rpm -qp`). Also the man pages and the bash
completion they ship. The .deb's install, upgrade, remove and purge run in
test_deb_lifecycle.py.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import click
from packaging_helpers import REPO, Packages

PATH_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}

LLAMA = "/usr/lib/agentd/python/llama_cpp"
LLAMA_LIBS = (
    "libllama.so",
    "libllama.so.0",
    "libggml.so",
    "libggml.so.0",
    "libggml-base.so.0",
    "libggml-cpu.so.0",
    "libmtmd.so",
)

# What both packages must ship (Debian's units live in /lib/systemd/system).
PAYLOAD = [
    "/usr/bin/agentctl",
    "/usr/libexec/agentd/agentd",
    "/usr/libexec/agentd/agentd-runtime",
    "/usr/libexec/agentd/agentd-purge",
    "/usr/libexec/agentd/agentd-inference",
    "/usr/lib/agentd/python/agentd/daemon.py",
    "/usr/lib/agentd/python/agentd/inference/engine.py",
    "/usr/lib/agentd/python/agentd/inference/service.py",
    "/usr/lib/agentd/python/agentctl/cli.py",
    "/usr/lib/agentd/python/sdbus/sd_bus_internals.abi3.so",
    "/usr/lib/sysusers.d/agentd.conf",
    "/usr/lib/tmpfiles.d/agentd.conf",
    "/usr/share/dbus-1/system.d/org.agentos.agentd1.conf",
    "/usr/share/dbus-1/system-services/org.agentos.agentd1.service",
    # the interfaces as introspection XML (make interfaces) and the polkit actions
    *(
        f"/usr/share/dbus-1/interfaces/org.agentos.agentd1.{i}.xml"
        for i in ("Manager", "Runtime", "Tasks", "Agent", "Model", "Goals")
    ),
    "/usr/share/polkit-1/actions/org.agentos.agentd1.policy",
    "/usr/share/agentd/templates/research.toml",
    "/usr/share/agentd/templates/writing.toml",
    "/usr/share/agentd/templates/ops.toml",
    "/usr/share/agentd/templates/sandbox.toml",
    "/usr/share/agentd/templates/planner.toml",  # issue 14: a goal's planner
    "/usr/share/agentd/profiles/offline.toml",
    "/usr/share/agentd/profiles/online.toml",
    "/usr/share/bash-completion/completions/agentctl",
    "/usr/share/man/man1/agentctl.1.gz",
    "/usr/share/man/man8/agentd.8.gz",
    "/usr/share/doc/agentd/inference-protocol.md",
    "/etc/agentd/agentd.toml",
    # llama-cpp-python, for agentd-inference: the package, its dist-info and its
    # libraries (real files under their full version, links under the SONAME and
    # the unversioned name, which llama_cpp opens with ctypes).
    "/usr/lib/agentd/python/llama_cpp/__init__.py",
    "/usr/lib/agentd/python/llama_cpp/llama_cpp.py",
    "/usr/lib/agentd/python/llama_cpp_python-0.3.36.dist-info/METADATA",
    *(f"/usr/lib/agentd/python/llama_cpp/lib/{lib}" for lib in LLAMA_LIBS),
]
UNITS = (
    "agentd.service",
    "agentd-inference.service",
    "agents.slice",
    "agentd-metrics.socket",  # issue 16: the metrics endpoint, not enabled
    "agentd-metrics@.service",
)
RUNTIME_DEPS = [
    "python3-apsw",
    "python3-click",
    "python3-rich",
    "python3-systemd",
    "systemd",
    "dbus",
    # llama-cpp-python's
    "python3-numpy",
    "python3-jinja2",
    "python3-typing-extensions",
    "python3-diskcache",
]


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(argv), capture_output=True, text=True, env=PATH_ENV, timeout=300)
    if check and r.returncode:
        raise AssertionError(f"{' '.join(argv)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


# ------------------------------------------------------------------------------ lint
def test_lintian_has_no_errors_or_warnings(packages: Packages) -> None:
    r = run(
        "lintian", "--fail-on", "error,warning", "--display-info", str(packages.deb), check=False
    )
    tags = [ln for ln in r.stdout.splitlines() if re.match(r"^[EW]: ", ln)]
    assert not tags, "lintian:\n" + "\n".join(tags)
    assert r.returncode == 0, r.stdout + r.stderr
    # Every override is used (an override whose tag went away must go too).
    assert "unused-override" not in r.stdout and "mismatched-override" not in r.stdout, r.stdout


COCKPIT_FILES = {
    f"/usr/share/cockpit/agentd/{name}"
    for name in ("manifest.json", "index.html", "agentd.js", "agent.js", "task.js", "agentd.css")
}


def test_the_cockpit_page_is_its_own_package_lintian_clean(packages: Packages) -> None:
    r = run(
        "lintian", "--fail-on", "error,warning", "--display-info", str(packages.cockpit_deb),
        check=False,
    )  # fmt: skip
    tags = [ln for ln in r.stdout.splitlines() if re.match(r"^[EW]: ", ln)]
    assert not tags and r.returncode == 0, r.stdout + r.stderr
    assert deb_files(packages.cockpit_deb) >= COCKPIT_FILES
    assert not any(f.startswith("/usr/share/cockpit") for f in deb_files(packages.deb))
    depends = deb_field(packages.cockpit_deb, "Depends")
    assert f"agentd (>= {packages.version})" in depends and "cockpit-bridge" in depends
    assert deb_field(packages.cockpit_deb, "Architecture") == "all"
    rpm_files = set(run("rpm", "-qlp", str(packages.cockpit_rpm)).stdout.split())
    assert rpm_files >= COCKPIT_FILES
    requires = run("rpm", "-qRp", str(packages.cockpit_rpm)).stdout
    assert "agentd =" in requires and "cockpit-bridge" in requires


def deb_files(deb: Path) -> set[str]:
    listing = run("dpkg-deb", "--contents", str(deb)).stdout
    return {"/" + line.split()[-1].lstrip("./") for line in listing.splitlines()}


def test_every_lintian_override_has_a_written_reason() -> None:
    lines = (REPO / "packaging/debian/agentd.lintian-overrides").read_text().splitlines()
    reason = False
    for line in lines:
        if line.startswith("#") and line.strip("# "):
            reason = True
        elif line.strip():
            assert reason, f"lintian override without a comment giving its reason: {line}"
        else:
            reason = False  # a blank line ends a reason


def test_rpmlint_has_no_errors(packages: Packages) -> None:
    r = run(
        "rpmlint", "-c", str(REPO / "packaging/rpm/rpmlint.toml"), str(packages.rpm), check=False
    )
    summary = r.stdout.strip().splitlines()[-1]
    assert re.search(r"\b0 errors\b", summary), r.stdout
    assert r.returncode == 0, r.stdout + r.stderr
    # Warnings do not fail the gate, but the filters in rpmlint.toml leave none today.
    assert re.search(r"\b0 warnings\b", summary), r.stdout


# ------------------------------------------------------------------------------ .deb
def deb_field(deb: Path, field: str) -> str:
    return run("dpkg-deb", "--field", str(deb), field).stdout.strip()


def deb_control_file(deb: Path, name: str) -> str:
    return run("sh", "-c", f"dpkg-deb --ctrl-tarfile '{deb}' | tar -xOf - ./{name}").stdout


def test_deb_identity_and_dependencies(packages: Packages) -> None:
    assert packages.deb.name == f"agentd_{packages.version}_amd64.deb"
    assert deb_field(packages.deb, "Package") == "agentd"
    assert deb_field(packages.deb, "Version") == packages.version
    assert deb_field(packages.deb, "Architecture") == "amd64"
    depends = [d.strip() for d in deb_field(packages.deb, "Depends").split(",")]
    # slirp4netns: online agents' own network namespace gets its way out (agentd.usernet)
    for dep in [*RUNTIME_DEPS, "passwd", "slirp4netns", "python3 (>= 3.11)"]:
        assert dep in depends, depends
    # ${shlibs:Depends}, from llama.cpp's libraries (dh_shlibdeps found the private
    # ones they need in their own directory, so it did not fail on them).
    names = {d.split()[0] for d in depends}
    assert {"libc6", "libstdc++6", "libgomp1", "libgcc-s1"} <= names, depends
    assert deb_field(packages.next_deb, "Version") == packages.next_version
    # polkitd answers agentd's administrative actions; agentd runs without it.
    assert [r.strip() for r in deb_field(packages.deb, "Recommends").split(",")] == ["polkitd"]


def test_deb_declares_no_shared_library(packages: Packages) -> None:
    """llama.cpp's libraries are private: no shlibs file, no ldconfig trigger."""
    members = run("sh", "-c", f"dpkg-deb --ctrl-tarfile '{packages.deb}' | tar -tf -").stdout
    assert "./shlibs" not in members.split() and "./triggers" not in members.split(), members


def test_deb_payload(packages: Packages) -> None:
    listing = run("dpkg-deb", "--contents", str(packages.deb)).stdout
    # "... ./path" or, for a link, "... ./path -> target"
    files = {
        line.split()[-3 if line.startswith("l") else -1].lstrip(".")
        for line in listing.splitlines()
    }
    for path in PAYLOAD:
        assert path in files, f"{path} missing from the .deb"
    for unit in UNITS:
        assert f"/lib/systemd/system/{unit}" in files
    # Byte code is made in postinst (py3compile), not shipped; no build stamp.
    assert not [f for f in files if f.endswith(".pyc") or "__pycache__" in f]
    assert not [f for f in files if f.endswith("/.stamp")]
    check_llama_runtime_only(files)
    # dh_python3 left the libraries' names alone (no ABI tag: they are no extension
    # modules); each SONAME and unversioned name is a link to the one real file.
    links = {
        line.split()[-3].lstrip("."): line.split()[-1]
        for line in listing.splitlines()
        if line.startswith("l")
    }
    for lib in LLAMA_LIBS:
        assert re.fullmatch(
            rf"{re.escape(lib.split('.so')[0])}\.so\.\d+\.\d+\.\d+",
            links.get(f"{LLAMA}/lib/{lib}", ""),
        ), (lib, links)
    # Launchers are executable and run Debian's python3 isolated.
    for line in listing.splitlines():
        if line.split()[-1] in (
            "./usr/bin/agentctl",
            "./usr/libexec/agentd/agentd",
            "./usr/libexec/agentd/agentd-inference",
        ):
            assert line.startswith("-rwxr-xr-x root/root"), line
    # The units' Documentation= files are there uncompressed.
    assert "/usr/share/doc/agentd/dbus-api.md" in files


def check_llama_runtime_only(files: set[str]) -> None:
    """Only what llama_cpp needs at runtime: not its HTTP server (whose dependencies
    are not there), nor the wheel's top-level include/ and lib/ (headers, cmake and
    pkg-config files: build artefacts)."""
    assert not [f for f in files if f.startswith(f"{LLAMA}/server")]
    for d in ("include", "lib/cmake", "lib/pkgconfig", "lib/libllama.so.0"):
        assert f"/usr/lib/agentd/python/{d}" not in files, d
    assert not [f for f in files if f.startswith(f"{LLAMA}/lib/") and "cpython" in f]


def test_deb_conffile_is_only_the_admin_config(packages: Packages) -> None:
    assert deb_control_file(packages.deb, "conffiles").split() == ["/etc/agentd/agentd.toml"]


def test_deb_maintainer_scripts(packages: Packages) -> None:
    postinst = deb_control_file(packages.deb, "postinst")
    prerm = deb_control_file(packages.deb, "prerm")
    postrm = deb_control_file(packages.deb, "postrm")
    # Groups, then the bus reload, before debhelper enables and (re)starts agentd.
    order = [
        postinst.index(s)
        for s in (
            "systemd-sysusers agentd.conf",
            "org.freedesktop.DBus.ReloadConfig",
            "deb-systemd-helper enable 'agentd.service'",
            "_dh_action=restart",
            "deb-systemd-invoke $_dh_action 'agentd-inference.service' 'agentd.service'",
        )
    ]
    assert order == sorted(order), postinst
    assert "deb-systemd-helper enable 'agentd-inference.service'" in postinst
    assert 'systemd-tmpfiles ${DPKG_ROOT:+--root="$DPKG_ROOT"} --create agentd.conf' in postinst
    assert "py3compile -p agentd:amd64 /usr/lib/agentd/python" in postinst
    # remove: every agent, then agentd; upgrade: neither (agentd restarts in postinst).
    agents = prerm.index("deb-systemd-invoke stop 'agent-*.service'")
    agentd = prerm.index("deb-systemd-invoke stop 'agentd-inference.service' 'agentd.service'")
    assert agents < agentd
    assert re.search(r'if \[ "\$1" = remove \].*\n\s+deb-systemd-invoke stop .agent-\*', prerm)
    # purge: archive, then delete; the function is inlined from packaging/agentd-purge.
    assert re.search(r'if \[ "\$1" = purge \]; then\n\s+agentd_purge\n', postrm)
    assert "agentd-purge-$(date -u +%Y%m%dT%H%M%SZ).tar.gz" in postrm
    assert postrm.index("tar --create") < postrm.index("userdel") < postrm.index("rm -rf")
    assert "systemctl stop agentd.service agentd-inference.service 'agent-*.service'" in postrm
    assert "for _ap_p in home/agents var/lib/agentd var/lib/agentd-models etc/agentd" in postrm
    assert "rm -rf /home/agents /var/lib/agentd /var/lib/agentd-models /etc/agentd" in postrm
    assert "deb-systemd-helper purge 'agentd-inference.service' 'agentd.service'" in postrm


def test_deb_inference_unit_is_confined(packages: Packages) -> None:
    """The shipped agentd-inference.service: what the protocol relies on, and
    systemd-analyze's exposure score (offline: the unit file alone) at most 1.5."""
    unit_dir = REPO / "build" / "packaging-test"
    unit_dir.mkdir(parents=True, exist_ok=True)
    unit = unit_dir / "agentd-inference.service"
    unit.write_text(
        run(
            "sh",
            "-c",
            f"dpkg-deb --fsys-tarfile '{packages.deb}' | tar -xOf - "
            "./lib/systemd/system/agentd-inference.service",
        ).stdout
    )
    text = unit.read_text()
    for line in (
        "Type=notify",
        "ExecStart=/usr/libexec/agentd/agentd-inference",
        "DynamicUser=yes",
        "RuntimeDirectory=agentd-inference",
        "RuntimeDirectoryMode=0700",
        "PrivateNetwork=yes",
        "IPAddressDeny=any",
        "RestrictAddressFamilies=AF_UNIX",
        "CapabilityBoundingSet=",
        "RestartPreventExitStatus=78",
        "WantedBy=multi-user.target",
    ):
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line
    r = run(
        "systemd-analyze",
        "security",
        "--offline=true",
        "--threshold=15",
        "--no-pager",
        str(unit),
        check=False,
    )
    score = re.search(r"Overall exposure level for agentd-inference\.service: (\d+\.\d+)", r.stdout)
    assert r.returncode == 0 and score and float(score.group(1)) <= 1.5, r.stdout + r.stderr
    agentd = run(
        "sh",
        "-c",
        f"dpkg-deb --fsys-tarfile '{packages.deb}' | tar -xOf - "
        "./lib/systemd/system/agentd.service",
    ).stdout
    assert "Wants=agentd-inference.service" in agentd.splitlines()
    assert "After=agentd-inference.service" in agentd.splitlines()
    tmpfiles = run(
        "sh",
        "-c",
        f"dpkg-deb --fsys-tarfile '{packages.deb}' | tar -xOf - ./usr/lib/tmpfiles.d/agentd.conf",
    ).stdout
    assert re.search(r"^d /var/lib/agentd-models +0755 root root -$", tmpfiles, re.M), tmpfiles


# ------------------------------------------------------------------------------ .rpm
def rpmq(rpm: Path, *args: str) -> str:
    return run("rpm", "-qp", *args, str(rpm)).stdout


def test_rpm_identity(packages: Packages) -> None:
    assert packages.rpm.name == f"agentd-{packages.version}-1.x86_64.rpm"
    nvra = rpmq(packages.rpm, "--qf", "%{NAME} %{VERSION} %{RELEASE} %{ARCH}")
    assert nvra == f"agentd {packages.version} 1 x86_64"


def test_rpm_files(packages: Packages) -> None:
    files = set(rpmq(packages.rpm, "--list").split())
    for path in PAYLOAD:
        assert path in files, f"{path} missing from the .rpm"
    for unit in UNITS:
        assert f"/usr/lib/systemd/system/{unit}" in files
    assert not [f for f in files if f.endswith("/.stamp")]
    check_llama_runtime_only(files)
    # Libraries are executable on RPM systems; the other names are links to them.
    modes = dict(
        line.split()
        for line in rpmq(packages.rpm, "--qf", "[%{FILENAMES} %{FILEMODES:perms}\n]").splitlines()
    )
    real = [f for f in modes if f.startswith(f"{LLAMA}/lib/") and modes[f][0] == "-"]
    assert len(real) == 5 and all(modes[f] == "-rwxr-xr-x" for f in real), real
    assert all(modes[f"{LLAMA}/lib/{lib}"][0] == "l" for lib in LLAMA_LIBS)


def test_rpm_admin_config_is_noreplace(packages: Packages) -> None:
    flags = dict(
        line.split()
        for line in rpmq(packages.rpm, "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]").splitlines()
        if len(line.split()) == 2
    )
    assert flags["/etc/agentd/agentd.toml"] == "cn"  # %config(noreplace)
    config = rpmq(packages.rpm, "--configfiles").split()
    assert config == ["/etc/agentd/agentd.toml"]
    assert flags.get("/usr/share/agentd/templates/research.toml", "") == ""  # vendor data


def test_rpm_requires_and_provides(packages: Packages) -> None:
    requires = rpmq(packages.rpm, "--requires").splitlines()
    for dep in [*RUNTIME_DEPS, "python3 >= 3.11", "shadow-utils", "tar", "slirp4netns"]:
        assert dep in requires, requires
    provides = rpmq(packages.rpm, "--provides").splitlines()
    assert f"agentd = {packages.version}-1" in provides
    assert "agentd(x86-64) = " + f"{packages.version}-1" in provides
    # The private Python environment provides nothing to other packages, so it
    # requires none of its own libraries either (or nothing could install it).
    assert not [p for p in provides if "sdbus" in p or "python" in p or ".so" in p], provides
    assert not [r for r in requires if re.match(r"lib(ggml|llama|mtmd)", r)], requires
    assert "libgomp.so.1()(64bit)" in requires
    assert rpmq(packages.rpm, "--recommends").split() == ["polkit"]


def test_rpm_scriptlets(packages: Packages) -> None:
    scripts = rpmq(packages.rpm, "--scripts")
    parts = dict(
        re.findall(
            r"^(\w+) scriptlet \(using /bin/sh\):\n(.*?)(?=^\w+ scriptlet|\Z)", scripts, re.M | re.S
        )
    )
    assert set(parts) == {"preinstall", "postinstall", "preuninstall", "postuninstall"}, scripts
    pre, post, preun, postun = (
        parts[k] for k in ("preinstall", "postinstall", "preuninstall", "postuninstall")
    )
    # %sysusers_create_compat: agentd's groups before the files land.
    assert "getent group agentd-admin >/dev/null || groupadd -r agentd-admin" in pre
    assert "getent group agentd-agents >/dev/null || groupadd -r agentd-agents" in pre
    # %tmpfiles_create, the bus reload, %systemd_post (preset on first install).
    assert "systemd-tmpfiles --create /usr/lib/tmpfiles.d/agentd.conf" in post
    assert "org.freedesktop.DBus.ReloadConfig" in post
    assert re.search(
        r"if \[ \$1 -eq 1 \].*\n.*\n\s+systemctl --no-reload preset agentd.service "
        r"agentd-inference.service",
        post,
    )
    # Erase ($1 == 0): agents, then %systemd_preun's disable --now agentd.
    assert re.search(r"if \[ \$1 -eq 0 \].*\n\s+systemctl stop 'agent-\*.service'", preun)
    assert re.search(
        r"if \[ \$1 -eq 0 \].*\n.*\n\s+systemctl --no-reload disable --now "
        r"agentd.service agentd-inference.service",
        preun,
    )
    assert preun.index("agent-*.service") < preun.index("disable --now agentd.service")
    # %systemd_postun_with_restart: reload, and restart agentd on upgrade ($1 >= 1).
    assert "systemctl daemon-reload" in postun
    assert re.search(
        r"if \[ \$1 -ge 1 \].*\n.*\n\s+systemctl try-restart agentd.service "
        r"agentd-inference.service",
        postun,
    )
    # No scriptlet deletes users or data: rpm -e is apt remove.
    assert "userdel" not in scripts and "groupdel" not in scripts and "rm -rf" not in scripts


# ------------------------------------------------------------------- man, completion
def command_tree() -> list[tuple[list[str], click.Command]]:
    from agentctl.cli import cli

    found: list[tuple[list[str], click.Command]] = []

    def walk(cmd: click.Command, path: list[str]) -> None:
        if getattr(cmd, "hidden", False):
            return
        found.append((path, cmd))
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])

    walk(cli, [])
    return found


def man_text(page: str) -> str:
    """The page as man renders it (so that roff escapes like \\- do not hide words)."""
    return (
        run("man", "--nh", "--nj", "-l", "-Tutf8", str(REPO / "docs/man" / page), check=True)
        .stdout.replace("\u2010", "-")
        .replace("\u2212", "-")
    )


def test_agentctl_man_page_documents_every_command_and_option() -> None:
    raw = re.sub(r".\x08", "", man_text("agentctl.1"))
    text = re.sub(r"\s+", " ", raw)
    missing = []
    for path, cmd in command_tree():
        # Each command has a heading (or a synopsis line) of its own.
        words = r"\s+".join(map(re.escape, path))
        if path and not re.search(rf"^\s*(agentctl\s+)?{words}\b", raw, re.M):
            missing.append(f"command: agentctl {' '.join(path)}")
        for param in cmd.params:
            if isinstance(param, click.Option) and not param.hidden:
                for opt in param.opts + param.secondary_opts:
                    if opt.startswith("--") and opt not in text:
                        missing.append(f"option {opt} of agentctl {' '.join(path)}")
    assert not missing, (
        "docs/man/agentctl.1 does not document (write them in, "
        "from `agentctl ... --help`):\n" + "\n".join(missing)
    )


def test_man_pages_render_without_warnings() -> None:
    run("make", "-C", str(REPO), "--no-print-directory", "-s", "man")


def test_agentd_man_page_documents_remove_and_purge() -> None:
    text = re.sub(r"\s+", " ", re.sub(r".\x08", "", man_text("agentd.8")))
    for words in (
        "apt remove agentd",
        "apt purge agentd",
        "/var/backups/agentd-purge-TIMESTAMP.tar.gz",
        "agentd-purge --yes",
        "--check-config",
        "/etc/agentd/agentd.toml",
    ):
        assert words in text, words


def test_bash_completion_is_generated_from_click(packages: Packages) -> None:
    script = run(
        "sh",
        "-c",
        f"dpkg-deb --fsys-tarfile '{packages.deb}' | tar -xOf - "
        "./usr/share/bash-completion/completions/agentctl",
    ).stdout
    assert "_AGENTCTL_COMPLETE=bash_complete" in script
    assert re.search(r"complete .*-F _agentctl_completion agentctl", script)
