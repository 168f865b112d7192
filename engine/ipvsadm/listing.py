"""ipvsadm's listings: -L (with --stats, --rate, --thresholds, --persistent-conn,
--tun-info), -S and -Lc, with the printf formats of ipvsadm 1.31's print_title,
print_service_entry, print_largenum, list_conn and print_conn.

Numeric columns are printf "%-6d"-style minimum widths: a wider value widens its
column, as in C.  Output is always numeric (names are never looked up).
"""

from __future__ import annotations

import socket

from pyvs.engine.ipvsadm.addresses import (
    AF_INET,
    AF_INET6,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
)
from pyvs.engine.ipvsadm.options import (
    FMT_EXACT,
    FMT_NOSORT,
    FMT_PERSISTENTCONN,
    FMT_RATE,
    FMT_RULE,
    FMT_STATS,
    FMT_THRESHOLDS,
    FMT_TUN_INFO,
    TUN_FLAGS_OPTS,
    TUNFLAGS,
)
from pyvs.engine.ipvsadm.output import Out
from pyvs.engine.model import (
    FWD_DROUTE,
    FWD_LOCALNODE,
    FWD_MASQ,
    FWD_TUNNEL,
    SVC_F_ONEPACKET,
    SVC_F_PERSISTENT,
    SVC_F_SCHED1,
    SVC_F_SCHED2,
    SVC_F_SCHED3,
)

IPVS_VERSION = "1.2.1"
IPPROTO_IP = 0


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def _ntop(af: int, addr: bytes) -> str:
    if af == AF_INET6:
        if len(addr) == 4:
            addr = addr + bytes(12)
        return socket.inet_ntop(AF_INET6, addr)
    return socket.inet_ntop(AF_INET, addr[:4])


def addrport(af: int, addr: bytes, port: int) -> str:
    if af == AF_INET:
        return f"{_ntop(af, addr)}:{port}"
    return f"[{_ntop(af, addr)}]:{port}"


def largenum(i: int, exact: bool) -> str:
    if exact:
        s = str(i)
        return s.rjust(9 if len(s) <= 8 else len(s) + 1)
    if i < 100000000:
        return f"{i:9d}"
    if i < 1000000000:
        return f"{i // 1000:8d}K"
    if i < 100000000000:
        return f"{i // 1000000:8d}M"
    if i < 100000000000000:
        return f"{i // 1000000000:8d}G"
    return f"{i // 1000000000000:8d}T"


def proto_name(proto: int) -> str:
    return {IPPROTO_TCP: "TCP", IPPROTO_UDP: "UDP", IPPROTO_SCTP: "SCTP"}.get(proto, "?")


def _conn_proto_name(proto: int) -> str:
    # ip_vs_proto_name() as /proc/net/ip_vs_conn prints it
    names = {IPPROTO_IP: "IP", IPPROTO_TCP: "TCP", IPPROTO_UDP: "UDP", IPPROTO_SCTP: "SCTP",
             50: "ESP", 51: "AH", 58: "ICMPv6", 1: "ICMP"}
    return names.get(proto, f"IP_{proto}")


def fwd_name(fwd: int) -> str:
    return {FWD_MASQ: "Masq", FWD_LOCALNODE: "Local", FWD_TUNNEL: "Tunnel",
            FWD_DROUTE: "Route"}.get(fwd, "(null)")


def fwd_switch(fwd: int) -> str:
    return {FWD_MASQ: "-m", FWD_TUNNEL: "-i", FWD_LOCALNODE: "-g",
            FWD_DROUTE: "-g"}.get(fwd, "(null)")


def _sched_flags_text(svc) -> str:
    f = svc.flags
    out = []
    if svc.sched_name == "sh":
        if f & SVC_F_SCHED1:
            out.append("sh-fallback")
        if f & SVC_F_SCHED2:
            out.append("sh-port")
    elif svc.sched_name == "mh":
        if f & SVC_F_SCHED1:
            out.append("mh-fallback")
        if f & SVC_F_SCHED2:
            out.append("mh-port")
    else:
        if f & SVC_F_SCHED1:
            out.append("flag-1")
        if f & SVC_F_SCHED2:
            out.append("flag-2")
        if f & SVC_F_SCHED3:
            out.append("flag-3")
    return ",".join(out)


def _mask_text(netmask: int) -> str:
    return socket.inet_ntoa((netmask & 0xFFFFFFFF).to_bytes(4, "big"))


def _addr_int(addr: bytes) -> int:
    return int.from_bytes(addr, "big")


def _svc_sort_key(svc) -> tuple:
    if svc.fwmark:
        return (svc.fwmark & 0xFFFFFFFF, svc.af, 0, 0, 0)
    return (0, svc.af, svc.protocol, _addr_int(svc.addr), svc.port)


def _dest_sort_key(d) -> tuple:
    return (_addr_int(d.addr), d.port)


# -- listing ------------------------------------------------------------------------------
def print_title(o: Out, fmt: int) -> None:
    t = "Prot LocalAddress:Port"
    if fmt & FMT_STATS:
        o.p(f"{t:<33} {'Conns':>8} {'InPkts':>8} {'OutPkts':>8} {'InBytes':>8} "
            f"{'OutBytes':>8}\n  -> RemoteAddress:Port\n")
    elif fmt & FMT_RATE:
        o.p(f"{t:<33} {'CPS':>8} {'InPPS':>8} {'OutPPS':>8} {'InBPS':>8} "
            f"{'OutBPS':>8}\n  -> RemoteAddress:Port\n")
    elif fmt & FMT_THRESHOLDS:
        o.p(f"{t:<33} {'Uthreshold':<10} {'Lthreshold':<10} {'ActiveConn':<10} "
            f"{'InActConn':<10}\n  -> RemoteAddress:Port\n")
    elif fmt & FMT_PERSISTENTCONN:
        o.p(f"{t:<33} {'Weight':<9} {'PersistConn':<11} {'ActiveConn':<10} "
            f"{'InActConn':<10}\n  -> RemoteAddress:Port\n")
    elif fmt & FMT_TUN_INFO:
        o.p("Prot LocalAddress:Port Scheduler Flags\n"
            "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn "
            "InActConn\n")
    elif not fmt & FMT_RULE:
        o.p("Prot LocalAddress:Port Scheduler Flags\n"
            "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n")


def _tun_info(d) -> str | None:
    if d.fwd != FWD_TUNNEL:
        return None
    if d.tun_type == 0:
        return "ipip"
    if d.tun_type == 1:
        return f"gue:{d.tun_port}:{TUNFLAGS[d.tun_flags] if d.tun_flags < 3 else '?'}"
    if d.tun_type == 2:
        return f"gre:{TUNFLAGS[d.tun_flags] if d.tun_flags < 3 else '?'}"
    return None


def _tunnel_rule(svc_name: str, dname: str, d) -> str:
    sw = fwd_switch(d.fwd)
    flags = TUN_FLAGS_OPTS[d.tun_flags] if d.tun_flags < 3 else ""
    if d.tun_type == 2:
        return f"-a {svc_name} -r {dname} {sw} -w {d.weight} --tun-type gre {flags}\n"
    if d.tun_type == 1:
        return (f"-a {svc_name} -r {dname} {sw} -w {d.weight} --tun-type gue "
                f"--tun-port {d.tun_port} {flags}\n")
    if d.tun_type == 0:
        return f"-a {svc_name} -r {dname} {sw} -w {d.weight} --tun-type ipip\n"
    return f"-a {svc_name} -r {dname} {sw} -w {d.weight}\n"


def print_service_entry(o: Out, director, svc, fmt: int) -> None:
    exact = bool(fmt & FMT_EXACT)
    if svc.fwmark:
        mark = _s32(svc.fwmark)
        if fmt & FMT_RULE:
            svc_name = f"-f {mark} -6" if svc.af == AF_INET6 else f"-f {mark}"
        else:
            svc_name = f"FWM  {mark} IPv6" if svc.af == AF_INET6 else f"FWM  {mark}"
    else:
        vname = addrport(svc.af, svc.addr, svc.port)
        if fmt & FMT_RULE:
            stype = {IPPROTO_TCP: "-t", IPPROTO_UDP: "-u",
                     IPPROTO_SCTP: "--sctp-service"}.get(svc.protocol, "--xxx-service")
            svc_name = f"{stype} {vname}"
        else:
            svc_name = f"{proto_name(svc.protocol):<4} {vname}"
            if svc.af != AF_INET6:
                svc_name = svc_name[:33]

    flags_txt = _sched_flags_text(svc) if svc.flags & (SVC_F_SCHED1 | SVC_F_SCHED2
                                                        | SVC_F_SCHED3) else ""
    if fmt & FMT_RULE:
        line = f"-A {svc_name} -s {svc.sched_name}"
        if svc.flags & SVC_F_PERSISTENT:
            line += f" -p {svc.timeout}"
            if svc.af == AF_INET and (svc.netmask & 0xFFFFFFFF) != 0xFFFFFFFF:
                line += f" -M {_mask_text(svc.netmask)}"
            if svc.af == AF_INET6 and svc.netmask != 128:
                line += f" -M {svc.netmask}"
        if svc.pe_name:
            line += f" --pe {svc.pe_name}"
        if svc.flags & SVC_F_ONEPACKET:
            line += " -o"
        if svc.flags & (SVC_F_SCHED1 | SVC_F_SCHED2 | SVC_F_SCHED3):
            line += f" -b {flags_txt}"
    elif fmt & FMT_STATS:
        s = svc.stats
        line = f"{svc_name:<33}" + "".join(largenum(v, exact) for v in (
            s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes))
    elif fmt & FMT_RATE:
        line = f"{svc_name:<33}" + "".join(largenum(v, exact)
                                           for v in director.rates(svc.stats))
    else:
        line = f"{svc_name} {svc.sched_name}"
        if flags_txt or svc.flags & (SVC_F_SCHED1 | SVC_F_SCHED2 | SVC_F_SCHED3):
            line += f" ({flags_txt})"
        if svc.flags & SVC_F_PERSISTENT:
            line += f" persistent {svc.timeout}"
            if svc.af == AF_INET and (svc.netmask & 0xFFFFFFFF) != 0xFFFFFFFF:
                line += f" mask {_mask_text(svc.netmask)}"
            if svc.af == AF_INET6 and svc.netmask != 128:
                line += f" mask {svc.netmask}"
            if svc.pe_name:
                line += f" pe {svc.pe_name}"
        if svc.flags & SVC_F_ONEPACKET:
            line += " ops"
    o.p(line + "\n")

    dests = list(svc.destinations)
    if not fmt & FMT_NOSORT:
        dests.sort(key=_dest_sort_key)
    for d in dests:
        dname = addrport(d.af, d.addr, d.port)
        if not fmt & FMT_RULE and d.af != AF_INET6:
            dname = dname[:28]
        if fmt & FMT_RULE:
            if d.fwd == FWD_TUNNEL:
                o.p(_tunnel_rule(svc_name, dname, d))
            else:
                o.p(f"-a {svc_name} -r {dname} {fwd_switch(d.fwd)} -w {d.weight}\n")
        elif fmt & FMT_STATS:
            s = d.stats
            o.p(f"  -> {dname:<28}" + "".join(largenum(v, exact) for v in (
                s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes)) + "\n")
        elif fmt & FMT_RATE:
            cps, inpps, outpps, inbps, outbps = director.rates(d.stats)
            o.p(f"  -> {dname:<28} {cps:8d} {inpps:8d} {outpps:8d}"
                f"{largenum(inbps, exact)}{largenum(outbps, exact)}\n")
        elif fmt & FMT_THRESHOLDS:
            o.p(f"  -> {dname:<28} {d.u_threshold:<10} {d.l_threshold:<10} "
                f"{d.activeconns:<10} {d.inactconns:<10}\n")
        elif fmt & FMT_PERSISTENTCONN:
            o.p(f"  -> {dname:<28} {d.weight:<9} {d.persistconns:<11} "
                f"{d.activeconns:<10} {d.inactconns:<10}\n")
        elif fmt & FMT_TUN_INFO:
            ti = _tun_info(d) or "n/a"
            o.p(f"  -> {dname:<28} {fwd_name(d.fwd):<7} {ti:<13} {d.weight:<6} "
                f"{d.activeconns:<10} {d.inactconns:<10}\n")
        else:
            o.p(f"  -> {dname:<28} {fwd_name(d.fwd):<7} {d.weight:<6} "
                f"{d.activeconns:<10} {d.inactconns:<10}\n")


def list_all(o: Out, director, fmt: int) -> None:
    if not fmt & FMT_RULE:
        o.p(f"IP Virtual Server version {IPVS_VERSION} (size={director.conn_tab_size})\n")
    services = list(director.services.services.values())
    if not fmt & FMT_NOSORT:
        services.sort(key=_svc_sort_key)
    print_title(o, fmt)
    for svc in services:
        print_service_entry(o, director, svc, fmt)


def list_conn(o: Out, director, fmt: int) -> None:
    o.p("IPVS connection entries\n")
    if fmt & FMT_PERSISTENTCONN:
        o.p(f"pro expire {'state':<11} {'source':<18} {'virtual':<18} {'destination':<18} "
            f"{'pe name':<16} pe_data\n")
    else:
        o.p(f"pro expire {'state':<11} {'source':<18} {'virtual':<18} destination\n")
    now = director.now()
    for c in director.conntable.entries():
        # The engine keeps no PE data, so the 11-field (pe name/pe_data) row never occurs.
        expires = max(0, int(c.expires - now))
        expire_str = f"{expires // 60:02d}:{expires % 60:02d}"
        daf = AF_INET6 if len(c.daddr) == 16 else AF_INET
        cname = addrport(c.af, c.caddr, c.cport)
        vname = addrport(c.af, c.vaddr, c.vport)
        dname = addrport(daf, c.daddr, c.dport)
        o.p(f"{_conn_proto_name(c.protocol):<3} {expire_str:<6} {c.state_name:<11} "
            f"{cname:<18} {vname:<18} {dname}\n")
