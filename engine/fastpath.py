"""The batch pipeline: a whole receive block at a time, numpy for headers and rewrites.

``FastPath(director).run(buf, offs, lens)`` takes a writable uint8 array holding
Ethernet frames (a TPACKET_V3 ring block, or any buffer), the offset of each
frame and its captured length, and returns one verdict per frame (ACCEPT,
FORWARD, DROP as in engine/verdict.py); FORWARD frames have been rewritten in
place (IP and L4 headers; the Ethernet header is the port's business).

How a batch goes:
  1. The first 54 bytes of every frame are gathered into an (n, 54) array and the
     IPv4/TCP/UDP header fields are decoded column-wise; IPv6 frames get columns of
     their own (74 bytes, engine/fastpath6.py), merged into the batch's.
  2. A frame is *eligible* for the fast path when nothing about it is unusual:
     IPv4 with a 20-byte header, not a fragment, or IPv6 with no extension header,
     lengths consistent (exactly the checks engine/packet.parse makes, so parse could
     not fail on it), TTL / hop limit above 1, TCP whose flags make an ACK event (no
     SYN, FIN or RST) or UDP.
  3. One Python loop in arrival order looks each frame up with the connection
     table's own lookups (ConnTable.out_get_key, in_get_many: the NAT reply
     direction first, then the in index, through the packed integer keys of
     engine/conntable.py).  A frame takes the fast path only if it hits an entry and
     its handling cannot change anything but counters and timers: a masquerading
     entry whose destination is available, a TCP state that an ACK leaves as it is
     (engine/proto/tcp.py ack_keeps_state), no NOOUTPUT flag to clear.  For those
     the loop counts in_pkts and notes the new address/port.  Direct-routing and IPIP
     entries take it too when their forwarder says the packet needs nothing but the
     TTL and one frame out (DirectRoute.ready_hop: on-link, neighbour resolved, nothing
     queued; Tunnel.ready_plan: plain IPIP, IPv4 in IPv4 or IPv6 in IPv6, path MTU large
     enough): the frame (DR: new MACs, sent from where it sits) or the outer packet
     (forwarders/encap.py's header) is queued in l2_outbox / outbox in packet order
     as the forwarders queue theirs (engine/bufref.py), verdict DROP as theirs.  An
     IPIP packet whose outer header gets DF (ID 0 then, as ip_select_ident makes it:
     nothing is left for the stack to choose) becomes a ready Ethernet frame in place
     when the port leaves ``headroom`` before its frames and the next hop's MAC is
     known (TunnelPlan.hop): outer and Ethernet headers go into the 20 bytes before
     the frame and over its own Ethernet header, the inner packet is not copied, and
     the port sends it like a DR frame.  What Director.handle would do besides is
     done once per batch with the core's batch operations (the protocol's
     keep_state_many, ConnTable.put_many).  Every other frame (new flows, SYN/FIN/RST,
     ICMP, IPv6 extension headers, anything odd) is copied out and handed to
     Director.handle, in order, so interleaving is exact.
  4. Address/port rewrites and the RFC 1624 checksum updates of all fast frames
     are then done column-wise with engine/csum.py's csum_adjust, the function
     forwarders/nat.py uses per packet.
  5. Counters are summed per destination with numpy and added once
     (Director.count_in / count_out).

tests/test_fastpath.py checks, for random packet sequences, that decisions,
rewritten bytes, entries (state, timeout, expiry, flags, in_pkts), destination
counters and stats are identical to the per-packet path.
"""

from __future__ import annotations

from itertools import repeat
from operator import and_, attrgetter, lshift, or_

import numpy as np

from pyvs.engine import fastpath6
from pyvs.engine.bufref import BufRef
from pyvs.engine.conntable import source_rs_key
from pyvs.engine.csum import TTL_DELTA, csum_adjust
from pyvs.engine.model import (
    CONN_F_NOOUTPUT,
    DEST_F_AVAILABLE,
    FWD_DROUTE,
    FWD_MASK,
    FWD_MASQ,
    FWD_TUNNEL,
)
from pyvs.engine.packet import Malformed, parse
from pyvs.engine.proto import INPUT, INPUT_ONLY, OUTPUT, PROTOCOLS
from pyvs.engine.proto.tcp import ack_keeps_state
from pyvs.engine.verdict import ACCEPT, DROP, FORWARD
from pyvs.forwarders.encap import ipip_headers, set_ipv4_header_csums

ETH = 14
HDR = ETH + 20 + 20  # Ethernet + IPv4 without options + TCP without options
_COLS = np.arange(HDR, dtype=np.int64)
_WB = np.arange(ETH + 8, HDR, dtype=np.int64)  # TTL .. end of a TCP header
_GATHER_MAX = 256  # IPIP inner packets up to this long are copied with one gather
_L2TTL = np.r_[0:12, ETH + 8:ETH + 12]  # the MACs, and TTL .. header checksum
_L2_OUTER = ETH + 20 + 20  # an IPIP frame's headers: Ethernet, outer and inner IPv4
_L2_COLS = np.arange(_L2_OUTER, dtype=np.int64)
_ETH_IPV4 = np.array([0x08, 0x00], dtype=np.uint8)

_TCP, _UDP = 6, 17
_M48, _M144 = (1 << 48) - 1, (1 << 144) - 1
_IKEY, _DADDR, _DPORT = (attrgetter(a) for a in ("ikey", "daddr", "dport"))
# per secure_tcp setting, per direction: the states an ACK leaves unchanged
_ACK_STAYS = {secure: tuple(ack_keeps_state(d, secure) for d in (INPUT, OUTPUT, INPUT_ONLY))
              for secure in (False, True)}


def _by_family(six: np.ndarray):
    """(positions, is IPv6) for the IPv4 and the IPv6 part of some batch rows."""
    if not six.any():
        return ((np.arange(len(six)), False),)
    if six.all():
        return ((np.arange(len(six)), True),)
    return ((np.flatnonzero(~six), False), (np.flatnonzero(six), True))


class FastPath:
    def __init__(self, director) -> None:
        self.director = director
        self.fast = 0  # frames handled here (for `status` and the bench)
        self.slow = 0  # frames handed to Director.handle

    # ------------------------------------------------------------------------------------
    def run(self, buf: np.ndarray, offs: np.ndarray, lens: np.ndarray,
            now: float | None = None, headroom: int = 0) -> np.ndarray:
        """One batch (see the module docstring); ``headroom``: bytes before every frame
        the port lets this overwrite (an IPIP frame is then built in place)."""
        d = self.director
        n = len(offs)
        verdicts = np.full(n, ACCEPT, dtype=np.int8)
        if n == 0:
            return verdicts
        if now is None:
            now = d.clock.now()
        offs = offs.astype(np.int64, copy=False)
        lens = lens.astype(np.int64, copy=False)
        idx = offs[:, None] + _COLS
        np.minimum(idx, len(buf) - 1, out=idx)
        h = buf[idx]

        w = h.view(">u2")  # big-endian 16-bit words: every field used here is aligned
        i64 = np.int64
        ethertype = w[:, 6]
        tot = w[:, 8].astype(i64)  # ETH + 2
        frag = w[:, 10]  # ETH + 6
        proto = h[:, ETH + 9].astype(i64)
        saddr = (w[:, 13].astype(i64) << 16) | w[:, 14]  # ETH + 12
        daddr = (w[:, 15].astype(i64) << 16) | w[:, 16]  # ETH + 16
        sport = w[:, 17].astype(i64)  # ETH + 20
        dport = w[:, 18].astype(i64)  # ETH + 22
        tflags = h[:, ETH + 33]
        doff = (h[:, ETH + 32] >> 4).astype(np.int64) << 2
        ulen = w[:, 19].astype(i64)  # ETH + 24
        avail = tot - 20
        is_tcp = proto == _TCP
        is_udp = proto == _UDP
        elig = ((ethertype == 0x0800) & (h[:, ETH] == 0x45) & ((frag & 0x3FFF) == 0)
                & (h[:, ETH + 8] > 1)  # a TTL of 1 is answered with time exceeded
                & (lens >= HDR) & (tot + ETH <= lens)
                & ((is_tcp & (avail >= 20) & (doff >= 20) & (doff <= avail)
                    & ((tflags & 0x17) == 0x10))
                   | (is_udp & (avail >= 8) & (ulen >= 8) & (ulen <= avail))))
        if d.tracer is not None:  # `pyvs trace`: traced frames take Director.handle, seen
            elig &= ~d.tracer.batch_mask(saddr, sport, daddr, dport)
        # IPv6 frames: their own columns (engine/fastpath6.py), merged into the batch's
        is6 = ethertype == 0x86DD
        rows6 = np.flatnonzero(is6)
        c6 = None
        if len(rows6):
            c6 = fastpath6.decode(buf, offs[rows6], lens[rows6])
            # `pyvs trace` filters are matched on IPv4 columns: traced or not, IPv6 frames
            # take Director.handle while a tracer is attached
            elig[rows6] = c6.elig if d.tracer is None else False
            tot[rows6] = c6.tot
            proto[rows6] = c6.proto

        # packed keys (engine/conntable.pack_key / rs_key) of the IPv4 frames
        hi = (proto << 32) | saddr  # key >> 64
        lo = ((sport.astype(np.uint64) << np.uint64(48))
              | ((daddr << 16) | dport).astype(np.uint64))  # key & (2**64 - 1)
        rk = (proto << 48) | (saddr << 16) | sport  # rs_key of a reply

        table = d.conntable
        out_get = table.out_get_key
        in_get_many = table.in_get_many
        timeouts = d.timeouts
        secure = d.sysctl.secure_tcp >= 2  # the defense tables (engine/defense.py)
        stays = _ACK_STAYS[secure]
        out_stays, in_stays = stays[OUTPUT], stays[INPUT]
        slow_packet = self.handle_slow
        observe = d.sync_observer  # a sync master sees every incoming packet, fast or not

        el = elig.tolist()
        his, los, rks = hi.tolist(), lo.tolist(), rk.tolist()
        protos = proto.tolist()
        # the packed in keys and both first lookups of the whole batch, in C (map); they
        # hold until a frame goes to Director.handle (which may change the table), after
        # which every lookup is made again at its frame's turn
        keys = list(map(or_, map(lshift, his, repeat(64, n)), los))
        if c6 is not None:
            for j, key in zip(rows6.tolist(), c6.keys, strict=True):
                keys[j] = key
                rks[j] = source_rs_key(key)
        v6s = is6.tolist()
        pre_reply = table.replies_possible(rks)
        pre_in = in_get_many(keys)
        clean = True

        # direct routing / tunnel: the forwarders' answers for this batch, asked again
        # after any packet took the per-packet way (it may have queued or learned)
        ctx = d.ctx
        fwds = d.forwarders
        dr, tun = fwds[FWD_DROUTE], fwds[FWD_TUNNEL]
        ways: dict = {}
        ways_gen = 0
        in_only_stays = stays[INPUT_ONLY]
        tots = tot.tolist()
        offl = offs.tolist()
        l2_outbox, outbox = d.l2_outbox, d.outbox
        nat_i: list[int] = []  # fast requests by method: NAT (rewritten, FORWARD) ...
        nat_c: list = []
        nat_d: list = []
        dr_i: list[int] = []  # ... direct routing (frame queued in l2_outbox) ...
        dr_h: list = []
        tun_i: list[int] = []  # ... IPIP (outer packet queued in outbox)
        tun_p: list = []
        tun_at: list[int] = []
        tunbuf = None
        tun_pos = 0
        tl2_i: list[int] = []  # ... IPIP as ready Ethernet frames (outbox, in place)
        tl2_p: list = []
        l2_room = headroom >= 20
        dfs = ((frag & 0x4000) != 0).tolist() if l2_room else None
        out_i: list[int] = []  # fast replies: frame index, conn, its destination
        out_c: list = []
        out_d: list = []
        in_i: list[int] = []  # fast requests, every method
        in_c: list = []
        in_d: list = []
        fast = slow = 0
        for i in range(n):
            if not el[i]:
                verdicts[i] = slow_packet(buf, int(offs[i]), int(lens[i]), now)
                slow += 1
                clean = False
                continue
            conn = None
            if pre_reply[i] or not clean:  # Director.handle: the reply direction first
                conn = out_get(keys[i])
                if conn is not None:
                    flags = conn.flags
                    dest = conn.dest
                    p = protos[i]
                    if (flags & (CONN_F_NOOUTPUT | FWD_MASK) or dest is None
                            or not dest.flags & DEST_F_AVAILABLE
                            or (p == _TCP and conn.state not in out_stays)):
                        verdicts[i] = slow_packet(buf, int(offs[i]), int(lens[i]), now)
                        slow += 1
                        clean = False
                        continue
                    if observe is not None:  # a reply may assure the template a later
                        # request's sync record carries: its state now, in packet order
                        PROTOCOLS[p].keep_state_many((conn,), OUTPUT, timeouts)
                    out_i.append(i)
                    out_c.append(conn)
                    out_d.append(dest)
                    fast += 1
                    continue
            conn = pre_in[i] if clean else in_get_many((keys[i],))[0]
            if conn is None:
                verdicts[i] = slow_packet(buf, int(offs[i]), int(lens[i]), now)
                slow += 1
                clean = False
                continue
            flags = conn.flags
            dest = conn.dest
            p = protos[i]
            fwd = flags & FWD_MASK
            if fwd == FWD_MASQ:
                if (flags & CONN_F_NOOUTPUT or dest is None
                        or not dest.flags & DEST_F_AVAILABLE
                        or (p == _TCP and conn.state not in in_stays)):
                    verdicts[i] = slow_packet(buf, int(offs[i]), int(lens[i]), now)
                    slow += 1
                    clean = False
                    continue
                nat_i.append(i)
                nat_c.append(conn)
                nat_d.append(dest)
            else:  # direct routing or IPIP: when its forwarder says it is that simple
                ready = None
                if ((fwd == FWD_DROUTE or fwd == FWD_TUNNEL) and dest is not None
                        and dest.flags & DEST_F_AVAILABLE
                        and (p != _TCP or conn.state in (in_only_stays
                                                         if flags & CONN_F_NOOUTPUT
                                                         else in_stays))):
                    if ways_gen != slow:  # a packet went the per-packet way: ask again
                        ways.clear()
                        ways_gen = slow
                    daddr = conn.daddr
                    key = (fwd, id(dest), daddr)
                    ready = ways.get(key, ways)
                    if ready is ways:
                        ready = (dr.ready_hop(ctx, daddr) if fwd == FWD_DROUTE
                                 else tun.ready_plan(ctx, conn))
                        ways[key] = ready
                    if ready is not None and tots[i] > ready.mtu:
                        ready = None  # fragments or ICMP frag needed: per packet
                if ready is None:
                    verdicts[i] = slow_packet(buf, int(offs[i]), int(lens[i]), now)
                    slow += 1
                    clean = False
                    continue
                if fwd == FWD_DROUTE:
                    dr_i.append(i)
                    dr_h.append(ready)
                    l2_outbox.append((ready.ifname,
                                      BufRef(buf, offl[i], ETH + tots[i], ready.ifindex)))
                elif (ready.hop is not None and l2_room and not v6s[i] and dfs[i]
                      and ready.copy_df):
                    # a ready Ethernet frame, built where the packet sits (its outer
                    # header in the headroom before it); DF set: the outer ID is 0, as
                    # ip_select_ident makes it, so the stack has nothing left to choose
                    tl2_i.append(i)
                    tl2_p.append(ready)
                    outbox.append(BufRef(buf, offl[i] - 20, ETH + 20 + tots[i],
                                         ready.hop.ifindex))
                else:  # the outer packet in a buffer of its own, to the stack
                    if tunbuf is None:
                        tunbuf = np.empty(int(tot[elig].sum()) + 40 * n, dtype=np.uint8)
                    tun_i.append(i)
                    tun_p.append(ready)
                    tun_at.append(tun_pos)
                    size = (40 if v6s[i] else 20) + tots[i]  # IPv6 in IPv6, or IPIP
                    outbox.append(BufRef(tunbuf, tun_pos, size))
                    tun_pos += size
                verdicts[i] = DROP  # sent through an outbox, as the forwarders do
            conn.in_pkts += 1
            if observe is not None:
                observe(conn)
            in_i.append(i)
            in_c.append(conn)
            in_d.append(dest)
            fast += 1
        self.fast += fast
        self.slow += slow
        # what Director.handle does for each, after the lookups: the protocol's state
        # transition (these packets keep the state) and the timer, for the whole batch
        # (re-applying them after a later packet of the same entry changes nothing)
        for rows, conns, direction in ((out_i, out_c, OUTPUT), (in_i, in_c, INPUT)):
            if not conns:
                continue
            pr = proto[rows]
            if (pr == pr[0]).all():  # the usual batch: one protocol
                PROTOCOLS[int(pr[0])].keep_state_many(conns, direction, timeouts)
            else:
                for p in (_TCP, _UDP):
                    group = [c for i, c in zip(rows, conns, strict=True) if protos[i] == p]
                    PROTOCOLS[p].keep_state_many(group, direction, timeouts)
            table.put_many(conns, now)
        pos6 = None
        if c6 is not None:  # row of the batch -> row of the IPv6 columns
            pos6 = np.zeros(n, dtype=np.int64)
            pos6[rows6] = np.arange(len(rows6))
        for rows, conns, dests, reply in ((out_i, out_c, out_d, True),
                                          (nat_i, nat_c, nat_d, False)):
            if not rows:
                continue
            r = np.asarray(rows, dtype=np.int64)
            for sel, six in _by_family(is6[r]):
                part = [conns[k] for k in sel.tolist()]
                if six:
                    self._rewrite6(buf, offs, tot, proto, c6, pos6, r[sel], part,
                                   [dests[k] for k in sel.tolist()], reply)
                else:
                    self._rewrite(buf, offs, tot, proto, h, r[sel], part,
                                  [dests[k] for k in sel.tolist()], reply)
            verdicts[r] = FORWARD
        if dr_i:
            r = np.asarray(dr_i, dtype=np.int64)
            for sel, six in _by_family(is6[r]):
                hops = [dr_h[k] for k in sel.tolist()]
                if six:
                    p = pos6[r[sel]]
                    fastpath6.route(buf, offs[r[sel]], c6.h[p],
                                    b"".join(hp.dst_mac + hp.src_mac for hp in hops))
                else:
                    self._route(buf, offs, h, r[sel], hops)
        if tun_i:
            r = np.asarray(tun_i, dtype=np.int64)
            for sel, six in _by_family(is6[r]):
                plans = [tun_p[k] for k in sel.tolist()]
                at = [tun_at[k] for k in sel.tolist()]
                if six:
                    rr = r[sel]
                    fastpath6.encapsulate(buf, offs[rr], tot[rr], c6.h[pos6[rr]], plans,
                                          tunbuf, at)
                else:
                    self._encapsulate(buf, offs, tot, h, r[sel].tolist(), plans, tunbuf, at)
        if tl2_i:
            self._encapsulate_l2(buf, offs, tot, h, tl2_i, tl2_p)
        if dr_i or tun_i or tl2_i:  # counted as Director.count_in does, in packet order
            routed = sorted(dr_i + tun_i + tl2_i)
            by_row = dict(zip(in_i, in_d, strict=True))
            self._count(tot, routed, [by_row[i] for i in routed], False)
        return verdicts

    # ------------------------------------------------------------------------------------
    def handle_slow(self, buf: np.ndarray, off: int, length: int, now: float) -> int:
        """Director.handle on a copy of the IP packet; rewritten bytes are copied back."""
        d = self.director
        pkt = bytearray(buf[off + ETH: off + length])
        d.ctx.stack_forwards = False  # this port transmits what it forwards
        try:
            verdict = d.handle(parse(pkt), pkt, 0, now)
        except Malformed as err:
            d.drops[err.reason] += 1
            return DROP
        finally:
            d.ctx.stack_forwards = True
        if verdict == FORWARD:
            buf[off + ETH: off + ETH + len(pkt)] = np.frombuffer(pkt, dtype=np.uint8)
        return verdict

    def _rewrite(self, buf, offs, tot, proto, h, rows, conns, dests, reply: bool) -> None:
        """SNAT (reply: source := VIP:vport) or DNAT (request: dest := RS:rport) of the
        fast frames, checksums updated as forwarders/nat.py does, and counting."""
        r = np.asarray(rows, dtype=np.int64)
        o = offs[r]
        hh = h[r]
        m = len(conns)
        if reply:
            vps = np.fromiter(map(and_, map(_IKEY, conns), repeat(_M48, m)), np.int64, m)
            new_addr = vps >> 16
            new_port = vps & 0xFFFF
            a_at, p_at = ETH + 12, ETH + 20
        else:
            raw = b"".join(map(_DADDR, conns))
            if len(raw) == 4 * m:  # IPv4 real servers (always, for a MASQ IPv4 entry)
                new_addr = np.frombuffer(raw, dtype=">u4").astype(np.int64)
            else:
                new_addr = np.array([int.from_bytes(c.daddr, "big") for c in conns],
                                    dtype=np.int64)
            new_port = np.fromiter(map(_DPORT, conns), np.int64, m)
            a_at, p_at = ETH + 16, ETH + 22
        # the header rows of these frames, as big-endian 16-bit words (all fields here
        # sit on even offsets), changed in place and written back with one scatter
        w = hh.view(">u2")
        ai, pi = a_at >> 1, p_at >> 1
        old_addr = (w[:, ai].astype(np.int64) << 16) | w[:, ai + 1]
        old_port = w[:, pi].astype(np.int64)
        delta = new_addr - old_addr
        ip_delta = delta
        if not reply:  # the port transmits it: the TTL, as forwarders/nat.py does then
            w[:, (ETH + 8) >> 1] -= 0x100
            ip_delta = delta + TTL_DELTA
        w[:, (ETH + 10) >> 1] = csum_adjust(w[:, (ETH + 10) >> 1].astype(np.int64), ip_delta)
        w[:, ai] = new_addr >> 16
        w[:, ai + 1] = new_addr & 0xFFFF
        w[:, pi] = new_port
        delta = delta + (new_port - old_port)
        pr = proto[r]
        tcp = pr == _TCP
        n_tcp = int(np.count_nonzero(tcp))
        if n_tcp:
            tcp = slice(None) if n_tcp == len(pr) else tcp  # one protocol: no mask
            tc = (ETH + 36) >> 1
            w[tcp, tc] = csum_adjust(w[tcp, tc].astype(np.int64), delta[tcp])
        if n_tcp < len(pr):
            udp = slice(None) if not n_tcp else ~tcp
            uc = (ETH + 26) >> 1
            c = w[udp, uc].astype(np.int64)
            nc = csum_adjust(c, delta[udp])
            nc[nc == 0] = 0xFFFF
            w[udp, uc] = np.where(c != 0, nc, 0)  # UDP checksum 0 = none: left alone
        buf[o[:, None] + _WB] = hh[:, _WB]
        self._count(tot, r, dests, reply)

    def _rewrite6(self, buf, offs, tot, proto, c6, pos6, r, conns, dests,
                  reply: bool) -> None:
        """_rewrite for IPv6 frames (engine/fastpath6.py nat_rewrite), and counting."""
        if reply:  # VIP:vport: the low 144 bits of the in key (conntable.pack_key)
            new = b"".join([(c.ikey & _M144).to_bytes(18, "big") for c in conns])
        else:
            new = b"".join([c.daddr + c.dport.to_bytes(2, "big") for c in conns])
        fastpath6.nat_rewrite(buf, offs[r], c6.h[pos6[r]], proto[r], new, reply)
        self._count(tot, r, dests, reply)

    def _route(self, buf, offs, h, rows, hops) -> None:
        """Direct routing (forwarders/dr.py): TTL - 1 with the checksum as ip_decrease_ttl,
        and the Ethernet header toward the real server's MAC (the frames already sit in
        ``l2_outbox``)."""
        r = np.asarray(rows, dtype=np.int64)
        o = offs[r]
        w = h[r].view(">u2")
        w[:, (ETH + 8) >> 1] -= 0x100
        cs = (ETH + 10) >> 1
        w[:, cs] = csum_adjust(w[:, cs].astype(np.int64), TTL_DELTA)
        hh = w.view(np.uint8)
        macs = np.frombuffer(b"".join(hp.dst_mac + hp.src_mac for hp in hops),
                             dtype=np.uint8).reshape(len(rows), 12)
        hh[:, :12] = macs
        buf[o[:, None] + _L2TTL] = hh[:, _L2TTL]

    def _encapsulate(self, buf, offs, tot, h, rows, plans, tunbuf, at) -> None:
        """IPIP (forwarders/tun.py): the inner packet with its TTL decremented and its
        header checksum recomputed, behind the outer header forwarders/encap.py makes,
        written into ``tunbuf`` where the queued references point."""
        r = np.asarray(rows, dtype=np.int64)
        inner = h[r][:, ETH:ETH + 20].copy()
        inner[:, 8] -= 1
        set_ipv4_header_csums(inner)
        saddr = np.frombuffer(b"".join(p.saddr for p in plans), np.uint8).reshape(-1, 4)
        daddr = np.frombuffer(b"".join(p.daddr for p in plans), np.uint8).reshape(-1, 4)
        outer = ipip_headers(inner, saddr, daddr, plans[0].copy_df)
        starts = np.asarray(at, dtype=np.int64)
        lens = tot[r]
        if int(lens.max()) <= _GATHER_MAX:  # small packets: one gather for all bytes
            ends = np.cumsum(lens)
            total = int(ends[-1])
            shift = np.repeat(ends - lens, lens)
            pos = np.arange(total, dtype=np.int64) - shift
            tunbuf[np.repeat(starts + 20, lens) + pos] = buf[np.repeat(offs[r] + ETH, lens)
                                                             + pos]
        else:
            for s, o, ln in zip(at, (offs[r] + ETH).tolist(), lens.tolist(), strict=True):
                tunbuf[s + 20: s + 20 + ln] = buf[o: o + ln]
        cols = np.arange(20, dtype=np.int64)
        tunbuf[starts[:, None] + cols] = outer
        tunbuf[starts[:, None] + 20 + cols] = inner

    def _encapsulate_l2(self, buf, offs, tot, h, rows, plans) -> None:
        """IPIP as whole Ethernet frames: the outer header and the next hop's Ethernet
        header go into the 20 bytes before each frame and over its own Ethernet header,
        the inner packet stays where it is (TTL - 1, checksum recomputed); the queued
        references start 20 bytes before the frame."""
        r = np.asarray(rows, dtype=np.int64)
        inner = h[r][:, ETH:ETH + 20].copy()
        inner[:, 8] -= 1
        set_ipv4_header_csums(inner)
        saddr = np.frombuffer(b"".join(p.saddr for p in plans), np.uint8).reshape(-1, 4)
        daddr = np.frombuffer(b"".join(p.daddr for p in plans), np.uint8).reshape(-1, 4)
        head = np.empty((len(rows), _L2_OUTER), dtype=np.uint8)
        head[:, :12] = np.frombuffer(b"".join(p.hop.dst_mac + p.hop.src_mac for p in plans),
                                     np.uint8).reshape(-1, 12)
        head[:, 12:14] = _ETH_IPV4
        head[:, 14:34] = ipip_headers(inner, saddr, daddr, True)
        head[:, 34:] = inner
        buf[(offs[r] - 20)[:, None] + _L2_COLS] = head

    def _count(self, tot, r, dests, reply: bool) -> None:
        """Director.count_in / count_out, summed per destination."""
        d = self.director
        count = d.count_out if reply else d.count_in
        lens = tot[r]  # destinations as they were when each frame was handled
        by_id = {id(x): x for x in dests}  # each destination once, in order of appearance
        if len(by_id) == 1:
            count(dests[0], len(dests), int(lens.sum()))
            return
        slot = {k: j for j, k in enumerate(by_id)}
        code = np.fromiter(map(slot.__getitem__, map(id, dests)), np.int64, len(dests))
        k = len(slot)
        pk = np.bincount(code, minlength=k).tolist()
        by = np.bincount(code, weights=lens, minlength=k).tolist()
        for j, dest in enumerate(by_id.values()):
            count(dest, pk[j], int(by[j]))


__all__ = ["FastPath"]
