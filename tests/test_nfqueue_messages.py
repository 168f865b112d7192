"""engine/io/nfqueue.py without a kernel: packet messages in, verdict messages out.

The messages are built and read here by hand from include/uapi/linux/netlink.h,
linux/netfilter/nfnetlink.h and linux/netfilter/nfnetlink_queue.h (nlmsghdr,
nfgenmsg, netlink attributes padded to 4 bytes, nfqnl_msg_packet_hdr,
nfqnl_msg_verdict_hdr), as nfqnl_build_packet_message() lays them out, and fed through
a stand-in socket, so parsing, batching, ENOBUFS handling, verdict encoding and the
splitting of a large batch into datagrams are checked without root or a queue.
"""

from __future__ import annotations

import errno
import socket
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from pyvs.engine.io import nfqueue
from pyvs.engine.io.nfqueue import NfQueueSocket, QueuedPacket

NLM_F_REQUEST = 0x1
NLA_F_NESTED = 0x8000
NFQA_PACKET_HDR, NFQA_VERDICT_HDR, NFQA_MARK, NFQA_TIMESTAMP = 1, 2, 3, 4
NFQA_IFINDEX_INDEV, NFQA_HWADDR, NFQA_PAYLOAD, NFQA_CT = 5, 9, 10, 11
NFQA_CT_INFO, NFQA_CAP_LEN = 12, 13
PACKET_MSG = (3 << 8) | 0  # NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET
VERDICT_MSG = (3 << 8) | 1  # ... | NFQNL_MSG_VERDICT
NLMSG_ERROR = 2


def attr(kind: int, payload: bytes) -> bytes:
    """struct nlattr + payload, padded to NLA_ALIGNTO (4)."""
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + bytes(-len(raw) % 4)


def nlmsg(msg_type: int, body: bytes, seq: int = 0, flags: int = 0) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), msg_type, flags, seq, 0) + body


def packet_message(packet_id: int, payload: bytes | None, mark: int | None = None,
                   queue: int = 0, extras: bool = True) -> bytes:
    """What the kernel queues: nfgenmsg, then the attributes in nfqnl_build_packet_message
    order (packet header, mark, timestamp, in-device, hardware address, conntrack
    (nested), cap length, payload)."""
    attrs = attr(NFQA_PACKET_HDR, struct.pack(">IHB", packet_id, 0x0800, 1))  # PRE_ROUTING
    if mark is not None:
        attrs += attr(NFQA_MARK, struct.pack(">I", mark))
    if extras:
        attrs += attr(NFQA_TIMESTAMP, struct.pack(">QQ", 1700000000, 5))
        attrs += attr(NFQA_IFINDEX_INDEV, struct.pack(">I", 7))
        attrs += attr(NFQA_HWADDR, struct.pack(">H2x8s", 6, bytes(range(1, 9))))
        attrs += attr(NFQA_CT | NLA_F_NESTED, attr(1, b"\x01\x02\x03\x04"))
        attrs += attr(NFQA_CT_INFO, struct.pack(">I", 2))
    if payload is not None:
        attrs += attr(NFQA_CAP_LEN, struct.pack(">I", len(payload)))
        # the payload goes last, unpadded: the kernel writes its header by hand and
        # copies the packet after it, so nlmsg_len = skb->len is not a multiple of 4
        attrs += struct.pack("=HH", 4 + len(payload), NFQA_PAYLOAD) + payload
    return nlmsg(PACKET_MSG, struct.pack("=BBH", socket.AF_INET, 0, socket.htons(queue))
                 + attrs)


def datagram(msgs: list[bytes]) -> bytes:
    """Several messages in one datagram, each starting at an NLMSG_ALIGN (4) offset."""
    return b"".join(m + bytes(-len(m) % 4) for m in msgs)


class FakeNetlink:
    """Stands in for the netlink socket: recv_into() hands out queued datagrams (or
    raises what is queued), send() records what is sent."""

    def __init__(self, datagrams=()) -> None:
        self.inbox = list(datagrams)
        self.sent: list[bytes] = []

    def recv_into(self, buf) -> int:
        if not self.inbox:
            raise BlockingIOError
        item = self.inbox.pop(0)
        if isinstance(item, BaseException):
            raise item
        buf[:len(item)] = item
        return len(item)

    def send(self, data) -> int:
        self.sent.append(bytes(data))
        return len(data)


def detached(fake: FakeNetlink, queue: int = 7) -> NfQueueSocket:
    """An NfQueueSocket over the stand-in: its constructor would bind a real queue, so
    the attributes it sets are set here instead."""
    s = object.__new__(NfQueueSocket)
    s.queue, s.sock, s._seq, s.overruns = queue, fake, 0, 0
    s._rxbuf = bytearray(65536 + 4096)
    return s


def parse_one(msg: bytes) -> QueuedPacket | None:
    return NfQueueSocket._parse_packet(memoryview(msg), 20, len(msg))


# ------------------------------------------------------------------------- packets in
def test_a_kernel_packet_message_gives_id_mark_and_payload():
    payload = bytes(range(61))  # odd length: the attribute is padded
    pkt = parse_one(packet_message(0xDEADBEEF, payload, mark=0x11223344))
    assert (pkt.packet_id, pkt.mark, bytes(pkt.buf)) == (0xDEADBEEF, 0x11223344, payload)
    assert isinstance(pkt.buf, bytearray)  # writable: the director rewrites in place


def test_missing_mark_is_zero_and_missing_id_or_payload_is_no_packet():
    assert parse_one(packet_message(5, b"abc", mark=None)).mark == 0
    assert parse_one(packet_message(5, None)) is None
    no_hdr = nlmsg(PACKET_MSG, struct.pack("=BBH", 2, 0, 0) + attr(NFQA_PAYLOAD, b"x" * 20))
    assert parse_one(no_hdr) is None


def test_attribute_flag_bits_are_not_part_of_the_type():
    """nla_type(): NLA_F_NESTED / NLA_F_NET_BYTEORDER are masked off (NLA_TYPE_MASK)."""
    body = (struct.pack("=BBH", 2, 0, 0)
            + attr(NFQA_PACKET_HDR | 0x4000, struct.pack(">IHB", 77, 0x0800, 1))
            + attr(NFQA_MARK | 0x4000, struct.pack(">I", 5)) + attr(NFQA_PAYLOAD, b"q" * 20))
    pkt = parse_one(nlmsg(PACKET_MSG, body))
    assert (pkt.packet_id, pkt.mark, bytes(pkt.buf)) == (77, 5, b"q" * 20)


def test_a_truncated_attribute_ends_the_walk_without_error():
    msg = nlmsg(PACKET_MSG, struct.pack("=BBH", 2, 0, 0)
                + attr(NFQA_PACKET_HDR, struct.pack(">IHB", 9, 0x0800, 1))
                + attr(NFQA_PAYLOAD, b"y" * 28))
    bad = msg + struct.pack("=HH", 2, NFQA_MARK)  # nla_len 2 < 4
    pkt = NfQueueSocket._parse_packet(memoryview(bad), 20, len(bad))
    assert pkt is not None and pkt.packet_id == 9 and pkt.mark == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.none() | st.integers(0, 2**32 - 1),
                          st.binary(min_size=1, max_size=300), st.booleans()),
                min_size=1, max_size=30),
       st.integers(1, 8))
def test_recv_batch_returns_every_packet_in_order(items, per_datagram):
    """Several messages per datagram (as the kernel batches them), with acks and other
    message types between them; ENOBUFS in the middle is counted and reading goes on."""
    msgs = [packet_message(i, p, m, extras=x) for i, m, p, x in items]
    datagrams: list = []
    for k in range(0, len(msgs), per_datagram):
        chunk = msgs[k:k + per_datagram]
        ack = nlmsg(NLMSG_ERROR, struct.pack("=i", 0) + bytes(16))
        datagrams.append(datagram([*chunk, ack]))
    datagrams.insert(len(datagrams) // 2, OSError(errno.ENOBUFS, "No buffer space"))
    s = detached(FakeNetlink(datagrams))
    got = s.recv_batch(limit=10_000)
    assert [(p.packet_id, p.mark, bytes(p.buf)) for p in got] == \
        [(i, m or 0, p) for i, m, p, _ in items]
    assert s.overruns == 1
    assert s.recv_batch() == []  # nothing left: no blocking, no error


def test_recv_batch_stops_at_the_limit_between_datagrams():
    datagrams = [packet_message(i, b"z" * 40) for i in range(10)]
    s = detached(FakeNetlink(datagrams))
    first = s.recv_batch(limit=4)
    assert [p.packet_id for p in first] == [0, 1, 2, 3]
    assert [p.packet_id for p in s.recv_batch(limit=100)] == list(range(4, 10))


def test_other_socket_errors_are_not_swallowed():
    s = detached(FakeNetlink([OSError(errno.EBADF, "Bad file descriptor")]))
    try:
        s.recv_batch()
    except OSError as err:
        assert err.errno == errno.EBADF
    else:
        raise AssertionError("EBADF was swallowed")


# ----------------------------------------------------------------------- verdicts out
def read_verdicts(datagrams: list[bytes]) -> list[dict]:
    """Decode every verdict message, checking the framing on the way."""
    out = []
    for dg in datagrams:
        pos = 0
        while pos < len(dg):
            length, mtype, flags, seq, pid = struct.unpack_from("=IHHII", dg, pos)
            assert mtype == VERDICT_MSG and flags == NLM_F_REQUEST and pid == 0
            family, version, res_id = struct.unpack_from("=BB2s", dg, pos + 16)
            assert (family, version) == (socket.AF_UNSPEC, 0)
            msg = {"seq": seq, "queue": int.from_bytes(res_id, "big")}
            a = pos + 20
            while a < pos + length:
                alen, atype = struct.unpack_from("=HH", dg, a)
                body = dg[a + 4:a + alen]
                if atype == NFQA_VERDICT_HDR:
                    msg["verdict"], msg["id"] = struct.unpack(">II", body)
                elif atype == NFQA_PAYLOAD:
                    msg["payload"] = body
                else:
                    raise AssertionError(f"unexpected attribute {atype}")
                a += (alen + 3) & ~3
            assert a == pos + length  # attributes fill the message exactly
            assert length % 4 == 0 or pos + length == len(dg)
            out.append(msg)
            pos += (length + 3) & ~3
        assert pos == len(dg)  # a datagram holds whole messages only
    return out


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.binary(min_size=20, max_size=200),
                          st.sampled_from([nfqueue.NF_ACCEPT, nfqueue.NF_DROP]),
                          st.booleans()), min_size=1, max_size=40),
       st.integers(0, 65535))
def test_verdicts_carry_id_verdict_and_only_changed_payloads(items, queue):
    fake = FakeNetlink()
    s = detached(fake, queue)
    s._seq = 41
    pkts = [QueuedPacket(i, 0, bytearray(p)) for i, p, _, _ in items]
    s.send_verdicts(pkts, [v for _, _, v, _ in items], [c for _, _, _, c in items])
    assert len(fake.sent) == 1  # one datagram for the whole batch
    got = read_verdicts(fake.sent)
    assert [m["seq"] for m in got] == list(range(42, 42 + len(items)))
    for m, (pid, payload, verdict, changed) in zip(got, items, strict=True):
        assert (m["id"], m["verdict"], m["queue"]) == (pid, verdict, queue)
        assert m.get("payload") == (payload if changed else None)
    # the next batch continues the sequence
    s.send_verdicts(pkts[:1], [nfqueue.NF_ACCEPT], [False])
    assert read_verdicts(fake.sent[-1:])[0]["seq"] == 42 + len(items)


def test_a_large_batch_is_split_into_datagrams_of_whole_messages():
    """Netlink takes many messages per datagram, but one datagram must fit the socket's
    send buffer: 400 rewritten 1500-byte packets (600 kB) go out in pieces of about
    CHUNK bytes, every message once, in order."""
    fake = FakeNetlink()
    s = detached(fake)
    pkts = [QueuedPacket(i, 0, bytearray(struct.pack(">I", i) * 375)) for i in range(400)]
    s.send_verdicts(pkts, [nfqueue.NF_ACCEPT] * 400, [True] * 400)
    assert len(fake.sent) >= 3
    assert all(len(d) >= nfqueue.CHUNK for d in fake.sent[:-1])  # each piece filled
    one = 20 + 12 + 4 + 1500  # header, verdict attribute, payload attribute
    assert all(len(d) <= nfqueue.CHUNK + one for d in fake.sent)
    assert all(len(d) <= nfqueue.SNDBUF for d in fake.sent)
    got = read_verdicts(fake.sent)
    assert [m["id"] for m in got] == list(range(400))
    assert all(m["payload"] == bytes(p.buf) for m, p in zip(got, pkts, strict=True))
