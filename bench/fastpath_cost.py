"""Batch path cost per packet, IPv4 vs IPv6: `python -m pyvs.bench.fastpath_cost
[--batch N] [--rounds N] [--json FILE]`.

In process, no lab and no root: one director with a NAT, a DR and a TUN service per family
(virtual clock, a stand-in for the kernel's route and neighbour tables, as
tests/test_fastpath.py), established TCP flows, then one block of ``--batch`` Ethernet
frames of established traffic (ACK segments with 64 bytes of data) handed to
``FastPath.run`` again and again -- the block restored from a pristine copy before
each round, outside the timing.  Cases: NAT (requests and replies alternating), DR and
TUN (requests), for IPv4, IPv6 and a half-and-half mix; and, for reference, the same
packets one at a time through ``Director.process`` (the per-packet path).
The cases' rounds are interleaved; reported: microseconds per packet, median and best
over rounds.  Timings depend on the
machine (and on what else runs on it); nothing asserts them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import sys
import time

import numpy as np

from pyvs.engine import ipvsadm
from pyvs.engine.clock import VirtualClock
from pyvs.engine.director import Director
from pyvs.engine.fastpath import FastPath
from pyvs.engine.model import pack_addr
from pyvs.engine.neigh import Route
from pyvs.engine.packet import parse, set_ipv4_header_csum, set_l4_checksum

ADDRS = {4: {"vip": "198.18.1.1", "client": "198.18.0.10", "rs": "198.18.2.11",
             "dr": "198.18.2.12", "tun": "198.18.2.13"},
         6: {"vip": "2001:db8:1::1", "client": "2001:db8::10", "rs": "2001:db8:2::11",
             "dr": "2001:db8:2::12", "tun": "2001:db8:2::13"}}
NAT_PORT, DR_PORT, TUN_PORT = 80, 81, 82
SERVICES = ((NAT_PORT, "rs", "-m"), (DR_PORT, "dr", "-g"), (TUN_PORT, "tun", "-i"))
PAYLOAD = b"p" * 64


class Routes:
    """Every real server on-link, neighbour resolved (engine/neigh.py's answers)."""

    def route(self, addr):
        src = pack_addr("198.18.2.1" if len(addr) == 4 else "2001:db8:2::1")
        return Route(addr, False, 7, "eth1", src, None, 1500, b"\x02\0\0\0\0\x01", 1e9)

    def mac(self, route, addr):
        return b"\x02\x00" + addr[-4:]

    def poll(self):
        return set()


def host(af: int, name: str, port: int | None = None) -> str:
    a = ADDRS[af][name]
    if port is None:
        return a
    return f"{a}:{port}" if af == 4 else f"[{a}]:{port}"


def packet(af: int, src: str, sport: int, dst: str, dport: int, flags: int,
           payload: bytes = b"") -> bytes:
    s, d = pack_addr(src), pack_addr(dst)
    l4 = struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 5 << 4, flags, 65535, 0, 0) + payload
    if af == 4:
        buf = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0x4000, 64,
                                    6, 0, s, d) + l4)
        set_ipv4_header_csum(buf)
    else:
        buf = bytearray(struct.pack("!IHBB16s16s", 6 << 28, len(l4), 6, 64, s, d) + l4)
    set_l4_checksum(buf, parse(buf))
    return bytes(buf)


def director(flows: int) -> Director:
    """NAT and DR services for both families, ``flows`` established flows on each."""
    d = Director(clock=VirtualClock(), routes=Routes(), seed=1)
    for af in (4, 6):
        for port, rs, method in SERVICES:
            for argv in (["-A", "-t", host(af, "vip", port), "-s", "rr"],
                         ["-a", "-t", host(af, "vip", port), "-r", host(af, rs, port),
                          method]):
                rc, _out, err = ipvsadm.run(argv, "", d)
                assert rc == 0, err
        for k in range(flows):
            cport = 20000 + k
            for port, rs, _method in SERVICES:
                d.process([bytearray(packet(af, host(af, "client"), cport, host(af, "vip"),
                                            port, 0x02))], stack_forwards=False)
                d.process([bytearray(packet(af, host(af, rs), port, host(af, "client"),
                                            cport, 0x12))], stack_forwards=False)
                d.process([bytearray(packet(af, host(af, "client"), cport, host(af, "vip"),
                                            port, 0x10))], stack_forwards=False)
    d.l2_outbox.clear()
    d.outbox.clear()
    return d


def traffic(case: str, n: int, flows: int) -> list[bytes]:
    """``n`` established packets of one case: NAT alternates request and reply."""
    kind, fam = case.split("-")
    out = []
    for i in range(n):
        af = (4 if i % 2 == 0 else 6) if fam == "mix" else int(fam[-1])
        cport = 20000 + (i // 2) % flows
        if kind == "nat" and (i // (2 if fam == "mix" else 1)) % 2:
            out.append(packet(af, host(af, "rs"), NAT_PORT, host(af, "client"), cport,
                              0x10, PAYLOAD))
        else:
            port = {"nat": NAT_PORT, "dr": DR_PORT, "tun": TUN_PORT}[kind]
            out.append(packet(af, host(af, "client"), cport, host(af, "vip"), port, 0x10,
                              PAYLOAD))
    return out


def block(pkts: list[bytes]):
    frames = [bytes(12) + (b"\x08\x00" if p[0] >> 4 == 4 else b"\x86\xdd") + p for p in pkts]
    offs = np.cumsum([0] + [len(f) for f in frames[:-1]]).astype(np.int64)
    buf = np.frombuffer(b"".join(frames) + bytes(64), dtype=np.uint8).copy()
    return buf, offs, np.array([len(f) for f in frames], dtype=np.int64)


class Case:
    """One case's director, block and timings."""

    def __init__(self, name: str, batch: int, flows: int) -> None:
        self.name, self.batch = name, batch
        self.d = director(flows)
        self.fp = FastPath(self.d)
        self.pkts = traffic(name, batch, flows)
        self.pristine, self.offs, self.lens = block(self.pkts)
        self.buf = self.pristine.copy()
        self.per_batch: list[float] = []
        self.per_packet: list[float] = []

    def round(self) -> None:
        d = self.d
        np.copyto(self.buf, self.pristine)
        t = time.perf_counter()
        self.fp.run(self.buf, self.offs, self.lens)
        self.per_batch.append(time.perf_counter() - t)
        d.l2_outbox.clear()
        d.outbox.clear()
        d.clock.advance(0.001)
        bufs = [bytearray(p) for p in self.pkts]
        t = time.perf_counter()
        d.process(bufs, stack_forwards=False)
        self.per_packet.append(time.perf_counter() - t)
        d.l2_outbox.clear()
        d.outbox.clear()

    def result(self) -> dict:
        us = 1e6 / self.batch
        fp = self.fp
        return {"case": self.name, "batch": self.batch,
                "batch_us_per_pkt": round(statistics.median(self.per_batch) * us, 3),
                "batch_best_us_per_pkt": round(min(self.per_batch) * us, 3),
                "per_packet_us_per_pkt": round(statistics.median(self.per_packet) * us, 3),
                "per_packet_best_us_per_pkt": round(min(self.per_packet) * us, 3),
                "fast_share": round(fp.fast / (fp.fast + fp.slow), 4)}


CASES = ["nat-v4", "nat-v6", "nat-mix", "dr-v4", "dr-v6", "dr-mix", "tun-v4", "tun-v6",
         "tun-mix"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--flows", type=int, default=64)
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args(argv)
    cases = [Case(c, args.batch, args.flows) for c in CASES]
    for _ in range(args.rounds):  # interleaved: a busy moment hits every case alike
        for case in cases:
            case.round()
    rows = [c.result() for c in cases]
    print(f"{'case':8} {'batch us/pkt':>13} {'(best)':>7} {'per-packet us/pkt':>18}"
          f" {'(best)':>7} {'fast share':>11}")
    for r in rows:
        print(f"{r['case']:8} {r['batch_us_per_pkt']:13.2f} {r['batch_best_us_per_pkt']:7.2f}"
              f" {r['per_packet_us_per_pkt']:18.2f} {r['per_packet_best_us_per_pkt']:7.2f}"
              f" {r['fast_share']:11.2%}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
