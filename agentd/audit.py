"""The audit trail: an append-only, hash-chained log mirrored to journald.

Each row carries the SHA-256 of its own content plus the previous row's hash,
and the newest (seq, hash) is kept in ``meta``: changing a row breaks its hash,
deleting one breaks the chain or the head. The journald copy (with
AGENT_NAME=, AGENT_UID=, AGENTD_AUDIT_HASH= ...) is a second, independent
record an operator can compare against, and verify() does: each journald copy
names its chain (AGENTD_AUDIT_CHAIN=, the hash of row 1, which no later change
alters), so a tail cut off the database together with a rewritten head still
shows, as journald's newest record of the chain lying past the database's end.

Every row is bounded whatever its callers pass (names, titles, reasons and
error texts come from callers, and each row is fsynced and sent to journald):
each string of the detail and the agent name at most MAX_VALUE bytes, lists
and dicts at most MAX_ITEMS entries, the whole detail JSON at most MAX_DETAIL
bytes, cut with a marker ``…[truncated N characters]``. The hash covers what is
stored, so verify() checks the truncated row as it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .events import AuditAppended, Events
from .store import Store

GENESIS = "0" * 64
MESSAGE_ID = "9d6f3c1e0b1a4f0fa0b6a1c2d3e4f501"  # journald catalog id of agentd audit events

JournalSink = Callable[..., None]
# (chain) -> the newest (seq, hash) journald holds for that chain, if any
JournalAnchor = Callable[[str], tuple[int, str] | None]

MAX_VALUE = 1024  # bytes of one string in a row (a detail value, the agent name)
MAX_ITEMS = 64  # entries of one list or dict in a detail
MAX_DEPTH = 4  # nesting of lists and dicts in a detail
MAX_DETAIL = 16 * 1024  # bytes of a row's whole detail JSON


def _send(journal: JournalSink, fields: dict[str, Any]) -> None:
    # journald down must not stop agentd; the database row is the record
    with contextlib.suppress(OSError):
        journal(**fields)


def _journal_anchor(chain: str) -> tuple[int, str] | None:
    """journald's newest audit record of CHAIN (seq, hash), if journald has one."""
    from systemd import journal  # imported late: unit tests need no journald

    with journal.Reader() as reader:
        reader.add_match(MESSAGE_ID=MESSAGE_ID, AGENTD_AUDIT_CHAIN=chain)
        reader.seek_tail()
        entry = reader.get_previous()
    try:
        return int(entry["AGENTD_AUDIT_SEQ"]), str(entry["AGENTD_AUDIT_HASH"])
    except (KeyError, TypeError, ValueError):
        return None


def _journal_send(**fields: Any) -> None:
    from systemd import journal  # imported late: unit tests need no journald

    message = fields.pop("MESSAGE")
    journal.send(message, **fields)


@dataclass(frozen=True)
class Entry:
    seq: int
    ts: float
    actor_uid: int
    action: str
    agent: str | None
    agent_uid: int | None
    result: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str
    task_id: int | None = None
    agent_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass(frozen=True)
class Verdict:
    ok: bool
    checked: int
    message: str
    bad_seq: int = 0


def row_hash(
    seq: int,
    ts: float,
    actor_uid: int,
    action: str,
    agent: str | None,
    agent_uid: int | None,
    result: str,
    detail: str,
    prev_hash: str,
    task_id: int | None = None,
    agent_id: int | None = None,
) -> str:
    fields: list[object] = [
        seq,
        repr(ts),
        actor_uid,
        action,
        agent,
        agent_uid,
        result,
        detail,
        prev_hash,
    ]
    # Rows from before tasks (and before agent ids) existed hash as they always
    # did; the list's length tells which columns it holds.
    if agent_id is not None:
        fields += [task_id, agent_id]
    elif task_id is not None:
        fields.append(task_id)
    material = json.dumps(fields, separators=(",", ":"))
    return hashlib.sha256(material.encode()).hexdigest()


class AuditLog:
    def __init__(
        self,
        store: Store,
        journal: JournalSink | None = _journal_send,
        events: Events | None = None,
        anchor: JournalAnchor | None = None,
        background: bool = False,
    ) -> None:
        self.store = store
        self.journal = journal
        # BACKGROUND: journald sends leave the event loop for one thread, in
        # order (a send is a sendmsg of ~1 KiB, but journald may be slow or
        # rate-limiting, and the hot path audits two or three rows per task).
        self._sender = (
            ThreadPoolExecutor(1, thread_name_prefix="agentd-journal")
            if background and journal is not None
            else None
        )
        self.anchor = anchor if anchor is not None else (_journal_anchor if journal else None)
        self._chain: str | None = None
        self.events = events if events is not None else Events(store)

    def head(self) -> tuple[int, str]:
        value = self.store.scalar("SELECT value FROM meta WHERE key='audit_head'")
        if value is None:
            return 0, GENESIS
        seq, digest = value.split(":")
        return int(seq), digest

    def append(
        self,
        action: str,
        *,
        actor_uid: int,
        agent: str | None = None,
        agent_uid: int | None = None,
        result: str = "ok",
        task_id: int | None = None,
        agent_id: int | None = None,
        **detail: Any,
    ) -> Entry:
        """Append one row (inside the caller's transaction, if any). AGENT_ID is
        found from AGENT and AGENT_UID when not given (see _agent_id)."""
        if task_id is not None:
            detail["task_id"] = task_id
        agent = clip(agent) if agent is not None else None
        detail, detail_json = bounded_detail(detail)
        with self.store.transaction():
            if agent_id is None:
                agent_id = self._agent_id(agent, agent_uid)
            last_seq, prev = self.head()
            row: dict[str, Any] = {
                "seq": last_seq + 1,
                "ts": time.time(),
                "actor_uid": actor_uid,
                "action": action,
                "agent": agent,
                "agent_uid": agent_uid,
                "result": result,
                "detail": detail_json,
                "prev_hash": prev,
                "task_id": task_id,
                "agent_id": agent_id,
            }
            row["hash"] = row_hash(**row)  # the columns are row_hash's arguments
            self.store.execute(
                f"INSERT INTO audit ({', '.join(row)}) VALUES ({', '.join(':' + k for k in row)})",
                row,
            )
            self.store.execute(
                "INSERT OR REPLACE INTO meta VALUES ('audit_head', ?)",
                (f"{row['seq']}:{row['hash']}",),
            )
            entry = Entry(**{**row, "detail": detail})
            self.store.after_commit(lambda: self._publish(entry))
        return entry

    def _agent_id(self, agent: str | None, agent_uid: int | None) -> int | None:
        """The id of the agent a row is about: of the agents that had this name
        and UID, the newest, which is the one acting or acted on now (an older
        one is removed, and a newer one cannot exist yet). Names and UIDs are
        reused; the id, which audit visibility keys on, never is."""
        if agent is None or agent_uid is None:
            return None
        found = self.store.scalar(
            "SELECT id FROM agents WHERE name=? AND uid=? ORDER BY id DESC LIMIT 1",
            (agent, agent_uid),
        )
        return int(found) if found is not None else None

    def _publish(self, entry: Entry) -> None:
        if self.journal is not None:
            fields = {
                "MESSAGE": _message(entry),
                "PRIORITY": 4 if entry.result != "ok" else 6,
                "SYSLOG_IDENTIFIER": "agentd",
                "MESSAGE_ID": MESSAGE_ID,
                "AGENTD_ACTION": entry.action,
                "AGENTD_RESULT": entry.result,
                "AGENTD_ACTOR_UID": entry.actor_uid,
                "AGENTD_AUDIT_SEQ": entry.seq,
                "AGENTD_AUDIT_HASH": entry.hash,
                "AGENTD_AUDIT_CHAIN": self.chain() or entry.hash,
            }
            if entry.agent is not None:
                fields["AGENT_NAME"] = entry.agent
            if entry.agent_uid is not None:
                fields["AGENT_UID"] = entry.agent_uid
            if entry.agent_id is not None:
                fields["AGENT_ID"] = entry.agent_id
            if self._sender is not None:
                self._sender.submit(_send, self.journal, fields)
            else:
                _send(self.journal, fields)
        self.events.publish(AuditAppended(entry))

    def close(self) -> None:
        """Send what is queued for journald, then stop the sender."""
        if self._sender is not None:
            self._sender.shutdown(wait=True)

    def entries(
        self,
        after: int = 0,
        limit: int = 1000,
        agent: str | None = None,
        task_id: int | None = None,
    ) -> list[Entry]:
        sql = "SELECT * FROM audit WHERE seq > ?"
        params: list[Any] = [after]
        if agent:
            sql += " AND agent = ?"
            params.append(agent)
        if task_id is not None:
            sql += " AND task_id = ?"
            params.append(task_id)
        sql += " ORDER BY seq LIMIT ?"
        params.append(limit)
        return [_entry(r) for r in self.store.query(sql, tuple(params))]

    def verify(self) -> Verdict:
        """Walk the whole chain; report the first row that does not fit."""
        expected_prev, expected_seq, checked = GENESIS, 1, 0
        for row in self.store.query("SELECT * FROM audit ORDER BY seq"):
            seq = row["seq"]
            if seq != expected_seq:
                return Verdict(False, checked, f"row {expected_seq} is missing", expected_seq)
            if row["prev_hash"] != expected_prev:
                return Verdict(False, checked, f"row {seq} does not follow row {seq - 1}", seq)
            digest = row_hash(**{k: v for k, v in row.items() if k != "hash"})
            if digest != row["hash"]:
                return Verdict(False, checked, f"row {seq} was modified", seq)
            expected_prev, expected_seq, checked = digest, seq + 1, checked + 1
        head_seq, head_hash = self.head()
        if (head_seq, head_hash) != (checked, expected_prev):
            return Verdict(
                False,
                checked,
                f"the log ends at row {checked} but its head says {head_seq}",
                checked + 1,
            )
        return self._against_journal(checked, expected_prev)

    def chain(self) -> str | None:
        """The chain's name: row 1's hash (None while the log is empty)."""
        if self._chain is None:
            self._chain = self.store.scalar("SELECT hash FROM audit WHERE seq=1")
        return self._chain

    def _against_journal(self, checked: int, last_hash: str) -> Verdict:
        """The intact chain compared with journald's newest record of it: rows
        journald saw past the end mean the tail was cut (and the head rewritten)."""
        chain = self.chain()
        anchored = self.anchor(chain) if self.anchor is not None and chain else None
        if anchored is None:
            return Verdict(True, checked, f"{checked} rows, chain intact")
        seq, digest = anchored
        if seq > checked:
            return Verdict(
                False,
                checked,
                f"journald recorded row {seq} of this log, which ends at row {checked}: "
                f"rows {checked + 1}-{seq} were removed",
                checked + 1,
            )
        row = self.store.scalar("SELECT hash FROM audit WHERE seq=?", (seq,))
        if row != digest:
            return Verdict(False, checked, f"row {seq} differs from journald's record", seq)
        tail = f"journald's newest record is row {seq}"
        return Verdict(True, checked, f"{checked} rows, chain intact; {tail}")


def clip(text: str, limit: int = MAX_VALUE) -> str:
    """TEXT if it fits in LIMIT bytes (UTF-8), else its head and a marker, together
    at most LIMIT bytes."""
    if len(text) * 4 <= limit or len(_utf8(text)) <= limit:
        return text
    head = _utf8(text[:limit])[: max(0, limit - 40)].decode("utf-8", "ignore")
    return f"{head}…[truncated {len(text) - len(head)} characters]"


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _bounded(value: Any, depth: int = 0) -> Any:
    """VALUE with every string clipped and every list or dict cut to MAX_ITEMS."""
    if isinstance(value, str):
        return clip(value)
    if isinstance(value, list | tuple | dict) and depth >= MAX_DEPTH:
        return clip(json.dumps(value, default=str))
    if isinstance(value, list | tuple):
        items = [_bounded(v, depth + 1) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append(f"…[truncated {len(value) - MAX_ITEMS} items]")
        return items
    if isinstance(value, dict):
        out = {
            clip(str(k), 128): _bounded(v, depth + 1) for k, v in list(value.items())[:MAX_ITEMS]
        }
        if len(value) > MAX_ITEMS:
            out["…"] = f"[truncated {len(value) - MAX_ITEMS} entries]"
        return out
    return value


def bounded_detail(detail: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """DETAIL bounded, and its JSON (at most MAX_DETAIL bytes): values are clipped
    one by one, then the largest are replaced by a marker until the row fits."""
    out: dict[str, Any] = _bounded(detail)
    text = json.dumps(out, sort_keys=True, separators=(",", ":"))
    while len(_utf8(text)) > MAX_DETAIL:
        sizes = {k: len(json.dumps(v)) for k, v in out.items()}
        largest = max(sizes, key=lambda k: sizes[k])
        out[largest] = f"…[truncated {sizes[largest]} characters]"
        text = json.dumps(out, sort_keys=True, separators=(",", ":"))
    return out, text


def _entry(row: dict[str, Any]) -> Entry:
    return Entry(**{**row, "detail": json.loads(row["detail"])})


def _message(e: Entry) -> str:
    who = f"uid {e.actor_uid}"
    what = e.action + (f" {e.agent}" if e.agent else "")
    extra = e.detail.get("error") or e.detail.get("reason") or ""
    return f"audit: {what} by {who}: {e.result}" + (f" ({extra})" if extra else "")
