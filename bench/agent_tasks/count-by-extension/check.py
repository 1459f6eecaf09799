from suite import Result, count_near

EXPECTED = {"pdf": 4, "jpg": 3, "mp3": 5, "zip": 3}


def check(r: Result) -> tuple[bool, str]:
    text = r.answer.replace(".", " ")  # ".pdf: 4" and "pdf files: 4" alike
    wrong = [f"{k}={v}" for k, v in EXPECTED.items() if not count_near(text, k, v)]
    if wrong:
        return False, f"answer lacks {', '.join(wrong)}"
    return True, "pdf 4, jpg 3, mp3 5, zip 3"
