from suite import Result

EXPECTED = [
    "Amelia Stone",
    "Ben Adler",
    "Chloe Martin",
    "Emma Rossi",
    "Liam Chen",
    "Noah Fischer",
    "Oliver Grant",
    "Zoe Park",
]


def check(r: Result) -> tuple[bool, str]:
    text = r.text("guests-clean.txt")
    if text is None:
        return False, "no artifacts/guests-clean.txt"
    got = [line.strip() for line in text.splitlines() if line.strip()]
    if got != EXPECTED:
        return False, f"guests-clean.txt is {got}"
    return True, "8 names, sorted, unique"
