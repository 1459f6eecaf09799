"""Agent memory: documents, lessons and facts an agent (its own memory) or its
owner (a knowledge base all their agents read) stored for retrieval.

Engine side, no D-Bus: chunking (pure), the memory database (its own SQLite
file with sqlite-vec and FTS5), hybrid search, and MemoryService, which runs
every database call in one worker thread so the event loop never waits on it.
The inference service embeds (an Embedder); the caller meters the tokens.
"""

from .model import AddResult, Embedder, EmbedResult, Hit, Limits, Record, Scope, Usage
from .search import SearchParams
from .service import MemoryService, SearchResult

__all__ = [
    "AddResult",
    "EmbedResult",
    "Embedder",
    "Hit",
    "Limits",
    "MemoryService",
    "Record",
    "Scope",
    "SearchParams",
    "SearchResult",
    "Usage",
]
