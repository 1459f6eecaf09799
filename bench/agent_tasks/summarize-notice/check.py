import re

from suite import Result


def check(r: Result) -> tuple[bool, str]:
    text = r.text("summary.txt")
    if text is None:
        return False, "no artifacts/summary.txt"
    flat = " ".join(text.split())
    if not re.search(
        r"(?i)\b14(th)?\s+(of\s+)?march\b|\bmarch\s+14(th)?\b|\b14[./]0?3\b|-03-14\b", flat
    ):
        return False, "summary does not give the new date, 14 March"
    if "B204" not in flat.upper().replace(" ", ""):
        return False, "summary does not give the room, B204"
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", flat.strip()) if s]
    if len(sentences) > 3 or len(flat) > 600:
        return False, f"{len(sentences)} sentences, {len(flat)} characters: not short"
    if len(flat) < 40:
        return False, "too short to be a summary"
    return True, "short, with date and room"
