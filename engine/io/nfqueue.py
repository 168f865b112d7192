"""An NFQUEUE port: packets arrive from netfilter with their mark; verdicts go back.

Why NFQUEUE for the drop-in path: pyvs must see exactly the packets kernel IPVS
would see (addressed to a local VIP, or carrying a service's firewall mark set
by any prerouting rule) and must keep the kernel from answering for them.  A
queue rule after every prerouting hook (engine/plumbing.py) gives both, with the
mark, and the verdict can carry the rewritten packet, so the kernel does routing,
ARP and TTL exactly as it does for IPVS.  The ring/AF_PACKET ports are faster;
this one is the faithful, simple default.

Protocol: nfnetlink_queue (include/uapi/linux/netfilter/nfnetlink_queue.h).

In a network namespace that belongs to a user namespace other than the initial one
(``unshare -rn``, rootless labs) the kernel refuses rewritten packets in verdicts:
nfqnl_mangle returns -EPERM there (netfilter commit "disable payload mangling in
userns", 2026, in the stable kernels too: this machine's 6.18 has it) and the packet is
dropped without a trace.  There the port drops the original and sends the rewritten packet itself
through the director's stack (a raw socket), doing the TTL decrement the kernel's
forwarding would have done, as the fast ports do (``stack_forwards=False``); a packet
the stack refuses is counted as ``send-error`` (README: "Rootless").
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import struct

from pyvs.engine.io.port import Port, PortContext
from pyvs.engine.plumbing import QUEUE_NUM, Plumbing, PlumbingError, remove_legacy_chains
from pyvs.engine.verdict import DROP, FORWARD

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_NO_ENOBUFS = 5
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLMSG_ERROR = 0x2
NLMSG_DONE = 0x3

NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2

NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQA_CFG_MASK = 4
NFQA_CFG_FLAGS = 5
NFQNL_CFG_CMD_BIND = 1
NFQNL_CFG_CMD_UNBIND = 2
NFQNL_COPY_PACKET = 2
NFQA_CFG_F_FAIL_OPEN = 1

NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_MARK = 3
NFQA_PAYLOAD = 10

NF_DROP = 0
NF_ACCEPT = 1

NS_GET_USERNS = 0xB701  # ioctl on a namespace file: the user namespace that owns it
PROC_USER_INIT_INO = 0xEFFFFFFD  # include/linux/proc_ns.h: the initial user namespace

log = logging.getLogger("pyvs.nfqueue")

SNDBUF = 4 << 20
CHUNK = 256 << 10  # bytes of verdict messages per sendmsg, well inside SNDBUF

_NLHDR = struct.Struct("=IHHII")
_NFGEN = struct.Struct("=BBH")  # family, version, res_id (big-endian, packed by hand)
_ATTR = struct.Struct("=HH")
_VERDICT_TYPE = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT
_PACKET_TYPE = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return _ATTR.pack(length, kind) + payload + b"\0" * ((4 - length % 4) % 4)


def _message(msg_type: int, flags: int, seq: int, queue: int, attrs: bytes,
             family: int = socket.AF_UNSPEC) -> bytes:
    body = struct.pack("=BB", family, 0) + struct.pack(">H", queue) + attrs
    return _NLHDR.pack(16 + len(body), msg_type, flags, seq, 0) + body


def verdicts_carry_packets(netns: str = "/proc/self/ns/net") -> bool:
    """Whether the kernel takes a rewritten packet in a verdict here: only in a network
    namespace owned by the initial user namespace (nfqnl_mangle: ``net->user_ns !=
    &init_user_ns`` -> -EPERM).  The owner is read with NS_GET_USERNS; when it is out
    of this process's reach (EPERM: an ancestor of its own user namespace), this
    process lacks the rights to run a director there anyway, and the answer is yes."""
    fd = os.open(netns, os.O_RDONLY)
    try:
        try:
            owner = fcntl.ioctl(fd, NS_GET_USERNS)
        except OSError:
            return True
        try:
            return os.fstat(owner).st_ino == PROC_USER_INIT_INO
        finally:
            os.close(owner)
    finally:
        os.close(fd)


class QueuedPacket:
    """One queued packet: its id (for the verdict), firewall mark, netfilter hook
    (NF_INET_PRE_ROUTING 0, NF_INET_FORWARD 2, ...) and the IP packet."""

    __slots__ = ("packet_id", "mark", "buf", "hook")

    def __init__(self, packet_id: int, mark: int, buf: bytearray, hook: int = -1) -> None:
        self.packet_id = packet_id
        self.mark = mark
        self.buf = buf
        self.hook = hook


class NfQueueSocket:
    """The netlink side of one queue number: recv_batch() / send_verdicts()."""

    def __init__(self, queue: int, maxlen: int = 16384, rcvbuf: int = 16 << 20) -> None:
        self.queue = queue
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)  # SO_RCVBUFFORCE
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 32, SNDBUF)  # SO_SNDBUFFORCE
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
        self._seq = 0
        self._rxbuf = bytearray(65536 + 4096)
        self.overruns = 0
        cfg_type = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_CONFIG
        self._request(_message(cfg_type, NLM_F_REQUEST | NLM_F_ACK, self._next_seq(), queue,
                               _attr(NFQA_CFG_CMD, struct.pack(">BBH", NFQNL_CFG_CMD_BIND, 0,
                                                               socket.AF_INET))))
        params = struct.pack(">IB", 0xFFFF, NFQNL_COPY_PACKET)
        self._request(_message(cfg_type, NLM_F_REQUEST | NLM_F_ACK, self._next_seq(), queue,
                               _attr(NFQA_CFG_PARAMS, params)
                               + _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack(">I", maxlen))))
        self.sock.setblocking(False)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _request(self, msg: bytes) -> None:
        self.sock.send(msg)
        data = self.sock.recv(8192)
        _, mtype, _, _, _ = _NLHDR.unpack_from(data, 0)
        if mtype == NLMSG_ERROR:
            (err,) = struct.unpack_from("=i", data, 16)
            if err:
                raise OSError(-err, f"nfqueue config: {os.strerror(-err)}")

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv_batch(self, limit: int = 256) -> list[QueuedPacket]:
        """Everything queued now, up to `limit` packets, without blocking."""
        out: list[QueuedPacket] = []
        rx = self._rxbuf
        view = memoryview(rx)
        sock = self.sock
        while len(out) < limit:
            try:
                n = sock.recv_into(rx)
            except BlockingIOError:
                break
            except OSError as err:
                if err.errno == errno.ENOBUFS:
                    self.overruns += 1
                    continue
                raise
            offset = 0
            while offset + 16 <= n:
                length, mtype, _, _, _ = _NLHDR.unpack_from(rx, offset)
                if length < 16:
                    break
                if mtype == _PACKET_TYPE:
                    pkt = self._parse_packet(view, offset + 20, offset + length)
                    if pkt is not None:
                        out.append(pkt)
                offset += (length + 3) & ~3
        return out

    @staticmethod
    def _parse_packet(view: memoryview, pos: int, end: int) -> QueuedPacket | None:
        packet_id = -1
        mark = 0
        hook = -1
        payload = None
        unpack = _ATTR.unpack_from
        while pos + 4 <= end:
            alen, atype = unpack(view, pos)
            if alen < 4:
                break
            atype &= 0x3FFF
            if atype == NFQA_PACKET_HDR:
                packet_id = int.from_bytes(view[pos + 4:pos + 8], "big")
                hook = view[pos + 10]  # struct nfqnl_msg_packet_hdr: id, hw_protocol, hook
            elif atype == NFQA_MARK:
                mark = int.from_bytes(view[pos + 4:pos + 8], "big")
            elif atype == NFQA_PAYLOAD:
                payload = bytearray(view[pos + 4:pos + alen])
            pos += (alen + 3) & ~3
        if packet_id < 0 or payload is None:
            return None
        return QueuedPacket(packet_id, mark, payload, hook)

    def send_verdicts(self, packets: list[QueuedPacket], verdicts: list[int],
                      modified: list[bool]) -> None:
        """One sendmsg for the whole batch (netlink takes many messages per datagram)."""
        parts = []
        seq = self._seq
        for pkt, verdict, changed in zip(packets, verdicts, modified, strict=True):
            seq += 1
            attrs = _attr(NFQA_VERDICT_HDR, struct.pack(">II", verdict, pkt.packet_id))
            if changed:
                attrs += _attr(NFQA_PAYLOAD, bytes(pkt.buf))
            parts.append(_message(_VERDICT_TYPE, NLM_F_REQUEST, seq, self.queue, attrs))
        self._seq = seq
        data = b"".join(parts)
        # a netlink datagram must fit the socket's send buffer
        limit = CHUNK
        start = 0
        while start < len(data):
            end = start
            while end < len(data) and end - start < limit:
                (mlen,) = struct.unpack_from("=I", data, end)
                end += (mlen + 3) & ~3
            self._send_all(data[start:end])
            start = end

    def _send_all(self, data: bytes) -> None:
        while True:
            try:
                self.sock.send(data)
                return
            except BlockingIOError:
                import select

                select.select([], [self.sock], [], 1.0)

    def close(self) -> None:
        try:
            cfg_type = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_CONFIG
            self.sock.setblocking(True)
            self.sock.send(_message(cfg_type, NLM_F_REQUEST, self._next_seq(), self.queue,
                                    _attr(NFQA_CFG_CMD, struct.pack(">BBH",
                                                                    NFQNL_CFG_CMD_UNBIND, 0,
                                                                    socket.AF_INET))))
        except OSError:
            pass
        self.sock.close()


class NfQueuePort(Port):
    """The default port: netfilter queues what pyvs takes (engine/plumbing.py installs the
    rules), the director decides, the verdict carries the rewritten packet back, and the
    kernel routes it.  With a fast port in the same run the rules are the same: the fast
    port takes its packets at the interface, before they reach them, so NFQUEUE gets
    what it cannot serve (engine/takes.py: fwmark traffic, ICMP errors, FTP data...)."""

    name = "nfqueue"

    def __init__(self, director, raw, queue: int = QUEUE_NUM) -> None:
        self.director = director
        self.raw = raw
        self.plumbing = Plumbing(queue)
        self.sock: NfQueueSocket | None = None
        self.counters = {"packets": 0, "batches": 0}
        self.in_verdict = verdicts_carry_packets()
        if not self.in_verdict:
            log.warning("this network namespace belongs to a user namespace, where the "
                        "kernel drops NFQUEUE verdicts that carry a rewritten packet: "
                        "pyvs sends rewritten packets through the director's stack instead")
        self.plumbing.install()
        try:
            self.sock = NfQueueSocket(queue)
        except BaseException:
            self.plumbing.remove()
            raise

    @classmethod
    def open(cls, ctx: PortContext) -> NfQueuePort:
        return cls(ctx.director, ctx.raw, ctx.queue)

    @staticmethod
    def clear_stale() -> list[str]:
        try:
            gone = Plumbing().remove()
        except PlumbingError:  # no nft: no table can exist either
            gone = []
        return gone + remove_legacy_chains()

    def readers(self) -> list[NfQueueSocket]:
        return [self.sock] if self.sock is not None else []

    def update(self, services: list) -> None:
        self.plumbing.sync(services)

    def serve(self, sock: NfQueueSocket) -> int:
        director = self.director
        done = 0
        while True:
            batch = sock.recv_batch()
            if not batch:
                return done
            verdicts = director.process([p.buf for p in batch], [p.mark for p in batch],
                                        stack_forwards=self.in_verdict)
            if self.in_verdict:
                sock.send_verdicts(batch, [NF_DROP if v == DROP else NF_ACCEPT
                                           for v in verdicts], [v == FORWARD for v in verdicts])
            else:
                sock.send_verdicts(batch, self._send_forwarded(batch, verdicts),
                                   [False] * len(batch))
            self.raw.flush(director)
            done += len(batch)
            self.counters["packets"] += len(batch)
            self.counters["batches"] += 1

    def _send_forwarded(self, batch: list[QueuedPacket], verdicts: list[int]) -> list[int]:
        """Where verdicts cannot carry packets: send each FORWARD packet through the
        stack and drop the original.  Returns the netfilter verdicts."""
        out = []
        for pkt, verdict in zip(batch, verdicts, strict=True):
            if verdict == FORWARD:
                if not self.raw.send(pkt.buf):
                    self.director.drops["send-error"] += 1
                out.append(NF_DROP)
            else:
                out.append(NF_DROP if verdict == DROP else NF_ACCEPT)
        return out

    def status(self) -> dict:
        out = dict(self.counters)
        out["rewritten-packets"] = "verdict" if self.in_verdict else "stack"
        if self.sock is not None:
            out["overruns"] = self.sock.overruns
        return out

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.plumbing.remove()
