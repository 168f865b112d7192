"""keepalived.conf as a tree of statements: files, includes, comments, quotes, blocks.

Follows keepalived's lib/parser.c: ``!`` and ``#`` start a comment anywhere outside
double quotes (``\\#`` is a literal ``#``); a trailing ``\\`` continues the line; a
quoted string is one word without its quotes; ``{`` and ``}`` outside quotes are
words of their own and end the statement before them (so ``real_server A P {`` and a
``{`` alone on the next line both open a block); ``include PATTERN`` is replaced by
the files the glob matches, in sorted order, a relative pattern being taken from the
including file's directory (keepalived chdir()s there).  keepalived's parameter
definitions (``$NAME=...``), conditional lines (``@id``) and sequences (``~SEQ``) are
refused with FILE:LINE rather than misread; without definitions keepalived leaves a
``$`` as it is, and so does this reader.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

from pyvs.engine.health.model import ConfigError

MAX_INCLUDE_DEPTH = 16


@dataclass
class Statement:
    keyword: str
    args: list[str]
    where: str
    block: list[Statement] | None = None

    def word(self, i: int, what: str) -> str:
        if i >= len(self.args):
            raise ConfigError(f"{self.where}: {self.keyword}: missing {what}")
        return self.args[i]


@dataclass
class _Word:
    text: str
    where: str
    quoted: bool = False
    bol: bool = False  # first word of a physical line


@dataclass
class _Reader:
    words: list[_Word] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    stack: list[str] = field(default_factory=list)  # real paths being read


def _decomment(line: str, where: str) -> str:
    out, quote, i = [], False, 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and quote and i + 1 < len(line):
            out.append(line[i:i + 2])  # an escape inside quotes stays for _split
            i += 2
            continue
        if ch == '"':
            quote = not quote
        elif ch == "\\" and not quote and i + 1 < len(line) and line[i + 1] in "#!":
            out.append(line[i + 1])
            i += 2
            continue
        elif ch in "#!" and not quote:
            break
        out.append(ch)
        i += 1
    if quote:
        raise ConfigError(f"{where}: unterminated quote")
    return "".join(out).strip()


def _quoted(text: str, start: int) -> tuple[str, int]:
    """The quoted word starting at ``text[start] == '"'`` (``\\"`` and ``\\\\`` are
    escapes), and the index after its closing quote."""
    out, i = [], start + 1
    while text[i] != '"':
        if text[i] == "\\" and text[i + 1] in '"\\':
            i += 1
        out.append(text[i])
        i += 1
    return "".join(out), i + 1


def _split(text: str, where: str) -> list[_Word]:
    words: list[_Word] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in " \t\r":
            i += 1
        elif ch == '"':
            word, i = _quoted(text, i)
            words.append(_Word(word, where, quoted=True))
        elif ch in "{}":
            words.append(_Word(ch, where))
            i += 1
        else:
            j = i
            while j < len(text) and text[j] not in ' \t\r"{}':
                j += 1
            words.append(_Word(text[i:j], where))
            i = j
    if words:
        words[0].bol = True
    return words


def _read_file(path: Path, reader: _Reader, include_where: str | None) -> None:
    real = os.path.realpath(path)
    if real in reader.stack:
        raise ConfigError(f"{include_where}: include loop: {path} includes itself")
    if len(reader.stack) >= MAX_INCLUDE_DEPTH:
        raise ConfigError(f"{include_where}: includes nested deeper than {MAX_INCLUDE_DEPTH}")
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as err:
        where = include_where or str(path)
        raise ConfigError(f"{where}: cannot read {path}: {err.strerror}") from None
    reader.stack.append(real)
    pending, start = "", 0
    for number, raw in enumerate(lines, start=1):
        if not pending:
            start = number
        where = f"{path}:{start}"
        if raw.rstrip().endswith("\\") and not raw.rstrip().endswith("\\\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        text = _decomment(pending + raw, where)
        pending = ""
        if not text:
            continue
        if text[0] in "@~$":
            raise ConfigError(f"{where}: keepalived parameters, conditions and sequences "
                              f"($NAME, @id, ~SEQ) are not supported: {text.split()[0]}")
        words = _split(text, where)
        if words and words[0].text == "include" and not words[0].quoted:
            if len(words) != 2:
                raise ConfigError(f"{where}: include takes one file name or pattern")
            _include(path, words[1].text, where, reader)
            continue
        reader.words.extend(words)
    reader.stack.pop()


def _include(current: Path, pattern: str, where: str, reader: _Reader) -> None:
    full = pattern if os.path.isabs(pattern) else str(current.parent / pattern)
    matches = sorted(glob.glob(full))
    if not matches:
        if glob.has_magic(pattern):
            reader.notices.append(f"{where}: include {pattern}: no file matches")
            return
        raise ConfigError(f"{where}: include {pattern}: no such file")
    for match in matches:
        if os.path.isdir(match):
            raise ConfigError(f"{where}: include {match}: is a directory")
        _read_file(Path(match), reader, where)


def _statements(words: list[_Word], pos: int, opener: _Word | None, owner: str = ""
                ) -> tuple[list[Statement], int]:
    out: list[Statement] = []
    while pos < len(words):
        w = words[pos]
        if w.text == "}" and not w.quoted:
            if opener is None:
                raise ConfigError(f"{w.where}: '}}' without a block to close")
            return out, pos + 1
        if w.text == "{" and not w.quoted:
            raise ConfigError(f"{w.where}: '{{' without a keyword before it")
        stmt = Statement(w.text, [], w.where)
        pos += 1
        while pos < len(words) and not words[pos].bol and words[pos].text not in "{}":
            stmt.args.append(words[pos].text)
            pos += 1
        if pos < len(words) and words[pos].text == "{" and not words[pos].quoted:
            stmt.block, pos = _statements(words, pos + 1, words[pos], stmt.keyword)
        out.append(stmt)
    if opener is not None:
        raise ConfigError(f"{opener.where}: {owner}: block opened here is never closed "
                          f"(missing '}}')")
    return out, pos


def parse_file(path: str | os.PathLike) -> tuple[list[Statement], list[str]]:
    """The statements of a keepalived.conf with its includes, and notices."""
    reader = _Reader()
    _read_file(Path(path), reader, None)
    statements, _ = _statements(reader.words, 0, None)
    return statements, reader.notices
