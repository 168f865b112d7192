"""The XDP programs pyvs puts on interfaces, and the maps that drive them.

  * ``Steering``: the program that redirects exactly the frames a fast port takes
    (engine/takes.py ``Takes.fast_kind``) into the interface's AF_XDP socket
    (engine/io/xsk.py) and passes everything else to the kernel.  Its ``targets`` map
    (``targets``) holds the model's fast keys: TCP/UDP to a virtual service addr:port
    (port 0: any port), TCP/UDP from a NAT real server addr:port, taken with a TTL /
    hop limit above 1; the program itself checks what the model asks of a header
    (IPv4 that netfilter accepts, never a non-first fragment, IPv6 with TCP/UDP right
    after the fixed header, ports inside the frame); the ``xsks`` map holds the socket.
  * ``SegmentationGuard`` / the pass-through program: keeps local senders' offload
    super-frames away (see XdpAttachments).
  * ``detach_stale``: what a director killed without its cleanup left behind.

The programs are assembled by engine/io/bpf.py; attaching and detaching go through
rtnetlink (pyroute2).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct

from pyvs.engine.io import bpf
from pyvs.engine.io.xsk import XdpError, XskSocket
from pyvs.engine.takes import Takes

log = logging.getLogger("pyvs.xdp")

XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE = 4, 2
PROGRAM_NAME = "pyvs"  # how a left-over program is recognised (detach_stale)

KEY = struct.Struct("<BBHBxxx16s")  # kind, protocol, port (network order), family, address
KIND_VIP, KIND_REAL = 1, 2
MAX_QUEUES = 64  # entries of an interface's xsks map: receive queues 0..63


def target_key(kind: int, protocol: int, addr: bytes, port: int) -> bytes:
    """The targets-map key of (VIP or real server, protocol, addr, port); ``addr`` is
    4 or 16 bytes.  The family is part of the key: 198.18.0.1 padded with zeros
    would otherwise be the same key as the IPv6 address c612:1::."""
    return KEY.pack(kind, protocol, socket.htons(port), 4 if len(addr) == 4 else 6,
                    addr.ljust(16, b"\0"))


def targets(takes: Takes) -> set[bytes]:
    """The targets-map keys of the model's fast keys."""
    requests, replies = takes.fast_targets()
    return ({target_key(KIND_VIP, p, a, port) for p, a, port in requests}
            | {target_key(KIND_REAL, p, a, port) for p, a, port in replies})


def steer_program(targets_fd: int, xsks_fd: int) -> bytes:
    """XDP: redirect the frames pyvs serves to the queue's AF_XDP socket, pass the rest.

    Key A (fp-24) is (VIP, protocol, destination port), key B (fp-48) is (real
    server, protocol, source port); each is looked up as is and with port 0."""
    a = bpf.Asm()
    A, B = -24, -48
    a.alu_reg("=", 6, 1)  # r6 = ctx
    a.ldx(4, 2, 6, 0)  # r2 = data
    a.ldx(4, 3, 6, 4)  # r3 = data_end
    for off in (A, A + 8, A + 16, B, B + 8, B + 16):
        a.st(8, 10, off, 0)
    a.alu_reg("=", 4, 2)
    a.alu("+", 4, 14)
    a.jmp_reg(">", 4, 3, "pass")
    a.ldx(2, 5, 2, 12)  # ethertype, network order read little-endian
    a.jmp("==", 5, 0x0008, "v4")
    a.jmp("==", 5, 0xDD86, "v6")
    a.goto("pass")

    a.label("v4")
    a.alu_reg("=", 4, 2)
    a.alu("+", 4, 34)
    a.jmp_reg(">", 4, 3, "pass")
    a.ldx(1, 5, 2, 14)
    a.alu_reg("=", 7, 5)
    a.alu("&", 7, 0xF0)
    a.jmp("!=", 7, 0x40, "pass")
    a.alu("&", 5, 0x0F)
    a.alu("<<", 5, 2)
    a.jmp("<", 5, 20, "pass")
    a.ldx(2, 7, 2, 20)
    a.alu("&", 7, 0xFF1F)  # fragment offset
    a.jmp("!=", 7, 0, "pass")
    big_endian_u16(a, 7, 16)  # total length: not below the header, not beyond the frame
    a.jmp_reg("<", 7, 5, "pass")
    a.alu_reg("=", 8, 2)
    a.alu_reg("+", 8, 7)
    a.alu("+", 8, 14)
    a.jmp_reg(">", 8, 3, "pass")
    a.ldx(1, 9, 2, 22)  # r9 = TTL
    a.ldx(1, 7, 2, 23)  # r7 = protocol
    a.st(1, 10, A + 4, 4)  # family
    a.st(1, 10, B + 4, 4)
    a.ldx(4, 8, 2, 30)
    a.stx(4, 10, A + 8, 8)  # daddr -> key A
    a.ldx(4, 8, 2, 26)
    a.stx(4, 10, B + 8, 8)  # saddr -> key B
    a.alu_reg("=", 4, 2)
    a.alu_reg("+", 4, 5)
    a.alu("+", 4, 14)  # r4 = transport header
    a.alu_reg("=", 8, 4)
    a.alu("+", 8, 4)
    a.jmp_reg(">", 8, 3, "pass")
    a.goto("ports")

    a.label("v6")
    a.alu_reg("=", 4, 2)
    a.alu("+", 4, 58)
    a.jmp_reg(">", 4, 3, "pass")
    a.ldx(1, 5, 2, 14)
    a.alu("&", 5, 0xF0)
    a.jmp("!=", 5, 0x60, "pass")
    big_endian_u16(a, 7, 18)  # payload length: within the frame
    a.alu_reg("=", 8, 2)
    a.alu_reg("+", 8, 7)
    a.alu("+", 8, 54)
    a.jmp_reg(">", 8, 3, "pass")
    a.ldx(1, 7, 2, 20)  # next header
    a.ldx(1, 9, 2, 21)  # hop limit
    a.st(1, 10, A + 4, 6)  # family
    a.st(1, 10, B + 4, 6)
    for i in range(4):
        a.ldx(4, 8, 2, 38 + 4 * i)
        a.stx(4, 10, A + 8 + 4 * i, 8)
        a.ldx(4, 8, 2, 22 + 4 * i)
        a.stx(4, 10, B + 8 + 4 * i, 8)
    a.alu_reg("=", 4, 2)
    a.alu("+", 4, 54)

    a.label("ports")  # r4 = transport header (4 bytes checked), r7 = protocol, r9 = TTL
    a.jmp("==", 7, 6, "l4")
    a.jmp("!=", 7, 17, "pass")
    a.label("l4")
    a.stx(1, 10, A + 1, 7)
    a.stx(1, 10, B + 1, 7)
    a.ldx(2, 8, 4, 0)
    a.stx(2, 10, B + 2, 8)  # source port -> key B
    a.ldx(2, 8, 4, 2)
    a.stx(2, 10, A + 2, 8)  # destination port -> key A
    a.st(1, 10, A, KIND_VIP)
    a.st(1, 10, B, KIND_REAL)

    def lookup(key: int) -> None:
        a.ld_map(1, targets_fd)
        a.alu_reg("=", 2, 10)
        a.alu("+", 2, key)
        a.call(bpf.FN_map_lookup_elem)
        a.jmp("!=", 0, 0, "redirect")

    lookup(A)
    a.st(2, 10, A + 2, 0)
    lookup(A)
    a.jmp("<=", 9, 1, "pass")  # the kernel answers Time Exceeded itself
    lookup(B)
    a.st(2, 10, B + 2, 0)
    lookup(B)
    a.goto("pass")

    a.label("redirect")
    a.ld_map(1, xsks_fd)
    a.ldx(4, 2, 6, 16)  # ctx->rx_queue_index
    a.alu("=", 3, bpf.XDP_PASS)  # no socket on this queue: the kernel has it
    a.call(bpf.FN_redirect_map)
    a.exit()
    a.label("pass")
    a.alu("=", 0, bpf.XDP_PASS)
    a.exit()
    return a.assemble()


def big_endian_u16(a: bpf.Asm, dst: int, off: int) -> None:
    """``dst`` = the big-endian 16-bit field at packet offset ``off`` (r2 = data, r8
    clobbered; the caller has checked the bytes are there)."""
    a.ldx(1, dst, 2, off)
    a.alu("<<", dst, 8)
    a.ldx(1, 8, 2, off + 1)
    a.alu_reg("|", dst, 8)


def pass_program() -> bytes:
    a = bpf.Asm()
    a.alu("=", 0, bpf.XDP_PASS)
    a.exit()
    return a.assemble()


def _veth_ports(ipr, bridge: int) -> list[int]:
    """Interface indexes of the veth ports of ``bridge`` (none if it is not a bridge)."""
    out = []
    for link in ipr.get_links():
        if link.get_attr("IFLA_MASTER") != bridge:
            continue
        info = link.get_attr("IFLA_LINKINFO")
        if info is not None and info.get_attr("IFLA_INFO_KIND") == "veth":
            out.append(link["index"])
    return out


def _is_veth(ipr, idx: int) -> bool:
    info = ipr.get_links(idx)[0].get_attr("IFLA_LINKINFO")
    return info is not None and info.get_attr("IFLA_INFO_KIND") == "veth"


class XdpAttachments:
    """XDP programs pyvs attached, detached again in reverse order by ``detach``.

    Also the pass-through program that keeps segmentation-offload super-frames away: a
    veth whose peer runs XDP stops offering TSO/GSO (veth_fix_features), so the sender
    on the other side segments before sending, and every frame fits one ring frame or
    UMEM chunk.  The XDP port puts it on the veth ports of a bridge it serves (ports
    present at start; native XDP on a port must come before generic XDP on its bridge,
    which the kernel otherwise refuses with EEXIST); the ring port, on a veth or a
    bridge's veth ports once a super-frame arrived there (SegmentationGuard)."""

    def __init__(self) -> None:
        self.attached: list[int] = []
        self.passthrough = -1

    def _attach(self, ipr, idx: int, prog: int, name: str, native_only: bool = False) -> str:
        last: Exception | None = None
        modes = ((XDP_FLAGS_DRV_MODE, "native"),) if native_only else (
            (XDP_FLAGS_DRV_MODE, "native"), (XDP_FLAGS_SKB_MODE, "generic"))
        for flags, mode in modes:
            try:
                ipr.link("set", index=idx, xdp={"attrs": [
                    ("IFLA_XDP_FD", prog), ("IFLA_XDP_FLAGS", flags)]})
            except Exception as err:  # noqa: BLE001 - try the next mode
                last = err
                continue
            self.attached.append(idx)
            return mode
        raise XdpError(errno.EOPNOTSUPP, f"cannot attach XDP to {name}: {last}")

    def _pass_through(self, ipr, idx: int) -> None:
        if self.passthrough < 0:
            self.passthrough = bpf.load_program(bpf.PROG_XDP, pass_program(), PROGRAM_NAME)
        try:
            self._attach(ipr, idx, self.passthrough, str(idx), native_only=True)
        except XdpError as err:  # the device keeps working, super-frames and all
            log.info("no pass-through XDP on interface %d: %s", idx, err)

    def _bridge_ports(self, ipr, idx: int) -> None:
        for port in _veth_ports(ipr, idx):
            self._pass_through(ipr, port)

    def detach(self) -> None:
        if not self.attached:
            return
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            for idx in reversed(self.attached):  # bridges before their ports
                for flags in (XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE):
                    try:
                        ipr.link("set", index=idx, xdp={"attrs": [
                            ("IFLA_XDP_FD", -1), ("IFLA_XDP_FLAGS", flags)]})
                    except Exception:  # noqa: BLE001,S110 - the device may be gone
                        pass
        self.attached = []

    def close(self) -> None:
        self.detach()
        if self.passthrough >= 0:
            os.close(self.passthrough)
            self.passthrough = -1


class SegmentationGuard(XdpAttachments):
    """Ring mode: pass-through programs on a veth interface or a bridge's veth ports,
    added for an interface once a super-frame has been seen there (``add``)."""

    def __init__(self) -> None:
        super().__init__()
        self.guarded: set[str] = set()

    def add(self, name: str) -> None:
        if name in self.guarded:
            return
        self.guarded.add(name)
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            idx = socket.if_nametoindex(name)
            self._bridge_ports(ipr, idx)
            if _is_veth(ipr, idx):
                self._pass_through(ipr, idx)
        log.info("%s: local senders handed over segmentation-offload super-frames; their "
                 "veths now get a pass-through XDP program, so they segment first", name)


class Steering(XdpAttachments):
    """The XDP program on every director interface, and its maps.  One ``targets`` map
    is shared; each interface has its own program and ``xsks`` map (AF_XDP sockets are
    indexed by receive queue, and every interface has a queue 0).  With ``--workers``
    the maps and programs are made before the fork: each worker puts its own queues'
    sockets into the maps, process 0 attaches and syncs the targets.  ``sync`` makes the
    targets match the services; ``close`` detaches the programs everywhere."""

    def __init__(self, interfaces: list[str], max_targets: int = 65536) -> None:
        super().__init__()
        self.interfaces = list(interfaces)
        self.targets = bpf.Map(bpf.MAP_HASH, KEY.size, 4, max_targets)
        self.xsks: dict[str, bpf.Map] = {}
        self.progs: dict[str, int] = {}
        self.mode = ""
        self.keys: set[bytes] = set()
        try:
            for name in self.interfaces:
                self.xsks[name] = m = bpf.Map(bpf.MAP_XSKMAP, 4, 4, MAX_QUEUES)
                self.progs[name] = bpf.load_program(
                    bpf.PROG_XDP, steer_program(self.targets.fd, m.fd), PROGRAM_NAME)
        except BaseException:
            self.close()
            raise

    def attach(self) -> None:
        """Native (driver) mode where the driver has it (veth does), generic otherwise
        (a bridge: its veth ports get the pass-through program first).  A native
        program on a veth already keeps its peer from sending super-frames."""
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            for name in self.interfaces:
                idx = socket.if_nametoindex(name)
                self._bridge_ports(ipr, idx)
                self.mode = self._attach(ipr, idx, self.progs[name], name)

    def add_socket(self, xsk: XskSocket) -> None:
        """The program redirects frames of ``xsk``'s receive queue to it (the map is
        indexed by ctx->rx_queue_index; a queue without a socket passes to the kernel)."""
        self.xsks[xsk.ifname].update(struct.pack("<I", xsk.queue),
                                     struct.pack("<I", xsk.fileno()))

    def sync(self, targets: set[bytes]) -> None:
        for k in targets - self.keys:
            self.targets.update(k, b"\1\0\0\0")
        for k in self.keys - targets:
            self.targets.delete(k)
        self.keys = set(targets)

    def close(self) -> None:
        super().close()
        for fd in self.progs.values():
            os.close(fd)
        self.progs = {}
        for m in self.xsks.values():
            m.close()
        self.xsks = {}
        self.targets.close()


def detach_stale() -> list[str]:
    """Detach XDP programs named ``pyvs`` from every interface of this namespace: what a
    director killed without its cleanup left behind.  Returns the interfaces."""
    from pyroute2 import IPRoute

    found = []
    with IPRoute() as ipr:
        for link in ipr.get_links():
            xdp = link.get_attr("IFLA_XDP")
            if not xdp:
                continue
            prog_id = xdp.get_attr("IFLA_XDP_PROG_ID")
            if not prog_id or bpf.program_name(prog_id) != PROGRAM_NAME:
                continue
            generic = xdp.get_attr("IFLA_XDP_ATTACHED") in (2, "xdpgeneric")
            found.append((not generic, link["index"], link.get_attr("IFLA_IFNAME")))
        for native, idx, _name in sorted(found):  # generic (bridges) before their ports
            ipr.link("set", index=idx, xdp={"attrs": [
                ("IFLA_XDP_FD", -1),
                ("IFLA_XDP_FLAGS", XDP_FLAGS_DRV_MODE if native else XDP_FLAGS_SKB_MODE)]})
    return [name for _n, _i, name in sorted(found)]
