"""Documents cut into chunks an embedding model sees whole: pure functions.

Invariant: every chunk's text is an exact slice of the document (its byte and
line offsets locate it there), a Markdown heading always starts a new chunk,
and no chunk is longer than ``max_chars`` (a heading line aside): an overlong
paragraph is cut at sentence ends, and an overlong sentence at a space (or,
with none, anywhere).

Why the bound: all-MiniLM-L6-v2 was trained on 256 word pieces (its 512
positions are untrained past that) and truncates what is longer, so a chunk of
~200 tokens (~800 characters of English prose at ~4 characters a token) is
embedded whole, with room for its heading path.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

MAX_CHARS = 800  # ~200 word pieces of English prose: under MiniLM's 256

_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t#]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_SENTENCE_END = re.compile(r"(?<=[.!?。;:])[\"')\]]*\s+")


@dataclass(frozen=True)
class Chunk:
    """One piece of a document, where it came from, and its content hash."""

    source: str
    index: int  # its position among the document's chunks, from 0
    text: str
    heading: tuple[str, ...]  # the headings it is under, outermost first
    start_byte: int  # UTF-8 offsets in the document, end exclusive
    end_byte: int
    start_line: int  # 1-based, inclusive
    end_line: int
    sha256: str

    @property
    def embed_text(self) -> str:
        """What the model embeds: the heading path leads a chunk that does not
        start with its own heading, so a section's later chunks keep its topic."""
        if self.heading and not _HEADING.match(self.text.split("\n", 1)[0]):
            return " > ".join(self.heading) + "\n\n" + self.text
        return self.text


@dataclass(frozen=True)
class Resume:
    """Where a text continues a document sent in pieces (agentctl cuts files over
    256 KiB): the next chunk's position, byte and line offsets, and the headings
    open there (level, title), so a piece's chunks are numbered, located and
    titled as if the document had come whole."""

    position: int = 0
    byte: int = 0
    line: int = 1
    headings: tuple[tuple[int, str], ...] = ()


START = Resume()


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def approx_tokens(text: str) -> int:
    """Word pieces, roughly (English: ~4 characters each): for bounds, not billing."""
    return (len(text) + 3) // 4


@dataclass(frozen=True)
class _Block:
    """A heading line or a paragraph (a fenced code block is one paragraph)."""

    start: int  # character offsets in the document, end exclusive
    end: int
    level: int  # heading level 1..6, 0 for a paragraph
    title: str = ""


def _blocks(text: str) -> list[_Block]:
    blocks: list[_Block] = []
    para_start: int | None = None
    para_end = 0
    fence: str | None = None
    pos = 0
    for line in text.splitlines(keepends=True):
        start, pos = pos, pos + len(line)
        body = line.rstrip("\r\n")
        fence_mark = _FENCE.match(body)
        if fence is not None:  # inside a fenced block: nothing is a heading
            para_end = start + len(body)
            if fence_mark and fence_mark.group(1) == fence:
                fence = None
            continue
        heading = _HEADING.match(body)
        if heading or not body.strip():
            if para_start is not None:
                blocks.append(_Block(para_start, para_end, 0))
                para_start = None
            if heading:
                blocks.append(
                    _Block(start, start + len(body), len(heading.group(1)), heading.group(2))
                )
            continue
        if para_start is None:
            para_start = start
        para_end = start + len(body)
        if fence_mark:
            fence = fence_mark.group(1)
    if para_start is not None:
        blocks.append(_Block(para_start, para_end, 0))
    return blocks


def _cut(text: str, start: int, end: int, max_chars: int) -> list[tuple[int, int]]:
    """[start, end) as spans of at most MAX_CHARS: whole sentences packed,
    an overlong sentence cut at its last space before the bound."""
    if end - start <= max_chars:
        return [(start, end)]
    sentences: list[tuple[int, int]] = []
    s = start
    for m in _SENTENCE_END.finditer(text, start, end):
        sentences.append((s, m.start()))
        s = m.end()
    if s < end:
        sentences.append((s, end))
    pieces: list[tuple[int, int]] = []
    for a, b in sentences:
        while b - a > max_chars:  # hard cut, at a space if there is one
            cut = text.rfind(" ", a + 1, a + max_chars + 1)
            cut = cut if cut > a else a + max_chars
            pieces.append((a, cut))
            a = cut
            while a < b and text[a].isspace():
                a += 1
        if a < b:
            pieces.append((a, b))
    return _pack(pieces, max_chars)


def _pack(spans: list[tuple[int, int]], max_chars: int) -> list[tuple[int, int]]:
    """Adjacent spans joined while the joined span stays within MAX_CHARS."""
    out: list[tuple[int, int]] = []
    for a, b in spans:
        if out and b - out[-1][0] <= max_chars:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def chunk_text(text: str, source: str, max_chars: int = MAX_CHARS) -> list[Chunk]:
    """TEXT (Markdown or plain) as chunks: each heading starts one, paragraphs are
    packed up to MAX_CHARS, an overlong paragraph is cut at sentence ends."""
    return chunk_piece(text, source, max_chars)[0]


def chunk_piece(
    text: str, source: str, max_chars: int = MAX_CHARS, at: Resume = START
) -> tuple[list[Chunk], Resume]:
    """TEXT's chunks as chunk_text's, for a text that continues a document AT;
    and where the text after it would continue."""
    if max_chars < 1:
        raise ValueError("max_chars must be positive")
    # A section: its heading path, its heading line's start (None before the
    # first heading), its paragraphs' spans.
    sections: list[tuple[tuple[str, ...], int | None, list[tuple[int, int]]]] = []
    path: list[tuple[int, str]] = list(at.headings)  # (level, title) of the open headings
    head: tuple[int, int] | None = None
    spans: list[tuple[int, int]] = []

    def close_section() -> None:
        titles = tuple(t for _, t in path)
        if head is not None:
            sections.append((titles, head[0], spans or [head]))
        elif spans:
            sections.append((titles, None, spans))

    for block in _blocks(text):
        if block.level:
            close_section()
            while path and path[-1][0] >= block.level:
                path.pop()
            path.append((block.level, block.title))
            head, spans = (block.start, block.end), []
        else:
            spans.extend(_cut(text, block.start, block.end, max_chars))
    close_section()

    chunks: list[Chunk] = []
    seen, seen_byte, seen_line = 0, at.byte, at.line  # offsets so far (linear, not quadratic)
    for heading, head_start, section in sections:
        packed = _pack(section, max_chars)
        if head_start is not None:  # the heading line leads its first chunk, never alone
            packed[0] = (head_start, packed[0][1])
        for a, b in packed:
            body = text[a:b]
            seen_byte += len(text[seen:a].encode())
            seen_line += text.count("\n", seen, a)
            seen = a
            start_byte = seen_byte
            chunks.append(
                Chunk(
                    source=source,
                    index=at.position + len(chunks),
                    text=body,
                    heading=heading,
                    start_byte=start_byte,
                    end_byte=start_byte + len(body.encode()),
                    start_line=seen_line,
                    end_line=seen_line + body.count("\n"),
                    sha256=content_hash(body),
                )
            )
    after = Resume(
        position=at.position + len(chunks),
        byte=at.byte + len(text.encode()),
        line=at.line + text.count("\n"),
        headings=tuple(path),
    )
    return chunks, after
