from suite import Result

EXPECTED = [
    "billing+invoices@example.com",
    "fatima_zahra99@example.co.uk",
    "jbrown@corp.example.org",
    "jim.brown@mail.example.net",
    "k.sato@example.jp",
    "maria.lopez@example.com",
    "support@example.com",
]


def check(r: Result) -> tuple[bool, str]:
    text = r.text("emails.txt")
    if text is None:
        return False, "no artifacts/emails.txt"
    got = [line.strip() for line in text.splitlines() if line.strip()]
    if got != EXPECTED:
        return False, f"emails.txt is {got}"
    return True, "7 addresses, sorted, unique"
