"""The ipvsadm command language, executed inside the pyvs daemon.

`pyvsadm` is a thin client: it sends argv (without the program name) and stdin to
the daemon, which calls run() and sends back (exit code, stdout, stderr).  This
module is pure logic over the director object; it never touches the network or
the file system.

Behaviour follows ipvsadm 1.31 (ipvsadm.c / libipvs.c, read from the
louygan/ipvsadm copy plus the upstream GRE patch) as closely as we could read it:

* option parsing imitates popt (short clusters "-Ln", attached arguments
  "-t1.2.3.4:80", "--long=value", the optional argument of -p, leftover
  arguments), then the commands_v_options compatibility table;
* error texts and exit codes are ipvsadm's: fail() exits 2; popt errors,
  "Try `pyvsadm -h'..." and kernel (libipvs) errors exit 255 (ipvsadm returns
  -1 from main); listing a missing service exits 1;
* listing / save formats are the printf formats of print_title,
  print_service_entry, print_largenum, list_conn and print_conn.

Deliberate differences from ipvsadm (documented here once):
* Output is always numeric: without -n ipvsadm resolves addresses and ports to
  names (gethostbyaddr/getservbyport); pyvs never does name look-ups in the
  daemon, so -n is accepted but changes nothing.  On input, host names are not
  resolved either (an unparsable host gives ipvsadm's "illegal ... address"
  error); port *names* are looked up in the services database.
* Sorting uses true numeric order.  libipvs compares with int subtraction of
  u32 values, which misorders addresses that differ by 2^31 or more.
* The program name printed in usage/"Try" messages is "pyvsadm" (ipvsadm prints
  its argv[0]).
* The sync daemon (--start-daemon, --stop-daemon, -L --daemon) acts on the
  director's engine/sync/daemon.py SyncDaemons, handed to run() by `pyvs run`;
  called without one (a bare director), --start-daemon answers "Protocol not
  available" (ENOPROTOOPT) as a kernel without the command would.
* Scheduler names are not truncated to 15 characters, so pyvs' "file.py:Class"
  and "module:Class" scheduler specs work.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket

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
    DestSpec,
    ServiceSpec,
)
from pyvs.engine.service import PERSISTENT_TIMEOUT_DEFAULT, IPVSError

PROG = "pyvsadm"
VERSION_LINE = "ipvsadm v1.31 2019/12/24 (compiled with popt and IPVS v1.2.1)\n"
IPVS_VERSION = "1.2.1"
SCHEDULERS = "rr|wrr|lc|wlc|lblc|lblcr|dh|sh|sed|nq|fo|ovf"
PE_LIST = "sip"
KNOWN_PES = ("sip",)
DEF_SCHED = "wlc"
DEF_TUNNEL_TYPE = "ipip"
MAX_TIMEOUT = 86400 * 31
INT_MAX = 2**31 - 1

AF_INET = socket.AF_INET
AF_INET6 = socket.AF_INET6
IPPROTO_IP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP = 0, 6, 17, 132
CONN_F_TEMPLATE = 0x1000

EXIT_FAIL = 2  # fail()
EXIT_MINUS1 = 255  # exit(-1) / return -1 from main: popt, tryhelp, libipvs errors
EXIT_LIST = 1  # list_service(): service not found

# -- commands and options (ipvsadm.c CMD_*/OPT_* and the compatibility table) ---------------
CMD_ADD, CMD_EDIT, CMD_DEL, CMD_FLUSH, CMD_LIST, CMD_ADDDEST, CMD_DELDEST, CMD_EDITDEST, \
    CMD_TIMEOUT, CMD_STARTDAEMON, CMD_STOPDAEMON, CMD_RESTORE, CMD_SAVE, CMD_ZERO = range(1, 15)

CMDNAMES = ("add-service", "edit-service", "delete-service", "flush", "list", "add-server",
            "delete-server", "edit-server", "set", "start-daemon", "stop-daemon", "restore",
            "save", "zero")

OPTNAMES = ("numeric", "connection", "service-address", "scheduler", "persistent", "netmask",
            "real-server", "forwarding-method", "weight", "u-threshold", "l-threshold",
            "mcast-interface", "timeout", "daemon", "stats", "rate", "thresholds",
            "persistent-conn", "nosort", "syncid", "exact", "ops", "pe", "sched-flags",
            "mcast-group", "mcast-port", "mcast-ttl", "sync-maxlen", "tun-info", "tun-type",
            "tun-port", "tun-nocsum", "tun-csum", "tun-remcsum")
(OPTC_NUMERIC, OPTC_CONNECTION, OPTC_SERVICE, OPTC_SCHEDULER, OPTC_PERSISTENT, OPTC_NETMASK,
 OPTC_SERVER, OPTC_FORWARD, OPTC_WEIGHT, OPTC_UTHRESHOLD, OPTC_LTHRESHOLD, OPTC_MCAST,
 OPTC_TIMEOUT, OPTC_DAEMON, OPTC_STATS, OPTC_RATE, OPTC_THRESHOLDS, OPTC_PERSISTENTCONN,
 OPTC_NOSORT, OPTC_SYNCID, OPTC_EXACT, OPTC_ONEPACKET, OPTC_PE, OPTC_SCHED_FLAGS,
 OPTC_MCAST_GROUP, OPTC_MCAST_PORT, OPTC_MCAST_TTL, OPTC_SYNC_MAXLEN, OPTC_TUN_INFO,
 OPTC_TUN_TYPE, OPTC_TUN_PORT, OPTC_TUN_NOCSUM, OPTC_TUN_CSUM, OPTC_TUN_REMCSUM) = range(34)

# One row per command, one column per option, in OPTNAMES order.
# '+' compulsory, 'x' illegal, '1' exclusive, ' ' optional.
def _row(*segments: tuple[str, int]) -> str:
    return "".join(ch * count for ch, count in segments)


_TABLE = {
    CMD_ADD: _row(("x", 2), ("+", 1), (" ", 3), ("x", 15), (" ", 3), ("x", 10)),
    CMD_EDIT: _row(("x", 2), ("+", 1), (" ", 3), ("x", 15), (" ", 3), ("x", 10)),
    CMD_DEL: _row(("x", 2), ("+", 1), ("x", 31)),
    CMD_FLUSH: _row(("x", 34)),
    CMD_LIST: _row((" ", 1), ("1", 2), ("x", 9), ("1", 2), (" ", 7), ("x", 7), (" ", 1),
                   ("x", 5)),
    CMD_ADDDEST: _row(("x", 2), ("+", 1), ("x", 3), ("+", 1), (" ", 4), ("x", 18), (" ", 5)),
    CMD_DELDEST: _row(("x", 2), ("+", 1), ("x", 3), ("+", 1), ("x", 27)),
    CMD_EDITDEST: _row(("x", 2), ("+", 1), ("x", 3), ("+", 1), (" ", 4), ("x", 18), (" ", 5)),
    CMD_TIMEOUT: _row(("x", 34)),
    CMD_STARTDAEMON: _row(("x", 11), (" ", 1), ("x", 7), (" ", 1), ("x", 4), (" ", 4),
                          ("x", 6)),
    CMD_STOPDAEMON: _row(("x", 19), (" ", 1), ("x", 14)),
    CMD_RESTORE: _row(("x", 34)),
    CMD_SAVE: _row((" ", 1), ("x", 33)),
    CMD_ZERO: _row(("x", 2), (" ", 1), ("x", 31)),
}
assert all(len(r) == 34 for r in _TABLE.values())

TUNNAMES = ("ipip", "gue", "gre")
TUNFLAGS = ("-c", "+c", "r+c")
TUN_FLAGS_OPTS = ("--tun-nocsum", "--tun-csum", "--tun-remcsum")
TUNOPTS = (OPTC_TUN_PORT, OPTC_TUN_NOCSUM, OPTC_TUN_CSUM, OPTC_TUN_REMCSUM)
_TUN_TABLE = ("xxxx", "+111", "x11x")  # ipip, gue, gre
TUN_FLAG_CSUM, TUN_FLAG_REMCSUM = 0x1, 0x2

# printing format flags
FMT_NUMERIC, FMT_RULE, FMT_STATS, FMT_RATE, FMT_THRESHOLDS, FMT_PERSISTENTCONN, FMT_NOSORT, \
    FMT_EXACT, FMT_TUN_INFO = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x40, 0x80, 0x100

SERVICE_ADDR, SERVICE_PORT = 0x1, 0x2

# -- popt-like option table: long name -> (short or None, arg kind, tag) -------------------
NONE_, REQ, OPT = 0, 1, 2
_LONG = {
    "add-service": ("A", NONE_), "edit-service": ("E", NONE_),
    "delete-service": ("D", NONE_), "clear": ("C", NONE_), "list": ("L", NONE_),
    "zero": ("Z", NONE_), "add-server": ("a", NONE_), "edit-server": ("e", NONE_),
    "delete-server": ("d", NONE_), "set": ("set", NONE_), "help": ("h", NONE_),
    "version": ("v", NONE_), "restore": ("R", NONE_), "save": ("S", NONE_),
    "start-daemon": ("start-daemon", REQ), "stop-daemon": ("stop-daemon", REQ),
    "tcp-service": ("t", REQ), "udp-service": ("u", REQ), "sctp-service": ("sctp", REQ),
    "fwmark-service": ("f", REQ), "scheduler": ("s", REQ), "persistent": ("p", OPT),
    "netmask": ("M", REQ), "real-server": ("r", REQ), "masquerading": ("m", NONE_),
    "ipip": ("i", NONE_), "gatewaying": ("g", NONE_), "weight": ("w", REQ),
    "u-threshold": ("x", REQ), "l-threshold": ("y", REQ), "numeric": ("n", NONE_),
    "connection": ("c", NONE_), "mcast-interface": ("mcast-interface", REQ),
    "syncid": ("syncid", REQ), "timeout": ("timeout", NONE_), "daemon": ("daemon", NONE_),
    "stats": ("stats", NONE_), "rate": ("rate", NONE_), "thresholds": ("thresholds", NONE_),
    "persistent-conn": ("persistent-conn", NONE_), "nosort": ("nosort", NONE_),
    "sort": ("sort", NONE_), "exact": ("X", NONE_), "ipv6": ("6", NONE_), "ops": ("o", NONE_),
    "pe": ("pe", REQ), "sched-flags": ("b", REQ), "mcast-group": ("mcast-group", REQ),
    "mcast-port": ("mcast-port", REQ), "mcast-ttl": ("mcast-ttl", REQ),
    "sync-maxlen": ("sync-maxlen", REQ), "tun-info": ("tun-info", NONE_),
    "tun-type": ("tun-type", REQ), "tun-port": ("tun-port", REQ),
    "tun-nocsum": ("tun-nocsum", NONE_), "tun-csum": ("tun-csum", NONE_),
    "tun-remcsum": ("tun-remcsum", NONE_),
}
_SHORT = {tag: kind for tag, kind in _LONG.values() if len(tag) == 1}
_SHORT["l"] = NONE_  # -l is the second short name of --list
# -V is not an ipvsadm option; accepted as an alias of -v for convenience.
_SHORT["V"] = NONE_

POPT_NOARG = "missing argument"
POPT_BADOPT = "unknown option"
POPT_UNWANTEDARG = "option does not take an argument"

# -- libipvs' ipvs_strerror table ---------------------------------------------------------
_ERR_BY_OP = {
    ("add_service", errno.EEXIST): "Service already exists",
    ("add_service", errno.ENOENT): "Scheduler or persistence engine not found",
    ("update_service", errno.ESRCH): "No such service",
    ("update_service", errno.ENOENT): "Scheduler or persistence engine not found",
    ("del_service", errno.ESRCH): "No such service",
    ("zero_service", errno.ESRCH): "No such service",
    ("add_dest", errno.ESRCH): "Service not defined",
    ("add_dest", errno.EEXIST): "Destination already exists",
    ("update_dest", errno.ESRCH): "Service not defined",
    ("update_dest", errno.ENOENT): "No such destination",
    ("del_dest", errno.ESRCH): "Service not defined",
    ("del_dest", errno.ENOENT): "No such destination",
    ("start_daemon", errno.EEXIST): "Daemon has already run",
    ("stop_daemon", errno.ESRCH): "No daemon is running",
    ("get_services", errno.ESRCH): "No such service",
    ("get_dests", errno.ESRCH): "No such service",
    ("get_service", errno.ESRCH): "No such service",
}
_ERR_ANY = {
    errno.EPERM: "Permission denied (you must be root)",
    errno.EINVAL: "Invalid operation.  Possibly wrong module version, address not unicast, ...",
    errno.ENOPROTOOPT: "Protocol not available",
    errno.ENOMEM: "Memory allocation problem",
    errno.EOPNOTSUPP: "Operation not supported with IPv6",
    errno.EAFNOSUPPORT: "Operation not supported with specified address family",
    errno.EMSGSIZE: "Module is wrong version",
}


def ipvs_strerror(op: str, err: int) -> str:
    msg = _ERR_BY_OP.get((op, err)) or _ERR_ANY.get(err)
    return msg if msg is not None else os.strerror(err)


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _Out:
    def __init__(self) -> None:
        self.out: list[str] = []
        self.err: list[str] = []
        self.sync = None  # engine/sync/daemon.py SyncDaemons, for the daemon commands

    def p(self, s: str) -> None:
        self.out.append(s)

    def e(self, s: str) -> None:
        self.err.append(s)

    def fail(self, msg: str) -> None:
        self.e(msg + "\n")
        raise _Exit(EXIT_FAIL)

    def tryhelp(self) -> None:
        self.e(f"Try `{PROG} -h' or '{PROG} --help' for more information.\n")
        raise _Exit(EXIT_MINUS1)


# -- number parsing (strtol / inet_aton semantics) --------------------------------------------
_STRTOL = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)\Z")


def _strtol(s: str) -> int | None:
    m = _STRTOL.match(s)
    return int(m.group(1)) if m else None


def string_to_number(s: str, lo: int, hi: int) -> int:
    n = _strtol(s)
    if n is None or not lo <= n <= hi:
        return -1
    return n


def _aton_part(p: str) -> int | None:
    try:
        if re.fullmatch(r"0[xX][0-9a-fA-F]*", p):
            return int(p[2:] or "0", 16)
        if re.fullmatch(r"0[0-7]*", p):
            return int(p, 8)
        if re.fullmatch(r"[1-9][0-9]*", p):
            return int(p)
    except ValueError:
        return None
    return None


def inet_aton(s: str) -> bytes | None:
    """glibc inet_aton: a, a.b, a.b.c, a.b.c.d; parts decimal, octal or hex."""
    s = s.split(" ", 1)[0] if s and s[0] != " " else s  # inet_aton stops at whitespace
    parts = s.split(".")
    if not s or len(parts) > 4:
        return None
    vals = [_aton_part(p) for p in parts]
    if any(v is None for v in vals):
        return None
    *head, last = vals
    if any(v > 255 for v in head) or last >= 1 << (8 * (5 - len(vals))):
        return None
    n = 0
    for v in head:
        n = (n << 8) | v
    n = (n << (8 * (5 - len(vals)))) | last
    return n.to_bytes(4, "big")


def _inet_pton6(s: str) -> bytes | None:
    try:
        return socket.inet_pton(AF_INET6, s)
    except (OSError, ValueError):
        return None


def _service_to_port(name: str, proto: int) -> int:
    pname = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_SCTP: "sctp"}.get(proto)
    if pname is None or not name:
        return -1
    try:
        return socket.getservbyname(name, pname)
    except (OSError, UnicodeError):
        return -1


def parse_service(buf: str, proto: int) -> tuple[int, bytes, int, int]:
    """ipvsadm parse_service(): (result bits, addr, port, af); port -1 when absent."""
    if all(c in "0123456789" for c in buf):  # str_is_digit(), true for ""
        return 0, b"", -1, 0
    portp: str | None = None
    host = buf
    if buf[0] == "[":
        close = buf.find("]", 1)
        if close < 0 or buf[close + 1:close + 2] != ":":
            return 0, b"", -1, 0
        host = buf[1:close]
        portp = buf[close + 2:]
    addr6 = _inet_pton6(host)
    if addr6 is not None:
        addr, af = addr6, AF_INET6
    else:
        # strrchr(buf, ':') inside what is left: "[1.2.3.4]:80" loses its port, as in C
        idx = host.rfind(":")
        portp = None
        if idx >= 0:
            portp = host[idx + 1:]
            host = host[:idx]
        addr4 = inet_aton(host)
        if addr4 is None:
            return 0, b"", -1, 0
        addr, af = addr4, AF_INET
    result = SERVICE_ADDR
    port = -1
    if portp is not None:
        result |= SERVICE_PORT
        port = string_to_number(portp, 0, 65535)
        if port == -1:
            port = _service_to_port(portp, proto)
        if port == -1:
            return 0, b"", -1, 0
    return result, addr, port, af


# -- output helpers -------------------------------------------------------------------------
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
def print_title(o: _Out, fmt: int) -> None:
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


def print_service_entry(o: _Out, director, svc, fmt: int) -> None:
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


def list_all(o: _Out, director, fmt: int) -> None:
    if not fmt & FMT_RULE:
        o.p(f"IP Virtual Server version {IPVS_VERSION} (size={director.conn_tab_size})\n")
    services = list(director.services.services.values())
    if not fmt & FMT_NOSORT:
        services.sort(key=_svc_sort_key)
    print_title(o, fmt)
    for svc in services:
        print_service_entry(o, director, svc, fmt)


def list_conn(o: _Out, director, fmt: int) -> None:
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


# -- parsing --------------------------------------------------------------------------------
class _Cmd:
    def __init__(self) -> None:
        self.cmd = 0
        self.options = 0
        self.fmt = 0
        # service (ipvs_service_t)
        self.af = 0
        self.protocol = 0
        self.addr = b""
        self.port = 0
        self.fwmark = 0
        self.sched = ""
        self.flags = 0
        self.timeout = 0
        self.netmask = 0xFFFFFFFF
        self.pe = ""
        # destination (ipvs_dest_t)
        self.d_af = 0
        self.d_addr = b""
        self.d_port = 0
        self.fwd = FWD_DROUTE
        self.weight = 1
        self.u_thr = 0
        self.l_thr = 0
        self.tun_type = 0
        self.tun_port = 0
        self.tun_flags = 0
        # timeouts
        self.timeouts = (0, 0, 0)
        self.daemon_state = ""
        # sync daemon (ipvs_daemon_t); 0 / "" = the kernel's default
        self.mcast_ifn = ""
        self.syncid = 0
        self.sync_maxlen = 0
        self.mcast_group = ""
        self.mcast_port = 0
        self.mcast_ttl = 0


def _tokenize(argv: list[str]):
    """Yield ('opt', tag, arg, token) / ('err', message, token) / ('arg', value).

    popt semantics: non-options are kept as leftovers, '--' ends options,
    short clusters, attached arguments, optional argument of -p taken from the
    next word unless it starts with '-'.
    """
    i = 0
    n = len(argv)
    while i < n:
        tok = argv[i]
        i += 1
        if tok == "--":
            for rest in argv[i:]:
                yield ("arg", rest)
            return
        if tok.startswith("--"):
            name, eq, val = tok[2:].partition("=")
            spec = _LONG.get(name)
            if spec is None:
                yield ("err", POPT_BADOPT, tok)
                return
            tag, kind = spec
            if kind == NONE_:
                if eq:
                    yield ("err", POPT_UNWANTEDARG, tok)
                    return
                yield ("opt", tag, None, tok)
            elif eq:
                yield ("opt", tag, val, tok)
            elif i < n and (kind == REQ or not argv[i].startswith("-")):
                yield ("opt", tag, argv[i], tok)
                i += 1
            elif kind == OPT:
                yield ("opt", tag, None, tok)
            else:
                yield ("err", POPT_NOARG, tok)
                return
            continue
        if tok.startswith("-") and len(tok) > 1:
            j = 1
            while j < len(tok):
                ch = tok[j]
                j += 1
                kind = _SHORT.get(ch)
                if kind is None:
                    yield ("err", POPT_BADOPT, tok)
                    return
                tag = {"l": "L", "V": "v"}.get(ch, ch)
                if kind == NONE_:
                    yield ("opt", tag, None, tok)
                    continue
                if j < len(tok):
                    yield ("opt", tag, tok[j:], tok)
                elif i < n and (kind == REQ or not argv[i].startswith("-")):
                    yield ("opt", tag, argv[i], tok)
                    i += 1
                elif kind == OPT:
                    yield ("opt", tag, None, tok)
                else:
                    yield ("err", POPT_NOARG, tok)
                    return
                break
            continue
        yield ("arg", tok)


_FIRST = {"A": CMD_ADD, "E": CMD_EDIT, "D": CMD_DEL, "a": CMD_ADDDEST, "e": CMD_EDITDEST,
          "d": CMD_DELDEST, "C": CMD_FLUSH, "L": CMD_LIST, "Z": CMD_ZERO, "set": CMD_TIMEOUT,
          "R": CMD_RESTORE, "S": CMD_SAVE, "start-daemon": CMD_STARTDAEMON,
          "stop-daemon": CMD_STOPDAEMON}


def _set_option(o: _Out, ce: _Cmd, optc: int) -> None:
    bit = 1 << optc
    if ce.options & bit:
        o.fail(f"multiple '{OPTNAMES[optc]}' options specified")
    ce.options |= bit


def _parse_timeout(o: _Out, buf: str | None, lo: int, hi: int) -> int:
    if buf is None:
        return PERSISTENT_TIMEOUT_DEFAULT
    v = string_to_number(buf, lo, hi)
    if v == -1:
        o.fail(f"invalid timeout value `{buf}' specified")
    return v


def _parse_sched_flags(o: _Out, sched: str, arg: str) -> int:
    sched = sched or DEF_SCHED
    flags = 0
    for flag in (f for f in arg.split(",") if f):
        if flag == "flag-1":
            flags |= SVC_F_SCHED1
        elif flag == "flag-2":
            flags |= SVC_F_SCHED2
        elif flag == "flag-3":
            flags |= SVC_F_SCHED3
        elif flag in ("sh-fallback", "sh-port", "mh-fallback", "mh-port"):
            flags |= SVC_F_SCHED1 if flag.endswith("fallback") else SVC_F_SCHED2
            if sched != flag[:2]:
                o.fail(f"incompatible scheduler flag `{flag}'")
        else:
            o.fail(f"invalid scheduler flag `{flag}'")
    return flags


def _apply_option(o: _Out, ce: _Cmd, tag: str, arg: str | None, tok: str,
                  state: dict) -> None:
    if tag in ("t", "u", "sctp"):
        _set_option(o, ce, OPTC_SERVICE)
        ce.protocol = {"t": IPPROTO_TCP, "u": IPPROTO_UDP, "sctp": IPPROTO_SCTP}[tag]
        res, addr, port, af = parse_service(arg, ce.protocol)
        if not res & SERVICE_ADDR:
            o.fail("illegal virtual server address[:port] specified")
        ce.addr, ce.af = addr, af
        if af == AF_INET6:
            ce.netmask = 128
        if port >= 0:
            ce.port = port
    elif tag == "f":
        _set_option(o, ce, OPTC_SERVICE)
        ce.af = AF_INET
        ce.protocol = IPPROTO_TCP
        n = _strtol(arg)
        if n is None or n <= 0 or n > 0xFFFFFFFF:
            o.fail(f"invalid fwmark value `{arg}' specified")
        ce.fwmark = n
    elif tag == "s":
        _set_option(o, ce, OPTC_SCHEDULER)
        ce.sched = arg
    elif tag == "p":
        _set_option(o, ce, OPTC_PERSISTENT)
        ce.flags |= SVC_F_PERSISTENT
        ce.timeout = _parse_timeout(o, arg, 1, MAX_TIMEOUT)
    elif tag == "M":
        _set_option(o, ce, OPTC_NETMASK)
        if ce.af != AF_INET6:
            mask = inet_aton(arg)
            if mask is None:
                o.fail("illegal virtual server persistent mask specified")
            ce.netmask = int.from_bytes(mask, "big")
        else:
            m = re.match(r"\s*([+-]?\d+)", arg)  # atoi()
            ce.netmask = int(m.group(1)) if m else 0
            if not 1 <= ce.netmask <= 128:
                o.fail("illegal ipv6 netmask specified")
    elif tag == "r":
        _set_option(o, ce, OPTC_SERVER)
        res, addr, port, af = parse_service(arg, ce.protocol)
        if res:
            ce.d_af, ce.d_addr = af, addr
            ce.d_port = port if port >= 0 else ce.port
        if not res & SERVICE_ADDR:
            o.fail("illegal real server address[:port] specified")
        if res == SERVICE_ADDR:  # copy vport to dport if not specified
            ce.d_port = ce.port
    elif tag in ("i", "g", "m"):
        _set_option(o, ce, OPTC_FORWARD)
        ce.fwd = {"i": FWD_TUNNEL, "g": FWD_DROUTE, "m": FWD_MASQ}[tag]
    elif tag == "w":
        _set_option(o, ce, OPTC_WEIGHT)
        ce.weight = string_to_number(arg, 0, 65535)
        if ce.weight == -1:
            o.fail("illegal weight specified")
    elif tag == "x":
        _set_option(o, ce, OPTC_UTHRESHOLD)
        ce.u_thr = string_to_number(arg, 0, INT_MAX)
        if ce.u_thr == -1:
            o.fail("illegal u_threshold specified")
    elif tag == "y":
        _set_option(o, ce, OPTC_LTHRESHOLD)
        ce.l_thr = string_to_number(arg, 0, INT_MAX)
        if ce.l_thr == -1:
            o.fail("illegal l_threshold specified")
    elif tag == "c":
        _set_option(o, ce, OPTC_CONNECTION)
    elif tag == "n":
        _set_option(o, ce, OPTC_NUMERIC)
        ce.fmt |= FMT_NUMERIC
    elif tag == "mcast-interface":
        _set_option(o, ce, OPTC_MCAST)
        ce.mcast_ifn = arg[:IFNAME_MAXLEN - 1]
    elif tag == "syncid":
        _set_option(o, ce, OPTC_SYNCID)
        ce.syncid = string_to_number(arg, 0, 255)
        if ce.syncid == -1:
            o.fail("illegal syncid specified")
    elif tag == "timeout":
        _set_option(o, ce, OPTC_TIMEOUT)
    elif tag == "daemon":
        _set_option(o, ce, OPTC_DAEMON)
    elif tag in ("stats", "rate", "thresholds", "persistent-conn", "nosort", "X",
                 "tun-info"):
        optc, fmt = {"stats": (OPTC_STATS, FMT_STATS), "rate": (OPTC_RATE, FMT_RATE),
                     "thresholds": (OPTC_THRESHOLDS, FMT_THRESHOLDS),
                     "persistent-conn": (OPTC_PERSISTENTCONN, FMT_PERSISTENTCONN),
                     "nosort": (OPTC_NOSORT, FMT_NOSORT), "X": (OPTC_EXACT, FMT_EXACT),
                     "tun-info": (OPTC_TUN_INFO, FMT_TUN_INFO)}[tag]
        _set_option(o, ce, optc)
        ce.fmt |= fmt
    elif tag == "sort":
        pass  # sorting is the default; a no-op for compatibility
    elif tag == "6":
        if ce.fwmark:
            ce.af = AF_INET6
            ce.netmask = 128
        else:
            o.fail("-6 used before -f\n")
    elif tag == "o":
        _set_option(o, ce, OPTC_ONEPACKET)
        ce.flags |= SVC_F_ONEPACKET
    elif tag == "pe":
        _set_option(o, ce, OPTC_PE)
        ce.pe = arg
    elif tag == "b":
        _set_option(o, ce, OPTC_SCHED_FLAGS)
        state["sched_flags"] = arg
    elif tag == "mcast-group":
        _set_option(o, ce, OPTC_MCAST_GROUP)
        if ":" in arg:
            a6 = _inet_pton6(arg)
            if a6 is None or a6[0] != 0xFF:
                o.fail(f"invalid IPv6 mcast-group `{arg}'")
            ce.mcast_group = socket.inet_ntop(socket.AF_INET6, bytes(a6))
        else:
            try:
                a4 = socket.inet_pton(AF_INET, arg)
            except (OSError, ValueError):
                a4 = None
            if a4 is None or not 224 <= a4[0] <= 239:
                o.fail(f"invalid IPv4 mcast-group `{arg}'")
            ce.mcast_group = socket.inet_ntop(AF_INET, a4)
    elif tag in ("mcast-port", "mcast-ttl", "sync-maxlen"):
        optc, hi = {"mcast-port": (OPTC_MCAST_PORT, 65535), "mcast-ttl": (OPTC_MCAST_TTL, 255),
                    "sync-maxlen": (OPTC_SYNC_MAXLEN, 65535 - 20 - 8)}[tag]
        _set_option(o, ce, optc)
        value = string_to_number(arg, 1, hi)
        if value == -1:
            o.fail(f"illegal {tag} specified")
        setattr(ce, tag.replace("-", "_"), value)
    elif tag == "tun-type":
        _set_option(o, ce, OPTC_TUN_TYPE)
        if arg not in TUNNAMES:
            o.fail("illegal tunnel type specified")
        ce.tun_type = TUNNAMES.index(arg)
    elif tag == "tun-port":
        _set_option(o, ce, OPTC_TUN_PORT)
        ce.tun_port = string_to_number(arg, 1, 65535)
        if ce.tun_port == -1:
            o.fail("illegal tunnel port specified")
    elif tag == "tun-nocsum":
        _set_option(o, ce, OPTC_TUN_NOCSUM)
    elif tag == "tun-csum":
        _set_option(o, ce, OPTC_TUN_CSUM)
        ce.tun_flags |= TUN_FLAG_CSUM
    elif tag == "tun-remcsum":
        _set_option(o, ce, OPTC_TUN_REMCSUM)
        ce.tun_flags |= TUN_FLAG_REMCSUM
    else:  # a command option after the command, -h, -v ...
        o.fail(f"invalid option `{tok}'")


def _generic_opt_check(o: _Out, cmd: int, options: int) -> None:
    row = _TABLE[cmd]
    cname = CMDNAMES[cmd - 1]
    last = -1
    for j, rule in enumerate(row):
        if not options & (1 << j):
            if rule == "+":
                o.fail(f"You need to supply the '{OPTNAMES[j]}' option for the '{cname}' "
                       "command")
        else:
            if rule == "x":
                o.fail(f"Illegal '{OPTNAMES[j]}' option with the '{cname}' command")
            if rule == "1":
                if last < 0:
                    last = j
                    continue
                o.fail(f"The option '{OPTNAMES[j]}' conflicts with the '{OPTNAMES[last]}' "
                       f"option in the '{cname}' command")


def _tunnel_opt_check(o: _Out, tun_type: int, options: int) -> None:
    row = _TUN_TABLE[tun_type]
    tname = TUNNAMES[tun_type]
    last = -1
    for j, k in enumerate(TUNOPTS):
        if not options & (1 << k):
            if row[j] == "+":
                o.fail(f"You need to supply the '{OPTNAMES[k]}' option for the '{tname}' "
                       "tunnel type")
        else:
            if row[j] == "x":
                o.fail(f"Illegal '{OPTNAMES[k]}' option with the '{tname}' tunnel type")
            if row[j] == "1":
                if last < 0:
                    last = k
                    continue
                o.fail(f"The option '{OPTNAMES[k]}' conflicts with the '{OPTNAMES[last]}' "
                       f"option in the '{tname}' tunnel type")


def _parse_options(o: _Out, argv: list[str]) -> _Cmd | None:
    """parse_options(); None means a popt error was reported (return -1)."""
    ce = _Cmd()
    state: dict = {}
    leftovers: list[str] = []
    toks = _tokenize(argv)
    first = None
    for t in toks:
        if t[0] == "arg":
            leftovers.append(t[1])
            continue
        first = t
        break
    if first is None or first[0] == "err":
        o.tryhelp()
    _, tag, arg, _tok = first
    if tag == "h":
        o.p(usage_text())
        raise _Exit(0)
    if tag == "v":
        o.p(VERSION_LINE)
        raise _Exit(0)
    cmd = _FIRST.get(tag)
    if cmd is None:
        o.tryhelp()
    ce.cmd = cmd
    if cmd in (CMD_STARTDAEMON, CMD_STOPDAEMON):
        if arg not in ("master", "backup"):
            o.fail("illegal start-daemon parameter specified" if cmd == CMD_STARTDAEMON
                   else "illegal start_daemon specified")
        ce.daemon_state = arg
    for t in toks:
        if t[0] == "arg":
            leftovers.append(t[1])
        elif t[0] == "err":
            o.e(f"{t[2]}: {t[1]}\n")
            return None
        else:
            _apply_option(o, ce, t[1], t[2], t[3], state)
    if ce.cmd == CMD_TIMEOUT:
        if len(leftovers) >= 3:
            vals = tuple(_parse_timeout(o, v, 0, MAX_TIMEOUT) for v in leftovers[:3])
            ce.timeouts = vals  # type: ignore[assignment]
            leftovers = leftovers[3:]
        else:
            o.fail("--set option requires 3 timeout values")
    if leftovers:
        o.fail(f"unexpected argument {leftovers[0]}")
    if state.get("sched_flags"):
        ce.flags &= ~(SVC_F_SCHED1 | SVC_F_SCHED2 | SVC_F_SCHED3)
        ce.flags |= _parse_sched_flags(o, ce.sched, state["sched_flags"])
    return ce


# -- execution ------------------------------------------------------------------------------
def _svc_spec(ce: _Cmd) -> ServiceSpec:
    af = ce.af or AF_INET
    addr = ce.addr or bytes(4 if af == AF_INET else 16)
    return ServiceSpec(af=af, protocol=ce.protocol, addr=addr, port=ce.port, fwmark=ce.fwmark,
                       scheduler=ce.sched or DEF_SCHED, flags=ce.flags, timeout=ce.timeout,
                       netmask=ce.netmask, pe_name=ce.pe)


def _dest_spec(ce: _Cmd) -> DestSpec:
    return DestSpec(addr=ce.d_addr, port=ce.d_port, fwd=ce.fwd, weight=ce.weight,
                    u_threshold=ce.u_thr, l_threshold=ce.l_thr, tun_type=ce.tun_type,
                    tun_port=ce.tun_port, tun_flags=ce.tun_flags)


def _check_dest_addr(addr: bytes) -> None:
    """The kernel refuses destinations that are neither local nor unicast (EINVAL)."""
    ip = ipaddress.ip_address(addr)
    if ip.is_multicast or ip.is_unspecified or (ip.version == 4 and addr == b"\xff" * 4):
        raise IPVSError(errno.EINVAL)


def _execute(o: _Out, ce: _Cmd, director) -> int:
    """The switch at the end of process_options(); returns 0 or -1."""
    table = director.services
    op = ""
    try:
        if ce.cmd == CMD_FLUSH:
            op = "flush"
            table.flush(director.now())
        elif ce.cmd in (CMD_ADD, CMD_EDIT):
            op = "add_service" if ce.cmd == CMD_ADD else "update_service"
            spec = _svc_spec(ce)
            if ce.pe and ce.pe not in KNOWN_PES:
                raise IPVSError(errno.ENOENT)
            if ce.cmd == CMD_ADD:
                table.add_service(spec)
            else:
                table.edit_service(spec)
        elif ce.cmd == CMD_DEL:
            op = "del_service"
            table.del_service(_svc_spec(ce).key, director.now())
        elif ce.cmd == CMD_ZERO:
            op = "zero_service"
            # libipvs zeroes everything unless a fwmark, an address or a port is given
            whole = not (ce.fwmark or any(ce.addr) or ce.port)
            table.zero(None if whole else _svc_spec(ce).key)
        elif ce.cmd in (CMD_ADDDEST, CMD_EDITDEST):
            op = "add_dest" if ce.cmd == CMD_ADDDEST else "update_dest"
            key = _svc_spec(ce).key
            table.get(key)
            _check_dest_addr(ce.d_addr)
            if ce.cmd == CMD_ADDDEST:
                table.add_dest(key, _dest_spec(ce))
            else:
                table.edit_dest(key, _dest_spec(ce))
        elif ce.cmd == CMD_DELDEST:
            op = "del_dest"
            table.del_dest(_svc_spec(ce).key, ce.d_af, ce.d_addr, ce.d_port, director.now())
        elif ce.cmd == CMD_TIMEOUT:
            op = "set_timeout"
            director.set_timeouts(*ce.timeouts)
        elif ce.cmd in (CMD_STARTDAEMON, CMD_STOPDAEMON):
            op = "start_daemon" if ce.cmd == CMD_STARTDAEMON else "stop_daemon"
            _daemon_command(o, ce)
    except IPVSError as err:
        o.e(ipvs_strerror(op, err.errno) + "\n")
        return -1
    return 0


IFNAME_MAXLEN = 16  # IP_VS_IFNAME_MAXLEN
DEF_MCAST_IFN = "eth0"
DAEMON_STATES = {"master": 1, "backup": 2}  # IP_VS_STATE_MASTER, IP_VS_STATE_BACKUP


def _daemon_command(o: _Out, ce: _Cmd) -> None:
    """ipvs_start_daemon / ipvs_stop_daemon against the director's sync daemons."""
    sync = o.sync
    state = DAEMON_STATES[ce.daemon_state]
    if sync is None:
        raise IPVSError(errno.ENOPROTOOPT if ce.cmd == CMD_STARTDAEMON else errno.ESRCH)
    if ce.cmd == CMD_STOPDAEMON:
        sync.stop(state)
        return
    from pyvs.engine.sync.master import SyncConfig

    cfg = SyncConfig(mcast_ifn=ce.mcast_ifn or DEF_MCAST_IFN, syncid=ce.syncid,
                     sync_maxlen=ce.sync_maxlen)
    if ce.mcast_group:
        cfg.mcast_group = ce.mcast_group
    if ce.mcast_port:
        cfg.mcast_port = ce.mcast_port
    if ce.mcast_ttl:
        cfg.mcast_ttl = ce.mcast_ttl
    sync.start(state, cfg)


def list_daemon(o: _Out) -> None:
    """list_daemon(): one line per running daemon, master first."""
    sync = o.sync
    for name, cfg in (sync.running() if sync is not None else []):
        line = f"{name} sync daemon (mcast={cfg.mcast_ifn}, syncid={cfg.syncid}"
        if cfg.sync_maxlen:
            line += f", maxlen={cfg.sync_maxlen}"
        line += f", group={cfg.mcast_group}"
        if cfg.mcast_port:
            line += f", port={cfg.mcast_port}"
        if cfg.mcast_ttl:
            line += f", ttl={cfg.mcast_ttl}"
        o.p(line + ")\n")


def _process(o: _Out, argv: list[str], stdin: str, director, reading_stdin: bool) -> int:
    """process_options(): returns 0 / -1; fail() and friends raise _Exit."""
    ce = _parse_options(o, argv)
    if ce is None:
        return -1
    _generic_opt_check(o, ce.cmd, ce.options)

    if ce.cmd in (CMD_ADD, CMD_EDIT):
        if not ce.fwmark and not ce.port and not ce.flags & SVC_F_PERSISTENT:
            o.fail("Zero port specified for non-persistent service")
        if ce.flags & SVC_F_ONEPACKET and not ce.fwmark and ce.protocol != IPPROTO_UDP:
            o.fail("One-Packet Scheduling is only for UDP virtual services")
        if not ce.sched:
            ce.sched = DEF_SCHED

    if ce.cmd in (CMD_ADDDEST, CMD_EDITDEST):
        if not ce.fwmark and ce.fwd in (FWD_TUNNEL, FWD_DROUTE):
            ce.d_port = ce.port
        if (ce.d_af or 0) != (ce.af or 0) and ce.fwd != FWD_TUNNEL:
            o.fail("Different address family is allowed only for tunneling servers")
        tun_opts = sum(1 << k for k in (OPTC_TUN_TYPE, OPTC_TUN_PORT, OPTC_TUN_NOCSUM,
                                        OPTC_TUN_CSUM, OPTC_TUN_REMCSUM))
        if ce.options & tun_opts and ce.fwd != FWD_TUNNEL:
            o.fail("Tunnel options conflict with forward method")
        _tunnel_opt_check(o, ce.tun_type, ce.options)

    opts = ce.options
    if ce.cmd == CMD_LIST:
        bit = lambda c: 1 << c  # noqa: E731
        if ((opts & (bit(OPTC_CONNECTION) | bit(OPTC_TIMEOUT) | bit(OPTC_DAEMON))
             and opts & (bit(OPTC_STATS) | bit(OPTC_RATE) | bit(OPTC_THRESHOLDS)))
                or (opts & (bit(OPTC_TIMEOUT) | bit(OPTC_DAEMON))
                    and opts & bit(OPTC_PERSISTENTCONN))):
            o.fail("options conflicts in the list command")
        if opts & bit(OPTC_CONNECTION):
            list_conn(o, director, ce.fmt)
        elif opts & bit(OPTC_SERVICE):
            svc = director.services.services.get(_svc_spec(ce).key)
            if svc is None:
                o.e(ipvs_strerror("get_service", errno.ESRCH) + "\n")
                raise _Exit(EXIT_LIST)
            print_title(o, ce.fmt)
            print_service_entry(o, director, svc, ce.fmt)
        elif opts & bit(OPTC_TIMEOUT):
            tcp, tcpfin, udp = director.get_timeouts()
            o.p(f"Timeout (tcp tcpfin udp): {tcp} {tcpfin} {udp}\n")
        elif opts & bit(OPTC_DAEMON):
            list_daemon(o)
        else:
            list_all(o, director, ce.fmt)
        return 0
    if ce.cmd == CMD_RESTORE:
        return _restore(o, stdin, director, reading_stdin)
    if ce.cmd == CMD_SAVE:
        list_all(o, director, ce.fmt | FMT_RULE)
        return 0
    return _execute(o, ce, director)


def _restore(o: _Out, stdin: str, director, reading_stdin: bool) -> int:
    """restore_table(): every line is a separate invocation.

    As in ipvsadm, a kernel error is printed and the next line is processed (the
    exit status is that of the last line), while a parse error (fail()) ends the
    whole run with status 2.  Tokens equal to "ipvsadm" are dropped anywhere on
    the line (config_stream_read).
    """
    if reading_stdin:
        o.tryhelp()
    result = 0
    for line in stdin.splitlines():
        words = [w for w in re.split(r"[ \t\r]+", line) if w and w != "ipvsadm"]
        if words:
            result = _process(o, words, "", director, True)
    return result


def run(argv: list[str], stdin: str, director, sync=None) -> tuple[int, str, str]:
    """Execute one ipvsadm invocation; argv excludes the program name.  ``sync``: the
    director's sync daemons (engine/sync/daemon.py), if it has any."""
    o = _Out()
    o.sync = sync
    try:
        if not argv:
            list_all(o, director, 0)
            code = 0
        else:
            code = _process(o, list(argv), stdin, director, False)
            code = EXIT_MINUS1 if code else 0
    except _Exit as ex:
        code = ex.code
    return code, "".join(o.out), "".join(o.err)


def usage_text() -> str:
    p = PROG
    return (
        VERSION_LINE
        + "Usage:\n"
        f"  {p} -A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] "
        "[--pe persistence_engine] [-b sched-flags]\n"
        f"  {p} -D virtual-service\n"
        f"  {p} -C\n"
        f"  {p} -R\n"
        f"  {p} -S [-n]\n"
        f"  {p} -a|e virtual-service -r server-address [options]\n"
        f"  {p} -d virtual-service -r server-address\n"
        f"  {p} -L|l [virtual-service] [options]\n"
        f"  {p} -Z [virtual-service]\n"
        f"  {p} --set tcp tcpfin udp\n"
        f"  {p} --start-daemon {{master|backup}} [daemon-options]\n"
        f"  {p} --stop-daemon {{master|backup}}\n"
        f"  {p} -h\n\n"
        "Commands:\n"
        "Either long or short options are allowed.\n"
        "  --add-service     -A        add virtual service with options\n"
        "  --edit-service    -E        edit virtual service with options\n"
        "  --delete-service  -D        delete virtual service\n"
        "  --clear           -C        clear the whole table\n"
        "  --restore         -R        restore rules from stdin\n"
        "  --save            -S        save rules to stdout\n"
        "  --add-server      -a        add real server with options\n"
        "  --edit-server     -e        edit real server with options\n"
        "  --delete-server   -d        delete real server\n"
        "  --list            -L|-l     list the table\n"
        "  --zero            -Z        zero counters in a service or all services\n"
        "  --set tcp tcpfin udp        set connection timeout values\n"
        "  --start-daemon              start connection sync daemon\n"
        "  --stop-daemon               stop connection sync daemon\n"
        "  --help            -h        display this help message\n\n"
        "virtual-service:\n"
        "  --tcp-service|-t  service-address   service-address is host[:port]\n"
        "  --udp-service|-u  service-address   service-address is host[:port]\n"
        "  --sctp-service    service-address   service-address is host[:port]\n"
        "  --fwmark-service|-f fwmark          fwmark is an integer greater than zero\n"
        "\n"
        "Options:\n"
        "  --ipv6         -6                   fwmark entry uses IPv6\n"
        f"  --scheduler    -s scheduler         one of {SCHEDULERS},\n"
        f"                                      the default scheduler is {DEF_SCHED}.\n"
        f"  --pe            engine              alternate persistence engine may be "
        f"{PE_LIST},\n"
        "                                      not set by default.\n"
        "  --persistent   -p [timeout]         persistent service\n"
        "  --netmask      -M netmask           persistent granularity mask\n"
        "  --real-server  -r server-address    server-address is host (and port)\n"
        "  --gatewaying   -g                   gatewaying (direct routing) (default)\n"
        "  --ipip         -i                   ipip encapsulation (tunneling)\n"
        "  --masquerading -m                   masquerading (NAT)\n"
        "  --tun-type      type                one of ipip|gue|gre,\n"
        f"                                      the default tunnel type is {DEF_TUNNEL_TYPE}.\n"
        "  --tun-port      port                tunnel destination port\n"
        "  --tun-nocsum                        tunnel encapsulation without checksum\n"
        "  --tun-csum                          tunnel encapsulation with checksum\n"
        "  --tun-remcsum                       tunnel encapsulation with remote checksum\n"
        "  --weight       -w weight            capacity of real server\n"
        "  --u-threshold  -x uthreshold        upper threshold of connections\n"
        "  --l-threshold  -y lthreshold        lower threshold of connections\n"
        "  --connection   -c                   output of current IPVS connections\n"
        "  --timeout                           output of timeout (tcp tcpfin udp)\n"
        "  --daemon                            output of daemon information\n"
        "  --stats                             output of statistics information\n"
        "  --rate                              output of rate information\n"
        "  --exact                             expand numbers (display exact values)\n"
        "  --thresholds                        output of thresholds information\n"
        "  --persistent-conn                   output of persistent connection info\n"
        "  --tun-info                          output of tunnel information\n"
        "  --nosort                            disable sorting output of service/server "
        "entries\n"
        "  --sort                              does nothing, for backwards compatibility\n"
        "  --ops          -o                   one-packet scheduling\n"
        "  --numeric      -n                   numeric output of addresses and ports\n"
        "  --sched-flags  -b flags             scheduler flags (comma-separated)\n"
        "Daemon Options:\n"
        "  --syncid sid                        syncid for connection sync (default=255)\n"
        "  --sync-maxlen length                Max sync message length (default=1472)\n"
        "  --mcast-interface interface         multicast interface for connection sync\n"
        "  --mcast-group address               IPv4/IPv6 group (default=224.0.0.81)\n"
        "  --mcast-port port                   UDP port (default=8848)\n"
        "  --mcast-ttl ttl                     Multicast TTL (default=1)\n"
    )
