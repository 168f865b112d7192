"""Plot a failover run: bytes a client received against time, across the active
director's death (tests/test_ha_lab.py with PYVS_HA_TIMELINE=FILE writes the run).

    PYVS_HA_TIMELINE=/tmp/ha.json pytest -q tests/test_ha_lab.py -k nat
    python -m pyvs.bench.ha_timeline /tmp/ha.json bench/results/failover-nat.png
"""

from __future__ import annotations

import json
import sys


def plot(run: dict, out: str) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kill = run["killed_at"]
    points = [(float(t) - kill, int(b) / 1e6) for t, b in run["timeline"]]
    xs, ys = zip(*points, strict=True)
    takeover = run["vip_taken_at"] - kill
    # the longest stretch without a new byte, around the kill
    gaps = [(xs[i + 1] - xs[i], xs[i]) for i in range(len(xs) - 1) if xs[i] >= -1]
    stall, stall_at = max(gaps) if gaps else (0.0, 0.0)
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=110)
    ax.plot(xs, ys, lw=1.6, color="#1f5fa8", label="bytes received by the client")
    ax.axvline(0, color="#c0392b", ls="--", lw=1.2, label="master killed (SIGKILL, links down)")
    ax.axvline(takeover, color="#27ae60", ls="--", lw=1.2,
               label=f"backup holds the VIP (+{takeover:.1f} s)")
    ax.set_xlabel("seconds from the kill")
    ax.set_ylabel("MB received")
    ax.set_title(f"pyvs + keepalived failover, {run['forwarding'].upper()}: "
                 f"{run['size'] / 2**20:.0f} MiB download, longest stall {stall:.1f} s")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    return {"takeover_s": round(takeover, 2), "stall_s": round(stall, 2),
            "stall_from_s": round(stall_at, 2)}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.stderr.write("usage: python -m pyvs.bench.ha_timeline RUN.json OUT.png\n")
        return 2
    with open(args[0]) as f:
        run = json.load(f)
    print(json.dumps(plot(run, args[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
