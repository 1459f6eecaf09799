from suite import Result, count_near

EXPECTED = {"the": 10, "we": 9, "river": 5}


def check(r: Result) -> tuple[bool, str]:
    missing = [f"{w} ({n})" for w, n in EXPECTED.items() if not count_near(r.answer, w, n)]
    if missing:
        return False, f"answer lacks {', '.join(missing)}"
    return True, "the 10, we 9, river 5"
