"""The two levels a simulation drives the director at: packets, or connection events.

Both play the same packet plan for every flow -- the packets a client, the director
and a real server exchange -- through the real ``Director``:

  open    SYN in -> (server answers) SYN|ACK out, request in (ACK|PSH segments)
          or (server refuses) RST|ACK out, or (server down) nothing more
  close   response out (ACK|PSH segments, the last one with FIN), the client's
          ACKs in (one per two segments), FIN|ACK in, the last ACK out
  UDP     request datagrams in; at close, response datagrams out

With direct routing (``fwd="dr"``) the director sees only the client's packets
(replies go straight to the client), as in IPVS.

* ``PacketLevel`` builds real IPv4 frames (headers, checksums, payload) and sends them
  through ``Director.process`` exactly as a port would, every segment one frame.
* ``FlowLevel`` makes no bytes: it calls ``Director.handle(info, None)`` with a
  ``PacketInfo`` built from fields, once per run of identical packets, and adds the
  rest of the run with the director's own counting operations (``count_in`` /
  ``count_out``), as the batch fast path does for established packets.  The later
  packets of a run cannot change the state (the TCP tables are idempotent for a
  repeated flag set) and come at the same instant, so the decisions, states,
  timers and counters are those of the packet level (tests/test_sim_levels.py).
"""

from __future__ import annotations

import struct

from pyvs.engine.csum import checksum, pseudo_header_sum
from pyvs.engine.director import Director
from pyvs.engine.model import AF_INET, IPPROTO_TCP, IPPROTO_UDP
from pyvs.engine.neigh import Route
from pyvs.engine.packet import PacketInfo

IN, OUT = 0, 1
SYN, SYNACK, ACK, PSHACK, FINPSHACK, FINACK, RSTACK = 0x02, 0x12, 0x10, 0x18, 0x19, 0x11, 0x14
MSS = 1448  # payload per TCP segment (1500 - 20 IP - 32 TCP with timestamps)
UDP_PAYLOAD = 1472
TCP_HDR, SYN_HDR, UDP_HDR, IP_HDR = 32, 40, 8, 20
SIM_MAC = b"\x02\x00\x00\x00\x51\x4d"

_ip4 = struct.Struct("!BBHHHBBH4s4s")
_tcp = struct.Struct("!HHIIBBHHH")
_udp = struct.Struct("!HHHH")
_TS_OPTS = b"\x01\x01\x08\x0a\x00\x00\x00\x01\x00\x00\x00\x00"  # NOP NOP TS
_SYN_OPTS = b"\x02\x04\x05\xb4\x04\x02\x08\x0a\x00\x00\x00\x01\x00\x00\x00\x00\x01\x03\x03\x07"


class SimRoutes:
    """The director's route and neighbour tables for a simulation: every real server is
    on-link behind one interface (what a DR or TUN director needs), nothing is asked of
    the kernel."""

    def __init__(self, clock) -> None:
        self._clock = clock
        self._routes: dict[bytes, Route] = {}

    def route(self, addr: bytes) -> Route:
        r = self._routes.get(addr)
        if r is None:
            r = self._routes[addr] = Route(addr, False, 2, "sim0", b"\xc6\x12\x02\x01", None,
                                           1500, SIM_MAC, float("inf"))
        return r

    def mac(self, route: Route, addr: bytes) -> bytes:
        return b"\x02\x00" + addr

    def poll(self) -> set:
        return set()

    def clock(self) -> float:
        return self._clock.now()


class Flow:
    """One flow's addresses and its connection while the simulation runs."""

    __slots__ = ("index", "proto", "caddr", "cport", "vaddr", "vport", "raddr", "rport",
                 "conn", "server", "start", "wait", "infos")

    def __init__(self, index: int, proto: int, caddr: bytes, cport: int, vaddr: bytes,
                 vport: int) -> None:
        self.index = index
        self.proto = proto
        self.caddr = caddr
        self.cport = cport
        self.vaddr = vaddr
        self.vport = vport
        self.raddr = b""
        self.rport = 0
        self.conn = None
        self.server = -1
        self.start = 0.0
        self.wait = 0.0
        self.infos: list = [None, None]  # the flow level's PacketInfo per direction


def segments(nbytes: int, per: int) -> tuple[int, int]:
    """(count, size of the last) for nbytes of payload in segments of ``per``."""
    if nbytes <= 0:
        return 0, 0
    count = (nbytes + per - 1) // per
    return count, nbytes - (count - 1) * per


class Level:
    """The packet plan; subclasses say how one run of identical packets is delivered."""

    name = ""

    def __init__(self, director: Director, fwd: str = "nat") -> None:
        self.director = director
        self.replies = fwd == "nat"  # DR: the director never sees the server's packets
        self.calls = 0  # director calls made (handle or process), for events/s

    def run(self, flow: Flow, direction: int, flags: int, count: int, payload: int,
            last_payload: int, now: float) -> bool:
        """Deliver ``count`` packets (payload each, the last one ``last_payload``);
        True when they were bound to the flow's connection."""
        raise NotImplementedError

    # -- the plan ----------------------------------------------------------------------
    def syn(self, flow: Flow, req_bytes: int, now: float):
        """The first packet; returns the connection the director bound it to (or None)."""
        if flow.proto == IPPROTO_UDP:
            n, last = segments(max(req_bytes, 1), UDP_PAYLOAD)
            self.run(flow, IN, 0, 1, UDP_PAYLOAD if n > 1 else last, 0, now)
        else:
            self.run(flow, IN, SYN, 1, 0, 0, now)
        return self.director.last

    def accept(self, flow: Flow, req_bytes: int, now: float) -> bool:
        """The server took the connection: handshake and the rest of the request."""
        if flow.proto == IPPROTO_UDP:
            n, last = segments(max(req_bytes, 1), UDP_PAYLOAD)
            return n <= 1 or self._data(flow, IN, 0, n - 1, UDP_PAYLOAD, last, now)
        ok = True
        if self.replies:
            ok = self.run(flow, OUT, SYNACK, 1, 0, 0, now)
        n, last = segments(req_bytes, MSS)
        if n == 0:
            return self.run(flow, IN, ACK, 1, 0, 0, now) and ok
        return self._data(flow, IN, PSHACK, n, MSS, last, now) and ok

    def refuse(self, flow: Flow, now: float) -> None:
        """The server answered the SYN with a RST (its queue is full)."""
        if flow.proto == IPPROTO_TCP and self.replies:
            self.run(flow, OUT, RSTACK, 1, 0, 0, now)

    def close(self, flow: Flow, resp_bytes: int, now: float) -> bool:
        """The response and the end of the connection; False if a packet was not bound
        to the flow's connection (its server was taken away meanwhile)."""
        if flow.proto == IPPROTO_UDP:
            if not self.replies:
                return True
            n, last = segments(max(resp_bytes, 1), UDP_PAYLOAD)
            return self._data(flow, OUT, 0, n, UDP_PAYLOAD, last, now)
        n, last = segments(resp_bytes, MSS)
        ok = True
        if self.replies:
            if n > 1:
                ok = self._data(flow, OUT, PSHACK, n - 1, MSS, MSS, now)
            ok = self.run(flow, OUT, FINPSHACK if n else FINACK, 1,
                          last if n else 0, 0, now) and ok
        acks = (n + 1) // 2
        if acks:
            ok = self.run(flow, IN, ACK, acks, 0, 0, now) and ok
        ok = self.run(flow, IN, FINACK, 1, 0, 0, now) and ok
        if self.replies:
            ok = self.run(flow, OUT, ACK, 1, 0, 0, now) and ok
        else:
            ok = self.run(flow, IN, ACK, 1, 0, 0, now) and ok  # the client acks the FIN
        return ok

    def _data(self, flow, direction, flags, count, per, last, now) -> bool:
        return self.run(flow, direction, flags, count, per, last, now)


def header_len(proto: int, flags: int) -> int:
    if proto == IPPROTO_UDP:
        return IP_HDR + UDP_HDR
    return IP_HDR + (SYN_HDR if flags & 0x02 else TCP_HDR)


class FlowLevel(Level):
    """``Director.handle(info, None)``: decisions without bytes (see the module doc)."""

    name = "flow"

    def info(self, flow: Flow, direction: int) -> PacketInfo:
        """The flow's PacketInfo for one direction (made once, its flags and lengths set
        per run: handle() does not keep it)."""
        info = flow.infos[direction]
        if info is not None:
            return info
        if direction == IN:
            src, sport, dst, dport = flow.caddr, flow.cport, flow.vaddr, flow.vport
        else:
            src, sport, dst, dport = flow.raddr, flow.rport, flow.caddr, flow.cport
        info = PacketInfo(AF_INET, 4, 0, IP_HDR, flow.proto, src, dst, 0, 64, True, False,
                          True, False)
        info.sport = sport
        info.dport = dport
        info.has_ports = True
        flow.infos[direction] = info
        return info

    def run(self, flow, direction, flags, count, payload, last_payload, now) -> bool:
        d = self.director
        info = self.info(flow, direction)
        hdr = header_len(flow.proto, flags)
        info.tcp_flags = flags
        first = payload if count > 1 else (last_payload or payload)
        info.ip_len = hdr + first
        info.payload_len = first
        d.handle(info, None, 0, now)
        self.calls += 1
        conn = d.last
        if flow.conn is None:
            flow.conn = conn
        bound = conn is not None and conn is flow.conn
        if count == 1:
            return bound
        rest = count - 1
        nbytes = hdr * rest + payload * (rest - 1) + (last_payload or payload)
        if not bound:  # not a plain run any more: every packet goes through handle
            ok = False
            for i in range(rest):
                p = last_payload if i == rest - 1 and last_payload else payload
                info.ip_len = hdr + p
                info.payload_len = p
                d.handle(info, None, 0, now)
                self.calls += 1
                ok = d.last is flow.conn and flow.conn is not None
            return ok
        if direction == IN:
            d.count_in(conn.dest, rest, nbytes)
            conn.in_pkts += rest
        else:
            d.count_out(conn.dest, rest, nbytes)
        return True


class PacketLevel(Level):
    """Real frames through ``Director.process``, one per segment."""

    name = "packet"

    def frame(self, flow: Flow, direction: int, flags: int, payload: int) -> bytearray:
        if direction == IN:
            src, sport, dst, dport = flow.caddr, flow.cport, flow.vaddr, flow.vport
        else:
            src, sport, dst, dport = flow.raddr, flow.rport, flow.caddr, flow.cport
        if flow.proto == IPPROTO_UDP:
            l4 = bytearray(_udp.pack(sport, dport, UDP_HDR + payload, 0)) + bytes(payload)
            proto = IPPROTO_UDP
            c = checksum(l4, pseudo_header_sum(src, dst, proto, len(l4)))
            struct.pack_into("!H", l4, 6, c or 0xFFFF)
        else:
            opts = _SYN_OPTS if flags & 0x02 else _TS_OPTS
            doff = (20 + len(opts)) // 4
            l4 = bytearray(_tcp.pack(sport, dport, 1, 1 if flags & 0x10 else 0, doff << 4,
                                     flags, 65535, 0, 0)) + opts + bytes(payload)
            proto = IPPROTO_TCP
            struct.pack_into("!H", l4, 16,
                             checksum(l4, pseudo_header_sum(src, dst, proto, len(l4))))
        ip = bytearray(_ip4.pack(0x45, 0, IP_HDR + len(l4), 0, 0x4000, 64, proto, 0, src, dst))
        struct.pack_into("!H", ip, 10, checksum(ip))
        return ip + l4

    def run(self, flow, direction, flags, count, payload, last_payload, now) -> bool:
        d = self.director
        if count == 1:
            batch = [self.frame(flow, direction, flags, last_payload or payload)]
        else:
            full = self.frame(flow, direction, flags, payload)
            batch = [bytearray(full) for _ in range(count - 1)]
            batch.append(self.frame(flow, direction, flags, last_payload or payload))
        d.process(batch)
        self.calls += count
        d.outbox.clear()
        d.l2_outbox.clear()
        conn = d.last
        if flow.conn is None:
            flow.conn = conn
        return conn is not None and conn is flow.conn


LEVELS = {"flow": FlowLevel, "packet": PacketLevel}
