"""The NFQUEUE port's plumbing: pyvs's own nftables table, which queues what pyvs takes.

Kernel IPVS sees a request at LOCAL_IN, after every prerouting hook, so a firewall mark
set by any prerouting rule -- an iptables mangle rule, or the user's own nftables chain
at any priority -- selects the fwmark service; it sees NAT replies in FORWARD, after the
filter rules (ip_vs_reply4 at priority NF_IP_PRI_NAT_SRC).  pyvs's table, ``inet pyvs``,
puts its hooks at the same places, for IPv4 and IPv6:

  chain requests   hook prerouting, priority 2147483647 (the last one there is): requests
                   to local addresses, marked packets, ICMP errors to services;
  chain replies    hook forward, priority 100: NAT replies, ICMP errors about them;
  chain to_queue   one rule: NFQUEUE to pyvs's queue, ``bypass`` (while no pyvs reads the
                   queue, the kernel handles the packets itself).

Requests are queued in prerouting rather than LOCAL_IN so that the rewritten packet the
verdict carries back is routed by the kernel to the real server (README: "Where pyvs
differs").  The rules are generated from the model of what pyvs takes
(engine/takes.py) and replaced in one nft transaction on every configuration change;
``install`` first removes what a killed run left, ``remove`` deletes the table.

The queue rule goes in through netlink when nft's own ``queue`` statement is missing:
that statement needs the kernel's nft_queue (CONFIG_NFT_QUEUE), which some kernels lack;
the xtables NFQUEUE target through nft_compat, what iptables-nft uses, works wherever
iptables does.  nft lists that rule as ``queue num N bypass`` too.
"""

from __future__ import annotations

import errno
import logging
import shutil
import socket
import struct
import subprocess
from collections.abc import Iterable

from pyvs.engine.model import format_addr
from pyvs.engine.takes import ICMP4_ERRORS, PortKey, Takes, merged

log = logging.getLogger("pyvs.plumbing")

QUEUE_NUM = 20601
TABLE = "pyvs"
PRIORITY_LAST = 2147483647  # after every prerouting hook, whatever its priority
PRIORITY_REPLIES = 100  # ip_vs_reply4's FORWARD priority (NF_IP_PRI_NAT_SRC)
PROTO_NAMES = {6: "tcp", 17: "udp"}
ICMP4_NAMES = {3: "destination-unreachable", 4: "source-quench", 11: "time-exceeded"}
LEGACY_CHAINS = (("PREROUTING", "PYVS-IN"), ("FORWARD", "PYVS-OUT"))  # pyvs <= 0.x


class PlumbingError(RuntimeError):
    pass


# -- rule generation (pure) ---------------------------------------------------------------
def _elements(items: Iterable[str]) -> str:
    return "{ " + ", ".join(items) + " }"


def _port_element(k: PortKey) -> str:
    ports = str(k.lo) if k.lo == k.hi else f"{k.lo}-{k.hi}"
    return f"{format_addr(k.addr)} . {PROTO_NAMES.get(k.proto, k.proto)} . {ports}"


def _icmp_errors(family: int) -> str:
    if family == 4:
        return "icmp type " + _elements(ICMP4_NAMES[t] for t in ICMP4_ERRORS)
    return "icmpv6 type < 128"  # every error type (ICMPV6_INFOMSG_MASK clear)


FRAGMENTS_PAST_THE_FIRST = ("ip frag-off & 0x1fff != 0", "frag frag-off != 0")


def rules(takes: Takes) -> list[tuple[str, str, str]]:
    """[(chain, verdict, rule)] that queue what ``takes`` says NFQUEUE takes.

    Marked packets first; then fragments past the first leave both chains (nftables
    reads a fragment's first bytes as ports; the model gives them no ports)."""
    marks = [("requests", "goto to_queue", f"meta nfproto {nfproto} meta mark "
              f"{_elements(map(str, sorted(m for f, m in takes.marks if f == family)))}")
             for family, nfproto in ((4, "ipv4"), (6, "ipv6"))
             if any(f == family for f, _ in takes.marks)]
    out: list[tuple[str, str, str]] = []
    for family, ip, quoted in ((4, "ip", "@th,192,32"), (6, "ip6", "@th,256,128")):
        keys = merged(k for k in takes.requests if k.family == family)
        if keys:
            out.append(("requests", "goto to_queue", f"{ip} daddr . meta l4proto . th dport "
                        f"{_elements(map(_port_element, keys))} fib daddr type local"))
        vips = sorted(a for a in takes.icmp_to if len(a) == (4 if family == 4 else 16))
        if vips:
            out.append(("requests", "goto to_queue", f"{_icmp_errors(family)} {ip} daddr "
                        f"{_elements(map(format_addr, vips))}"))
        if family in takes.icmp_local:
            out.append(("requests", "goto to_queue",
                        f"{_icmp_errors(family)} fib daddr type local"))
        keys = merged(k for k in takes.replies if k.family == family)
        if keys:
            out.append(("replies", "goto to_queue", f"{ip} saddr . meta l4proto . th sport "
                        f"{_elements(map(_port_element, keys))}"))
        about = sorted(a for a in takes.icmp_about if len(a) == (4 if family == 4 else 16))
        if about:  # the quoted packet's destination, at a fixed offset in the ICMP message
            out.append(("replies", "goto to_queue", f"{_icmp_errors(family)} {quoted} "
                        f"{_elements('0x' + a.hex() for a in about)}"))
    if not out:
        return marks
    later = [("requests", "return", rule) for rule in FRAGMENTS_PAST_THE_FIRST]
    later += [("replies", "return", rule) for rule in FRAGMENTS_PAST_THE_FIRST]
    return marks + later + out


def table_text() -> str:
    """The table and its chains, without rules (idempotent: declaring it again keeps it)."""
    return (f"table inet {TABLE} {{\n"
            "  chain to_queue {\n  }\n"
            "  chain requests {\n"
            f"    type filter hook prerouting priority {PRIORITY_LAST}; policy accept;\n  }}\n"
            "  chain replies {\n"
            f"    type filter hook forward priority {PRIORITY_REPLIES}; policy accept;\n  }}\n"
            "}\n")


def ruleset(takes: Takes) -> str:
    """One nft transaction that replaces the rules of ``requests`` and ``replies``."""
    lines = [table_text(), f"flush chain inet {TABLE} requests",
             f"flush chain inet {TABLE} replies"]
    lines += [f"add rule inet {TABLE} {chain} {rule} {verdict}"
              for chain, verdict, rule in rules(takes)]
    return "\n".join(lines) + "\n"


# -- the queue rule through netlink (xtables NFQUEUE target, revision 3) -------------------
NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFT_MSG_NEWRULE = 6
NLM_F_REQUEST, NLM_F_ACK, NLM_F_CREATE, NLM_F_APPEND = 0x1, 0x4, 0x400, 0x800
NLMSG_ERROR = 2
NLA_F_NESTED = 0x8000
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS = 1, 2, 4
NFTA_LIST_ELEM, NFTA_EXPR_NAME, NFTA_EXPR_DATA = 1, 1, 2
NFTA_TARGET_NAME, NFTA_TARGET_REV, NFTA_TARGET_INFO = 1, 2, 3
NFQ_FLAG_BYPASS = 0x01
NFPROTO_INET = 1


def _nla(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + b"\0" * (-size % 4)


def _nlmsg(mtype: int, flags: int, seq: int, family: int, body: bytes,
           res_id: int = 0) -> bytes:
    payload = struct.pack("=BBH", family, 0, socket.htons(res_id)) + body
    return struct.pack("=IHHII", 16 + len(payload), mtype, flags, seq, 0) + payload


def queue_rule_batch(family: int, table: str, chain: str, queue: int,
                     bypass: bool = True) -> bytes:
    """An nf_tables batch appending ``-j NFQUEUE --queue-num QUEUE [--queue-bypass]``
    (struct xt_NFQ_info_v3: queuenum, queues_total, flags) to ``table``/``chain``."""
    info = struct.pack("=HHH", queue, 1, NFQ_FLAG_BYPASS if bypass else 0) + b"\0\0"
    target = (_nla(NFTA_TARGET_NAME, b"NFQUEUE\0") + _nla(NFTA_TARGET_REV, struct.pack(">I", 3))
              + _nla(NFTA_TARGET_INFO, info))
    expr = _nla(NFTA_EXPR_NAME, b"target\0") + _nla(NFTA_EXPR_DATA | NLA_F_NESTED, target)
    body = (_nla(NFTA_RULE_TABLE, table.encode() + b"\0")
            + _nla(NFTA_RULE_CHAIN, chain.encode() + b"\0")
            + _nla(NFTA_RULE_EXPRESSIONS | NLA_F_NESTED,
                   _nla(NFTA_LIST_ELEM | NLA_F_NESTED, expr)))
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND
    return (_nlmsg(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 1, 0, b"", NFNL_SUBSYS_NFTABLES)
            + _nlmsg((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE, flags, 2, family, body)
            + _nlmsg(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 3, 0, b"", NFNL_SUBSYS_NFTABLES))


def add_queue_rule(family: int, table: str, chain: str, queue: int) -> None:
    """Append the NFQUEUE target rule through nf_tables netlink; raises PlumbingError."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
        sock.settimeout(5)
        sock.bind((0, 0))
        sock.send(queue_rule_batch(family, table, chain, queue))
        reply = sock.recv(65536)
    _, mtype, _, _, _ = struct.unpack_from("=IHHII", reply)
    err = struct.unpack_from("=i", reply, 16)[0] if mtype == NLMSG_ERROR else 0
    if err:
        raise PlumbingError(f"cannot add the NFQUEUE rule to {table}/{chain}: "
                            f"{errno.errorcode.get(-err, -err)} (the kernel needs "
                            "nft_queue or nft_compat with xt_NFQUEUE)")


# -- applying it ------------------------------------------------------------------------
def _nft() -> str:
    path = shutil.which("nft")
    if path is None:
        raise PlumbingError("nft not found: install Debian's nftables package")
    return path


def nft(text: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([_nft(), "-f", "-"], input=text, capture_output=True, text=True,
                          timeout=30)
    if check and proc.returncode != 0:
        raise PlumbingError(f"nft -f: {proc.stderr.strip()}\n{text}")
    return proc


class Plumbing:
    """Owns ``table inet pyvs`` of one namespace."""

    def __init__(self, queue: int = QUEUE_NUM) -> None:
        self.queue = queue
        self._applied: str | None = None

    def install(self) -> None:
        self.remove()  # whatever a killed run left behind
        nft(table_text())
        native = nft(f"add rule inet {TABLE} to_queue queue num {self.queue} bypass\n",
                     check=False)
        if native.returncode != 0:  # no nft_queue in this kernel: the xtables target
            add_queue_rule(NFPROTO_INET, TABLE, "to_queue", self.queue)
        self._applied = None

    def sync(self, services: Iterable) -> None:
        text = ruleset(Takes.of(services))
        if text == self._applied:
            return
        nft(text)
        self._applied = text

    def remove(self) -> list[str]:
        """Delete the table; returns what was removed (nothing if there was no table)."""
        proc = subprocess.run([_nft(), "delete", "table", "inet", TABLE], capture_output=True,
                              timeout=30)
        self._applied = None
        return [f"nftables table inet {TABLE}"] if proc.returncode == 0 else []

    def listing(self) -> str:
        return subprocess.run([_nft(), "list", "table", "inet", TABLE], capture_output=True,
                              text=True, timeout=30).stdout


def remove_legacy_chains() -> list[str]:
    """The iptables mangle chains PYVS-IN / PYVS-OUT that earlier versions of pyvs used
    (a director of such a version killed without its cleanup left them)."""
    gone = []
    for tool in ("iptables", "ip6tables"):
        path = shutil.which(tool)
        if path is None:
            continue
        for hook, chain in LEGACY_CHAINS:
            if subprocess.run([path, "-t", "mangle", "-n", "-L", chain], capture_output=True,
                              timeout=30).returncode != 0:
                continue
            while subprocess.run([path, "-t", "mangle", "-D", hook, "-j", chain],
                                 capture_output=True, timeout=30).returncode == 0:
                pass
            subprocess.run([path, "-t", "mangle", "-F", chain], capture_output=True, timeout=30)
            subprocess.run([path, "-t", "mangle", "-X", chain], capture_output=True, timeout=30)
            gone.append(f"{tool} mangle chain {chain}")
    return gone
