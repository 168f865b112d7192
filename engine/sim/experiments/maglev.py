"""Maglev hashing against modulo hashing (Eisenbud et al., NSDI 2016), on pyvs's schedulers.

    python -m pyvs.engine.sim.experiments.maglev [--out docs/experiments] [--quick]

Writes img/maglev-balance.{png,svg}, img/maglev-disruption.{png,svg}, maglev.json and the
result tables inside maglev.md (between the ``experiment:`` markers).  docs/experiments/
maglev.md says what is measured and how it compares with the paper.

Everything goes through the schedulers a director uses, built by ServiceTable exactly as
``ipvsadm -A/-a`` would (schedulers/testing.py): ``mh`` (kernel-identical, M = 4093),
``mh@65537`` (research extension: the paper's table size) and ``sh`` (256 buckets
dealt round robin: modulo hashing).  Backend addresses are 198.18.x.y, keys random
client addresses from a seeded generator.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np

from pyvs.engine.model import SVC_F_SCHED_MH_FALLBACK, ServiceSpec
from pyvs.engine.sim.cluster import Cluster
from pyvs.engine.sim.events import Event
from pyvs.engine.sim.runner import Options, Run
from pyvs.engine.sim.workload import Synthetic
from pyvs.schedulers.mh import with_table_size
from pyvs.schedulers.testing import build, edit, flow, make_env

SCHEDS = ("mh", "mh@65537", "sh")
LABELS = {"mh": "mh, M = 4093 (kernel)", "mh@65537": "mh, M = 65537 (extension)",
          "sh": "sh, 256 buckets (modulo)"}
COUNTS = (5, 10, 20, 50, 100, 200, 500, 1000)
REMOVED = (0.01, 0.02, 0.05, 0.10, 0.15, 0.20)


def backend(i: int) -> str:
    return f"198.18.{2 + i // 250}.{i % 250 + 1}"


def registry_name(name: str) -> str:
    return with_table_size(int(name[3:])).name if name.startswith("mh@") else name


def service(name: str, addrs: list[str], flags: int = 0):
    """The backends added under rr, then ``ipvsadm -E -s NAME``: the table is built once
    from the whole list (adding them under mh rebuilds it after every add, which is
    the same final table, a thousand times slower)."""
    table, svc = build("rr", [(a, 1) for a in addrs], flags=flags, env=make_env(seed=1))
    spec = ServiceSpec(svc.af, svc.protocol, svc.addr, svc.port,
                       scheduler=registry_name(name), flags=flags)
    table.edit_service(spec)
    return table, svc


def slots(svc) -> list:
    sched = svc.scheduler
    return sched.buckets if hasattr(sched, "buckets") else sched.table


def keys(n: int, seed: int) -> list[str]:
    """n random IPv4 client addresses (any address: they are hash keys, nothing is sent)."""
    rnd = random.Random(seed)
    return [".".join(str(b) for b in rnd.getrandbits(32).to_bytes(4, "big")) for _ in range(n)]


def balance(name: str, n: int, sample: list[str]) -> dict:
    """max/mean share of the table (hash space) and of sampled client keys."""
    addrs = [backend(i) for i in range(n)]
    _, svc = service(name, addrs)
    table = Counter(d.addr for d in slots(svc))
    per_slot = np.array([table.get(d.addr, 0) for d in svc.destinations], dtype=float)
    got = Counter(svc.scheduler.schedule(svc, flow(saddr=k)).addr for k in sample)
    per_key = np.array([got.get(d.addr, 0) for d in svc.destinations], dtype=float)
    return {"scheduler": name, "backends": n,
            "table_max_over_mean": float(per_slot.max() / per_slot.mean()),
            "keys_max_over_mean": float(per_key.max() / per_key.mean()),
            "keys": len(sample)}


def disruption(name: str, n: int, share: float, seed: int) -> dict:
    """Remove a random ``share`` of n backends: the share of the hash space (table
    entries) that changed backend, against the minimum (the removed backends' share)."""
    addrs = [backend(i) for i in range(n)]
    gone = set(random.Random(seed).sample(addrs, max(1, round(share * n))))
    _, before = service(name, addrs)
    _, after = service(name, [a for a in addrs if a not in gone])
    old, new = slots(before), slots(after)
    changed = sum(1 for a, b in zip(old, new, strict=True) if a.addr != b.addr) / len(old)
    lost = sum(1 for a in old if a.addr in gone_packed(gone)) / len(old)
    return {"scheduler": name, "backends": n, "removed": len(gone) / n,
            "changed": changed, "minimum": lost}


def gone_packed(gone: set[str]) -> set[bytes]:
    from pyvs.engine.model import pack_addr

    return {pack_addr(a) for a in gone}


def quiesced_disruption(n: int, share: float, seed: int, sample: list[str]) -> dict:
    """Kernel mh with mh-fallback, failed backends quiesced (weight 0) instead of
    deleted: the table keeps their slots (it is built from last_weight) and only their
    keys probe elsewhere -- measured on sampled keys."""
    addrs = [backend(i) for i in range(n)]
    gone = random.Random(seed).sample(addrs, max(1, round(share * n)))
    table, svc = service("mh", addrs, flags=SVC_F_SCHED_MH_FALLBACK)
    first = [svc.scheduler.schedule(svc, flow(saddr=k)).addr for k in sample]
    for a in gone:
        edit(table, svc, a, 0)
    then = [svc.scheduler.schedule(svc, flow(saddr=k)).addr for k in sample]
    packed = gone_packed(set(gone))
    return {"scheduler": "mh quiesce+fallback", "backends": n, "removed": len(gone) / n,
            "changed": sum(a != b for a, b in zip(first, then, strict=True)) / len(sample),
            "minimum": sum(a in packed for a in first) / len(sample)}


def end_to_end(name: str, seed: int, flows: int) -> dict:
    """The same measure through pyvs sim and the director: 50 servers, 5 of them fail
    at t = 10 s (removed by the health checker 1 s later); the share of clients whose
    next connection went elsewhere."""
    wl = Synthetic(flows=flows, rate=flows / 20, clients=20_000, zipf=0.0,
                   duration="exp:mean=0.01").generate(seed)
    events = [Event(10.0, "fail", f"rs{i}") for i in (3, 11, 19, 27, 35)]
    r = Run(wl, Cluster.uniform(50), name, Options(seed=seed, events=events,
                                                   detect_delay=1.0)).execute()
    ev = r["summary"]["disruption"]["events"]
    return {"scheduler": name, "clients": ev[-1]["clients"],
            "clients_remapped": ev[-1]["clients_remapped"],
            "imbalance_flows": r["summary"]["imbalance_flows"]}


def plot(balance_rows, disruption_rows, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = out / "img"
    img.mkdir(parents=True, exist_ok=True)
    written = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name in SCHEDS:
        rows = [r for r in balance_rows if r["scheduler"] == name]
        x = [r["backends"] for r in rows]
        axes[0].plot(x, [r["table_max_over_mean"] for r in rows], "o-", label=LABELS[name])
        axes[1].plot(x, [r["keys_max_over_mean"] for r in rows], "o-", label=LABELS[name])
    axes[0].set_title("hash space (table entries): max / mean", fontsize=10)
    axes[1].set_title(f"{balance_rows[0]['keys']:,} random client keys: max / mean",
                      fontsize=10)
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_yticks([1, 1.1, 1.25, 1.5, 2, 3, 4])
        ax.set_xlabel("backends")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    for ext in ("png", "svg"):
        path = img / f"maglev-balance.{ext}"
        fig.savefig(path, dpi=110)
        written.append(path)
    plt.close(fig)
    sizes = sorted({r["backends"] for r in disruption_rows})
    fig, axes = plt.subplots(1, len(sizes), figsize=(5.5 * len(sizes), 4), squeeze=False)
    for ax, n in zip(axes[0], sizes, strict=True):
        rows = [r for r in disruption_rows if r["backends"] == n]
        for name in [*SCHEDS, "mh quiesce+fallback"]:
            mine = [r for r in rows if r["scheduler"] == name]
            if mine:
                ax.plot([100 * r["removed"] for r in mine], [100 * r["changed"] for r in mine],
                        "o-", label=LABELS.get(name, name + " (kernel)"))
        base = [r for r in rows if r["scheduler"] == "mh"]
        ax.plot([100 * r["removed"] for r in base], [100 * r["removed"] for r in base], "k--",
                lw=1, label="minimum (removed share)")
        ax.set_title(f"{n} backends: entries that changed backend", fontsize=10)
        ax.set_xlabel("backends removed (%)")
        ax.set_ylabel("changed (%)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    for ext in ("png", "svg"):
        path = img / f"maglev-disruption.{ext}"
        fig.savefig(path, dpi=110)
        written.append(path)
    plt.close(fig)
    return written


def tables(results: dict) -> str:
    b = results["balance"]
    lines = ["| backends | " + " | ".join(LABELS[s] for s in SCHEDS) + " |",
             "|---:|" + "---:|" * len(SCHEDS)]
    for n in sorted({r["backends"] for r in b}):
        cells = []
        for s in SCHEDS:
            r = next(x for x in b if x["scheduler"] == s and x["backends"] == n)
            cells.append(f"{r['table_max_over_mean']:.3f} / {r['keys_max_over_mean']:.3f}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines += ["", "Balance: max/mean of table entries / of sampled client keys.", ""]
    d = results["disruption"]
    names = [*SCHEDS, "mh quiesce+fallback"]
    for n in sorted({r["backends"] for r in d}):
        lines += [f"| {n} backends, removed | minimum | "
                  + " | ".join(names) + " |", "|---:|---:|" + "---:|" * len(names)]
        for share in sorted({r["removed"] for r in d if r["backends"] == n}):
            rows = {r["scheduler"]: r for r in d if r["backends"] == n
                    and r["removed"] == share}
            cells = [f"{100 * rows[s]['changed']:.1f} %" if s in rows else "-" for s in names]
            lines.append(f"| {100 * share:.0f} % | {100 * rows['mh']['minimum']:.1f} % | "
                         + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Through `pyvs sim` (50 servers, 5 fail, removed after 1 s; clients whose next "
              "connection went to another server):", "",
              "| scheduler | clients seen before and after | remapped |", "|---|---:|---:|"]
    for r in results["end_to_end"]:
        lines.append(f"| {r['scheduler']} | {r['clients']} | "
                     f"{100 * r['clients_remapped']:.1f} % |")
    return "\n".join(lines) + "\n"


def update_page(page: Path, text: str) -> None:
    start, end = "<!-- experiment:results:start -->", "<!-- experiment:results:end -->"
    if not page.is_file() or start not in page.read_text():
        # beside the page, with its suffix: <page>-tables<suffix>
        page.with_name(f"{page.stem}-tables{page.suffix}").write_text(text)
        return
    body = page.read_text()
    body = re.sub(re.escape(start) + ".*?" + re.escape(end),
                  lambda _: f"{start}\n{text}{end}", body, flags=re.S)
    page.write_text(body)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pyvs.engine.sim.experiments.maglev")
    p.add_argument("--out", default="docs/experiments")
    p.add_argument("--keys", type=int, default=100_000)
    p.add_argument("--quick", action="store_true", help="fewer keys and sizes (a check)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--replot", action="store_true",
                   help="redraw the plots and tables from maglev.json, no new runs")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        results = json.loads((out / "maglev.json").read_text())
        plot(results["balance"], results["disruption"], out)
        update_page(out / "maglev.md", tables(results))
        return 0
    counts = COUNTS[:4] if args.quick else COUNTS
    sample = keys(5000 if args.quick else args.keys, args.seed)
    results: dict = {"balance": [], "disruption": [], "end_to_end": []}
    for name in SCHEDS:
        for n in counts:
            results["balance"].append(balance(name, n, sample))
            print(results["balance"][-1], flush=True)
    sizes = (20,) if args.quick else (100, 1000)
    for n in sizes:
        for share in REMOVED[:3] if args.quick else REMOVED:
            for name in SCHEDS:
                results["disruption"].append(disruption(name, n, share, args.seed))
            results["disruption"].append(quiesced_disruption(n, share, args.seed,
                                                             sample[:20_000]))
            print(results["disruption"][-4:], flush=True)
    for name in SCHEDS:
        results["end_to_end"].append(end_to_end(name, args.seed, 4000 if args.quick
                                                else 40_000))
        print(results["end_to_end"][-1], flush=True)
    (out / "maglev.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results["balance"], results["disruption"], out)
    update_page(out / "maglev.md", tables(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
