from suite import Result, count_near

# lines whose level field is ERROR, WARNING, INFO (continuation lines start with spaces)
EXPECTED = {"ERROR": 6, "WARNING": 9, "INFO": 23}


def check(r: Result) -> tuple[bool, str]:
    wrong = [f"{k}={v}" for k, v in EXPECTED.items() if not count_near(r.answer, k, v)]
    if wrong:
        return False, f"answer lacks {', '.join(wrong)}"
    return True, "ERROR 6, WARNING 9, INFO 23"
