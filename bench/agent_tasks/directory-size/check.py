from suite import Result, has_number

TOTAL = 8192


def check(r: Result) -> tuple[bool, str]:
    if not has_number(r.answer, TOTAL):
        return False, f"answer does not give {TOTAL} bytes"
    return True, f"{TOTAL} bytes"
