"""Draw the three forwarding methods from the JSON `pyvs lab up` prints (matplotlib).

    python netns-lab/diagrams.py nat.json dr.json tun.json --out netns-lab/img

One figure per lab: the client, the director with the VIP, the real servers (and the
TUN lab's router), with the addresses the lab really has, and the path of one
connection: the request (blue) with the header the director writes, the reply (green)
with the header the client finally sees.  Where the reply goes decides the method:
back through the director (NAT), or straight to the client (DR, TUN).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

TITLES = {"nat": "NAT (masquerading, -m)", "dr": "Direct routing (-g)",
          "tun": "Tunnelling (-i, IP-in-IP)"}


def hops(lab: dict) -> tuple[list[tuple], list[tuple]]:
    """(boxes, arrows) of one lab: boxes (key, x, y, title, lines); arrows (from, to,
    label, kind) with kind "request" or "reply"."""
    mode, vip = lab["mode"], lab["vip"]
    client = lab["client_addrs"][0]
    d = lab["director"]
    rss = lab["real_servers"]
    rs = rss[0]
    boxes = [("client", 0.0, 0.0, "client", [client]),
             ("director", 3.0, 0.0, "director",
              [f"VIP {vip} on {d['vip_if']}", f"{d['client_if']} {d['client_addr']}",
               f"{d['server_if']} {d['server_addr']}"])]
    for i, r in enumerate(rss):
        lines = [r["addr"]] + ([f"VIP {vip} on lo"] if mode != "nat" else [])
        y = 1.4 - i * 2.8 / (len(rss) - 1) if len(rss) > 1 else 0.0
        boxes.append((f"rs{i}", 7.0, y, r["name"], lines))
    src = f"{client}:c"
    if mode == "nat":
        arrows = [("client", "director", f"{src} > {vip}:80", "request"),
                  ("director", "rs0", f"{src} > {rs['addr']}:80  (dst rewritten)", "request"),
                  ("rs0", "director", f"{rs['addr']}:80 > {src}", "reply"),
                  ("director", "client", f"{vip}:80 > {src}  (src rewritten)", "reply")]
    elif mode == "dr":
        arrows = [("client", "director", f"{src} > {vip}:80", "request"),
                  ("director", "rs0", f"{src} > {vip}:80  (dst MAC = {rs['name']}'s)",
                   "request"),
                  ("rs0", "client", f"{vip}:80 > {src}  (straight back)", "reply")]
    else:
        router = d.get("router", "router")
        boxes.append(("router", 4.6, -2.2, "router", [router]))
        outer = f"[{d['server_addr']} > {rs['addr']}]"
        arrows = [("client", "director", f"{src} > {vip}:80", "request"),
                  ("director", "router", f"{outer} {src} > {vip}:80", "request"),
                  ("router", "rs0", "IP-in-IP", "request"),
                  ("rs0", "client", f"{vip}:80 > {src}  (straight back)", "reply")]
    return boxes, arrows


def draw(lab: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    matplotlib.rcParams["svg.fonttype"] = "none"
    boxes, arrows = hops(lab)
    where = {}
    fig, ax = plt.subplots(figsize=(10, 6))
    for key, x, y, title, lines in boxes:
        h = 0.45 + 0.28 * len(lines)
        ax.add_patch(FancyBboxPatch((x - 0.95, y - h / 2), 1.9, h,
                                    boxstyle="round,pad=0.05", fc="0.95", ec="0.4"))
        ax.text(x, y + h / 2 - 0.25, title, ha="center", va="center", weight="bold",
                fontsize=10)
        for j, line in enumerate(lines):
            ax.text(x, y + h / 2 - 0.55 - 0.28 * j, line, ha="center", va="center",
                    fontsize=8)
        where[key] = (x, y)
    for n, (a, b, label, kind) in enumerate(arrows):
        (x0, y0), (x1, y1) = where[a], where[b]
        around = kind == "reply" and {a, b} == {"rs0", "client"}  # over the director
        bend = 0.4 if around else 0.12
        color = "tab:blue" if kind == "request" else "tab:green"
        sx = 1 if x1 > x0 else -1
        ax.annotate("", xy=(x1 - 0.95 * sx, y1), xytext=(x0 + 0.95 * sx, y0),
                    arrowprops={"arrowstyle": "-|>", "color": color, "lw": 1.6,
                                "connectionstyle": f"arc3,rad={bend}"})
        ax0, ax1 = x0 + 0.95 * sx, x1 - 0.95 * sx  # the curve's top (arc3's control / 2)
        mx = (ax0 + ax1) / 2 + bend / 2 * (y1 - y0)
        my = (y0 + y1) / 2 - bend / 2 * (ax1 - ax0)
        ax.text(mx, my, str(n + 1), ha="center",
                va="center", fontsize=9, color="white", weight="bold",
                bbox={"boxstyle": "circle,pad=0.2", "fc": color, "ec": color})
        ax.text(-1.0, -3.1 - 0.32 * n, f"{n + 1}. {label}", fontsize=8.5, color=color)
    ax.set_xlim(-1.2, 8.2)
    ax.set_ylim(-3.4 - 0.32 * len(arrows), 3.6)
    ax.axis("off")
    ax.set_title(f"{TITLES[lab['mode']]}: lab {lab['name']}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("labs", nargs="+", type=Path, help="JSON files printed by pyvs lab up")
    p.add_argument("--out", type=Path, default=Path("."), help="folder for MODE.svg")
    p.add_argument("--format", default="svg", choices=["svg", "png"])
    args = p.parse_args(argv)
    for f in args.labs:
        try:
            lab = json.loads(f.read_text())
            mode = lab["mode"]
        except (OSError, ValueError, KeyError) as err:
            sys.stderr.write(f"diagrams: {f}: not the JSON of pyvs lab up ({err})\n")
            return 1
        out = args.out / f"{mode}.{args.format}"
        draw(lab, out)
        print(f"{out.name}: {TITLES[mode]}, {len(lab['real_servers'])} real servers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
