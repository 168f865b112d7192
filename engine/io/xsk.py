"""AF_XDP sockets in copy mode, a shared UMEM, and the XDP program that steers into them.

Why: with AF_PACKET the forwarder's core pays for the kernel's socket receive work
(skb, tap, netdev ingress drop) of every frame, ~70 % of it at saturation
(perf-ceilings.md).  With XDP the frame is copied into our memory straight from the
driver's receive path, before any skb is built for the stack, on whichever CPU runs
that path (for veth: the sender's CPU), and an overloaded forwarder loses frames
there, cheaply, instead of in a receive livelock on its own core.

Pieces (names follow Documentation/networking/af_xdp.rst):
  * ``Umem``: one anonymous mapping of FRAME-sized chunks shared by every socket of
    the process, with a free list of chunk addresses;
  * ``XskSocket``: one AF_XDP socket per director interface (queue 0), each with its
    own fill / completion rings (shared UMEM across devices, Linux >= 5.10) and
    RX / TX rings -- a frame received on one interface is sent from the same chunk
    on another, never copied in user space;
  * ``Steering``: the XDP program (engine/io/bpf.py assembles it) and its two maps:
    ``targets`` holds exactly what the ring port's nftables rules match
    (engine/plumbing_ring.py): TCP/UDP to a virtual service addr:port (port 0: any
    port), TCP/UDP from a NAT real server addr:port with TTL / hop limit above 1,
    never a non-first fragment; ``xsks`` holds the sockets.  Everything else
    (ARP, ICMP, fwmark services, other traffic) is XDP_PASS: the kernel has it as
    if pyvs were not there.

Frames from local senders (veth) may carry CHECKSUM_PARTIAL: the L4 checksum field
holds only the pseudo-header sum.  XDP has no flag for it; ``partial_checksums``
recognises that value and the port completes those checksums (a false match on a
valid frame only recomputes the same correct checksum).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import mmap
import os
import socket
import struct

import numpy as np

from engine.io import bpf

log = logging.getLogger("pyvs.xdp")

AF_XDP = 44
SOL_XDP = 283
XDP_MMAP_OFFSETS, XDP_RX_RING, XDP_TX_RING, XDP_UMEM_REG = 1, 2, 3, 4
XDP_UMEM_FILL_RING, XDP_UMEM_COMPLETION_RING, XDP_STATISTICS = 5, 6, 7
XDP_MAX_TX_SKB_BUDGET = 9  # Linux 6.17: more than 32 frames per sendto in copy mode
XDP_SHARED_UMEM, XDP_COPY, XDP_USE_NEED_WAKEUP = 1, 2, 8
XDP_RING_NEED_WAKEUP = 1
PGOFF_RX, PGOFF_TX = 0, 0x80000000
PGOFF_FILL, PGOFF_COMP = 0x100000000, 0x180000000
XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE = 4, 2

FRAME = 2048
PROGRAM_NAME = "pyvs"  # how a left-over program is recognised (detach_stale)
RING = 4096  # entries in each ring (a power of two)
FRAMES = 16384  # chunks in the UMEM: 32 MiB

_libc = ctypes.CDLL(None, use_errno=True)
_sendto = _libc.sendto
_sendto.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                    ctypes.c_void_p, ctypes.c_uint)
_sendto.restype = ctypes.c_ssize_t
MSG_DONTWAIT = 0x40


class XdpError(OSError):
    pass


class Umem:
    """The frames every socket of this process receives into and sends from."""

    def __init__(self, frames: int = FRAMES) -> None:
        self.frames = frames
        self.mm = mmap.mmap(-1, frames * FRAME, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.arr = np.frombuffer(self.mm, dtype=np.uint8)
        self.base = ctypes.addressof(ctypes.c_char.from_buffer(self.mm))
        self.free = np.arange(frames, dtype=np.uint64) * FRAME  # a stack of chunk addresses
        self.nfree = frames

    def take(self, n: int) -> np.ndarray:
        n = min(n, self.nfree)
        self.nfree -= n
        return self.free[self.nfree:self.nfree + n]

    def give(self, addrs: np.ndarray) -> None:
        """Chunks back to the free list (any address inside a chunk names the chunk)."""
        n = len(addrs)
        if n:
            self.free[self.nfree:self.nfree + n] = addrs & ~np.uint64(FRAME - 1)
            self.nfree += n

    def close(self) -> None:
        self.arr = None
        try:
            self.mm.close()
        except BufferError:
            pass


class _Ring:
    """One single-producer single-consumer ring shared with the kernel."""

    def __init__(self, fd: int, pgoff: int, off: tuple[int, int, int, int], size: int,
                 desc_words: int) -> None:
        producer, consumer, desc, flags = off
        self.mm = mmap.mmap(fd, desc + size * 8 * desc_words, mmap.MAP_SHARED,
                            mmap.PROT_READ | mmap.PROT_WRITE, offset=pgoff)
        self.u32 = np.frombuffer(self.mm, dtype=np.uint32)
        self.p, self.c, self.f = producer // 4, consumer // 4, flags // 4
        self.desc = np.frombuffer(self.mm, dtype=np.uint64, offset=desc,
                                  count=size * desc_words).reshape(size, desc_words)
        self.size = size
        self.mask = size - 1

    @property
    def producer(self) -> int:
        return int(self.u32[self.p])

    @property
    def consumer(self) -> int:
        return int(self.u32[self.c])

    def need_wakeup(self) -> bool:
        return bool(self.u32[self.f] & XDP_RING_NEED_WAKEUP)

    def close(self) -> None:
        self.u32 = self.desc = None
        try:
            self.mm.close()
        except BufferError:
            pass


class XskSocket:
    """An AF_XDP socket on queue 0 of one interface, its four rings, and the UMEM."""

    def __init__(self, ifname: str, umem: Umem, first: XskSocket | None = None) -> None:
        self.ifname = ifname
        self.ifindex = socket.if_nametoindex(ifname)
        self.umem = umem
        self.sock = socket.socket(AF_XDP, socket.SOCK_RAW, 0)
        self.rings: list[_Ring] = []
        try:
            s = self.sock
            if first is None:
                s.setsockopt(SOL_XDP, XDP_UMEM_REG, struct.pack(
                    "<QQIIII", umem.base, umem.frames * FRAME, FRAME, 0, 0, 0))
            for opt in (XDP_UMEM_FILL_RING, XDP_UMEM_COMPLETION_RING, XDP_RX_RING,
                        XDP_TX_RING):
                s.setsockopt(SOL_XDP, opt, RING)
            try:
                s.setsockopt(SOL_XDP, XDP_MAX_TX_SKB_BUDGET, RING // 4)
            except OSError:
                pass
            offs = struct.unpack("<16Q", s.getsockopt(SOL_XDP, XDP_MMAP_OFFSETS, 128))
            rx, tx, fr, cr = (offs[i:i + 4] for i in range(0, 16, 4))
            fd = s.fileno()
            self.rx = _Ring(fd, PGOFF_RX, rx, RING, 2)
            self.tx = _Ring(fd, PGOFF_TX, tx, RING, 2)
            self.fill = _Ring(fd, PGOFF_FILL, fr, RING, 1)
            self.comp = _Ring(fd, PGOFF_COMP, cr, RING, 1)
            self.rings = [self.rx, self.tx, self.fill, self.comp]
            self.refill()  # the kernel needs chunks before the first frame arrives
            if first is None:
                addr = struct.pack("<HHIII", AF_XDP, XDP_COPY | XDP_USE_NEED_WAKEUP,
                                   self.ifindex, 0, 0)
            else:
                addr = struct.pack("<HHIII", AF_XDP, XDP_SHARED_UMEM, self.ifindex, 0,
                                   first.sock.fileno())
            r = _libc.bind(fd, ctypes.c_char_p(addr), len(addr))
            if r < 0:
                err = ctypes.get_errno()
                raise XdpError(err, f"AF_XDP bind on {ifname}: {os.strerror(err)}")
        except BaseException:
            self.close()
            raise
        self.sent = 0
        self.tx_full = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    # ---------------------------------------------------------------------- receive
    def receive(self, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """(UMEM addresses, lengths) of up to ``limit`` received frames, consumed."""
        rx = self.rx
        cons = int(rx.u32[rx.c])
        n = min((int(rx.u32[rx.p]) - cons) & 0xFFFFFFFF, limit)
        if n == 0:
            return _EMPTY, _EMPTY
        idx = (cons + np.arange(n, dtype=np.int64)) & rx.mask
        d = rx.desc[idx]
        rx.u32[rx.c] = (cons + n) & 0xFFFFFFFF
        return d[:, 0].copy(), (d[:, 1] & 0xFFFFFFFF).astype(np.int64)

    def refill(self) -> None:
        """Give the kernel as many free chunks as its fill ring has room for."""
        f = self.fill
        prod = int(f.u32[f.p])
        room = f.size - ((prod - int(f.u32[f.c])) & 0xFFFFFFFF)
        if room <= 0:
            return
        chunks = self.umem.take(room)
        n = len(chunks)
        if n:
            f.desc[(prod + np.arange(n, dtype=np.int64)) & f.mask, 0] = chunks
            f.u32[f.p] = (prod + n) & 0xFFFFFFFF

    # ---------------------------------------------------------------------- transmit
    def transmit(self, addrs: np.ndarray, lens: np.ndarray) -> int:
        """Queue frames (UMEM addresses) for sending; returns how many were queued (the
        rest is the caller's to give back)."""
        self.complete()
        tx = self.tx
        prod = int(tx.u32[tx.p])
        room = tx.size - ((prod - int(tx.u32[tx.c])) & 0xFFFFFFFF)
        n = min(room, len(addrs))
        if n < len(addrs):
            self.tx_full += len(addrs) - n
        if n:
            idx = (prod + np.arange(n, dtype=np.int64)) & tx.mask
            tx.desc[idx, 0] = addrs[:n]
            tx.desc[idx, 1] = lens[:n].astype(np.uint64)
            tx.u32[tx.p] = (prod + n) & 0xFFFFFFFF
            self.sent += n
            self.kick()
        return n

    def kick(self) -> None:
        """Copy mode sends only from sendto (up to the TX budget per call)."""
        fd = self.sock.fileno()
        tx = self.tx
        for _ in range(64):  # bounded: each call sends up to the budget
            if tx.u32[tx.c] == tx.u32[tx.p]:
                return
            if _sendto(fd, None, 0, MSG_DONTWAIT, None, 0) < 0:
                err = ctypes.get_errno()
                if err not in (errno.EAGAIN, errno.EBUSY, errno.ENOBUFS):
                    return

    def complete(self) -> None:
        """Chunks the kernel has finished sending go back to the free list."""
        c = self.comp
        cons = int(c.u32[c.c])
        n = (int(c.u32[c.p]) - cons) & 0xFFFFFFFF
        if n:
            self.umem.give(c.desc[(cons + np.arange(n, dtype=np.int64)) & c.mask, 0])
            c.u32[c.c] = (cons + n) & 0xFFFFFFFF

    def stats(self) -> dict:
        raw = self.sock.getsockopt(SOL_XDP, XDP_STATISTICS, 48)
        keys = ("rx_dropped", "rx_invalid_descs", "tx_invalid_descs", "rx_ring_full",
                "rx_fill_ring_empty_descs", "tx_ring_empty_descs")
        return dict(zip(keys, struct.unpack("<6Q", raw.ljust(48, b"\0")), strict=True))

    def close(self) -> None:
        for r in self.rings:
            r.close()
        self.rings = []
        self.sock.close()


_EMPTY = np.zeros(0, dtype=np.int64)


# ------------------------------------------------------------------------------ steering
KEY = struct.Struct("<BBHBxxx16s")  # kind, protocol, port (network order), family, address
KIND_VIP, KIND_REAL = 1, 2


def target_key(kind: int, protocol: int, addr: bytes, port: int) -> bytes:
    """The targets-map key of (VIP or real server, protocol, addr, port); ``addr`` is
    4 or 16 bytes.  The family is part of the key: 198.18.0.1 padded with zeros
    would otherwise be the same key as the IPv6 address c612:1::."""
    return KEY.pack(kind, protocol, socket.htons(port), 4 if len(addr) == 4 else 6,
                    addr.ljust(16, b"\0"))


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
    indexed by receive queue, and every interface has a queue 0).  ``sync`` makes the
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
                self.xsks[name] = m = bpf.Map(bpf.MAP_XSKMAP, 4, 4, 64)
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
        self.xsks[xsk.ifname].update(struct.pack("<I", 0), struct.pack("<I", xsk.fileno()))

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
