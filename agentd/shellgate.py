"""Which agent actions wait for the owner's approval: the shell command gate.

Invariant: a shell command skips approval only when agentd has PROVED that
every simple command /bin/sh would run is matched by an allow pattern.
Pattern rules in other agent tools were bypassed by how a command is written
(`cd x && rm ...`, `bash -c '...'`, `$(...)`, `;`, pipes, env prefixes,
absolute paths), so this module parses the command the way sh does and
refuses to guess: whatever it cannot prove asks. Refusing to prove costs the
owner one approval; a wrong proof costs their files.

What asks (needs_approval returns why):
- any expansion ($VAR, ${...}, $(...), `...`, $((...)), $'...', <(...)):
  their values are unknown here, and a substitution runs a command;
- programs that run other programs or change how later words are read:
  eval, exec, source/., sh/bash/dash/zsh..., env, nice, nohup, timeout,
  xargs, sudo, doas, su, command, builtin, time, alias, export, trap...;
  `find -exec/-execdir/-ok/-delete/-fprint`, `sort -o`, `git -c`;
- a command word that is quoted, globbed, a tilde, a path other than
  /bin/NAME or /usr/bin/NAME (those are matched as NAME), or a function
  definition; case/for/select/[[ ]]; unbalanced quotes;
- assignment prefixes other than locale/TZ/COLUMNS (PATH=, LD_PRELOAD=...);
- redirections that write (>, >>, >|, &>, <>, >&FILE) unless to /dev/null.

Interpreters (awk, sed, perl, python...) are ordinary commands to the gate:
their programs can do anything, so they are allowed only if an allow pattern
names them. An allow pattern admits its command with any arguments it
matches (and a glob argument may expand to a file named like an option), so
allow only commands that are read-only whatever their arguments.

Stdlib only and cheap to import: the agent's runtime imports it.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any

MAX_COMMAND = 65536  # bytes; a longer command asks


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words that make sh run a program named by later words, or change the shell.
WRAPPERS = _words(
    "eval exec source . sh bash dash zsh ksh mksh fish csh tcsh busybox env nice nohup"
    " timeout xargs sudo doas su runuser pkexec setpriv setsid sg newgrp chroot unshare"
    " nsenter systemd-run flock stdbuf ionice chrt taskset script parallel watch strace"
    " ltrace time command builtin alias unalias export readonly declare typeset local"
    " trap enable hash coproc function case for select [[ (( in"
)
# Reserved words that only group or sequence commands: skipped, the next word
# is again in command position (so `if true; then rm x; fi` yields rm).
GROUPING = _words("if then else elif fi do done while until ! { } esac")
SAFE_ASSIGN = re.compile(r"^(LANG|LANGUAGE|LC_[A-Z]+|TZ|COLUMNS|NO_COLOR)$")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TRUSTED_DIRS = ("/bin/", "/usr/bin/")
FIND_ACTIONS = _words("-exec -execdir -ok -okdir -delete -fprint -fprint0 -fprintf -fls")
WRITE_REDIRECTS = frozenset([">", ">>", ">|", "&>", "&>>", "<>", ">&"])
OPERATORS = sorted(
    [
        "&&",
        "||",
        ";;",
        ";&",
        "|&",
        "&>>",
        "&>",
        ">>",
        ">|",
        ">&",
        "<&",
        "<>",
        "<<-",
        "<<<",
        "<<",
        ";",
        "&",
        "|",
        "(",
        ")",
        "<",
        ">",
    ],
    key=len,
    reverse=True,
)
REDIRECTS = frozenset(o for o in OPERATORS if "<" in o or ">" in o)


class Unprovable(Exception):
    """The command cannot be proved to run only what it seems to."""


class Word:
    """One shell word after quote removal, with what made it special."""

    __slots__ = ("glob", "quote_at", "text")

    def __init__(self) -> None:
        self.text = ""
        self.quote_at = -1  # offset in text of the first quoted character, -1: none
        self.glob = False  # unquoted * ? [ { or leading ~

    @property
    def quoted(self) -> bool:
        return self.quote_at >= 0

    def quote(self) -> None:
        if self.quote_at < 0:
            self.quote_at = len(self.text)

    def __repr__(self) -> str:
        return f"Word({self.text!r})"


Token = Word | str  # a str token is an operator or "\n"


class _Lexer:
    """sh's token recognition (POSIX 2.3), refusing expansions."""

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.tokens: list[Token] = []
        self.heredocs: list[tuple[str, bool, bool]] = []  # delimiter, strip tabs, expands

    def run(self) -> list[Token]:
        s = self.s
        word: Word | None = None
        while self.i < len(s):
            c = s[self.i]
            if c == "\\" and s.startswith("\\\n", self.i):
                self.i += 2  # line continuation, also inside a word
                continue
            if c in " \t":
                self._end(word)
                word = None
                self.i += 1
            elif c == "\n":
                self._end(word)
                word = None
                self.tokens.append("\n")
                self.i += 1
                self._read_heredocs()
            elif c == "#" and word is None:
                end = s.find("\n", self.i)
                self.i = len(s) if end < 0 else end
            elif c in ";&|()<>":
                self._operator(word)
                word = None
            else:
                word = word or Word()
                self._word_char(word)
        self._end(word)
        if self.heredocs:
            raise Unprovable("a here-document is not terminated")
        return self.tokens

    def _end(self, word: Word | None) -> None:
        if word is None:
            return
        last = self.tokens[-1] if self.tokens else None
        if last in ("<<", "<<-"):
            expands = not word.quoted
            self.heredocs.append((word.text, last == "<<-", expands))
        self.tokens.append(word)

    def _operator(self, word: Word | None) -> None:
        s = self.s
        op = next(o for o in OPERATORS if s.startswith(o, self.i))
        if op in ("<", ">") and s.startswith("(", self.i + 1):
            raise Unprovable("process substitution runs a command")
        if op in REDIRECTS and word is not None and not word.quoted:
            if word.text.isdigit():
                word = None  # an IO number (2>...), not an argument
            elif word.text.startswith("{"):
                raise Unprovable("a {fd} redirection")
        self._end(word)
        self.tokens.append(op)
        self.i += len(op)

    def _word_char(self, word: Word) -> None:
        s, c = self.s, self.s[self.i]
        if c == "'":
            end = s.find("'", self.i + 1)
            if end < 0:
                raise Unprovable("unbalanced single quote")
            word.quote()
            word.text += s[self.i + 1 : end]
            self.i = end + 1
        elif c == '"':
            self._double(word)
        elif c == "\\":
            if self.i + 1 >= len(s):
                raise Unprovable("a trailing backslash")
            word.quote()
            word.text += s[self.i + 1]
            self.i += 2
        elif c in "$`":
            self._dollar(c, word)
        else:
            if c in "*?[{" or (c == "~" and not word.text):
                word.glob = True
            word.text += c
            self.i += 1

    def _dollar(self, c: str, word: Word) -> None:
        nxt = self.s[self.i + 1 : self.i + 2]
        if c == "`" or nxt == "(":
            raise Unprovable("command substitution runs a command")
        if nxt and (nxt in "{'\"@*#?$!-_" or nxt.isalnum()):
            raise Unprovable(f"an expansion ${nxt}... has a value unknown here")
        word.text += "$"  # a lone $ before a blank or the end is literal
        self.i += 1

    def _double(self, word: Word) -> None:
        s = self.s
        self.i += 1
        word.quote()
        while self.i < len(s):
            c = s[self.i]
            if c == '"':
                self.i += 1
                return
            if c == "\\" and self.i + 1 < len(s) and s[self.i + 1] in '$`"\\\n':
                if s[self.i + 1] != "\n":
                    word.text += s[self.i + 1]
                self.i += 2
            elif c in "$`":
                nxt = s[self.i + 1 : self.i + 2]
                if c == "`" or nxt == "(" or nxt in "{@*#?$!-_" or nxt.isalnum():
                    raise Unprovable("an expansion inside double quotes")
                word.text += c
                self.i += 1
            else:
                word.text += c
                self.i += 1
        raise Unprovable("unbalanced double quote")

    def _read_heredocs(self) -> None:
        """Skip the bodies of the here-documents opened on the line just ended."""
        for delimiter, strip, expands in self.heredocs:
            while True:
                if self.i >= len(self.s):
                    raise Unprovable("a here-document is not terminated")
                end = self.s.find("\n", self.i)
                end = len(self.s) if end < 0 else end
                line = self.s[self.i : end]
                self.i = min(end + 1, len(self.s))
                if (line.lstrip("\t") if strip else line) == delimiter:
                    break
                if expands and any(ch in line for ch in "$`\\"):
                    raise Unprovable("an unquoted here-document expands $ and `")
        self.heredocs = []


class Command:
    """A simple command: its words (command name first), after quote removal."""

    __slots__ = ("globbed", "words")

    def __init__(self, words: list[str], globbed: bool) -> None:
        self.words = words
        self.globbed = globbed  # an argument is a glob: its expansion is unknown here


def parse(command: str) -> list[Command]:
    """Every simple command COMMAND would run; raises Unprovable with why not."""
    if not isinstance(command, str):
        raise Unprovable("the command is not a string")
    if len(command.encode("utf-8", "surrogatepass")) > MAX_COMMAND:
        raise Unprovable("the command is too long to check")
    if any((ord(ch) < 32 and ch not in "\t\n") or ord(ch) == 127 for ch in command):
        raise Unprovable("the command holds control characters")
    tokens = _Lexer(command).run()
    commands: list[Command] = []
    current: list[Word] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if isinstance(tok, str):
            if tok in REDIRECTS:
                target = tokens[i + 1] if i + 1 < len(tokens) else None
                if not isinstance(target, Word):
                    raise Unprovable(f"a redirection {tok} without a target")
                _check_redirect(tok, target)
                i += 2
                continue
            if tok == "(" and current:
                raise Unprovable("a function definition")
            if tok in (";;", ";&"):
                raise Unprovable("a case statement")
            _flush(current, commands)
            current = []
        elif current:
            current.append(tok)
        elif not tok.quoted and tok.text in GROUPING:
            pass  # if/then/do/{ ...: the next word is a command again
        elif not _assignment(tok):
            current.append(tok)
        i += 1
    _flush(current, commands)
    return commands


def _assignment(word: Word) -> bool:
    """True for a safe NAME=value prefix; raises for an unsafe one (PATH=, LD_PRELOAD=)."""
    name, eq, _ = word.text.partition("=")
    if not eq or not NAME.match(name) or 0 <= word.quote_at <= len(name):
        return False
    if not SAFE_ASSIGN.match(name):
        raise Unprovable(f"assigning {name} changes what commands do")
    return True


def _check_redirect(op: str, target: Word) -> None:
    if op in ("<<", "<<-"):
        return  # the lexer skipped the body (and refused an expanding one)
    if target.glob:
        raise Unprovable(f"a redirection {op} to a pattern or ~")
    if op in ("<&", ">&") and not target.quoted and (target.text.isdigit() or target.text == "-"):
        return  # duplicates or closes a descriptor
    if op in WRITE_REDIRECTS and target.text != "/dev/null":
        raise Unprovable(f"the redirection {op}{target.text} writes a file")


def _flush(words: list[Word], commands: list[Command]) -> None:
    if not words:
        return
    head = words[0]
    if head.quoted:
        raise Unprovable(f"a quoted command name ({head.text!r})")
    if head.glob:
        raise Unprovable(f"a pattern or ~ as the command name ({head.text!r})")
    name = head.text
    if "/" in name:
        where, _, base = name.rpartition("/")
        if where + "/" not in TRUSTED_DIRS or not base or base in (".", ".."):
            raise Unprovable(f"a command run by its path ({name})")
        name = base
    if name in WRAPPERS:
        raise Unprovable(f"{name} runs or changes other commands")
    args = [w.text for w in words[1:]]
    globbed = any(w.glob for w in words[1:])
    _check_options(name, args, globbed)
    commands.append(Command([name, *args], globbed))


def _check_options(name: str, args: list[str], globbed: bool) -> None:
    """Options that make an otherwise read-only command run or write something."""
    if name == "find":
        if globbed:
            raise Unprovable("find with an unquoted pattern (it may expand to an action)")
        bad = [a for a in args if a in FIND_ACTIONS]
        if bad:
            raise Unprovable(f"find {bad[0]} runs or deletes")
    elif name == "sort":
        for a in args:
            long = a.split("=", 1)[0]
            if (
                len(long) > 2
                and long.startswith("--")
                and ("--output".startswith(long) or "--compress-program".startswith(long))
            ):
                raise Unprovable(f"sort {a} writes or runs")
            if re.match(r"^-[^-]*o", a):
                raise Unprovable(f"sort {a} writes a file")
    elif name == "git":
        for a in args:
            if a.startswith(("-c", "--config-env", "--exec-path")):
                raise Unprovable(f"git {a} may run a program")


def simple_commands(command: str) -> list[list[str]] | None:
    """Every simple command COMMAND would run, or None if it cannot be proved."""
    try:
        return [c.words for c in parse(command)]
    except Unprovable:
        return None


def allowed(words: list[str], patterns: list[str]) -> bool:
    """fnmatch on the joined words; "ls *" also admits a bare "ls"."""
    line = " ".join(words)
    return any(
        fnmatch.fnmatchcase(line, p) or (p.endswith(" *") and line == p[:-2]) for p in patterns
    )


# Template tool names that stand for several of the loop's tools.
TOOL_GROUPS = {"files": ("read_file", "list_files", "write_file"), "web": ("fetch",)}


def gated_tools(tools: object) -> set[str]:
    names = [t for t in tools if isinstance(t, str)] if isinstance(tools, (list, tuple)) else []
    return {n for t in names for n in TOOL_GROUPS.get(t, (t,))}


def needs_approval(rules: dict[str, Any], tool: str, arguments: dict[str, Any]) -> str | None:
    """None: run without asking. Else why it must ask (shown to the owner)."""
    if tool not in gated_tools(rules.get("tools")):
        return None
    if tool != "shell":
        return f"every use of {tool} needs the owner's approval"
    command = arguments.get("command") if isinstance(arguments, dict) else None
    try:
        commands = parse(command)  # type: ignore[arg-type]
    except Unprovable as e:
        return f"the command cannot be proved safe: {e}"
    patterns = [p for p in rules.get("shell_allow") or () if isinstance(p, str)]
    for c in commands:
        if not allowed(c.words, patterns):
            return f"{' '.join(c.words)!r} is not in the allow list"
    return None


def literal_pattern(words: list[str]) -> str:
    """An allow pattern that matches exactly these words (for `grant --always`)."""
    return re.sub(r"([*?\[])", r"[\1]", " ".join(words))
