"""Every walkthrough in netns-lab/ runs as written and prints what it shows.

Each ```sh block of each walkthrough is run in order in a fresh, uniquely named lab
(netns-lab/walkthrough.py), which is removed afterwards, also on failure; the output
of every block followed by a ```text block is compared with it (ephemeral ports,
timers, MAC addresses and process ids masked; ``...`` skips what varies)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

LAB_DIR = Path(__file__).resolve().parent.parent / "netns-lab"
spec = importlib.util.spec_from_file_location("walkthrough", LAB_DIR / "walkthrough.py")
walkthrough = importlib.util.module_from_spec(spec)
sys.modules["walkthrough"] = walkthrough  # dataclasses look their module up
spec.loader.exec_module(walkthrough)

DOCS = sorted(p for p in LAB_DIR.glob("*.md") if walkthrough.parse(p.read_text()))


def test_every_walkthrough_is_collected():
    names = {p.name for p in DOCS}
    assert {"by-hand.md", "nat.md", "dr.md", "tun.md", "persistence-fwmark.md",
            "schedulers.md", "exercises.md", "class-plan.md", "health.md"} <= names


@pytest.mark.lab
@pytest.mark.parametrize("doc", DOCS, ids=[p.stem for p in DOCS])
def test_walkthrough_runs_as_written(lab_env, doc):
    _, results = walkthrough.run(doc)
    bad = [r for r in results if not r.ok]
    report = "\n".join(f"{doc.name}:{r.block.line}: got\n{r.output}" for r in bad)
    assert not bad, report
    assert any(r.block.expected is not None for r in results)  # it shows output to check


def test_matching_rules():
    m, n = walkthrough.matches, walkthrough.normalise
    assert m(["a", "...", "z"], ["a", "b", "c", "z"]) and m(["a", "...", "z"], ["a", "z"])
    assert not m(["a", "z"], ["a", "b", "z"])
    assert m(["ladder of ... written"], ["ladder of 12 packets written"])
    assert n("TCP 01:59 x 198.18.0.10:40312 pw-abc123-rs1 02:00:00:00:00:01",
             "pw-abc123", "pyvs-nat") == ["TCP TIME x 198.18.0.10:PORT pyvs-nat-rs1 MAC"]


def test_diagrams_are_drawn_from_the_lab_json(tmp_path):
    import json

    from pyvs.engine.lab import LABS

    spec = importlib.util.spec_from_file_location("diagrams", LAB_DIR / "diagrams.py")
    diagrams = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(diagrams)
    files = []
    for mode, cls in LABS.items():
        path = tmp_path / f"{mode}.json"
        path.write_text(json.dumps(cls(name=f"pyvs-{mode}", real_servers=2).describe()))
        files.append(str(path))
    assert diagrams.main([*files, "--out", str(tmp_path)]) == 0
    nat, dr, tun = ((tmp_path / f"{m}.svg").read_text() for m in ("nat", "dr", "tun"))
    assert "dst rewritten" in nat and "198.18.2.11" in nat
    assert "straight back" in dr and "dst MAC = rs1" in dr
    assert "198.18.3.11" in tun and "router" in tun and "straight back" in tun
