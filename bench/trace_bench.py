"""What the `pyvs trace` hook costs the director: nothing while nobody traces.

    python -m pyvs.bench.trace_bench [--runs 7] [--baseline REF] [--json FILE]

Measures the director's per-packet cost on established NAT flows, both packet paths:
  * ``Director.process`` (the NFQUEUE path, and every new flow on the fast ports),
    batches of 256 packets;
  * ``FastPath.run`` (the ring/XDP batch path), blocks of 256 frames;
in these variants:
  * ``baseline``: the tree at REF (default: the commit before the hook, ``main``'s
    merge base), imported from a ``git archive`` copy -- the director without any hook;
  * ``off``: this tree, nobody tracing (``Director.tracer`` is None);
  * ``traced-nomatch``: a `pyvs trace` subscriber whose filter matches none of the
    traffic (the hook is attached: every packet is looked at, none is described);
  * ``traced-all``: a subscriber that sees every packet (described, encoded, sent).
Each run measures every variant once, the trees alternating, so drift in the machine
spreads over all of them; the result is the median of the runs in ns per packet, with
the spread (min, max).  No root, no network.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent
BATCH = 256
FLOWS = 64
VARIANTS = {"current": ("off", "traced-nomatch", "traced-all"), "baseline": ("baseline",)}


# -- the worker: runs inside whichever tree PYTHONPATH gives ------------------------------

def _workload():
    from scapy.layers.inet import IP, TCP
    from scapy.packet import Raw

    from pyvs.engine import ipvsadm
    from pyvs.engine.clock import VirtualClock
    from pyvs.engine.director import Director

    d = Director(clock=VirtualClock(), seed=1)
    for argv in (["-A", "-t", "198.18.1.1:80", "-s", "rr"],
                 *[["-a", "-t", "198.18.1.1:80", "-r", f"198.18.2.{11 + i}:80", "-m"]
                   for i in range(3)]):
        rc, _, err = ipvsadm.run(argv, "", d)
        assert rc == 0, err
    requests = []
    for f in range(FLOWS):
        client, port = f"198.18.0.{10 + f % 32}", 40000 + f

        def pkt(flags, payload=b"", src=client, sport=port, dst="198.18.1.1", dport=80):
            p = IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags)
            return bytearray(bytes(p / Raw(payload) if payload else p))

        syn = pkt("S")
        d.process([syn])
        rs = IP(bytes(syn)).dst
        d.process([pkt("SA", src=rs, sport=80, dst=client, dport=port)])
        d.process([pkt("A")])
        requests.append(bytes(pkt("PA", b"x" * 64)))
    return d, [requests[i % FLOWS] for i in range(BATCH)]


def _tracer(d, variant: str):
    """Attach a subscriber as `pyvs run` would for a `pyvs trace` client; a thread reads
    what it sends.  Returns a function that detaches it."""
    import socket

    from pyvs.engine.trace.hook import TraceHub

    hub = TraceHub(d)
    mine, peer = socket.socketpair()
    flt = {"clients": ["198.18.0.250"]} if variant == "traced-nomatch" else {}
    hub.subscribe(peer, {"op": "trace", "filter": flt})
    stop = threading.Event()

    def drain():
        mine.settimeout(0.05)
        while not stop.is_set():
            try:
                if not mine.recv(1 << 20):
                    return
            except TimeoutError:
                continue

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()

    def detach():
        stop.set()
        reader.join()
        hub.close()
        mine.close()
    return detach


def _measure(variant: str, rounds: int) -> dict:
    import numpy as np

    from pyvs.engine.fastpath import FastPath

    d, packets = _workload()
    detach = _tracer(d, variant) if variant.startswith("traced") else None
    out = {}
    try:
        # Director.process: fresh buffers each round (the rewrite works in place)
        best = []
        for _ in range(rounds):
            batch = [bytearray(p) for p in packets]
            t = time.perf_counter_ns()
            d.process(batch)
            best.append((time.perf_counter_ns() - t) / len(batch))
        out["process"] = statistics.median(best)
        # FastPath.run on Ethernet frames in one block
        frames = [b"\0" * 12 + b"\x08\x00" + p for p in packets]
        offs = np.cumsum([0] + [len(f) for f in frames[:-1]]).astype(np.int64)
        lens = np.array([len(f) for f in frames], dtype=np.int64)
        block = np.frombuffer(b"".join(frames), dtype=np.uint8)
        fp = FastPath(d)
        best = []
        for _ in range(rounds):
            buf = block.copy()
            t = time.perf_counter_ns()
            fp.run(buf, offs, lens)
            best.append((time.perf_counter_ns() - t) / len(frames))
        out["fastpath"] = statistics.median(best)
        out["fast_share"] = fp.fast / max(1, fp.fast + fp.slow)
        out["director_source"] = sys.modules[type(d).__module__].__file__
    finally:
        if detach is not None:
            detach()
    return out


def worker(variants: list[str], rounds: int) -> None:
    print(json.dumps({v: _measure(v, rounds) for v in variants}))


# -- the driver -------------------------------------------------------------------------

def baseline_tree(ref: str, where: Path) -> Path:
    """``git archive REF`` unpacked, with a ``pyvs`` folder mapping the namespace the way
    pyproject.toml does; returns the directory to put on PYTHONPATH."""
    src = where / "src"
    src.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    shim = where / "path" / "pyvs"
    shim.mkdir(parents=True)
    for pkg in ("engine", "schedulers", "forwarders", "bench"):
        (shim / pkg).symlink_to(src / pkg)
    return shim.parent


def run_tree(pythonpath: Path | None, variants: tuple[str, ...], rounds: int) -> dict:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    r = subprocess.run([sys.executable, str(HERE), "--worker", *variants, "--rounds",
                        str(rounds)], env=env, capture_output=True, text=True, check=True,
                       cwd=tempfile.gettempdir())
    return json.loads(r.stdout)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--rounds", type=int, default=200, help="batches per measurement")
    p.add_argument("--baseline", default=None,
                   help="git ref of the tree without the hook (default: merge-base with main)")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, args.rounds)
        return 0
    ref = args.baseline or subprocess.run(
        ["git", "-C", str(REPO), "merge-base", "HEAD", "main"], check=True,
        capture_output=True, text=True).stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix="pyvs-trace-bench-"))
    try:
        base = baseline_tree(ref, tmp)
        samples: dict[str, dict[str, list[float]]] = {}
        sources: dict[str, str] = {}
        for run in range(args.runs):
            trees = [("baseline", base), ("current", None)]
            for name, path in trees if run % 2 == 0 else trees[::-1]:
                for variant, res in run_tree(path, VARIANTS[name], args.rounds).items():
                    for path_name in ("process", "fastpath"):
                        samples.setdefault(variant, {}).setdefault(path_name, []).append(
                            res[path_name])
                    sources.setdefault(variant, res["director_source"])
            print(f"run {run + 1}/{args.runs} done", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert sources["baseline"].startswith(str(tmp)), sources  # the hook-less tree ran
    result = {"baseline_ref": ref, "runs": args.runs, "batch": BATCH,
              "rounds_per_run": args.rounds, "unit": "ns per packet (median of runs)",
              "variants": {}}
    print(f"{'variant':<16} {'Director.process':>24} {'FastPath.run':>24}")
    for variant in ("baseline", "off", "traced-nomatch", "traced-all"):
        row = {}
        for path_name in ("process", "fastpath"):
            xs = samples[variant][path_name]
            row[path_name] = {"median": round(statistics.median(xs), 1),
                              "min": round(min(xs), 1), "max": round(max(xs), 1)}
        result["variants"][variant] = row
        cells = [f"{row[k]['median']:8.1f} ({row[k]['min']:.0f}-{row[k]['max']:.0f})"
                 for k in ("process", "fastpath")]
        print(f"{variant:<16} {cells[0]:>24} {cells[1]:>24}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
