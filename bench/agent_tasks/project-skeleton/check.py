from suite import Result


def check(r: Result) -> tuple[bool, str]:
    root = r.home / "webapp"
    for sub in ("src", "tests", "docs"):
        if not (root / sub).is_dir():
            return False, f"no webapp/{sub}/"
    init = root / "src" / "__init__.py"
    if not init.is_file() or init.read_text().strip():
        return False, "webapp/src/__init__.py missing or not empty"
    readme = root / "README.md"
    if not readme.is_file():
        return False, "no webapp/README.md"
    first = (readme.read_text().splitlines() or [""])[0].strip()
    if first != "# webapp":
        return False, f"README.md starts with {first!r}"
    return True, "skeleton in place"
