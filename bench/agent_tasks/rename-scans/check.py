from suite import Result

NUMBERS = ("0003", "0007", "0012", "0100")


def check(r: Result) -> tuple[bool, str]:
    scans = r.home / "scans"
    if not scans.is_dir():
        return False, "scans/ is gone"
    names = sorted(p.name for p in scans.iterdir())
    want = sorted([f"photo-{n}.jpg" for n in NUMBERS] + ["README.txt"])
    if names != want:
        return False, f"scans/ holds {names}"
    for n in NUMBERS:
        if (scans / f"photo-{n}.jpg").read_text() != f"scan {n}\n":
            return False, f"photo-{n}.jpg is not the former IMG_{n}.JPG"
    if (scans / "README.txt").read_text() != "these are the March scans\n":
        return False, "README.txt changed"
    return True, "4 files renamed, README.txt kept"
