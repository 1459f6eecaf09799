from suite import Result, has_number


def check(r: Result) -> tuple[bool, str]:
    if "mountains.jpg" not in r.answer:
        return False, "answer does not name mountains.jpg"
    if not has_number(r.answer, 14336):
        return False, "answer does not give its size, 14336 bytes"
    return True, "mountains.jpg, 14336 bytes"
