"""`pyvs realserver`: the real-server side of tunnel mode, in userspace.

On a host without the ``ipip`` module (no ``tunl0``), this does what the kernel's
tunnel device does for an LVS-TUN real server: it receives the director's
encapsulated packets addressed to this host and hands the inner packet to the local
stack as if it had arrived on a tunnel interface.

* In: raw sockets for IPPROTO_IPIP (4), IPPROTO_IPV6 (41) and IPPROTO_GRE (47) over
  IPv4 and IPv6 (the kernel gives raw sockets every locally delivered packet of their
  protocol, after reassembly; a raw socket taking it also stops the "protocol
  unreachable" reply); with ``--gue-port N`` also a UDP socket on port N for GUE
  (version 0, no control messages).  GRE is read as gre_parse_header() reads it:
  version 0 without routing, checksum verified when present, key and sequence number
  skipped, protocol 0x0800 (IPv4) or 0x86DD (IPv6), as the kernel's fallback device
  gre0 would take it.
* Out: the inner packet is written to a TUN device (``IFF_TUN | IFF_NO_PI``) that this
  program creates and that disappears when it exits.  The kernel receives it on that
  device, so the host must accept it as on ``tunl0``: the VIP on ``lo``,
  ``rp_filter`` off (this program sets it off on its own device; ``all`` is the
  administrator's, as for tunl0), ``arp_ignore=1`` / ``arp_announce=2`` as in DR.
* Replies leave through the normal routing, straight to the client.

SIGTERM / SIGINT stop it; the TUN device is removed on the way out.
"""

from __future__ import annotations

import fcntl
import logging
import os
import selectors
import signal
import socket
import struct
from collections import Counter
from pathlib import Path

from pyvs.engine.csum import checksum

log = logging.getLogger("pyvs.realserver")

IPPROTO_IPIP = 4
IPPROTO_IPV6 = 41
IPPROTO_GRE = 47
GRE_CSUM, GRE_ROUTING, GRE_KEY, GRE_SEQ, GRE_VERSION = 0x8000, 0x4000, 0x2000, 0x1000, 0x0007
GRE_INNER = {0x0800: IPPROTO_IPIP, 0x86DD: IPPROTO_IPV6}  # GRE protocol -> inner IP version
DRAIN = 256  # packets read per readiness event, at most
TUNSETIFF = 0x400454CA  # include/uapi/linux/if_tun.h
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
TUN_DEVICE = "/dev/net/tun"


class TunError(RuntimeError):
    """The TUN device cannot be made (the message says what an administrator can do)."""


def open_tun(name: str, mtu: int) -> tuple[int, str]:
    """A TUN device (IFF_TUN | IFF_NO_PI), up, with ``mtu``: (descriptor, its name).
    It is not persistent: it goes away when the descriptor is closed."""
    try:
        fd = os.open(TUN_DEVICE, os.O_RDWR)
    except PermissionError:
        raise TunError(f"cannot open {TUN_DEVICE}: permission denied (an administrator "
                       f"grants a user access with `setfacl -m u:USER:rw {TUN_DEVICE}`)"
                       ) from None
    except FileNotFoundError:
        raise TunError(f"{TUN_DEVICE} does not exist (the kernel needs CONFIG_TUN)") from None
    try:
        ifr = fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
        made = ifr[:16].rstrip(b"\0").decode()
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            index = ipr.link_lookup(ifname=made)[0]
            ipr.link("set", index=index, mtu=mtu, state="up")
    except BaseException:
        os.close(fd)
        raise
    return fd, made


def gre_payload(data: bytes) -> tuple[int, bytes] | None:
    """(inner protocol 4 or 41, the packet it carries) of a GRE packet, or None when
    gre_parse_header() would refuse it or its protocol is not IPv4 / IPv6."""
    if len(data) < 4:
        return None
    flags, ether = struct.unpack_from("!HH", data)
    if flags & (GRE_VERSION | GRE_ROUTING):
        return None
    hlen = 4 + 4 * sum(1 for bit in (GRE_CSUM, GRE_KEY, GRE_SEQ) if flags & bit)
    if len(data) < hlen or ether not in GRE_INNER:
        return None
    if flags & GRE_CSUM and checksum(data) != 0:
        return None  # the kernel counts a checksum error and drops it
    return GRE_INNER[ether], data[hlen:]


def decapsulate(data: bytes, outer_included: bool, proto: int) -> bytes | None:
    """The inner IP packet of one received tunnel packet, or None if it is not one.

    ``outer_included``: IPv4 raw sockets deliver the outer header too; IPv6 raw sockets
    and UDP (GUE) sockets deliver only the payload.  ``proto`` is 4, 41, 47 (GRE) or
    17 (GUE)."""
    if outer_included:
        if len(data) < 20:
            return None
        data = data[(data[0] & 0x0F) << 2 :]
    if proto == IPPROTO_GRE:
        gre = gre_payload(data)
        if gre is None:
            return None
        proto, data = gre
    elif proto == socket.IPPROTO_UDP:  # GUE payload: 4-byte header + options
        if len(data) < 4 or data[0] >> 6 != 0 or data[0] & 0x20:
            return None  # not version 0, or a control message
        hlen = (data[0] & 0x1F) << 2
        proto = data[1]
        data = data[4 + hlen :]
    if not data:
        return None
    version = data[0] >> 4
    if proto == IPPROTO_IPIP and version == 4 and len(data) >= 20:
        total = struct.unpack_from("!H", data, 2)[0]
    elif proto == IPPROTO_IPV6 and version == 6 and len(data) >= 40:
        total = 40 + struct.unpack_from("!H", data, 4)[0]
    else:
        return None
    if total > len(data):
        return None
    return data[:total]


class RealServer:
    def __init__(self, tun_name: str = "pyvstun0", mtu: int = 1480, gue_port: int = 0,
                 ready_file: str | None = None) -> None:  # fmt: skip
        self.tun_name = tun_name
        self.mtu = mtu
        self.gue_port = gue_port
        self.ready_file = ready_file
        self.running = False
        self.counters: Counter[str] = Counter()

    def _open_sockets(self) -> list[tuple[socket.socket, bool, int]]:
        socks = []
        for fam, outer in ((socket.AF_INET, True), (socket.AF_INET6, False)):
            for proto in (IPPROTO_IPIP, IPPROTO_IPV6, IPPROTO_GRE):
                try:
                    s = socket.socket(fam, socket.SOCK_RAW, proto)
                except OSError as err:
                    log.warning("no raw socket for protocol %d (family %d): %s", proto, fam, err)
                    continue
                s.setblocking(False)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                socks.append((s, outer, proto))
            if self.gue_port:
                s = socket.socket(fam, socket.SOCK_DGRAM)
                if fam == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", self.gue_port))
                s.setblocking(False)
                socks.append((s, False, socket.IPPROTO_UDP))
        return socks

    def _set_rp_filter(self) -> None:
        path = Path(f"/proc/sys/net/ipv4/conf/{self.tun_name}/rp_filter")
        try:
            path.write_text("0\n")
            all_rp = Path("/proc/sys/net/ipv4/conf/all/rp_filter").read_text().strip()
            if all_rp != "0":
                log.warning("net.ipv4.conf.all.rp_filter=%s: decapsulated packets from "
                            "clients may be dropped (set it to 0, as for tunl0)", all_rp)
        except OSError as err:
            log.warning("could not turn rp_filter off on %s: %s", self.tun_name, err)

    def run(self) -> int:
        try:
            fd, tun_name = open_tun(self.tun_name, self.mtu)
        except (TunError, OSError) as err:
            log.error("%s", err)
            return 1
        socks: list[tuple[socket.socket, bool, int]] = []
        sel = selectors.DefaultSelector()

        def stop(signum, frame):  # noqa: ARG001
            self.running = False

        old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._set_rp_filter()
            socks = self._open_sockets()
            for entry in socks:
                sel.register(entry[0], selectors.EVENT_READ, entry)
            self.running = True
            if self.ready_file:
                Path(self.ready_file).write_text(f"{os.getpid()} {tun_name}\n")
            log.info("pyvs realserver: %s up (mtu %d), %d sockets", tun_name, self.mtu,
                     len(socks))
            counters = self.counters
            while self.running:
                for key, _ in sel.select(0.5):
                    s, outer, proto = key.data
                    for _ in range(DRAIN):
                        try:
                            data = s.recv(65535)
                        except (BlockingIOError, InterruptedError):
                            break
                        inner = decapsulate(data, outer, proto)
                        if inner is None:
                            counters["not-tunnel"] += 1
                            continue
                        try:
                            os.write(fd, inner)
                            counters["decapsulated"] += 1
                        except OSError as err:
                            counters["tun-write-error"] += 1
                            log.debug("tun write: %s", err)
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
            sel.close()
            for s, _, _ in socks:
                s.close()
            os.close(fd)  # not persistent: the device goes away with the descriptor
            log.info("pyvs realserver stopped: %s", dict(self.counters))
        return 0
