"""Documents for `memory add` and `knowledge add`: read, checked, cut in pieces.

Invariants, and why:
- Every document is read whole and decoded before anything is sent: a file
  that is not UTF-8 text is refused by name, and one bad file among several
  leaves nothing sent (all are read first).
- A document's source label is the one a person finds again: --source if
  given, else the file's absolute path (os.path.abspath, symlinks kept as
  typed), so that adding the same file again from another directory, with
  --replace, or `rm --source`, names the same source; stdin is "stdin".
- A piece is at most PIECE bytes of UTF-8, and a text's pieces joined give the
  text back. agentd bounds one AddMemory at 1 MiB (MAX_TEXT in
  agentd.memory.memories); 256 KiB pieces (~330 chunks of ~800 characters)
  keep each call one short embedding batch and give the progress bar steps.
- Cuts fall before a Markdown heading in the second half of the piece if there
  is one (the next section's chunks keep their heading), else between
  paragraphs (a blank line), else between lines, and only inside a line longer
  than a piece between characters: agentd chunks each piece on its own, so a
  cut inside a paragraph would split it into two chunks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

PIECE = 256 * 1024  # bytes of UTF-8 per AddMemory (agentd takes at most 1 MiB)
MAX_SOURCE = 512  # characters, one line (agentd's bound on a source label)
STDIN = "stdin"  # the source of text read from standard input without --source


class DocumentError(ValueError):
    """A document that cannot be added; the message names it."""


@dataclass(frozen=True)
class Document:
    name: str  # as the user typed it ("-" is shown as stdin), for messages
    source: str  # the label its chunks are stored under
    text: str

    @property
    def size(self) -> int:
        return len(self.text.encode())


def read_documents(paths: Sequence[str], source: str | None, stdin: BinaryIO) -> list[Document]:
    """PATHS ("-": STDIN) read and decoded, each with its source label (SOURCE, for a
    single document, or the default); DocumentError names the first bad one."""
    if source is not None and len(paths) > 1:
        raise DocumentError("--source names one document: give one FILE (or -) with it")
    if list(paths).count("-") > 1:
        raise DocumentError("standard input (-) can be read only once")
    docs = []
    for path in paths:
        name = STDIN if path == "-" else path
        try:
            data = stdin.read() if path == "-" else _read(path)
        except OSError as e:
            raise DocumentError(f"cannot read {name}: {e.strerror or e}") from None
        label = source if source is not None else STDIN if path == "-" else os.path.abspath(path)
        docs.append(Document(name, _check_source(label, name), _decode(data, name)))
    return docs


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _decode(data: bytes, name: str) -> str:
    try:
        text = data.decode("utf-8-sig")  # a byte order mark is not text
    except UnicodeDecodeError as e:
        raise DocumentError(
            f"{name} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}): "
            "nothing was added; convert it first (iconv -t UTF-8)"
        ) from None
    if "\0" in text:
        raise DocumentError(f"{name} is not text (it holds NUL bytes): nothing was added")
    if not text.strip():
        raise DocumentError(f"{name} is empty: nothing to add")
    return text


def _check_source(label: str, name: str) -> str:
    if not label or "\n" in label or "\r" in label or len(label) > MAX_SOURCE:
        raise DocumentError(
            f"source label of {name} must be 1..{MAX_SOURCE} characters on one line: "
            "give one with --source"
        )
    return label


def pieces(text: str, limit: int = PIECE) -> list[str]:
    """TEXT in pieces of at most LIMIT bytes of UTF-8, cut where the module says."""
    data = text.encode()
    out = []
    start = 0
    while len(data) - start > limit:
        end = _cut(data, start, start + limit)
        out.append(data[start:end].decode())
        start = end
    out.append(data[start:].decode())
    return out


def _cut(data: bytes, start: int, most: int) -> int:
    """Where the piece starting at START ends, at most at MOST (> START).

    A newline byte is never inside a UTF-8 sequence, so every cut after one is a
    character boundary."""
    heading = data.rfind(b"\n#", start + (most - start) // 2, most)
    if heading >= 0:
        return heading + 1
    for sep in (b"\n\n", b"\n"):
        at = data.rfind(sep, start, most)
        if at >= 0:
            return at + len(sep)
    end = most
    while end > start + 1 and data[end] & 0xC0 == 0x80:  # a continuation byte
        end -= 1
    return end
