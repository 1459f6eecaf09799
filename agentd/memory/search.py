"""Hybrid retrieval: quantized vector search re-scored exactly, BM25 keywords,
reciprocal rank fusion, and a relevance floor.

Invariant: a search reads only the scopes it is given (the vector index is
partitioned by scope and the full-text query is restricted to the scopes'
tokens), and it returns nothing whose exact cosine similarity to the query is
below the floor, keyword match or not: an unrelated question gets no answer
rather than the least bad one.

Why each step (sqlite-vec 0.1.9, 384 dimensions, 100k chunks in one scope,
CPU time of the worker thread on this project's 2-core machine, p50):
- vec0 is a brute-force scan: float took 132 ms a query, int8 99 ms, bit
  (48 bytes a vector) 12 ms at k=60. So the scan is over binary-quantized
  vectors, and its CANDIDATES best are re-scored with their float vectors
  (vec_distance_cosine), which restores the exact order among them:
  recall@10 0.99 at 60 candidates on clustered synthetic vectors (0.95 at 40).
  Its cost grows with k (7 ms at 20, 17 ms at 100): candidates stay modest.
- Keywords catch what embeddings blur (names, identifiers, error codes); BM25
  ranks them (11-17 ms for 1-3 terms each in ~1% of the chunks; ~7 ms of it
  is the scope restriction walking the scope's posting list). The two
  rankings are fused by reciprocal rank (RRF, k=60), which needs no
  calibration between a cosine and a BM25 score.
A whole search at 100k chunks: 28 ms of CPU (p50); at 10k: 4 ms.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .model import Hit, Record, Scope
from .store import MemoryStore, pack

# Words too common to say anything a query is about: a keyword match on
# "the" alone must not make an unrelated chunk relevant.
_STOPWORDS = """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself
    yourselves"""
STOPWORDS = frozenset(_STOPWORDS.split())
_WORD = re.compile(r"\w+")
# BM25 scores every chunk any term matches: at 100k chunks in a scope, 6 terms
# each in ~1% of the chunks cost ~30 ms under load against ~10 ms for one, so
# a long query (a whole task description) keeps only its likeliest terms.
MAX_QUERY_TERMS = 8


@dataclass(frozen=True)
class SearchParams:
    """candidates: how many the binary scan hands to exact re-scoring.
    min_cosine: the floor of a hit the keywords did not match;
    min_cosine_keyword: the (lower) floor of one they did."""

    # Real all-MiniLM-L6-v2 vectors (4,095 Python docstrings, 1,595 queries:
    # a docstring's summary line for the rest of it), recall@10 of the binary
    # scan + exact re-scoring against exact search: 0.83 at 20 candidates, 0.93
    # at 40, 0.96 at 60, 0.98 at 100. Synthetic clustered vectors at 100k
    # chunks in one scope: 0.94 at 40, 0.99 at 60.
    candidates: int = 60
    keyword_candidates: int = 60
    rrf_k: int = 60
    # Same vectors: 40 questions about nothing in the corpus (cooking, sport,
    # travel...) had a best cosine of 0.22 (median), 0.31 (95th percentile),
    # 0.35 (max); the summary lines had 0.50 (median) to their own docstring,
    # 0.29 at the 10th percentile. With 0.35 and, for a keyword match, 0.25:
    # 90% of the related pairs are kept and 3 of the 40 unrelated questions
    # return anything (all three through a shared word).
    min_cosine: float = 0.35
    min_cosine_keyword: float = 0.25


def keyword_query(text: str) -> str | None:
    """TEXT as an FTS5 query: its distinct non-stopword words, each quoted (no
    operator a caller types reaches FTS5), any of them matching; of a long
    query, the MAX_QUERY_TERMS longest words (the rarer, as a rule)."""
    words = list(dict.fromkeys(w for w in _WORD.findall(text.lower()) if w not in STOPWORDS))
    if len(words) > MAX_QUERY_TERMS:
        longest = set(sorted(words, key=len, reverse=True)[:MAX_QUERY_TERMS])
        words = [w for w in words if w in longest][:MAX_QUERY_TERMS]
    if not words:
        return None
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words)


def rrf(rankings: Sequence[Sequence[int]], k: int = 60) -> dict[int, float]:
    """Reciprocal rank fusion: each id scores sum(1 / (k + rank)), rank from 1."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, ident in enumerate(ranking, start=1):
            scores[ident] = scores.get(ident, 0.0) + 1.0 / (k + rank)
    return scores


def vector_candidates(
    store: MemoryStore,
    scopes: Sequence[Scope],
    vector: Sequence[float],
    n: int,
    kinds: Sequence[str] | None = None,
) -> list[int]:
    """The N nearest by Hamming distance of the binary-quantized vectors."""
    keys = [s.key for s in scopes]
    sql = (
        "SELECT rowid FROM chunks_vec WHERE embedding MATCH vec_quantize_binary(?) AND k = ? "
        f"AND scope IN ({','.join('?' * len(keys))})"
    )
    params: list[object] = [pack(vector), n, *keys]
    if kinds:
        sql += f" AND kind IN ({','.join('?' * len(kinds))})"
        params += kinds
    return [r for (r,) in store.query(sql, params)]


def keyword_candidates(
    store: MemoryStore,
    scopes: Sequence[Scope],
    text: str,
    n: int,
    kinds: Sequence[str] | None = None,
) -> list[int]:
    """Up to N chunks matching TEXT's words, best BM25 first (the scope column
    weighs nothing: it only restricts)."""
    terms = keyword_query(text)
    if terms is None:
        return []
    match = f"scope : ({' OR '.join(s.key for s in scopes)}) AND {{text heading}} : ({terms})"
    if kinds:
        marks = ",".join("?" * len(kinds))
        rows = store.query(
            "SELECT f.rowid FROM chunks_fts f JOIN chunks c ON c.id = f.rowid "
            f"WHERE chunks_fts MATCH ? AND c.kind IN ({marks}) "
            "ORDER BY bm25(chunks_fts, 1.0, 0.5, 0.0) LIMIT ?",
            [match, *kinds, n],
        )
    else:
        rows = store.query(
            "SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ? "
            "ORDER BY bm25(chunks_fts, 1.0, 0.5, 0.0) LIMIT ?",
            [match, n],
        )
    return [r for (r,) in rows]


def cosines(store: MemoryStore, ids: Sequence[int], vector: Sequence[float]) -> dict[int, float]:
    """Exact cosine similarity of each chunk's float vector to VECTOR."""
    if not ids:
        return {}
    rows = store.query(
        "SELECT id, 1.0 - vec_distance_cosine(vector, ?) FROM chunks "
        f"WHERE id IN ({','.join('?' * len(ids))})",
        [pack(vector), *ids],
    )
    return {i: float(c) for i, c in rows}


def search(
    store: MemoryStore,
    scopes: Sequence[Scope],
    vector: Sequence[float],
    text: str,
    k: int,
    params: SearchParams | None = None,
    kinds: Sequence[str] | None = None,
) -> list[Hit]:
    """The K best chunks of SCOPES for the query (TEXT, embedded as VECTOR)."""
    params = params or SearchParams()
    scopes = list(dict.fromkeys(scopes))
    if not scopes or k < 1:
        return []
    near = vector_candidates(store, scopes, vector, max(params.candidates, k), kinds)
    words = keyword_candidates(store, scopes, text, max(params.keyword_candidates, k), kinds)
    exact = cosines(store, list(dict.fromkeys([*near, *words])), vector)
    by_vector = sorted(near, key=lambda i: -exact.get(i, -1.0))
    fused = rrf([by_vector, words], params.rrf_k)
    matched = set(words)
    kept = [
        i
        for i in fused
        if exact.get(i, -1.0) >= (params.min_cosine_keyword if i in matched else params.min_cosine)
    ]
    kept.sort(key=lambda i: (-fused[i], -exact[i], i))
    kept = kept[:k]
    records = store.records(kept)
    return [_hit(records[i], fused[i], exact[i], i in matched) for i in kept if i in records]


def _hit(r: Record, score: float, cosine: float, keyword: bool) -> Hit:
    return Hit(
        id=r.id,
        scope=r.scope,
        source=r.source,
        position=r.position,
        heading=r.heading,
        text=r.text,
        kind=r.kind,
        task_id=r.task_id,
        sha256=r.sha256,
        created=r.created,
        start_byte=r.start_byte,
        end_byte=r.end_byte,
        start_line=r.start_line,
        end_line=r.end_line,
        score=score,
        cosine=cosine,
        keyword=keyword,
    )
