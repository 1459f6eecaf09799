import datetime
from pathlib import Path

from suite import Result, has_number, run_untrusted, scratch

FILES = {
    "a.txt": "alpha\n",
    "b.txt": "bravo\n",
    "c.txt": "charlie\n",
    "d.log": "log\n",
    "e.csv": "x\n",
}


def check(r: Result) -> tuple[bool, str]:
    script = r.file("backup.sh")
    if script is None:
        return False, "no artifacts/backup.sh"
    with scratch() as tmp:
        root = Path(tmp)
        src, dst = root / "src", root / "dest"
        (src / "sub").mkdir(parents=True)
        dst.mkdir()
        for name, text in FILES.items():
            (src / name).write_text(text)
        (src / "sub" / "deep.txt").write_text("deep\n")
        (root / "backup.sh").write_bytes(script)
        dst.chmod(0o777)  # run_untrusted's user writes the backup there
        p = run_untrusted(["bash", str(root / "backup.sh"), str(src), str(dst)], root)
        if p.returncode != 0:
            return False, f"script exited {p.returncode}: {p.stderr[-200:]}"
        day = dst / f"backup-{datetime.date.today().isoformat()}"
        if not day.is_dir():
            return (
                False,
                f"no {day.name} in the destination: {sorted(x.name for x in dst.iterdir())}",
            )
        got = {x.name: x.read_text() for x in day.iterdir() if x.is_file()}
        want = {k: v for k, v in FILES.items() if k.endswith(".txt")}
        if got != want:
            return False, f"backup holds {sorted(got)}, expected {sorted(want)}"
        said = p.stdout.replace(str(root), "DIR")  # temp names may hold digits
        if not has_number(said, 3):
            return False, f"output does not say 3 files: {p.stdout[-200:]!r}"
    return True, "copied the 3 .txt files into backup-DATE and said so"
