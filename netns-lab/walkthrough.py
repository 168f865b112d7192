"""Run a walkthrough's command blocks and compare what they print with what it shows.

    .venv/bin/python netns-lab/walkthrough.py netns-lab/nat.md [--update] [--keep]

A walkthrough is Markdown.  Every ```sh block is run, in order, in one bash session
(variables carry over), from a scratch directory; the ```text block right after a
``sh block is what that block must print (stdout and stderr together).  Only the
stable parts are compared: both sides are normalised (``normalise``: ephemeral ports,
timers, MAC addresses, process ids, times and the lab's name masked) and a line
``...`` in the expected text stands for any number of lines.

A line ``REPO=$(pwd)`` (the reader stands in the repository) is given the repository's
path.  The lab name: the walkthrough sets it once with a line ``L=NAME``; the runner gives
it a fresh unique name instead (so runs never collide) and removes that lab at the
end, also when a block fails.  ``--update`` writes the real output into every
expected block that no longer matches (blocks that match keep their ``...``).
tests/test_walkthroughs.py runs every walkthrough this way.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"^```(\w*)\s*$")
LAB_LINE = re.compile(r"^L=(\S+)$", re.M)
REPO_LINE = re.compile(r"^REPO=\$\(pwd\)$", re.M)  # the repository root, where the reader is
REPO = Path(__file__).resolve().parent.parent
MARK = "@@pyvs-walkthrough-block"
MASKS = [  # (pattern, replacement): what differs from run to run
    (re.compile(r"(?<=\d):\d{4,5}\b"), ":PORT"),  # ephemeral ports after an address
    (re.compile(r"(?<=\]):\d{4,5}\b"), ":PORT"),
    (re.compile(r"(?<=\d)\.\d{4,5}\b"), ".PORT"),  # tcpdump's addr.port
    (re.compile(r"\b(?:[0-9a-f]{2}:){5}[0-9a-f]{2}\b"), "MAC"),
    (re.compile(r"\b\d\d:\d\d(?::\d\d)?(?:\.\d+)?\b"), "TIME"),  # -Lnc expiry, clocks
    (re.compile(r"\+\d+\.\d+s\b"), "+Ts"),  # pyvs trace's relative time
    (re.compile(r'"pid": \d+'), '"pid": PID'),
    (re.compile(r"\bpyvs\[\d+\]"), "pyvs[PID]"),
    (re.compile(r"[ \t]+$", re.M), ""),
]


@dataclass
class Block:
    line: int  # where the ```sh block starts (1-based)
    code: str
    expected: str | None  # the ```text block after it
    expected_span: tuple[int, int] | None  # its content's line range [start, end)


def parse(text: str) -> list[Block]:
    lines = text.split("\n")
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m or not m.group(1):
            i += 1
            continue
        lang, start = m.group(1), i + 1
        end = start
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        body = "\n".join(lines[start:end])
        if lang == "sh":
            blocks.append(Block(start, body, None, None))
        elif lang == "text" and blocks and blocks[-1].expected is None \
                and _only_blank_between(lines, blocks[-1], start):
            blocks[-1].expected = body
            blocks[-1].expected_span = (start, end)
        i = end + 1
    return blocks


def _only_blank_between(lines: list[str], block: Block, text_start: int) -> bool:
    code_end = block.line + block.code.count("\n") + 1  # the closing fence
    return all(not line.strip() for line in lines[code_end + 1: text_start - 1])


def normalise(text: str, lab: str, name: str) -> list[str]:
    text = text.replace(lab, name)
    for pattern, repl in MASKS:
        text = pattern.sub(repl, text)
    return text.strip("\n").split("\n") if text.strip() else []


def same_line(expected: str, actual: str) -> bool:
    """Equal, where ``...`` inside an expected line stands for any text."""
    if "..." not in expected:
        return expected == actual
    return re.fullmatch(".*".join(map(re.escape, expected.split("..."))), actual) is not None


def matches(expected: list[str], actual: list[str]) -> bool:
    """Line by line; an expected line ``...`` matches any number of lines, and ``...``
    inside a line any text."""
    memo: dict[tuple[int, int], bool] = {}

    def at(i: int, j: int) -> bool:
        key = (i, j)
        if key not in memo:
            if i == len(expected):
                memo[key] = j == len(actual)
            elif expected[i].strip() == "...":
                memo[key] = any(at(i + 1, k) for k in range(j, len(actual) + 1))
            else:
                memo[key] = (j < len(actual) and same_line(expected[i], actual[j])
                             and at(i + 1, j + 1))
        return memo[key]

    return at(0, 0)


@dataclass
class Result:
    block: Block
    output: str
    ok: bool


def run(path: Path, timeout: float = 600, keep: bool = False) -> tuple[str, list[Result]]:
    """Run every block of the walkthrough at ``path``; returns the lab name the document
    uses and one result per block."""
    text = path.read_text()
    m = LAB_LINE.search(text)
    name = m.group(1) if m else "pyvs-walk"
    lab = f"pw-{secrets.token_hex(3)}"
    blocks = parse(text)
    bindir = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=f"{bindir}:{os.environ.get('PATH', '')}", LC_ALL="C.UTF-8",
               COLUMNS="100")
    script = ["exec 2>&1"]
    for n, b in enumerate(blocks):
        code = REPO_LINE.sub(f"REPO={REPO}", LAB_LINE.sub(f"L={lab}", b.code))
        script += [f"echo '{MARK} {n}'", code]
    script.append(f"echo '{MARK} end'")
    with tempfile.TemporaryDirectory(prefix="pyvs-walk-") as work:
        out_path = Path(work) / "output.txt"
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(["bash", "-c", "\n".join(script)], cwd=work, env=env,
                                    stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            finally:
                if not keep:
                    subprocess.run([sys.executable, "-m", "pyvs.engine.cli", "lab", "down",
                                    lab], env=env, capture_output=True, timeout=60)
                    _kill_group(proc.pid)
        raw = out_path.read_text(errors="replace")
    parts = re.split(rf"^{MARK} (\d+|end)\n", raw, flags=re.M)
    outputs = {int(k): v for k, v in zip(parts[1::2], parts[2::2], strict=True) if k != "end"}
    results = []
    for n, b in enumerate(blocks):
        got = outputs.get(n)
        if got is None:
            results.append(Result(b, "(not reached)", False))
            continue
        ok = b.expected is None or matches(normalise(b.expected, lab, name),
                                           normalise(got, lab, name))
        results.append(Result(b, got.replace(lab, name), ok))
    return name, results


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def update(path: Path, results: list[Result]) -> int:
    """Write the real output into every expected block that did not match."""
    lines = path.read_text().split("\n")
    changed = 0
    for r in sorted(results, key=lambda r: -r.block.line):
        if r.ok or r.block.expected_span is None:
            continue
        start, end = r.block.expected_span
        lines[start:end] = r.output.rstrip("\n").split("\n")
        changed += 1
    path.write_text("\n".join(lines))
    return changed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("walkthrough", type=Path)
    p.add_argument("--update", action="store_true",
                   help="write the real output into the blocks that differ")
    p.add_argument("--keep", action="store_true", help="leave the lab up (debugging)")
    args = p.parse_args(argv)
    _, results = run(args.walkthrough, keep=args.keep)
    bad = [r for r in results if not r.ok]
    for r in bad:
        print(f"--- {args.walkthrough}:{r.block.line}: differs\n{r.output}", file=sys.stderr)
    if args.update and bad:
        print(f"updated {update(args.walkthrough, results)} blocks", file=sys.stderr)
    print(f"{args.walkthrough}: {len(results) - len(bad)}/{len(results)} blocks as shown")
    return 1 if bad and not args.update else 0


if __name__ == "__main__":
    sys.exit(main())
