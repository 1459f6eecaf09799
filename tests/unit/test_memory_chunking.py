"""agentd.memory.chunking: headings, paragraphs, long paragraphs, offsets, hashes."""

from __future__ import annotations

import hashlib

import pytest

from agentd.memory.chunking import START, chunk_piece, chunk_text


def slices_match(doc: str, chunks: list) -> None:
    """Each chunk is the slice its offsets say, on the lines they say."""
    data = doc.encode()
    for c in chunks:
        assert data[c.start_byte : c.end_byte].decode() == c.text
        start = len(data[: c.start_byte].decode())
        assert doc.count("\n", 0, start) + 1 == c.start_line
        assert c.end_line == c.start_line + c.text.count("\n")


def test_a_heading_starts_a_chunk_and_carries_its_path() -> None:
    doc = (
        "Preface line.\n\n"
        "# Install\nRun make.\n\n"
        "## Debian\nUse apt.\n\n"
        "## Fedora\nUse dnf.\n\n"
        "# Use\nStart it.\n"
    )
    chunks = chunk_text(doc, "guide.md", max_chars=800)
    assert [c.heading for c in chunks] == [
        (),
        ("Install",),
        ("Install", "Debian"),
        ("Install", "Fedora"),  # a sibling replaces Debian, under the same H1
        ("Use",),
    ]
    assert [c.text.split("\n")[0] for c in chunks] == [
        "Preface line.",
        "# Install",
        "## Debian",
        "## Fedora",
        "# Use",
    ]
    assert [c.index for c in chunks] == [0, 1, 2, 3, 4]
    assert all(c.source == "guide.md" for c in chunks)
    slices_match(doc, chunks)


def test_paragraphs_are_packed_up_to_the_bound() -> None:
    paragraphs = [f"Paragraph {i} " + "word " * 30 for i in range(10)]  # ~165 chars each
    doc = "\n\n".join(p.strip() for p in paragraphs)
    chunks = chunk_text(doc, "notes", max_chars=400)
    assert len(chunks) == 5  # two paragraphs (and the blank line) fit, three do not
    assert all(len(c.text) <= 400 for c in chunks)
    assert chunks[0].text.startswith("Paragraph 0") and "Paragraph 1" in chunks[0].text
    assert "\n\n" in chunks[0].text  # an exact slice: the blank line between stays
    slices_match(doc, chunks)


def test_a_long_paragraph_is_cut_at_sentence_ends() -> None:
    sentences = [f"Sentence number {i} says something about apples." for i in range(40)]
    doc = "# Fruit\n" + " ".join(sentences)
    chunks = chunk_text(doc, "fruit.md", max_chars=200)
    assert len(chunks) > 5
    for c in chunks:
        assert c.text.rstrip().endswith("."), c.text  # whole sentences only
        assert c.heading == ("Fruit",)
    assert chunks[0].text.startswith("# Fruit\nSentence number 0")  # the heading leads
    assert len(chunks[0].text) <= 200 + len("# Fruit\n")
    assert all(len(c.text) <= 200 for c in chunks[1:])
    # nothing lost: every sentence is in exactly one chunk
    joined = " ".join(c.text for c in chunks)
    assert all(joined.count(s) == 1 for s in sentences)
    slices_match(doc, chunks)


def test_an_overlong_sentence_is_cut_hard() -> None:
    doc = "x" * 1000 + " tail words here"
    chunks = chunk_text(doc, "blob", max_chars=300)
    assert all(len(c.text) <= 300 for c in chunks)
    assert "".join(c.text for c in chunks).replace(" ", "") == doc.replace(" ", "")
    slices_match(doc, chunks)


def test_byte_and_line_offsets_with_non_ascii_text() -> None:
    doc = "Café ☕ first.\n\n# Über\nZweite Zeile mit ümlauts.\n\nDritte 🎉 Zeile.\n"
    chunks = chunk_text(doc, "u.md", max_chars=30)
    assert [(c.start_line, c.end_line) for c in chunks] == [(1, 1), (3, 4), (6, 6)]
    slices_match(doc, chunks)
    assert chunks[1].start_byte == len("Café ☕ first.\n\n".encode())


def test_the_hash_is_the_sha256_of_the_text() -> None:
    doc = "Same paragraph.\n\n# A\nSame paragraph.\n\n# B\nSame paragraph.\n"
    chunks = chunk_text(doc, "d", max_chars=800)
    for c in chunks:
        assert c.sha256 == hashlib.sha256(c.text.encode()).hexdigest()
    again = chunk_text(doc, "d", max_chars=800)
    assert [c.sha256 for c in again] == [c.sha256 for c in chunks]  # deterministic


def test_a_fenced_block_is_one_paragraph_and_has_no_headings() -> None:
    doc = "# Code\n\n```sh\n# a comment, not a heading\n\nmake install\n```\n\nAfter.\n"
    chunks = chunk_text(doc, "c.md", max_chars=800)
    assert len(chunks) == 1
    assert chunks[0].heading == ("Code",)
    assert "make install" in chunks[0].text and chunks[0].text.endswith("After.")


def test_empty_text_has_no_chunks_and_the_bound_must_be_positive() -> None:
    assert chunk_text("", "e") == []
    assert chunk_text("\n \n\t\n", "e") == []
    with pytest.raises(ValueError):
        chunk_text("x", "e", max_chars=0)


def test_a_later_chunk_of_a_section_is_embedded_with_its_heading_path() -> None:
    doc = "# Setup\n## Network\n" + " ".join(f"Line {i} about routes." for i in range(30))
    chunks = chunk_text(doc, "n.md", max_chars=120)
    assert chunks[0].embed_text == chunks[0].text  # starts with a heading: as is
    assert chunks[1].text.startswith("## Network")
    assert chunks[2].embed_text.startswith("Setup > Network\n\n")


def test_a_document_in_pieces_is_numbered_located_and_titled_as_a_whole() -> None:
    """agentctl sends a large file in pieces (cut at a heading or paragraph, the
    pieces together the file); each piece continues where the one before ended."""
    from agentctl.documents import pieces

    sections = []
    for i in range(40):
        sections.append(f"# Part {i}\n\nIntro {i}, café.\n\n")
        for j in range(6):
            sections.append(f"## Step {i}.{j}\n\n" + f"Do the thing {j}. " * 12 + "\n\n")
    doc = "".join(sections)
    whole = chunk_text(doc, "big.md", max_chars=200)
    at = START
    chunks: list = []
    parts = pieces(doc, limit=3000)
    assert len(parts) > 5 and "".join(parts) == doc
    for part in parts:
        got, at = chunk_piece(part, "big.md", 200, at)
        chunks += got
    assert [c.index for c in chunks] == list(range(len(chunks)))
    slices_match(doc, chunks)
    # every heading path is the one the whole document gives that text
    titled = {(c.start_byte, c.heading) for c in whole}
    assert {(c.start_byte, c.heading) for c in chunks} == titled
    assert at.position == len(chunks) and at.byte == len(doc.encode())
    assert at.line == doc.count("\n") + 1 and at.headings == ((1, "Part 39"), (2, "Step 39.5"))


def test_a_piece_cut_inside_a_section_keeps_the_section_s_headings() -> None:
    head = "# Guide\n\n## Install\n\nRun make.\n\n"
    first, at = chunk_piece(head, "g.md")
    [cont], after = chunk_piece("Then run make install.\n", "g.md", at=at)
    assert cont.heading == ("Guide", "Install") and cont.index == len(first)
    assert (cont.start_line, cont.start_byte) == (7, len(head.encode()))
    assert after.headings == ((1, "Guide"), (2, "Install"))
    assert cont.embed_text.startswith("Guide > Install\n\n")
