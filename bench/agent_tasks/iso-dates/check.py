from suite import Result

EXPECTED = """date,event,place
2026-01-03,New year reception,Town hall
2026-02-14,Board meeting,Room 2
2026-04-01,Quarterly review,Room 5
2026-05-31,Summer party,Garden
2026-11-09,Board meeting,Room 2
"""


def check(r: Result) -> tuple[bool, str]:
    text = r.text("events.csv")
    if text is None:
        return False, "no artifacts/events.csv"
    got = [line.rstrip("\r") for line in text.strip().splitlines()]
    want = EXPECTED.strip().splitlines()
    if got != want:
        bad = [a for a, b in zip(got, want, strict=False) if a != b][:2]
        return False, f"events.csv differs: {bad or f'{len(got)} lines'}"
    return True, "5 dates converted"
