"""Ring-mode plumbing: keep the kernel from also handling the packets the ring serves.

AF_PACKET taps run before the netdev ingress hook, so an nftables ``netdev`` table
owned by pyvs (``table netdev pyvs``, one ingress chain per ring interface) drops
exactly the frames the ring port takes (engine/io/ring.py ``Match`` computes the
same predicate):
  * TCP/UDP to each virtual service addr:port (addr only for port-0 services);
  * TCP/UDP from each NAT real server addr:port of those services, with a TTL /
    hop limit above 1 (the kernel keeps the others and answers Time Exceeded);
  * never fragments past the first (no ports to match; the kernel reassembles).
ICMP and fwmark services are not taken: they reach the kernel and the NFQUEUE rules
(engine/plumbing.py, which in ring mode leaves out the addr:port rules).

The table is replaced atomically (``nft -f``) on every configuration change and
deleted on stop; a table left by a crashed run is deleted at start.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Iterable

from pyvs.engine.model import FWD_MASQ, format_addr

log = logging.getLogger("pyvs.plumbing")

TABLE = "pyvs"
PRIORITY = -500
_PROTO = {6: "tcp", 17: "udp"}


class RingPlumbingError(RuntimeError):
    pass


def ring_targets(services: Iterable) -> tuple[list[tuple], list[tuple]]:
    """([(proto, vip, port)], [(proto, real server addr, port)]) the ring serves."""
    vips: dict[tuple, None] = {}
    reals: dict[tuple, None] = {}
    for svc in services:
        if svc.fwmark or svc.protocol not in _PROTO:
            continue
        vips[(svc.protocol, bytes(svc.addr), svc.port)] = None
        for dest in svc.destinations:
            if dest.fwd == FWD_MASQ:
                reals[(svc.protocol, bytes(dest.addr), dest.port)] = None
    return list(vips), list(reals)


def ruleset(services: Iterable, interfaces: list[str]) -> str:
    vips, reals = ring_targets(services)
    rules = []
    for proto, addr, port in vips:
        fam = "ip" if len(addr) == 4 else "ip6"
        frag = "ip frag-off & 0x1fff == 0 " if fam == "ip" else ""
        p = _PROTO[proto]
        match = f"{p} dport {port}" if port else f"meta l4proto {p}"
        rules.append(f"{fam} daddr {format_addr(addr)} {frag}{match} drop")
    for proto, addr, port in reals:
        fam = "ip" if len(addr) == 4 else "ip6"
        frag = "ip frag-off & 0x1fff == 0 " if fam == "ip" else ""
        ttl = "ip ttl > 1" if fam == "ip" else "ip6 hoplimit > 1"
        p = _PROTO[proto]
        match = f"{p} sport {port}" if port else f"meta l4proto {p}"
        rules.append(f"{fam} saddr {format_addr(addr)} {frag}{ttl} {match} drop")
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
