"""Flows reconstructed from a packet capture, for replay through ``pyvs sim``.

The capture is read with scapy's raw reader (``RawPcapReader``: bytes and a
timestamp per record, pcap or pcapng) and each packet is decoded by the director's
own header parser (engine/packet.py ``parse``), so a capture of millions of packets
never becomes scapy packet objects.  Link types: Ethernet (with 802.1Q tags), raw IP
and Linux cooked capture (SLL).

A TCP flow starts with a client's SYN (without ACK) and ends at its last packet; its
service is the SYN's destination, its demand the time from the SYN to the last
packet, its bytes the TCP payload each way.  Connections whose SYN is not in the
capture are skipped (counted).  A UDP flow is a 5-tuple's packets with no gap longer
than ``udp_idle`` seconds; the first packet's destination is the service.  IPv4 only
(IPv6 and other packets are counted as skipped).
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from pathlib import Path

import numpy as np

from pyvs.engine.packet import Malformed, parse
from pyvs.engine.sim.workload import ServiceDef, Workload, WorkloadError

DLT_EN10MB, DLT_RAW, DLT_RAW_ALT, DLT_LINUX_SLL, DLT_IPV4 = 1, 101, 12, 113, 228
ETH_P_IP, ETH_P_8021Q, ETH_P_8021AD = 0x0800, 0x8100, 0x88A8
TCP, UDP = 6, 17
MAX_SERVICES = 64


def ip_offset(linktype: int, data: bytes) -> int | None:
    """Where the IPv4 header starts in one record (None: not IPv4)."""
    if linktype == DLT_EN10MB:
        off = 12
        while len(data) >= off + 2:
            ethertype = int.from_bytes(data[off:off + 2], "big")
            if ethertype in (ETH_P_8021Q, ETH_P_8021AD):
                off += 4
                continue
            return off + 2 if ethertype == ETH_P_IP else None
        return None
    if linktype in (DLT_RAW, DLT_RAW_ALT, DLT_IPV4):
        return 0 if data[:1] and data[0] >> 4 == 4 else None
    if linktype == DLT_LINUX_SLL:
        return 16 if data[14:16] == b"\x08\x00" else None
    raise WorkloadError(f"capture link type {linktype} is not supported "
                        "(Ethernet, raw IP or Linux cooked)")


def _records(path: Path):
    """(seconds, linktype, bytes) per record, pcap or pcapng."""
    from scapy.utils import RawPcapReader

    try:
        reader = RawPcapReader(str(path))
    except (OSError, Exception) as err:  # scapy raises Scapy_Exception for a bad magic
        raise WorkloadError(f"cannot read capture {path}: {err}") from None
    with reader:
        nano = getattr(reader, "nano", False)
        linktype = getattr(reader, "linktype", None)
        for data, meta in reader:
            if hasattr(meta, "sec"):
                t = meta.sec + meta.usec * (1e-9 if nano else 1e-6)
                yield t, linktype, data
            else:  # pcapng
                t = ((meta.tshigh << 32) | meta.tslow) / meta.tsresol
                yield t, meta.linktype, data


def load(path: str | Path, udp_idle: float = 30.0) -> Workload:
    path = Path(path)
    if not path.is_file():
        raise WorkloadError(f"no such capture file {path}")
    skipped: Counter = Counter()
    live: dict[tuple, list] = {}  # 5-tuple (either direction) -> flow record
    flows: list[list] = []  # [start, last, caddr, cport, proto, vip, vport, req, resp]
    for t, linktype, data in _records(path):
        off = ip_offset(linktype, data)
        if off is None:
            skipped["not-ipv4"] += 1
            continue
        try:
            info = parse(data, off)
        except Malformed as err:
            skipped[err.reason] += 1
            continue
        proto = info.proto
        if proto not in (TCP, UDP) or not info.has_ports:
            skipped["not-tcp-udp"] += 1
            continue
        fwd = (proto, info.saddr, info.sport, info.daddr, info.dport)
        rev = (proto, info.daddr, info.dport, info.saddr, info.sport)
        rec = live.get(fwd)
        to_server = rec is not None
        if rec is None:
            rec = live.get(rev)
        flags = info.tcp_flags
        if proto == TCP:
            new = flags & 0x12 == 0x02  # SYN without ACK
            if new and (rec is None or rec[9]):
                rec = None
            if rec is None:
                if not new:
                    skipped["tcp-without-syn"] += 1
                    continue
                rec = [t, t, info.saddr, info.sport, proto, info.daddr, info.dport, 0, 0, False]
                flows.append(rec)
                live[fwd] = rec
                live.pop(rev, None)
                to_server = True
            if flags & 0x05:  # FIN or RST: later packets still count, a new SYN is new
                rec[9] = True
        else:
            if rec is not None and t - rec[1] > udp_idle:
                rec = None
            if rec is None:
                rec = [t, t, info.saddr, info.sport, proto, info.daddr, info.dport, 0, 0, False]
                flows.append(rec)
                live[fwd] = rec
                live.pop(rev, None)
                to_server = True
        rec[1] = max(rec[1], t)
        rec[7 if to_server else 8] += info.payload_len
    if not flows:
        raise WorkloadError(f"{path}: no TCP or UDP flow found (skipped: {dict(skipped)})")
    by_service = Counter((r[4], r[5], r[6]) for r in flows)
    kept = dict((key, k) for k, (key, _) in enumerate(by_service.most_common(MAX_SERVICES)))
    flows = [r for r in flows if (r[4], r[5], r[6]) in kept]
    flows.sort(key=lambda r: r[0])
    t0 = flows[0][0]
    services = [ServiceDef(str(ipaddress.IPv4Address(vip)), port, "tcp" if p == TCP else "udp")
                for (p, vip, port) in kept]
    wl = Workload(
        start=np.array([r[0] - t0 for r in flows]),
        duration=np.array([r[1] - r[0] for r in flows]),
        req_bytes=np.array([r[7] for r in flows], dtype=np.int64),
        resp_bytes=np.array([r[8] for r in flows], dtype=np.int64),
        caddr=np.array([int.from_bytes(r[2], "big") for r in flows], dtype=np.uint32),
        sport=np.array([r[3] for r in flows], dtype=np.int32),
        service=np.array([kept[(r[4], r[5], r[6])] for r in flows], dtype=np.int16),
        services=services,
        description={"kind": "pcap", "file": str(path), "flows": len(flows),
                     "services_dropped": max(0, len(by_service) - MAX_SERVICES),
                     "skipped_packets": dict(skipped)})
    return wl
