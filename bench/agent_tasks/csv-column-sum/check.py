from suite import Result, has_number

TOTAL = 518.55


def check(r: Result) -> tuple[bool, str]:
    if not has_number(r.answer, TOTAL, tolerance=0.005):
        return False, f"answer does not give {TOTAL}"
    return True, f"total {TOTAL}"
