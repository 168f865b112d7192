"""The netfilter hooks pyvs adds to its namespace, and removes again.

Kernel IPVS sits in LOCAL_IN (requests to a local VIP) and FORWARD (NAT replies
routed through the director).  pyvs hooks the same traffic into an NFQUEUE:
  mangle PREROUTING -> PYVS-IN:  to each VIP:port (or with each service's fwmark),
                                 after the user's own mangle rules set the marks;
  mangle FORWARD    -> PYVS-OUT: from each NAT real server's address:port.
ICMP errors to VIPs and from NAT real servers are queued too (they may concern
a connection).  Rules are rebuilt atomically (iptables-restore --noflush) on
every configuration change; chains left by a crashed run are removed at start.
--queue-bypass lets traffic through to the kernel while no pyvs is bound.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Iterable

from pyvs.engine.model import AF_INET, FWD_MASQ, FWD_TUNNEL, IPPROTO_TCP, format_addr

log = logging.getLogger("pyvs.plumbing")

QUEUE_NUM = 20601
CHAINS = (("PREROUTING", "PYVS-IN"), ("FORWARD", "PYVS-OUT"))
_PROTO = {6: "tcp", 17: "udp", 132: "sctp"}
_ERRORS4 = ("destination-unreachable", "source-quench", "time-exceeded")
_ERRORS6 = ("destination-unreachable", "packet-too-big", "time-exceeded", "parameter-problem")


class PlumbingError(RuntimeError):
    pass


def _tool(af: int, kind: str) -> str:
    name = ("iptables" if af == AF_INET else "ip6tables") + kind
    path = shutil.which(name)
    if path is None:
        raise PlumbingError(f"{name} not found: install Debian's iptables package")
    return path


def _run(argv: list[str], stdin: str | None = None, check: bool = True) -> bool:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise PlumbingError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc.returncode == 0


def _queue(queue: int) -> str:
    return f"-j NFQUEUE --queue-num {queue} --queue-bypass"


def rules_for(services: Iterable, af: int, queue: int = QUEUE_NUM,
              ring: bool = False) -> tuple[list, list]:
    """(PYVS-IN rules, PYVS-OUT rules) as iptables argument strings for one family.

    ``ring``: the ring port (engine/io/ring.py) serves TCP/UDP to VIP:port and from
    NAT real servers of addr:port services, so only fwmark services and ICMP errors
    are queued here."""
    icmp = "icmp" if af == AF_INET else "ipv6-icmp"
    icmp_opt = "--icmp-type" if af == AF_INET else "--icmpv6-type"
    errors = _ERRORS4 if af == AF_INET else _ERRORS6
    plen = 32 if af == AF_INET else 128
    q = _queue(queue)
    rules_in: list[str] = []
    rules_out: list[str] = []
    vips: dict[str, None] = {}
    reals: dict[tuple, None] = {}
    services = list(services)
    for svc in services:
        if svc.af != af:
            continue
        if svc.fwmark:
            rules_in.append(f"-m mark --mark {svc.fwmark} {q}")
        elif ring and svc.protocol in (6, 17):
            vips[f"{format_addr(svc.addr)}/{plen}"] = None
        else:
            vip = f"{format_addr(svc.addr)}/{plen}"
            vips[vip] = None
            proto = _PROTO.get(svc.protocol, str(svc.protocol))
            match = f"-d {vip} -p {proto} -m addrtype --dst-type LOCAL"
            if svc.port:
                rules_in.append(f"{match} -m {proto} --dport {svc.port} {q}")
                if svc.protocol == IPPROTO_TCP and svc.port == 21:  # FTP data fallback
                    rules_in.append(f"{match} -m {proto} --dport 20 {q}")
                    rules_in.append(f"{match} -m {proto} --dport 1024:65535 {q}")
            else:
                rules_in.append(f"{match} {q}")
        for dest in svc.destinations:
            if dest.fwd != FWD_MASQ or dest.af != af:
                continue
            proto = _PROTO.get(svc.protocol, "tcp") if not svc.fwmark else None
            if ring and proto in ("tcp", "udp"):
                proto = "icmp-only"  # the ring takes its TCP/UDP
            reals[(format_addr(dest.addr), dest.port, proto)] = None
    for vip in vips:
        for err in errors:
            rules_in.append(f"-d {vip} -p {icmp} -m {icmp} {icmp_opt} {err} {q}")
    if af == AF_INET and any(d.fwd == FWD_TUNNEL for svc in services if svc.af == af
                             for d in svc.destinations):
        # errors about our IPIP packets come to the director's own address (ip_vs_in_icmp)
        for err in errors:
            rules_in.append(f"-p {icmp} -m {icmp} {icmp_opt} {err} "
                            f"-m addrtype --dst-type LOCAL {q}")
    rip_seen: dict[str, None] = {}
    for addr, port, proto in reals:
        src = f"-s {addr}/{plen}"
        if proto == "icmp-only":
            pass
        elif proto is None or not port:
            rules_out.append(f"{src} -p tcp {q}")
            rules_out.append(f"{src} -p udp {q}")
        else:
            rules_out.append(f"{src} -p {proto} -m {proto} --sport {port} {q}")
        if addr not in rip_seen:
            rip_seen[addr] = None
            for err in errors:
                rules_out.append(f"{src} -p {icmp} -m {icmp} {icmp_opt} {err} {q}")
    return rules_in, rules_out


class Plumbing:
    """Owns the PYVS-* chains of one namespace, for IPv4 and IPv6."""

    def __init__(self, queue: int = QUEUE_NUM, ring: bool = False) -> None:
        self.queue = queue
        self.ring = ring
        self._applied: dict[int, tuple] = {}

    def install(self) -> None:
        self.remove()  # whatever a crashed run left behind
        for af in (AF_INET, 10):
            restore = ["*mangle"]
            for _, chain in CHAINS:
                restore.append(f":{chain} - [0:0]")
            for hook, chain in CHAINS:
                restore.append(f"-A {hook} -j {chain}")
            restore.append("COMMIT")
            _run([_tool(af, "-restore"), "--noflush"], "\n".join(restore) + "\n")
        self._applied.clear()

    def sync(self, services: Iterable) -> None:
        services = list(services)
        for af in (AF_INET, 10):
            rules = rules_for(services, af, self.queue, self.ring)
            if self._applied.get(af) == rules:
                continue
            restore = ["*mangle"]
            for _, chain in CHAINS:
                restore.append(f"-F {chain}")
            for (_, chain), chain_rules in zip(CHAINS, rules, strict=True):
                restore.extend(f"-A {chain} {r}" for r in chain_rules)
            restore.append("COMMIT")
            _run([_tool(af, "-restore"), "--noflush"], "\n".join(restore) + "\n")
            self._applied[af] = rules

    def remove(self) -> None:
        for af in (AF_INET, 10):
            tool = _tool(af, "")
            for hook, chain in CHAINS:
                while _run([tool, "-t", "mangle", "-D", hook, "-j", chain], check=False):
                    pass
                _run([tool, "-t", "mangle", "-F", chain], check=False)
                _run([tool, "-t", "mangle", "-X", chain], check=False)
        self._applied.clear()
