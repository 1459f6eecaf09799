"""The embedding model: agentd's GGUF of all-MiniLM-L6-v2 against the original
weights, and the ``embed`` op of the service over its socket.

The conversion is right when llama.cpp, reading agentd's GGUF, tokenizes as
BERT's WordPiece does (a reference tokenizer over vocab.txt, bert_reference.py)
and embeds as a numpy forward pass over the safetensors does (cosine >= 0.999;
measured: at least 0.99999 with F16 weights). The model comes from `make
model-minilm` (conftest.py's embedding_path, which makes it if missing).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bert_reference import MiniLM, WordPiece
from inference_helpers import ME, Svc, acall, call, done, embed, gen, running, show

from agentd.inference.embedder import EMBED_QUEUE, Embedder
from agentd.inference.errors import Overloaded
from agentd.inference.protocol import MAX_EMBED_TEXT_BYTES, MAX_EMBED_TEXTS
from agentd.models import bertgguf, install
from agentd.models.catalog import CATALOG, DEFAULT_EMBEDDING

ENTRY = CATALOG[DEFAULT_EMBEDDING]
# Cased, accented, CJK, emoji (an unknown character), numbers, punctuation and
# contractions, words split into pieces. (llama.cpp does not turn a word of
# more than 100 characters into [UNK] as Hugging Face's tokenizer does: such
# words are left out here.)
SENTENCES = [
    "Hello, world!",
    "A man is playing a guitar.",
    "The café's naïve résumé costs $3.50 — or €4?",
    "Ünïcödé ÀCCENTS and UPPER case",
    "unaffordable tokenization of antidisestablishmentarianism",
    "日本語のテキストと中文",
    "emoji 🚀 rocket and tabs\tand\nnewlines",
    "it's 10:45 a.m., isn't it? (yes) [no] {maybe} <tag> a+b=c ~x^y|z",
    "Kubernetes pods restart after an OOM kill in the agents.slice",
]


def cos(a: Any, b: Any) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def embedder(embedding_path: Path) -> Iterator[Embedder]:
    e = Embedder(embedding_path, 2)
    yield e
    e.close()


def embed_now(e: Embedder, texts: list[str], key: str = "k") -> Any:
    async def run() -> Any:
        toks, cut = e.tokenize(texts)
        return await e.submit(toks, cut, key)

    return asyncio.run(run())


# ---------------------------------------------------------------- the conversion


def test_the_conversion_is_pinned_and_deterministic(
    embedding_path: Path, minilm_dir: Path, tmp_path: Path
) -> None:
    assert install.sha256_file(embedding_path) == ENTRY.sha256
    again = tmp_path / "again.gguf"
    assert ENTRY.convert is not None
    bertgguf.convert(minilm_dir, again, ENTRY.convert.name, ENTRY.convert.license)
    assert again.read_bytes() == embedding_path.read_bytes()


def test_llama_cpp_tokenizes_as_bert_wordpiece(embedder: Embedder, minilm_dir: Path) -> None:
    vocab = bertgguf.read_vocab(minilm_dir)
    tok = json.loads((minilm_dir / "tokenizer.json").read_text())
    assert {t: i for i, t in enumerate(vocab)} == tok["model"]["vocab"]  # one vocabulary
    wp = WordPiece(minilm_dir)
    tokens, cut = embedder.tokenize(SENTENCES)
    assert cut == []
    for text, ids in zip(SENTENCES, tokens, strict=True):
        assert ids == wp.encode(text), text
    assert tokens[0] == [101, 7592, 1010, 2088, 999, 102]  # [CLS] hello , world ! [SEP]
    assert wp.unk in tokens[6]  # the emoji


def test_embeddings_match_a_numpy_forward_pass(embedder: Embedder, minilm_dir: Path) -> None:
    ref = MiniLM(minilm_dir)
    wp = WordPiece(minilm_dir)
    result = embed_now(embedder, SENTENCES)
    assert len(result.vectors) == len(SENTENCES)
    cosines = []
    for text, v in zip(SENTENCES, result.vectors, strict=True):
        assert v.shape == (384,) and abs(float(np.linalg.norm(v)) - 1) < 1e-5
        cosines.append(cos(v, ref.embed(wp.encode(text))))
    print("cosines with the numpy reference:", [round(c, 6) for c in cosines])
    assert min(cosines) >= 0.999, cosines
    # and they mean something: the guitar is nearer the music than the pods
    a, b, c = embed_now(embedder, ["Someone plays music.", SENTENCES[1], SENTENCES[8]]).vectors
    assert cos(a, b) > cos(a, c) + 0.2


# ---------------------------------------------------------------- batching, in process


def test_waiting_requests_share_a_decode_and_get_the_same_vectors(embedder: Embedder) -> None:
    alone = [embed_now(embedder, [t]).vectors[0] for t in SENTENCES[:4]]

    async def run() -> list[Any]:
        toks = [embedder.tokenize([t])[0] for t in SENTENCES[:4]]
        before = embedder.decodes
        embedder.turns.__enter__()  # the embed thread waits for its turn meanwhile
        try:
            futs = [embedder.submit(t, [], f"owner{i}") for i, t in enumerate(toks)]
        finally:
            embedder.turns.__exit__()
        results = await asyncio.gather(*futs)
        # the first decode took what was queued when the thread woke; the
        # second, all the rest: not one decode per request
        assert embedder.decodes - before <= 2
        return [r.vectors[0] for r in results]

    for v, w in zip(asyncio.run(run()), alone, strict=True):
        assert cos(v, w) > 0.99999


def test_a_big_request_does_not_hold_up_another_owners_text(embedder: Embedder) -> None:
    long = "the quick brown fox jumps over the lazy dog " * 4  # 38 tokens
    order: list[str] = []

    async def run() -> None:
        big_t, _ = embedder.tokenize([long] * MAX_EMBED_TEXTS)  # 11 decodes of <= 256 tokens
        small_t, _ = embedder.tokenize(["hello"])
        embedder.turns.__enter__()
        try:
            big = embedder.submit(big_t, [], "owner:big")
            small = embedder.submit(small_t, [], "owner:small")
        finally:
            embedder.turns.__exit__()
        big.add_done_callback(lambda _: order.append("big"))
        small.add_done_callback(lambda _: order.append("small"))
        await asyncio.gather(big, small)

    asyncio.run(run())
    assert order == ["small", "big"]


def test_the_queue_of_texts_is_bounded(embedder: Embedder) -> None:
    async def run() -> None:
        toks, _ = embedder.tokenize(["x"] * MAX_EMBED_TEXTS)
        futs = []
        embedder.turns.__enter__()  # nothing is computed meanwhile
        try:
            with pytest.raises(Overloaded, match="embedding queue full"):
                for i in range(EMBED_QUEUE // MAX_EMBED_TEXTS + 2):
                    futs.append(embedder.submit(toks, [], f"owner{i}"))
        finally:
            embedder.turns.__exit__()
        assert len(futs) >= EMBED_QUEUE // MAX_EMBED_TEXTS
        results = await asyncio.gather(*futs)  # those queued are all answered
        assert all(len(r.vectors) == MAX_EMBED_TEXTS for r in results)

    asyncio.run(run())


def test_a_cancelled_request_leaves_the_queue(embedder: Embedder) -> None:
    async def run() -> None:
        toks, _ = embedder.tokenize(["one", "two", "three"])
        embedder.turns.__enter__()
        try:
            first = embedder.submit(toks, [], "owner:a")  # the thread may take it
            second = embedder.submit(toks, [], "owner:b")
            second.cancel()  # the client hung up
            await asyncio.sleep(0)  # the done callbacks run
            assert embedder.stats()["queued_texts"] <= 3  # only first's, if any
        finally:
            embedder.turns.__exit__()
        assert len((await first).vectors) == 3

    asyncio.run(run())
    assert embedder.stats()["queued_texts"] == 0


def test_a_text_longer_than_the_context_is_cut(embedder: Embedder) -> None:
    tokens, cut = embedder.tokenize(["short", "word " * 600])
    assert cut == [1] and len(tokens[1]) == embedder.context == 256
    assert tokens[1][0] == 101 and tokens[1][-1] == 102  # still [CLS] ... [SEP]


# ---------------------------------------------------------------- the service


@pytest.fixture(scope="module")
def svc(
    model_path: Path, embedding_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Svc]:
    with running(tmp_path_factory.mktemp("embed"), model_path, embedding=embedding_path) as s:
        yield s


def test_embed_answers_a_unit_vector_per_text(svc: Svc, minilm_dir: Path) -> None:
    wp = WordPiece(minilm_dir)
    r = done(call(svc, embed(SENTENCES[:3], agent="scout", owner="1000")))
    assert (r["model"], r["dimensions"], r["truncated"]) == ("all-MiniLM-L6-v2", 384, [])
    assert len(r["embeddings"]) == 3
    for v in r["embeddings"]:
        assert len(v) == 384 and abs(float(np.linalg.norm(v)) - 1) < 1e-5
    assert r["tokens"] == sum(len(wp.encode(t)) for t in SENTENCES[:3])
    info = show(svc)
    assert info["embedding"]["dimensions"] == 384 and info["embedding"]["pooling"] == "mean"
    assert info["embedding"]["architecture"] == "bert" and info["embedding"]["context"] == 256
    assert info["stats"]["embed_requests"] >= 1 and info["stats"]["embed_tokens"] >= r["tokens"]


def test_concurrent_clients_get_what_they_would_alone(svc: Svc) -> None:
    texts = [[s, SENTENCES[(i + 1) % len(SENTENCES)]] for i, s in enumerate(SENTENCES)]
    alone = [done(call(svc, embed(t)))["embeddings"] for t in texts]

    async def together() -> list[list[dict[str, Any]]]:
        return await asyncio.gather(
            *(acall(svc, embed(t, owner=str(1000 + i))) for i, t in enumerate(texts))
        )

    for events, want in zip(asyncio.run(together()), alone, strict=True):
        got = done(events)["embeddings"]
        assert all(cos(a, b) > 0.99999 for a, b in zip(got, want, strict=True))


def test_generation_and_embedding_take_turns(svc: Svc) -> None:
    async def both() -> list[list[dict[str, Any]]]:
        return await asyncio.gather(
            acall(svc, gen("writer", "Write a haiku about the sea.", max_tokens=24)),
            *(acall(svc, embed(SENTENCES)) for _ in range(3)),
        )

    first, *embeds = asyncio.run(both())
    assert done(first)["completion_tokens"] > 0
    assert all(len(done(e)["embeddings"]) == len(SENTENCES) for e in embeds)


@pytest.mark.parametrize(
    ("request_", "why"),
    [
        (embed(["x"] * (MAX_EMBED_TEXTS + 1)), "texts must be a list of 1.."),
        (embed([]), "texts must be a list of 1.."),
        (embed("one string"), "texts must be a list"),  # type: ignore[arg-type]
        (embed([1, 2]), "texts must be a list"),  # type: ignore[list-item]
        (embed(["é" * (MAX_EMBED_TEXT_BYTES // 2 + 1)]), f"at most {MAX_EMBED_TEXT_BYTES}"),
        (embed(["x"], temperature=0), "unknown field"),
        (embed(["x"], owner=""), "owner must be"),
    ],
)
def test_embed_requests_out_of_bounds_are_refused(
    svc: Svc, request_: dict[str, Any], why: str
) -> None:
    (err,) = call(svc, request_)
    assert err["error"] == "InvalidRequest" and why in err["message"], err


def test_the_most_a_request_may_ask_is_answered(svc: Svc) -> None:
    texts = ["word " * (MAX_EMBED_TEXT_BYTES // 5)] + ["short text"] * (MAX_EMBED_TEXTS - 1)
    r = done(call(svc, embed(texts)))
    assert r["truncated"] == [0] and len(r["embeddings"]) == MAX_EMBED_TEXTS
    assert r["tokens"] == 256 + (MAX_EMBED_TEXTS - 1) * 4  # [CLS] short text [SEP]


def test_the_model_client_embeds_and_translates_errors(svc: Svc, tmp_path: Path) -> None:
    from agentd.errors import InvalidArgument
    from agentd.modelclient import ModelClient, NoEmbeddingModel

    client = ModelClient(svc.socket, patience_s=5)
    got = asyncio.run(client.embed(SENTENCES[:2], agent="scout", owner="1000"))
    assert (got.model, got.dimensions, len(got.vectors), got.truncated) == (
        "all-MiniLM-L6-v2", 384, 2, [])  # fmt: skip
    assert got.tokens == 6 + 9  # [CLS] a man is playing a guitar . [SEP]
    with pytest.raises(InvalidArgument):
        asyncio.run(client.embed(["x"] * (MAX_EMBED_TEXTS + 1)))
    with running(tmp_path, tmp_path / "absent.gguf") as bare, pytest.raises(NoEmbeddingModel):
        asyncio.run(ModelClient(bare.socket, patience_s=5).embed(["x"]))


def test_a_reload_with_the_embedding_models_path_replaces_only_it(
    svc: Svc, embedding_path: Path
) -> None:
    before = show(svc)
    events = call(svc, {"op": "reload", "path": str(embedding_path)})
    assert done(events)["kind"] == "embedding", events
    after = show(svc)
    assert after["model"] == before["model"]  # the chat model stays
    assert after["embedding"]["path"] == str(embedding_path)
    assert after["stats"]["loaded_at"] == before["stats"]["loaded_at"]
    assert len(done(call(svc, embed(["still here"])))["embeddings"]) == 1


# ---------------------------------------------------------------- without an embedding model


def test_without_an_embedding_model_embed_is_a_typed_error(tmp_path: Path) -> None:
    with running(tmp_path, tmp_path / "absent.gguf") as s:
        (err,) = call(s, embed(["hello"]))
        assert err["error"] == "NoEmbeddingModel" and "minilm" in err["message"], err
        assert show(s)["embedding"] is None


def test_a_chat_model_is_not_taken_as_the_embedding_model(model_path: Path, tmp_path: Path) -> None:
    s = Svc(tmp_path, tmp_path / "absent.gguf", [ME], embedding=model_path, threads=2)
    try:
        (err,) = call(s, embed(["hello"]))
        assert err["error"] == "NoEmbeddingModel", err
        assert "is a chat model" in s.stderr()
    finally:
        assert s.stop() == 0
