"""The owner of a frame under ``--workers`` (engine/io/owner.py): one definition
(``owner_key``), two encodings -- the ring's classic BPF fanout program, run here by a
small interpreter of the classic BPF instructions it uses (with the kernel's rule that
a load beyond the packet ends the program with 0, bpf_convert_filter / sk_run_filter),
and the XDP port's numpy ``owners`` -- checked against it on random frames, and the
property the hand-off exists for: both directions of a NAT connection have one owner.
"""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pyvs.engine.io.owner import (
    ETH_HLEN,
    SKF_AD_PROTOCOL,
    SKF_NET_OFF,
    fanout_program,
    owner,
    owner_key,
    owners,
)

VIPS = [0xC6120101, 0xC6120102, 0xC6120303]  # 198.18.1.1, 198.18.1.2, 198.18.3.3


def run_cbpf(ins: list[tuple[int, int, int, int]], frame: bytes) -> int:
    """Classic BPF on an skb whose network header follows the Ethernet header."""
    net = frame[ETH_HLEN:]
    protocol = struct.unpack_from("!H", frame, 12)[0] if len(frame) >= ETH_HLEN else 0
    a = x = 0
    pc = 0
    for _ in range(1000):
        code, jt, jf, k = ins[pc]
        pc += 1
        if code == 0x20 and k == SKF_AD_PROTOCOL:  # ld skb->protocol
            a = protocol
        elif code in (0x20, 0x48, 0xB1):  # ld / ldh [k] / ldx 4*([k]&0xf), net-relative
            size = {0x20: 4, 0x48: 2, 0xB1: 1}[code]
            off = k - SKF_NET_OFF + (x if code == 0x48 else 0)
            if off < 0 or off + size > len(net):
                return 0
            v = int.from_bytes(net[off:off + size], "big")
            if code == 0xB1:
                x = 4 * (v & 0x0F)
            else:
                a = v
        elif code == 0x15:  # jeq #k
            pc += jt if a == k else jf
        elif code == 0x05:  # ja #k
            pc += k
        elif code == 0x07:  # tax
            x = a
        elif code == 0xAC:  # xor x
            a ^= x
        elif code == 0x74:  # rsh #k
            a >>= k
        elif code == 0x24:  # mul #k (32-bit)
            a = (a * k) & 0xFFFFFFFF
        elif code == 0x06:  # ret #k
            return k
        elif code == 0x16:  # ret a
            return a
        else:
            raise AssertionError(f"instruction {code:#x} not interpreted")
    raise AssertionError("program did not end")


def ipv4(src: int, dst: int, sport: int, dport: int, proto: int = 6, ihl: int = 5,
         payload: bytes = b"") -> bytes:
    eth = bytes(12) + b"\x08\x00"
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 20 + 8, 0, 0, 64, proto, 0,
                      src.to_bytes(4, "big"), dst.to_bytes(4, "big"))
    return eth + hdr + bytes(max(0, ihl * 4 - 20)) + struct.pack("!HH", sport, dport) + payload


addr = st.one_of(st.sampled_from(VIPS), st.integers(0, 2**32 - 1),
                 st.integers(0xC6120000, 0xC61200FF))
frame_st = st.one_of(
    st.builds(ipv4, addr, addr, st.integers(0, 65535), st.integers(0, 65535),
              st.sampled_from([6, 17]), st.integers(0, 15), st.binary(max_size=8)),
    st.builds(ipv4, addr, addr, st.integers(0, 65535), st.integers(0, 65535)).flatmap(
        lambda f: st.integers(0, len(f)).map(lambda n: f[:n])),  # cut short
    st.binary(min_size=0, max_size=80),  # anything, IPv6 and ARP among it
    st.binary(min_size=40, max_size=80).map(lambda b: b[:12] + b"\x86\xdd" + b[14:]),
)


@settings(max_examples=400, deadline=None)
@given(frames=st.lists(frame_st, min_size=1, max_size=40),
       vips=st.lists(st.sampled_from(VIPS), unique=True, max_size=3),
       workers=st.integers(1, 16))
def test_bpf_and_numpy_encodings_agree_with_the_definition(frames, vips, workers):
    prog = fanout_program(sorted(vips))
    want = [owner(f, set(vips), workers) for f in frames]
    assert [run_cbpf(prog, f) % workers for f in frames] == want
    assert [run_cbpf(prog, f) for f in frames] == [owner_key(f, set(vips)) for f in frames]
    # the batch as the XDP port sees it: frames at 2048-byte strides of one buffer
    buf = np.zeros(2048 * len(frames) + 64, dtype=np.uint8)
    offs = np.arange(len(frames), dtype=np.int64) * 2048 + 256
    for o, f in zip(offs.tolist(), frames, strict=True):
        buf[o:o + len(f)] = np.frombuffer(f, dtype=np.uint8)
    lens = np.array([len(f) for f in frames], dtype=np.int64)
    got = owners(buf, offs, lens, np.array(sorted(vips), dtype=np.int64), workers)
    assert got.tolist() == want


@given(client=st.integers(0xC6120000, 0xC61200FF), sport=st.integers(1, 65535),
       rs=st.integers(0xC6120200, 0xC61202FF), rport=st.integers(1, 65535),
       workers=st.integers(2, 16))
def test_both_directions_of_a_nat_connection_have_one_owner(client, sport, rs, rport,
                                                            workers):
    vip = VIPS[0]
    request = ipv4(client, vip, sport, 80)
    reply = ipv4(rs, client, rport, sport)  # the real server answers the client
    assert owner(request, {vip}, workers) == owner(reply, {vip}, workers)


def test_one_client_connecting_from_even_ports_spreads_over_the_workers():
    """connect() takes even source ports (__inet_hash_connect): the low bits of
    addr ^ port alone would not vary for one client address."""
    vip = VIPS[0]
    for workers in (2, 4, 8):
        seen = [owner(ipv4(0xC612000A, vip, 32768 + 2 * p, 80), {vip}, workers)
                for p in range(256)]
        counts = np.bincount(seen, minlength=workers)
        assert counts.min() >= 256 // workers // 2, counts


@settings(max_examples=30, deadline=None)
@given(frames=st.lists(frame_st, min_size=1, max_size=20), hit=st.integers(0, 299))
def test_hundreds_of_vips_need_the_long_jumps_and_still_agree(frames, hit):
    """Past ~240 VIPs a conditional jump cannot reach the SRC block (255 instructions
    at most): the program switches to jeq + ja pairs."""
    vips = sorted({0xC6130000 + 7 * i for i in range(300)})
    frames = [*frames, ipv4(0xC612000A, vips[hit], 40000, 80)]
    prog = fanout_program(vips)
    assert all(jt <= 255 and jf <= 255 for _c, jt, jf, _k in prog)
    assert [run_cbpf(prog, f) for f in frames] == [owner_key(f, set(vips)) for f in frames]


def test_the_xdp_ports_small_batch_path_is_the_definition_itself():
    """Batches of up to SMALL_BATCH frames skip numpy: XdpPort calls ``owner`` on the
    frame's first 96 bytes, which hold every field the definition reads."""
    vip = VIPS[0]
    frame = ipv4(0xC612000A, vip, 40000, 80, ihl=15, payload=bytes(1400))
    assert owner(frame[:96], {vip}, 4) == owner(frame, {vip}, 4)
