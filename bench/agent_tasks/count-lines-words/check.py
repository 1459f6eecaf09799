from suite import Result, count_near

LINES, WORDS = 12, 80


def check(r: Result) -> tuple[bool, str]:
    if not count_near(r.answer, "line", LINES):
        return False, f"answer does not give {LINES} lines"
    if not count_near(r.answer, "word", WORDS):
        return False, f"answer does not give {WORDS} words"
    return True, "lines and words right"
