"""The shell gate's red team: disguised commands never skip approval.

Every command in DISGUISED would run something outside the allow list (or
something the gate cannot see), written the ways other agent tools' pattern
rules were bypassed. With ALLOW below, none may come back as "run freely".
"""

from __future__ import annotations

import pytest

from agentd import shellgate
from agentd.shellgate import literal_pattern, needs_approval, simple_commands

ALLOW = ["ls *", "cat *", "wc *", "echo *", "grep *"]
RULES = {"tools": ["shell"], "shell_allow": ALLOW, "timeout": 3600.0}

DISGUISED = [
    "cd x && rm -rf y",
    "ls && rm -rf ~",
    "ls || rm -rf ~",
    "ls; rm -rf ~",
    "ls & rm x",
    "ls | rm x",
    "ls |& rm x",
    "ls\nrm x",
    "ls\r\nrm x",
    "ls #\nrm x",
    "ls \\\n; rm x",
    "bash -c 'rm -rf ~'",
    "sh -c 'ls'",
    "dash -c ls",
    "zsh -c ls",
    "/bin/sh -c ls",
    "ls $(rm x)",
    "ls `rm x`",
    'ls "$(rm x)"',
    'echo "`rm x`"',
    "ls <(rm x)",
    "cat >(rm x)",
    "echo $((1+$(rm x)))",
    "ls $HOME",
    "ls ${HOME:=x}",
    "$CMD x",
    "${RM} x",
    "echo $'\\x72m'",
    "$'rm' x",
    "ls > ~/.bashrc",
    "ls >> notes.txt",
    "echo x >| file",
    "ls &> out",
    "cat <> file",
    "echo x >&out",
    "echo x 1>file",
    "cat x | sh",
    "cat x | bash",
    "l\\s; rm x",
    '"rm" x',
    "r''m x",
    "\\rm x",
    "{ rm x; }",
    "(rm x)",
    "(ls; (rm x))",
    "if true; then rm x; fi",
    "if ls; then ls; else rm x; fi",
    "while ls; do rm x; done",
    "until rm x; do ls; done",
    "! rm x",
    "for f in a; do rm $f; done",
    "case x in x) rm x;; esac",
    "f() { rm x; }; f",
    "function f { rm x; }",
    "xargs rm < list",
    "ls | xargs rm",
    "find . -delete",
    "find . -exec rm {} \\;",
    "find . -name x -execdir sh -c x \\;",
    "find . -ok rm {} \\;",
    "find . -fprint /tmp/x",
    "awk 'BEGIN{system(\"rm x\")}'",
    "sed -i s/a/b/ file",
    "perl -e 'unlink q(x)'",
    "python3 -c 'import os'",
    "git -c core.pager='rm x' log",
    "env rm x",
    "env -i ls",
    "nice rm x",
    "nohup rm x",
    "timeout 5 rm x",
    "sudo ls",
    "doas ls",
    "su -c ls",
    "command rm x",
    "builtin echo x",
    "exec rm x",
    "eval 'rm x'",
    "eval ls",
    "source ./x.sh",
    ". ./x.sh",
    "time rm x",
    "PATH=/tmp ls",
    "LD_PRELOAD=/tmp/x.so ls",
    "IFS=/ ls",
    "BASH_ENV=/tmp/x ls",
    "PATH=/tmp; ls",
    "export PATH=/tmp; ls",
    "alias ls=rm\nls x",
    "/bin/rm x",
    "/usr/bin/rm x",
    "/tmp/ls",
    "./ls",
    "../bin/ls",
    "/usr/local/bin/ls",
    "/bin/../tmp/ls",
    "//bin/ls",
    "~/ls",
    "l? x",
    "l* x",
    "[l]s x",
    "{rm,-rf,x}",
    "ls 'unbalanced",
    'ls "unbalanced',
    "ls \\",
    "cat <<EOF\n$(rm x)\nEOF",
    "cat <<EOF\n`rm x`\nEOF",
    "cat <<EOF\nno end",
    "ls\u0000; rm x",
    "ls\x1b[2Jrm x",
    "trap 'rm x' EXIT; ls",
    "lsof; rm x",
    "catalog x",
    "echo x; rm -rf /",
    "grep -r x . ; shred y",
    "wc -l x && dd if=/dev/zero of=x",
    "ls\u00a0;rm x",
    "ls >/dev/null; rm x",
    "ls 2>&1 | tee out",
]

ALLOWED = [
    "ls",
    "ls -la /tmp",
    "ls -la; cat notes.txt",
    "cat a | grep b | wc -l",
    "echo 'a; rm -rf ~'",
    'echo "rm -rf ~ $"',
    "grep -rn TODO . 2>/dev/null",
    "ls >/dev/null && echo ok",
    "ls 2>&1 | grep x",
    "/bin/ls -l",
    "/usr/bin/cat x",
    "LANG=C ls",
    "ls *.txt",
    "ls # rm x",
    "cat <<'EOF'\n$(rm x)\nEOF",
    "cat <<EOF\nplain text\nEOF\nls",
    "(ls; echo done)",
    "{ ls; cat x; }",
    "if ls x; then echo yes; else echo no; fi",
    "ls \\\n  -la",
    "echo a\\ b",
    "wc < input.txt",
    "",
    "   ",
]


@pytest.mark.parametrize("command", DISGUISED)
def test_no_disguised_command_slips_past(command: str) -> None:
    why = needs_approval(RULES, "shell", {"command": command})
    assert why is not None, f"{command!r} would run without approval: {simple_commands(command)}"


def test_the_red_team_is_big_enough() -> None:
    assert len(set(DISGUISED)) >= 50


@pytest.mark.parametrize("command", ALLOWED)
def test_allowed_commands_run_freely(command: str) -> None:
    assert needs_approval(RULES, "shell", {"command": command}) is None


def test_simple_commands_splits_every_operator() -> None:
    got = simple_commands("a 1 && b 2 || c; d & e | f\ng\n(h) {\ni\n}")
    assert got == [["a", "1"], ["b", "2"], ["c"], ["d"], ["e"], ["f"], ["g"], ["h"], ["i"]]


def test_quotes_and_continuations_are_removed() -> None:
    assert simple_commands("ec'h'o \"a b\" c\\ d e\\\nf") is None  # quoted name asks
    assert simple_commands('echo "a b" c\\ d e\\\nf') == [["echo", "a b", "c d", "ef"]]


def test_a_path_command_matches_by_its_basename_only_from_bin() -> None:
    assert simple_commands("/usr/bin/ls -l") == [["ls", "-l"]]
    assert simple_commands("/opt/bin/ls") is None


def test_redirections_and_io_numbers_are_not_arguments() -> None:
    assert simple_commands("grep x f 2>/dev/null <in") == [["grep", "x", "f"]]


def test_a_bare_command_matches_its_star_pattern_but_not_a_longer_name() -> None:
    assert needs_approval(RULES, "shell", {"command": "cat"}) is None
    assert needs_approval(RULES, "shell", {"command": "catx y"}) is not None


def test_interpreters_are_allowed_only_when_named() -> None:
    rules = dict(RULES, shell_allow=[*ALLOW, "awk *"])
    assert needs_approval(rules, "shell", {"command": "awk '{print $1}' f"}) is None
    assert needs_approval(RULES, "shell", {"command": "awk '{print $1}' f"}) is not None


def test_find_without_actions_can_be_allowed() -> None:
    rules = dict(RULES, shell_allow=["find *"])
    assert needs_approval(rules, "shell", {"command": "find . -name '*.txt'"}) is None
    assert needs_approval(rules, "shell", {"command": "find . -name *.txt"}) is not None
    assert needs_approval(rules, "shell", {"command": "find . -delete"}) is not None


def test_sort_output_options_ask_even_when_allowed() -> None:
    rules = dict(RULES, shell_allow=["sort *"])
    assert needs_approval(rules, "shell", {"command": "sort -u f"}) is None
    for bad in ("sort -o f g", "sort -uo f g", "sort --output=f g", "sort --comp=sh f"):
        assert needs_approval(rules, "shell", {"command": bad}) is not None, bad


def test_tools_outside_the_table_run_freely_and_inside_ask() -> None:
    assert needs_approval(RULES, "read_file", {"path": "x"}) is None
    assert needs_approval({"tools": ["shell"]}, "shell", {"command": "ls"}) is not None
    assert needs_approval({}, "shell", {"command": "rm -rf ~"}) is None
    assert needs_approval({"tools": ["fetch"]}, "fetch", {"url": "http://x"}) is not None


def test_template_tool_groups_stand_for_the_loop_tools() -> None:
    assert needs_approval({"tools": ["web"]}, "fetch", {"url": "u"}) is not None
    assert needs_approval({"tools": ["files"]}, "write_file", {"path": "p"}) is not None


def test_a_missing_or_odd_command_asks() -> None:
    assert needs_approval(RULES, "shell", {}) is not None
    assert needs_approval(RULES, "shell", {"command": ["ls"]}) is not None
    assert needs_approval(RULES, "shell", {"command": "ls " + "x" * 70000}) is not None


def test_literal_patterns_match_only_the_approved_command() -> None:
    pattern = literal_pattern(["rm", "x[1]", "*.tmp"])
    rules = {"tools": ["shell"], "shell_allow": [pattern]}
    assert needs_approval(rules, "shell", {"command": "rm 'x[1]' '*.tmp'"}) is None
    assert needs_approval(rules, "shell", {"command": "rm x1 a.tmp"}) is not None
    assert needs_approval(rules, "shell", {"command": "rm 'x[1]' '*.tmp' y"}) is not None


def test_the_reason_names_what_asks() -> None:
    why = needs_approval(RULES, "shell", {"command": "ls; rm x"})
    assert why is not None and "rm x" in why
    why = needs_approval(RULES, "shell", {"command": "ls $(rm x)"})
    assert why is not None and "substitution" in why


def test_parse_raises_unprovable_with_the_reason() -> None:
    with pytest.raises(shellgate.Unprovable, match="quote"):
        shellgate.parse("echo 'x")
