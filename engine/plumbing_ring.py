"""Ring-mode plumbing: keep the kernel from also handling the packets the ring serves.

AF_PACKET taps run before the netdev ingress hook, so an nftables ``netdev`` table
owned by pyvs (``table netdev pyvs``, one ingress chain per ring interface) drops
exactly the frames the ring port takes: what the model of engine/takes.py gives a
fast port (``Takes.fast_kind``), the same predicate the ring's classifier
(engine/io/match.py) computes:
  * TCP/UDP to a virtual service's addr:port (every port for port-0 services);
  * TCP/UDP from a NAT real server's addr:port (port 0: every port) with a TTL / hop
    limit above 1 (the kernel keeps the others and answers Time Exceeded);
  * IPv4 headers netfilter accepts, IPv6 with TCP/UDP right after the fixed header,
    never a fragment past the first (no ports), no VLAN tag (``ether type``).
Everything else reaches the kernel and, where pyvs takes it, the NFQUEUE rules
(engine/plumbing.py): fwmark traffic, ICMP errors, FTP data.

The table is replaced atomically (``nft -f``) on every configuration change and
deleted on stop; a table left by a crashed run is deleted at start.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Iterable

from pyvs.engine.model import format_addr
from pyvs.engine.takes import PortKey, Takes, merged

log = logging.getLogger("pyvs.plumbing")

TABLE = "pyvs"
PRIORITY = -500
_PROTO = {6: "tcp", 17: "udp"}


class RingPlumbingError(RuntimeError):
    pass


def _element(k: PortKey) -> str:
    ports = str(k.lo) if k.lo == k.hi else f"{k.lo}-{k.hi}"
    return f"{format_addr(k.addr)} . {_PROTO[k.proto]} . {ports}"


def drop_rules(takes: Takes) -> list[str]:
    """The rules of each ingress chain: drop what a fast port takes (``Takes.fast_kind``)."""
    rules = []
    for family, ip, head, ttl in (
            (4, "ip", "ether type ip ip frag-off & 0x1fff == 0", "ip ttl > 1"),
            (6, "ip6", "ether type ip6 ip6 nexthdr { tcp, udp }", "ip6 hoplimit > 1")):
        for keys, side, extra in ((takes.fast_requests, "daddr . meta l4proto . th dport", ""),
                                  (takes.fast_replies, "saddr . meta l4proto . th sport",
                                   f" {ttl}")):
            mine = merged(k for k in keys if k.family == family)
            if mine:
                elements = ", ".join(map(_element, mine))
                rules.append(f"{head}{extra} {ip} {side} {{ {elements} }} drop")
    return rules


def ruleset(services: Iterable, interfaces: list[str]) -> str:
    rules = drop_rules(Takes.of(services))
    lines = [f"table netdev {TABLE} {{}}", f"delete table netdev {TABLE}",
             f"table netdev {TABLE} {{"]
    for i, dev in enumerate(interfaces):
        lines.append(f"  chain in{i} {{")
        lines.append(f'    type filter hook ingress device "{dev}" priority {PRIORITY}; '
                     "policy accept;")
        lines.extend(f"    {r}" for r in rules)
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _nft() -> str:
    path = shutil.which("nft")
    if path is None:
        raise RingPlumbingError("nft not found: install Debian's nftables package")
    return path


class RingPlumbing:
    def __init__(self, interfaces: list[str]) -> None:
        self.interfaces = list(interfaces)
        self._applied: str | None = None

    def install(self) -> None:
        self.remove()
        self.sync(())

    def sync(self, services: Iterable) -> None:
        text = ruleset(list(services), self.interfaces)
        if text == self._applied:
            return
        proc = subprocess.run([_nft(), "-f", "-"], input=text, capture_output=True, text=True,
                              timeout=10)
        if proc.returncode != 0:
            raise RingPlumbingError(f"nft -f: {proc.stderr.strip()}\n{text}")
        self._applied = text

    def remove(self) -> list[str]:
        """Delete the table; returns what was removed (nothing if there was no table)."""
        proc = subprocess.run([_nft(), "delete", "table", "netdev", TABLE],
                              capture_output=True, timeout=10)
        self._applied = None
        return [f"nftables table netdev {TABLE}"] if proc.returncode == 0 else []

    def listing(self) -> str:
        return subprocess.run([_nft(), "list", "table", "netdev", TABLE], capture_output=True,
                              text=True, timeout=10).stdout
