"""Small, explicit helpers for network namespaces, links, addresses, routes and sysctls.

Links, addresses, routes and namespaces are handled with pyroute2 (netlink, no
subprocess).  Two things go through subprocess, and only here:

* sysctls, because ``/proc/sys/net`` shows the values of the *reading process's*
  namespace, so they must be written from inside the namespace
  (``ip netns exec NS sysctl -w``);
* running programs inside a namespace (``run`` / ``popen``), through
  ``ip netns exec``, exactly as an administrator would.

Safety rules the lab relies on (the address plan: README.md, "Labs"):

* veth pairs are created *inside* a lab namespace with the peer placed directly
  in another lab namespace, so no interface ever appears in the host namespace;
* only 198.18.0.0/15 and 2001:db8::/32 addresses are accepted by ``add_addr``
  and ``add_route`` (``check_lab_prefix``);
* every subprocess has a timeout.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence

from pyroute2 import NetNS, netns

IP = "ip"
DEFAULT_TIMEOUT = 10.0

LAB_NET4 = ipaddress.ip_network("198.18.0.0/15")
LAB_NET6 = ipaddress.ip_network("2001:db8::/32")

IFA_F_NODAD = 0x02  # linux/if_addr.h: skip IPv6 duplicate address detection


class LabError(RuntimeError):
    """A lab could not be built or torn down."""


# --------------------------------------------------------------------------- checks


def check_lab_prefix(net: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """Refuse anything outside the lab ranges (198.18.0.0/15, 2001:db8::/32)."""
    n = ipaddress.ip_network(net, strict=False)
    lab = LAB_NET4 if n.version == 4 else LAB_NET6
    if not n.subnet_of(lab):  # type: ignore[arg-type]
        raise LabError(f"{net} is outside the lab range {lab}")
    return n


def is_root() -> bool:
    return os.geteuid() == 0


# ----------------------------------------------------------------------- namespaces


def list_ns() -> list[str]:
    """Names of the named network namespaces (``ip netns list``)."""
    return sorted(netns.listnetns())


def ns_exists(name: str) -> bool:
    return name in netns.listnetns()


def create_ns(name: str) -> None:
    """Create a named namespace and bring its loopback up.  Fails if it exists."""
    if ns_exists(name):
        raise LabError(f"network namespace {name} already exists")
    netns.create(name)
    with NetNS(name) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


def ns_pids(name: str) -> list[int]:
    """Pids of processes living in namespace ``name`` (like ``ip netns pids``)."""
    try:
        target = os.stat(f"/run/netns/{name}")
    except FileNotFoundError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            pids.append(int(entry))
    return pids


def kill_ns_pids(name: str, grace: float = 2.0) -> None:
    """SIGTERM every process in the namespace, then SIGKILL what remains (bounded)."""
    pids = ns_pids(name)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            pids = [p for p in pids if _alive(p)]
            if not pids:
                return
            time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def delete_ns(name: str) -> None:
    """Kill the namespace's processes, then delete it.  Missing namespaces are fine."""
    if not ns_exists(name):
        return
    kill_ns_pids(name)
    try:
        netns.remove(name)
    except FileNotFoundError:
        pass
    if ns_exists(name):  # pyroute2 failed silently: fall back to iproute2
        subprocess.run([IP, "netns", "del", name], timeout=DEFAULT_TIMEOUT, check=False)


# -------------------------------------------------------------------- links, addrs


def _index(ipr: NetNS, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise LabError(f"no interface {ifname}")
    return found[0]


def add_veth(ns: str, ifname: str, peer_ns: str, peer_ifname: str, queues: int = 1) -> None:
    """veth pair with one end ``ifname`` in ``ns`` and the other ``peer_ifname`` in
    ``peer_ns`` (``ip -n NS link add IF numtxqueues Q numrxqueues Q type veth peer name
    PEER numtxqueues Q numrxqueues Q netns PEER_NS``).  Both ends are brought up.
    ``queues`` > 1: a multi-queue pair (the sender's transmit queue is the receiver's
    receive queue, veth_xmit), as ``--workers`` with ``--io xdp`` needs."""
    q = {} if queues == 1 else {"num_tx_queues": queues, "num_rx_queues": queues}
    with NetNS(ns) as ipr:
        ipr.link(
            "add",
            ifname=ifname,
            kind="veth",
            peer={"ifname": peer_ifname, "net_ns_fd": peer_ns, **q},
            **q,
        )
        ipr.link("set", index=_index(ipr, ifname), state="up")
    with NetNS(peer_ns) as ipr:
        ipr.link("set", index=_index(ipr, peer_ifname), state="up")


def add_bridge(ns: str, ifname: str, queues: int = 1) -> None:
    """A plain learning bridge: STP off, no forward delay, no multicast snooping;
    ``queues`` receive and transmit queues (a frame keeps the receive queue its port
    recorded, so generic XDP on the bridge sees the port's queue)."""
    q = {} if queues == 1 else {"num_tx_queues": queues, "num_rx_queues": queues}
    with NetNS(ns) as ipr:
        ipr.link(
            "add",
            ifname=ifname,
            kind="bridge",
            **q,
            br_stp_state=0,
            br_forward_delay=0,
            br_mcast_snooping=0,
        )
        ipr.link("set", index=_index(ipr, ifname), state="up")


def set_master(ns: str, ifname: str, master: str) -> None:
    """Enslave ``ifname`` to bridge ``master`` (``ip link set IF master BR``)."""
    with NetNS(ns) as ipr:
        ipr.link("set", index=_index(ipr, ifname), master=_index(ipr, master))


def add_addr(ns: str, ifname: str, cidr: str) -> None:
    """``ip -n NS addr add CIDR dev IF`` (IPv6 with ``nodad``: usable at once)."""
    iface = ipaddress.ip_interface(cidr)
    check_lab_prefix(str(iface.network))
    kw = {}
    if iface.version == 6:
        kw["flags"] = IFA_F_NODAD
    with NetNS(ns) as ipr:
        ipr.addr(
            "add",
            index=_index(ipr, ifname),
            address=str(iface.ip),
            prefixlen=iface.network.prefixlen,
            **kw,
        )


def add_route(ns: str, dst: str, via: str) -> None:
    """``ip -n NS route add DST via GW`` (DST ``default`` allowed; GW must be a lab
    address, so a default route can only ever point into the lab)."""
    gw = ipaddress.ip_address(via)
    check_lab_prefix(f"{gw}/{gw.max_prefixlen}")
    if dst != "default":
        check_lab_prefix(dst)
    family = 10 if gw.version == 6 else 2
    with NetNS(ns) as ipr:
        ipr.route("add", dst=dst, gateway=str(gw), family=family)


def add_onlink_route(ns: str, dst: str, ifname: str) -> None:
    """``ip -n NS route add DST dev IF`` (a directly connected network, no gateway)."""
    n = check_lab_prefix(dst)
    with NetNS(ns) as ipr:
        ipr.route("add", dst=str(n), oif=_index(ipr, ifname), scope=253,
                  family=10 if n.version == 6 else 2)


def add_source_route(ns: str, src: str, via: str, table: int) -> None:
    """Policy routing: packets *from* ``src`` use table ``table`` whose default route is
    ``via`` (``ip rule add from SRC table T; ip route add default via GW table T``).
    Both addresses must be lab addresses."""
    s = ipaddress.ip_address(src)
    gw = ipaddress.ip_address(via)
    check_lab_prefix(f"{s}/{s.max_prefixlen}")
    check_lab_prefix(f"{gw}/{gw.max_prefixlen}")
    family = 10 if gw.version == 6 else 2
    with NetNS(ns) as ipr:
        ipr.rule("add", family=family, src=str(s), src_len=s.max_prefixlen, table=table,
                 priority=100)
        ipr.route("add", dst="default", gateway=str(gw), table=table, family=family)


def link_stats(ns: str) -> dict[str, dict[str, int]]:
    """Per-interface counters of a namespace: {ifname: {rx_bytes, rx_packets, tx_bytes,
    tx_packets}} (``ip -s link``)."""
    out = {}
    with NetNS(ns) as ipr:
        for link in ipr.get_links():
            st = link.get_attr("IFLA_STATS64") or {}
            out[link.get_attr("IFLA_IFNAME")] = {k: int(st.get(k, 0)) for k in (
                "rx_bytes", "rx_packets", "tx_bytes", "tx_packets")}
    return out


def addrs(ns: str, ifname: str | None = None) -> list[str]:
    """Addresses (``addr/prefixlen``) configured in a namespace (optionally one link)."""
    out = []
    with NetNS(ns) as ipr:
        kw = {"index": _index(ipr, ifname)} if ifname else {}
        for msg in ipr.get_addr(**kw):
            out.append(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
    return out


# ------------------------------------------------------------------ sysctl / exec


def sysctl(ns: str, settings: dict[str, str | int]) -> None:
    """Write sysctls inside ``ns`` (``ip netns exec NS sysctl -qw k=v ...``)."""
    if not settings:
        return
    argv = ["sysctl", "-q", "-w"] + [f"{k}={v}" for k, v in settings.items()]
    run(ns, argv, check=True, capture_output=True)


def exec_argv(ns: str, argv: Sequence[str]) -> list[str]:
    return [IP, "netns", "exec", ns, *argv]


def run(
    ns: str, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT, **kw
) -> subprocess.CompletedProcess:
    """``subprocess.run`` inside ``ns``; always bounded by ``timeout`` seconds.
    ``text=True`` by default; pass ``check=True`` to raise on failure."""
    kw.setdefault("text", True)
    return subprocess.run(exec_argv(ns, argv), timeout=timeout, **kw)


def popen(ns: str, argv: Sequence[str], **kw) -> subprocess.Popen:
    """``subprocess.Popen`` inside ``ns``.  ``ip netns exec`` execs the program, so the
    returned pid is the program's own pid (kill it by that id)."""
    return subprocess.Popen(exec_argv(ns, argv), **kw)


def delete_all(names: Iterable[str]) -> list[str]:
    """Delete namespaces, collecting errors instead of stopping at the first one."""
    errors = []
    for name in names:
        try:
            delete_ns(name)
        except Exception as e:  # noqa: BLE001 - teardown must go on
            errors.append(f"{name}: {e}")
    return errors
