"""The ladder diagram of traced connections: client, director, real server (matplotlib).

One lifeline per host, time downwards, one arrow per packet the director saw: from
where it came to the director, and from the director to where it was sent (after
the rewrite).  The director's lifeline carries the connection's state changes; a
packet that went no further ends at the director with the reason.  With direct
routing and tunnelling the real server answers the client directly, unseen by the
director: the diagram shows only what the director saw, which is the lesson.
"""

from __future__ import annotations

FLAG_NAMES = {"S": "SYN", "A": "ACK", "F": "FIN", "R": "RST", "P": "PSH", "U": "URG"}


def host(endpoint: str) -> str:
    """The address of ``a.b.c.d:port`` or ``[v6]:port``."""
    if endpoint.startswith("["):
        return endpoint[1:].partition("]")[0]
    return endpoint.rsplit(":", 1)[0] if endpoint.count(":") == 1 else endpoint


def flag_words(flags: str) -> str:
    order = "SFRPAU"
    return "+".join(FLAG_NAMES[f] for f in order if f in flags) or "-"


def arrows(events: list[dict]) -> tuple[list[str], list[str], list[tuple]]:
    """(clients, real servers, [(row, from, to, label, note)]) in time order; ``from``
    and ``to`` are ("client", addr), ("director", "") or ("rs", addr)."""
    clients: list[str] = []
    servers: list[str] = []
    rows = []

    def seen(lst: list[str], a: str) -> str:
        if a not in lst:
            lst.append(a)
        return a

    for i, ev in enumerate(e for e in events if "lost" not in e):
        conn = ev.get("conn")
        label = flag_words(ev["flags"]) if "flags" in ev else ev["proto"]
        reply = ev.get("lookup") == "reply"
        if reply:
            src = ("rs", seen(servers, host(ev["src"])))
        else:
            src = ("client", seen(clients, host(conn["client"] if conn else ev["src"])))
        note = ""
        if conn is not None and conn["state_before"] != conn["state"]:
            note = f"{conn['state_before']} -> {conn['state']}"
        rows.append((i, src, ("director", ""), f"#{i + 1} {label}", note))
        outs = ev.get("out") or []
        forwarded = ev["why"] in ("forwarded", "sent-by-forwarder") and conn is not None
        if forwarded:
            dst = ("client", seen(clients, host(conn["client"]))) if reply else \
                ("rs", seen(servers, host(conn["rs"])))
            rows.append((i, ("director", ""), dst, f"{conn['fwd']} {label}", ""))
        elif ev["verdict"] != "FORWARD":
            reason = ", ".join(ev.get("drops", {})) or ev["why"]
            rows.append((i, ("director", ""), None, f"{ev['verdict']} ({reason})", ""))
        if not forwarded:  # an ICMP error the director sent back instead
            rows += [(i, ("director", ""), src, "ICMP error", "") for o in outs
                     if o["to"] == "routed"]
    return clients, servers, rows


def draw(events: list[dict], path: str, title: str = "") -> int:
    """Write the diagram to ``path`` (the format follows the suffix: .svg, .png, .pdf);
    returns the number of arrows drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: searchable, small

    clients, servers, rows = arrows(events)
    vip = next((host(e["conn"]["vip"]) for e in events if e.get("conn")), "")
    columns = [("client", a) for a in clients] + [("director", "")] + \
        [("rs", a) for a in servers]
    x = {c: i for i, c in enumerate(columns)}
    packets = max((r[0] for r in rows), default=-1) + 1
    fig, ax = plt.subplots(figsize=(max(7.0, 2.6 * len(columns)), 1.6 + 0.55 * packets))
    top, step = 0.0, 1.0
    bottom = -(packets * step) - 0.5
    for col, i in x.items():
        kind, addr = col
        name = {"client": f"client\n{addr}", "director": f"director\nVIP {vip}",
                "rs": f"real server\n{addr}"}[kind]
        ax.plot([i, i], [top, bottom], color="0.6", lw=1.2, zorder=1)
        ax.text(i, top + 0.25, name, ha="center", va="bottom", fontsize=9, weight="bold")
    for row, src, dst, label, note in rows:
        y0 = top - 0.3 - row * step
        if src[0] == "director":
            y0 -= 0.35
            if dst is None:
                ax.text(x[src] + 0.06, y0, label, fontsize=7.5, color="tab:red", va="center")
                continue
        y1 = y0 - 0.3
        x0, x1 = x[src], x[dst]
        color = "tab:blue" if src[0] == "client" or dst[0] == "rs" else "tab:green"
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                    arrowprops={"arrowstyle": "-|>", "color": color, "lw": 1.3})
        ax.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.06, label, ha="center", va="bottom",
                fontsize=7.5)
        if note:  # the state change, on the side the packet came from
            xd = x[("director", "")]
            left = x0 < xd
            ax.text(xd - 0.05 if left else xd + 0.05, y1 - 0.04, note, fontsize=7,
                    color="tab:purple", va="top", ha="right" if left else "left")
    ax.set_xlim(-0.6, len(columns) - 0.4)
    ax.set_ylim(bottom, top + 1.0)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return sum(1 for r in rows if r[2] is not None)
