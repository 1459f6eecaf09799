from suite import Result

EXPECTED = """; Application settings -- edited by hand
[server]
host = 127.0.0.1
port = 8080
; workers: one per CPU
workers = 4

[app]
debug = false
secret_file = /etc/app/secret
; the port of the metrics exporter, not the server
metrics_port = 9100
"""


def check(r: Result) -> tuple[bool, str]:
    path = r.home / "app.ini"
    if not path.is_file():
        return False, "app.ini is gone"
    got = [line.rstrip() for line in path.read_text().strip().splitlines()]
    want = EXPECTED.strip().splitlines()
    if got != want:
        diff = [f"{a!r} != {b!r}" for a, b in zip(got, want, strict=False) if a != b][:2]
        return False, f"app.ini differs: {diff or f'{len(got)} lines, expected {len(want)}'}"
    return True, "port and debug changed, rest kept"
