"""The XDP port's frame selection: the steering program and the partial-checksum test.

``steer_program`` (engine/io/steer.py) is run by the kernel itself (BPF_PROG_TEST_RUN)
on random frames against the targets generated from random service tables, and
compared with the model of what pyvs takes (engine/takes.py): a frame goes to the
AF_XDP socket (XDP_REDIRECT) iff ``Takes.fast_kind`` says a fast port takes it --
IPv4 with a header netfilter accepts (IHL >= 5, total length not below the header and
within the frame), not a non-first fragment, or IPv6 with TCP/UDP right after the fixed
header and a payload length within the frame; TCP or UDP with its ports in the frame;
to a service's addr:port (or addr, port 0) or, with a TTL / hop limit above 1, from a
NAT real server's -- and XDP_PASS otherwise.  The same model checks the nftables
encodings (tests/test_takes_kernel.py) and the Python/numpy classifiers
(tests/test_takes.py).  XDP_REDIRECT needs a socket at index 0 of the program's xsks
map, so a child process in a private network namespace owns a veth, a UMEM, an AF_XDP
socket and the ``Steering`` maps, and runs the program on request (the pytest process
never changes namespace).

``partial_checksums`` (engine/io/xdp.py) is pure and runs without root.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import select
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from takes_frames import config_st, frame_st

from pyvs.engine.io.steer import KIND_REAL, KIND_VIP, target_key
from pyvs.engine.io.steer import targets as steer_targets
from pyvs.engine.io.xdp import partial_checksum, partial_checksums
from pyvs.engine.takes import Takes, read

ROOT = Path(__file__).resolve().parent.parent
PASS, REDIRECT = 2, 4
TCP, UDP = 6, 17
ETH_IP, ETH_IP6, ETH_ARP = 0x0800, 0x86DD, 0x0806
MACS = bytes.fromhex("020000000001" "020000000002")
REPLY_TIMEOUT = 30.0


# ------------------------------------------------------------------------ the child
CHILD = r"""
import json, sys
from pyvs.engine.io import bpf, steer, xsk

umem = xsk.Umem()
sock = xsk.XskSocket("x0", umem)
steering = steer.Steering(["x0"])  # loaded, never attached: BPF_PROG_TEST_RUN only
steering.add_socket(sock)
prog = steering.progs["x0"]


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


reply({"ready": True})
for line in sys.stdin:
    try:
        req = json.loads(line)
        if req["op"] == "sync":
            steering.sync({bytes.fromhex(k) for k in req["keys"]})
            reply({"ok": True})
        elif req["op"] == "run":
            reply({"actions": [bpf.test_run(prog, bytes.fromhex(f)) for f in req["frames"]]})
        else:
            reply({"error": "unknown op " + repr(req["op"])})
    except Exception as err:  # report, keep serving
        reply({"error": repr(err)})
"""


class ChildError(RuntimeError):
    pass


class SteeringChild:
    """The child process in the namespace; every read has a deadline."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.buf = b""
        self.stderr = tempfile.TemporaryFile()
        env = dict(os.environ)
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", CHILD],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
            bufsize=0, env=env, cwd=ROOT)
        first = self._read(REPLY_TIMEOUT)
        if not first.get("ready"):
            raise ChildError(f"child did not start: {first}{self._stderr()}")

    def _stderr(self) -> str:
        self.stderr.seek(0)
        text = self.stderr.read().decode(errors="replace").strip()
        return f"\nchild stderr:\n{text[-3000:]}" if text else ""

    def _read(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChildError(f"no reply from the child in {timeout} s{self._stderr()}")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise ChildError(f"the child exited ({self.proc.poll()}){self._stderr()}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line)

    def request(self, obj: dict) -> dict:
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        self.proc.stdin.flush()
        out = self._read(REPLY_TIMEOUT)
        if "error" in out:
            raise ChildError(out["error"])
        return out

    def sync(self, targets) -> None:
        self.sync_keys({t.key for t in targets})

    def sync_keys(self, keys: set[bytes]) -> None:
        self.request({"op": "sync", "keys": sorted(k.hex() for k in keys)})

    def run(self, frames: list[bytes]) -> list[int]:
        return self.request({"op": "run", "frames": [f.hex() for f in frames]})["actions"]

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=10)
        finally:
            for f in (self.proc.stdin, self.proc.stdout):
                f.close()
            self.stderr.close()


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def steer(lab_env):
    """A SteeringChild in its own namespace (veth x0/x1), torn down in any case."""
    ns = f"pyvs-steer-{secrets.token_hex(4)}"
    created = False
    child = None
    try:
        _ip("netns", "add", ns)
        created = True
        _ip("-n", ns, "link", "add", "x0", "type", "veth", "peer", "name", "x1")
        _ip("-n", ns, "link", "set", "x0", "up")
        _ip("-n", ns, "link", "set", "x1", "up")
        child = SteeringChild(ns)
        yield child
    finally:
        try:
            if child is not None:
                child.close()
        finally:
            if created:
                _ip("netns", "del", ns)


# ----------------------------------------------------------------- frames and targets
class Target(NamedTuple):
    kind: int  # KIND_VIP or KIND_REAL
    proto: int
    addr: bytes  # 4 or 16 bytes
    port: int

    @property
    def key(self) -> bytes:
        return target_key(self.kind, self.proto, self.addr, self.port)


def a(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def eth(ethertype: int, body: bytes) -> bytes:
    return MACS + struct.pack("!H", ethertype) + body


def ipv4(src: bytes, dst: bytes, proto: int, l4: bytes, *, ttl: int = 64, flags: int = 0,
         frag: int = 0, options: bytes = b"", version: int = 4, ihl: int | None = None) -> bytes:
    """An IPv4 header (IHL from the options unless given) followed by ``l4``."""
    assert len(options) % 4 == 0
    if ihl is None:
        ihl = 5 + len(options) // 4
    hdr = struct.pack("!BBHHHBBH4s4s", version << 4 | ihl, 0, 20 + len(options) + len(l4),
                      0x1234, flags << 13 | frag, ttl, proto, 0, src, dst) + options
    return hdr + l4


def ipv6(src: bytes, dst: bytes, nh: int, l4: bytes, *, hlim: int = 64,
         version: int = 6) -> bytes:
    return struct.pack("!IHBB16s16s", version << 28, len(l4), nh, hlim, src, dst) + l4


def ports(sport: int, dport: int, rest: bytes = b"") -> bytes:
    return struct.pack("!HH", sport, dport) + rest


# ------------------------------------------------------------------ strategies
v4_any = st.integers(0, (1 << 17) - 1).map(lambda n: (0xC6120000 + n).to_bytes(4, "big"))
v6_any = st.binary(min_size=12, max_size=12).map(lambda b: bytes.fromhex("20010db8") + b)
ttl_st = st.sampled_from([0, 1, 2, 3, 64, 255])


def rarely(draw, n: int) -> bool:
    """True about once in n draws (False shrinks to the plain case)."""
    return draw(st.integers(0, n - 1)) == n - 1


def describe(frame: bytes) -> str:
    return f"{len(frame)} bytes: {frame.hex(' ')}"


# ------------------------------------------------------------------ steering: property
@pytest.mark.lab
@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(config=config_st(), data=st.data())
def test_steering_program_follows_the_model(steer, config, data):
    frames = [f for f, _ in data.draw(st.lists(frame_st(config), min_size=1, max_size=16),
                                      label="frames")]
    takes = Takes.of(config)
    steer.sync_keys(steer_targets(takes))
    got = steer.run(frames)
    for frame, action in zip(frames, got, strict=True):
        kind = takes.fast_kind(read(frame))
        want = REDIRECT if kind else PASS
        event(f"{'redirect' if kind else 'pass'}")
        assert action == want, (f"program says {action}, the model says {want} for "
                                f"{describe(frame)}\nconfiguration: {config}")


# ------------------------------------------------------------------ steering: examples
VIP4, VIP6 = a("198.18.0.10"), a("2001:db8::10")
RS4, RS6 = a("198.18.1.20"), a("2001:db8:1::20")
CLIENT4, CLIENT6 = a("198.19.0.7"), a("2001:db8:2::7")
SERVICES = [
    Target(KIND_VIP, UDP, VIP4, 53), Target(KIND_VIP, TCP, VIP6, 443),
    Target(KIND_REAL, TCP, RS4, 80), Target(KIND_REAL, UDP, RS6, 5353),
]


@pytest.fixture
def services(steer):
    steer.sync(SERVICES)
    return steer


def udp4(src, dst, sport, dport, **kw) -> bytes:
    return eth(ETH_IP, ipv4(src, dst, UDP, ports(sport, dport, struct.pack("!HH", 12, 0)
                                                 + b"hell"), **kw))


@pytest.mark.lab
def test_udp_to_the_vip_port_is_redirected_other_ports_and_protocols_pass(services):
    frames = [
        udp4(CLIENT4, VIP4, 40000, 53),
        udp4(CLIENT4, VIP4, 40000, 54),
        eth(ETH_IP, ipv4(CLIENT4, VIP4, TCP, ports(40000, 53, bytes(16)))),
        udp4(CLIENT4, a("198.18.0.11"), 40000, 53),
    ]
    assert services.run(frames) == [REDIRECT, PASS, PASS, PASS]


@pytest.mark.lab
def test_vip_with_ip_options_and_ipv6_vip_are_redirected(services):
    frames = [
        udp4(CLIENT4, VIP4, 40000, 53, options=b"\x01" * 40),  # IHL 15
        eth(ETH_IP6, ipv6(CLIENT6, VIP6, TCP, ports(40000, 443, bytes(16)))),
        eth(ETH_IP6, ipv6(CLIENT6, VIP6, 0, bytes([TCP, 0]) + bytes(6)  # hop-by-hop first
                          + ports(40000, 443, bytes(16)))),
    ]
    assert services.run(frames) == [REDIRECT, REDIRECT, PASS]


@pytest.mark.lab
def test_port_zero_service_takes_every_port_of_its_protocol(steer):
    steer.sync([Target(KIND_VIP, UDP, VIP4, 0)])
    frames = [udp4(CLIENT4, VIP4, 1, p) for p in (0, 53, 65535)]
    frames.append(eth(ETH_IP, ipv4(CLIENT4, VIP4, TCP, ports(40000, 53, bytes(16)))))
    assert steer.run(frames) == [REDIRECT, REDIRECT, REDIRECT, PASS]


@pytest.mark.lab
def test_real_server_reply_with_ttl_1_is_left_to_the_kernel(services):
    """The kernel answers Time Exceeded for those; TTL 2 is still forwarded."""
    def reply4(ttl):
        return eth(ETH_IP, ipv4(RS4, CLIENT4, TCP, ports(80, 40000, bytes(16)), ttl=ttl))

    def reply6(hlim):
        return eth(ETH_IP6, ipv6(RS6, CLIENT6, UDP, ports(5353, 40000, bytes(4)), hlim=hlim))

    frames = [reply4(64), reply4(2), reply4(1), reply4(0), reply6(2), reply6(1)]
    assert services.run(frames) == [REDIRECT, REDIRECT, PASS, PASS, REDIRECT, PASS]
    # from the real server but another port, or the real server's address as destination
    others = [eth(ETH_IP, ipv4(RS4, CLIENT4, TCP, ports(81, 40000, bytes(16)))),
              eth(ETH_IP, ipv4(CLIENT4, RS4, TCP, ports(40000, 80, bytes(16))))]
    assert services.run(others) == [PASS, PASS]


@pytest.mark.lab
def test_only_the_first_fragment_is_redirected(services):
    first = udp4(CLIENT4, VIP4, 40000, 53, flags=1)  # MF
    later = udp4(CLIENT4, VIP4, 40000, 53, flags=1, frag=185)
    last = udp4(CLIENT4, VIP4, 40000, 53, frag=370)
    assert services.run([first, later, last]) == [REDIRECT, PASS, PASS]


@pytest.mark.lab
def test_arp_and_truncated_frames_pass(services):
    """A frame shorter than its IP header's total length is one netfilter refuses; a
    frame that ends right after the ports, and says so, is taken."""
    arp = eth(ETH_ARP, struct.pack("!HHBBH6s4s6s4s", 1, ETH_IP, 6, 4, 1, MACS[6:], CLIENT4,
                                   bytes(6), VIP4))
    full = udp4(CLIENT4, VIP4, 40000, 53)
    ports_only = eth(ETH_IP, ipv4(CLIENT4, VIP4, UDP, ports(40000, 53)))
    v6 = eth(ETH_IP6, ipv6(CLIENT6, VIP6, TCP, ports(40000, 443, bytes(16))))
    assert services.run([arp, full[:14], full[:34], full[:38], full[:-1], full, ports_only,
                         v6[:-1], v6]) == [
        PASS, PASS, PASS, PASS, PASS, REDIRECT, REDIRECT, PASS, REDIRECT]


@pytest.mark.lab
def test_a_total_length_below_the_header_passes(services):
    frame = eth(ETH_IP, ipv4(CLIENT4, VIP4, UDP, ports(40000, 53, bytes(8))))
    short = bytearray(frame)
    short[16:18] = (19).to_bytes(2, "big")  # total length 19 < IHL 5 * 4
    assert services.run([frame, bytes(short)]) == [REDIRECT, PASS]


# ------------------------------------------------------------------ partial checksums
def fold(x: int) -> int:
    while x >> 16:
        x = (x & 0xFFFF) + (x >> 16)
    return x


def ones_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    return fold(sum(struct.unpack(f"!{len(data) // 2}H", data)))


class CsumFrame(NamedTuple):
    frame: bytes
    length: int  # captured length (may cut the frame)
    proto: int
    mode: str
    field_at: int | None  # offset of the TCP/UDP checksum field in the frame
    pseudo: int  # folded pseudo-header sum


@st.composite
def csum_frame_st(draw) -> CsumFrame:
    family = draw(st.sampled_from([4, 6]))
    proto = draw(st.sampled_from([TCP, UDP, TCP, UDP, 1, 58, 132, 47]))
    mode = draw(st.sampled_from(["partial", "full", "full", "collide"]))
    payload = draw(st.binary(max_size=64))
    if mode == "collide":
        payload = b"\0\0" + payload  # the word adjusted so that both readings agree
    sport, dport = draw(st.integers(0, 65535)), draw(st.integers(0, 65535))
    if proto == TCP:
        hdr = struct.pack("!HHIIHHHH", sport, dport, draw(st.integers(0, 2**32 - 1)), 0,
                          5 << 12 | draw(st.integers(0, 0xFF)), 65535, 0, 0)
        csum_at = 16
    elif proto == UDP:
        hdr = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)
        csum_at = 6
    else:
        hdr = draw(st.binary(min_size=8, max_size=8))
        csum_at = None
    seg = bytearray(hdr + payload)
    if family == 4:
        src, dst = draw(v4_any), draw(v4_any)
        ihl = draw(st.one_of(st.just(5), st.integers(5, 15)))
        options = draw(st.binary(min_size=4 * ihl - 20, max_size=4 * ihl - 20))
        pseudo = fold(ones_sum(src + dst) + proto + len(seg))
    else:
        src, dst = draw(v6_any), draw(v6_any)
        if rarely(draw, 4):  # the first fold carries again: the last word makes it so
            total = sum(struct.unpack("!15H", src + dst[:14])) + proto + len(seg)
            last = max(0, 0xFFFF - (total & 0xFFFF) - draw(st.integers(0, 3)))
            dst = dst[:14] + struct.pack("!H", last)
        pseudo = fold(ones_sum(src + dst) + proto + len(seg))
    if csum_at is not None:
        if mode == "collide" and pseudo == 0xFFFF:
            mode = "partial"  # no valid checksum reads 0xFFFF as its own complement
        if mode == "partial":
            value = pseudo
        elif mode == "full":
            value = 0xFFFF ^ fold(pseudo + ones_sum(bytes(seg)))
            if proto == UDP and value == 0:
                value = 0xFFFF
        else:  # valid *and* equal to the pseudo-header sum
            value = pseudo
            r = fold(pseudo + ones_sum(bytes(seg)))
            want = 0xFFFF ^ pseudo
            word = want - r if want >= r else 0xFFFF - (r - want)
            struct.pack_into("!H", seg, len(hdr), word)
        struct.pack_into("!H", seg, csum_at, value)
        if mode != "partial":  # the test's own arithmetic: a valid checksum sums to 0xFFFF
            assert fold(pseudo + ones_sum(bytes(seg))) == 0xFFFF
    else:  # not TCP/UDP: the pseudo-header sum where TCP's and UDP's fields would be
        seg += bytes(max(0, 18 - len(seg)))
        struct.pack_into("!H", seg, 6, pseudo)
        struct.pack_into("!H", seg, 16, pseudo)
    if family == 4:
        ip = bytearray(ipv4(src, dst, proto, bytes(seg), ttl=draw(ttl_st), options=options))
        struct.pack_into("!H", ip, 10, 0xFFFF ^ ones_sum(bytes(ip[:4 * ihl])))
        frame = eth(ETH_IP, bytes(ip))
        l4 = 14 + 4 * ihl
    else:
        frame = eth(ETH_IP6, ipv6(src, dst, proto, bytes(seg), hlim=draw(ttl_st)))
        l4 = 54
    length = len(frame)
    if rarely(draw, 5):  # cut anywhere, or around where a TCP/UDP checksum field would be
        field_at = l4 + (16 if proto == TCP else 6)
        length = min(length, draw(st.one_of(st.integers(14, length),
                                             st.integers(field_at - 1, field_at + 2))))
    return CsumFrame(frame, length, proto, mode, None if csum_at is None else l4 + csum_at,
                     pseudo)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(csum_frame_st(), st.binary(max_size=40)), min_size=1, max_size=12),
       st.binary(max_size=8))
def test_partial_checksums_flags_exactly_the_pseudo_header_sum(frames, tail):
    """Several frames at odd and even offsets of one buffer, junk between them (and
    possibly none after the last, so reads near the end are clipped)."""
    raw, offs = b"", []
    for f, gap in frames:
        raw += gap
        offs.append(len(raw))
        raw += f.frame
    raw += tail
    buf = np.frombuffer(raw, dtype=np.uint8)
    lens = [f.length for f, _ in frames]
    got = partial_checksums(buf, np.array(offs, dtype=np.int64), np.array(lens, dtype=np.int64))
    assert got.dtype == bool and got.shape == (len(frames),)
    for (f, _), o, flagged in zip(frames, offs, got.tolist(), strict=True):
        ctx = f"{f.mode} proto {f.proto}, {f.length} of {describe(f.frame)}"
        if f.field_at is None:
            assert not flagged, f"(c) not TCP/UDP, flagged: {ctx}"
            event("not TCP/UDP")
        elif f.length < f.field_at + 2:
            assert not flagged, f"checksum field not captured, flagged: {ctx}"
            event("cut before the checksum field")
        else:
            field = struct.unpack_from("!H", f.frame, f.field_at)[0]
            if f.mode == "partial":
                assert flagged, f"(a) CHECKSUM_PARTIAL frame not flagged: {ctx}"
            else:
                assert flagged == (field == f.pseudo), f"(b) full checksum {field:#06x}: {ctx}"
            event(f"{f.mode}: {'flagged' if flagged else 'not flagged'}")
        # the one-frame variant the port uses for small batches agrees
        assert partial_checksum(bytes(buf[o:o + f.length])) == flagged, ctx


def test_partial_checksums_of_no_frames():
    empty = np.zeros(0, dtype=np.int64)
    assert partial_checksums(np.zeros(64, dtype=np.uint8), empty, empty).shape == (0,)


def test_keys_carry_the_address_family():
    """An IPv4 address zero-padded to 16 bytes must not be the key of the IPv6 address
    with the same leading bytes (the XDP program would take the other family's frames)."""
    v4 = a("198.18.1.1")
    twin = v4 + bytes(12)  # c612:101:: -- only a key here, never an address in use
    for kind in (KIND_VIP, KIND_REAL):
        assert target_key(kind, TCP, v4, 80) != target_key(kind, TCP, twin, 80)
