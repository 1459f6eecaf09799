"""The memory database: its own file, its own apsw connection, sqlite-vec loaded.

Invariant: a chunk row, its full-text row and its vector row exist together or
not at all. Triggers on ``chunks`` write and delete the other two in the same
statement, so no code path (a removal, a dropped scope, a failed add rolled
back) can leave an orphan a search would find.

Separate from agentd.db because it is large, written in bulk and read by
scans: its transactions must never hold up the registry's, and it can be
archived, dropped or rebuilt on its own. Its schema has its own
``user_version``; the vectors' dimension is fixed when the file is made
(``meta``), and opening it for another dimension (another embedding model) is
refused rather than mixing vectors that cannot be compared.
"""

from __future__ import annotations

import os
from pathlib import Path

import apsw

from ..errors import InvalidConfig, MemoryDimensionMismatch, MemoryUnavailable

DEFAULT_DIMENSION = 384  # all-MiniLM-L6-v2

# Each entry migrates the schema from version i to i+1; {dimension} is the
# database's. Never edit a shipped entry: append a new one.
#
# chunks.vector: the float32 vector (little-endian), read only to re-score the
# candidates of the quantized index exactly. chunks_vec: that vector
# binary-quantized (one bit a dimension, 48 bytes at 384), partitioned by scope
# so that a search reads only the scopes it asks for. chunks_fts: contentless
# (the text is in chunks), its scope column ('agent12') restricts a MATCH to
# the asked scopes through the index instead of filtering afterwards.
# scope_usage: each scope's chunks and bytes, kept by the triggers, so a limit
# check costs one row, not a scan of the scope (100k rows: tens of ms).
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE chunks (
        id          INTEGER PRIMARY KEY,
        scope_kind  TEXT NOT NULL CHECK (scope_kind IN ('agent', 'owner')),
        scope_id    INTEGER NOT NULL,
        source      TEXT NOT NULL,
        position    INTEGER NOT NULL,
        heading     TEXT NOT NULL DEFAULT '[]',
        text        TEXT NOT NULL,
        sha256      TEXT NOT NULL,
        kind        TEXT NOT NULL CHECK (kind IN ('document', 'lesson', 'fact')),
        task_id     INTEGER,
        created     REAL NOT NULL,
        bytes       INTEGER NOT NULL,
        start_byte  INTEGER NOT NULL DEFAULT 0,
        end_byte    INTEGER NOT NULL DEFAULT 0,
        start_line  INTEGER NOT NULL DEFAULT 0,
        end_line    INTEGER NOT NULL DEFAULT 0,
        vector      BLOB NOT NULL CHECK (length(vector) = 4 * {dimension}),
        UNIQUE (scope_kind, scope_id, source, sha256)
    );
    CREATE INDEX chunks_scope ON chunks(scope_kind, scope_id, source, position);
    CREATE TABLE scope_usage (
        scope_kind  TEXT NOT NULL,
        scope_id    INTEGER NOT NULL,
        chunks      INTEGER NOT NULL,
        bytes       INTEGER NOT NULL,
        PRIMARY KEY (scope_kind, scope_id)
    ) WITHOUT ROWID;
    CREATE VIRTUAL TABLE chunks_fts USING fts5(
        text, heading, scope, content='', tokenize='porter unicode61'
    );
    CREATE VIRTUAL TABLE chunks_vec USING vec0(
        scope TEXT PARTITION KEY,
        kind TEXT,
        embedding bit[{dimension}]
    );
    CREATE TRIGGER chunks_added AFTER INSERT ON chunks BEGIN
        INSERT INTO chunks_fts(rowid, text, heading, scope)
            VALUES (new.id, new.text, new.heading, new.scope_kind || new.scope_id);
        INSERT INTO chunks_vec(rowid, scope, kind, embedding)
            VALUES (new.id, new.scope_kind || new.scope_id, new.kind,
                    vec_quantize_binary(new.vector));
        INSERT INTO scope_usage(scope_kind, scope_id, chunks, bytes)
            VALUES (new.scope_kind, new.scope_id, 1, new.bytes)
            ON CONFLICT DO UPDATE SET chunks = chunks + 1, bytes = bytes + excluded.bytes;
    END;
    CREATE TRIGGER chunks_removed AFTER DELETE ON chunks BEGIN
        INSERT INTO chunks_fts(chunks_fts, rowid, text, heading, scope)
            VALUES ('delete', old.id, old.text, old.heading, old.scope_kind || old.scope_id);
        DELETE FROM chunks_vec WHERE rowid = old.id;
        UPDATE scope_usage SET chunks = chunks - 1, bytes = bytes - old.bytes
            WHERE scope_kind = old.scope_kind AND scope_id = old.scope_id;
    END;
    CREATE TRIGGER chunks_unchanged BEFORE UPDATE OF
        scope_kind, scope_id, text, heading, kind, bytes, vector ON chunks BEGIN
        SELECT RAISE(ABORT, 'a memory chunk is immutable: remove it and add another');
    END;
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


def sqlite_vec_path() -> str:
    """The sqlite-vec extension's file (the vendored wheel's)."""
    try:
        import sqlite_vec  # type: ignore[import-not-found,unused-ignore]
    except ImportError as e:
        raise MemoryUnavailable(f"sqlite-vec is not installed: {e}") from None
    return str(sqlite_vec.loadable_path())


def connect(path: Path, dimension: int, extension: str | None = None) -> apsw.Connection:
    """PATH opened (made if new, mode 0600), sqlite-vec loaded, the schema brought
    to SCHEMA_VERSION for DIMENSION; MemoryDimensionMismatch if it was made for
    another dimension."""
    if dimension < 1:
        raise InvalidConfig(f"memory vector dimension must be positive: {dimension}")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    old_umask = os.umask(0o077)
    try:
        db = apsw.Connection(str(path))
    finally:
        os.umask(old_umask)
    try:
        _load_vec(db, extension or sqlite_vec_path())
        db.setbusytimeout(5000)
        _run(db, "PRAGMA journal_mode=WAL")
        # FULL as in agentd.db: what a caller was told is remembered stays so
        # through a power loss. Adds are batched (a document a transaction).
        _run(db, "PRAGMA synchronous=FULL")
        _migrate(db, path, dimension)
    except BaseException:
        db.close()
        raise
    return db


def _load_vec(db: apsw.Connection, extension: str) -> None:
    # Debian 12's apsw 3.40 spells these without underscores (later apsw
    # releases renamed them enable_load_extension / load_extension).
    try:
        db.enableloadextension(True)
        db.loadextension(extension)
    except apsw.Error as e:
        raise MemoryUnavailable(f"sqlite-vec could not be loaded from {extension}: {e}") from None
    finally:
        db.enableloadextension(False)


def _run(db: apsw.Connection, sql: str) -> None:
    for _ in db.execute(sql):
        pass


def _migrate(db: apsw.Connection, path: Path, dimension: int) -> None:
    current = int(next(iter(db.execute("PRAGMA user_version")))[0])
    if current > SCHEMA_VERSION:
        raise InvalidConfig(
            f"{path} has memory schema version {current}, newer than this agentd "
            f"({SCHEMA_VERSION}); refusing to run on it"
        )
    if current:
        stored = stored_dimension(db)
        if stored != dimension:
            raise MemoryDimensionMismatch(
                f"{path} holds {stored}-dimensional vectors but the embedding model "
                f"gives {dimension}: move it aside (its chunks must be embedded again) "
                "or use the model it was made with"
            )
    for version in range(current, SCHEMA_VERSION):
        with db:  # one transaction per step
            for _ in db.execute(MIGRATIONS[version].format(dimension=dimension)):
                pass
            if version == 0:
                db.execute(
                    "INSERT INTO meta(key, value) VALUES ('dimension', ?)", (str(dimension),)
                )
            _run(db, f"PRAGMA user_version={version + 1}")


def stored_dimension(db: apsw.Connection) -> int:
    for (value,) in db.execute("SELECT value FROM meta WHERE key = 'dimension'"):
        return int(value)
    raise InvalidConfig("the memory database has no recorded dimension")
