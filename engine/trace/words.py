"""One traced packet in plain words (the client side of `pyvs trace`; scapy lives here).

``describe(event, n, t0)`` turns one event of engine/trace/hook.py into lines:

    #1 +0.000s  TCP 198.18.0.10:40312 > 198.18.1.1:80 [S]  60 bytes
      lookup     no entry for 198.18.0.10:40312 > 198.18.1.1:80: a new connection
      service    TCP  198.18.1.1:80 rr
      scheduler  rr chose 198.18.2.12:80 (after 198.18.2.11:80, the cursor)
      ...
"""

from __future__ import annotations

from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

WIDTH = 11  # the label column

FORWARDING = {
    "Masq": "Masq (NAT)",
    "Local": "Local (the director itself)",
    "Route": "Route (direct routing)",
    "Tunnel": "Tunnel (IP-in-IP encapsulation)",
    "Bypass": "Bypass (cache_bypass)",
}
REWRITE = {
    ("Masq", False): "destination rewritten to the real server",
    ("Masq", True): "source rewritten back to the virtual service",
    ("Route", False): "IP header unchanged (TTL - 1), new destination MAC",
    ("Route", True): "IP header unchanged (TTL - 1), new destination MAC",
    ("Tunnel", False): "wrapped in an outer IP header to the real server",
    ("Tunnel", True): "wrapped in an outer IP header to the real server",
}
DROP_REASONS = {  # engine counters (pyvs status "drops") in words
    "no-destination": "no real server available: ICMP port unreachable to the client "
                      "(ip_vs_leave)",
    "dest-unavailable": "the entry's real server is unavailable and expire_nodest_conn=0",
    "nat-reply-without-entry": "a real server's reply that belongs to no connection "
                               "(nat_icmp_send)",
    "fragment": "a fragment after the first",
    "ttl-exceeded": "TTL exhausted: ICMP time exceeded to the sender",
    "frag-needed": "too big for the path: ICMP fragmentation needed to the sender",
    "no-route": "no route to the real server",
    "dr-not-on-link": "direct routing needs the real server on a directly connected link",
    "neigh-queue-full": "too many packets waiting for the real server's MAC address",
    "bad-icmp-checksum": "ICMP checksum wrong",
}
WHY = {
    "forwarded": "",
    "sent-by-forwarder": "the forwarder sent it itself",
    "waiting-for-neighbour": "held until the kernel resolves the real server's MAC "
                             "address (then sent)",
    "icmp-not-ours": "an ICMP message about no connection: the director's own stack takes it",
    "icmp-to-stack": "an ICMP message for the director's own stack",
    "not-ipvs-protocol": "not TCP, UDP or ICMP: the director's own stack takes it",
    "no-service": "no virtual service for this address and port: the director's own stack "
                  "takes it",
    "no-entry-no-syn": "no connection entry and not a SYN, so nothing is scheduled "
                       "(tcp_conn_schedule): the director's own stack takes it",
    "not-scheduled": "the service did not schedule it (FTP data from port 20, or a port "
                     "other than the service's): the director's own stack takes it",
    "bypass": "a bypass entry: the director's stack routes it to its own destination",
    "local-real-server": "the real server is the director itself: its own stack takes it",
}


def summary(hexdata: str, link: str) -> str:
    """scapy's one-line summary, with the addresses scapy leaves out (MACs, outer IP)."""
    raw = bytes.fromhex(hexdata)
    if link == "eth":
        eth = Ether(raw)
        return f"Ether {eth.src} > {eth.dst} / {_ip_summary(eth.payload)}"
    pkt = IPv6(raw) if raw and raw[0] >> 4 == 6 else IP(raw)
    return _ip_summary(pkt)


def _ip_summary(pkt) -> str:
    inner = pkt.payload
    if isinstance(pkt, (IP, IPv6)) and (isinstance(inner, (IP, IPv6))
                                        or inner.name in ("GRE", "UDP") and
                                        isinstance(inner.payload, (IP, IPv6))):
        return f"{pkt.name} {pkt.src} > {pkt.dst} / {inner.summary()}"
    return pkt.summary()


def _line(label: str, text: str) -> str:
    return f"  {label:<{WIDTH}}{text}"


def _cont(text: str) -> str:
    return " " * (2 + WIDTH) + text


def _timer(seconds: int) -> str:
    return f"expires in {seconds} s"


def _flow(conn: dict) -> str:
    return f"{conn['client']} > {conn['vip']} > {conn['rs']} ({conn['fwd']})"


def describe(ev: dict, n: int, t0: float) -> list[str]:
    if "lost" in ev:
        return [f"({ev['lost']} packets not shown: this reader was too slow)"]
    head = f"#{n} +{ev['t'] - t0:.3f}s  {ev['proto']} {ev['src']} > {ev['dst']}"
    if "flags" in ev:
        head += f" [{ev['flags']}]"
    if "icmp" in ev:
        head += f" type {ev['icmp'][0]} code {ev['icmp'][1]}"
    head += f"  {ev['len']} bytes"
    if ev.get("mark"):
        head += f"  mark {ev['mark']}"
    lines = [head]
    conn = ev.get("conn")
    reply = ev.get("lookup") == "reply"
    lines += _lookup(ev, conn)
    if ev.get("service") and ev.get("lookup") in ("miss", "replaced"):
        persist = f", persistent {ev['persistent']} s" if ev.get("persistent") else ""
        lines.append(_line("service", ev["service"] + persist))
    lines += _template(ev)
    lines += _schedule(ev.get("schedule"))
    if conn is not None:
        before, after = conn["state_before"], conn["state"]
        change = f"{before} -> {after}" if before != after else f"{after} (unchanged)"
        lines.append(_line("state", f"{change}, {_timer(conn['timeout'])}"))
    lines += _forward(ev, conn, reply)
    lines += _verdict(ev)
    return lines


def _lookup(ev: dict, conn: dict | None) -> list[str]:
    kind = ev.get("lookup")
    if kind is None:
        if conn is not None:
            return [_line("lookup", f"an ICMP error about {_flow(conn)}")]
        return []
    if kind == "reply":
        return [_line("lookup", f"reply of connection {_flow(conn)}")]
    if kind == "hit":
        return [_line("lookup", f"connection hit: {_flow(conn)}")]
    if kind == "replaced":
        text = f"an entry in {ev.get('old_state')} was found and expired for a new connection"
        return [_line("lookup", text + " (conn_reuse_mode / expire_nodest_conn)")]
    return [_line("lookup", f"connection miss: no entry for {ev['src']} > {ev['dst']}")]


def _template(ev: dict) -> list[str]:
    t = ev.get("template")
    if t is None:
        return []
    what = "hit" if t["hit"] else "created"
    return [_line("template", f"{what}: {t['client']} > {t['vip']} > {t['rs']}, "
                  f"{_timer(t['timeout'])}, controls {t['controls']}"
                  + (" (no scheduling: the template decides)" if t["hit"] else ""))]


def _schedule(s: dict | None) -> list[str]:
    if s is None:
        return []
    chose = s["chose"]
    head = f"{s['scheduler']} chose {chose}" if chose else \
        f"{s['scheduler']} found no usable real server"
    before, after = s.get("before") or {}, s.get("after") or {}
    notes = []
    if "cursor" in before:
        notes.append(f"the walk starts after {before['cursor']}")
    if "cw" in before:
        notes.append(f"current weight {before['cw']} -> {after.get('cw')} (max {before['mw']}"
                     f", step {before['di']})")
    if "hash" in after:
        notes.append(after["hash"])
    if "rule" in after:
        notes.append(after["rule"])
    lines = [_line("scheduler", head)]
    lines += [_cont(note) for note in notes]
    for d in s["inputs"]:
        flags = []
        if d["overloaded"]:
            flags.append("overloaded")
        if not d["available"]:
            flags.append("unavailable")
        mark = "  <- chosen" if d["dest"] == chose else ""
        lines.append(_cont(f"{d['dest']:<22} weight {d['weight']:<3} active {d['active']:<3} "
                           f"inactive {d['inactive']:<3} overhead {d['overhead']}"
                           + (f" ({', '.join(flags)})" if flags else "") + mark))
    return lines


def _forward(ev: dict, conn: dict | None, reply: bool) -> list[str]:
    out = ev.get("out") or []
    if conn is None or ev["why"] not in ("forwarded", "sent-by-forwarder",
                                         "waiting-for-neighbour"):
        return []
    fwd = conn["fwd"]
    text = f"{FORWARDING.get(fwd, fwd)}: {REWRITE.get((fwd, reply), 'forwarded')}"
    lines = [_line("forward", text)]
    if ev.get("in"):
        lines.append(_cont(f"before  {summary(ev['in'], 'ip')}"))
    for o in out:
        where = "" if o["to"] in ("stack", "port", "routed") else f"  (out of {o['to']})"
        lines.append(_cont(f"after   {summary(o['hex'], o['link'])}{where}"))
    return lines


def _verdict(ev: dict) -> list[str]:
    why, verdict = ev["why"], ev["verdict"]
    out = ev.get("out") or []
    if why == "forwarded":
        to = out[0]["to"] if out else "stack"
        how = "the director's stack routes it on" if to == "stack" else \
            "the port transmits it"
        return [_line("verdict", f"FORWARD: {how}")]
    if why == "dropped":
        reasons = [f"{DROP_REASONS.get(r, r)} [{r}]" for r in ev.get("drops", {})]
        lines = [_line("verdict", "DROP: " + ("; ".join(reasons) or "dropped"))]
        lines += [_cont(f"sent    {summary(o['hex'], o['link'])}") for o in out]
        return lines
    if why == "waiting-for-neighbour":
        return [_line("verdict", f"queued: {WHY[why]}")]
    if why == "sent-by-forwarder":
        return [_line("verdict", f"{WHY[why]}; the original goes no further")]
    if verdict == "ACCEPT":
        return [_line("verdict", f"ACCEPT: {WHY.get(why, why)}")]
    return [_line("verdict", f"{verdict}: {WHY.get(why, why)}")]
