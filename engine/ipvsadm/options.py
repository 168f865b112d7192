"""ipvsadm's command line: the option table (popt, ipvsadm.c CMD_*/OPT_*), the
compatibility table of commands and options, the tunnel-type table, and
parse_options(), which turns argv into one Command.

Parsing imitates popt: short clusters "-Ln", attached arguments "-t1.2.3.4:80",
"--long=value", the optional argument of -p, leftover arguments, "--" ending options.
"""

from __future__ import annotations

import re
import socket

from pyvs.engine.ipvsadm.addresses import (
    AF_INET,
    AF_INET6,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    SERVICE_ADDR,
    inet_aton,
    inet_pton6,
    parse_service,
    string_to_number,
    strtol,
)
from pyvs.engine.ipvsadm.output import Exit, Out
from pyvs.engine.ipvsadm.popt import tokenize
from pyvs.engine.ipvsadm.usage import DEF_SCHED, VERSION_LINE, usage_text
from pyvs.engine.model import (
    FWD_DROUTE,
    FWD_MASQ,
    FWD_TUNNEL,
    SVC_F_ONEPACKET,
    SVC_F_PERSISTENT,
    SVC_F_SCHED1,
    SVC_F_SCHED2,
    SVC_F_SCHED3,
)
from pyvs.engine.service import PERSISTENT_TIMEOUT_DEFAULT

MAX_TIMEOUT = 86400 * 31
INT_MAX = 2**31 - 1

# -- commands and options (ipvsadm.c CMD_*/OPT_* and the compatibility table) ---------------
IFNAME_MAXLEN = 16  # IP_VS_IFNAME_MAXLEN: interface names keep 15 characters
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

# -- parsing --------------------------------------------------------------------------------
class Command:
    """One parsed invocation: ipvsadm's struct ipvs_command_entry."""

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


_FIRST = {"A": CMD_ADD, "E": CMD_EDIT, "D": CMD_DEL, "a": CMD_ADDDEST, "e": CMD_EDITDEST,
          "d": CMD_DELDEST, "C": CMD_FLUSH, "L": CMD_LIST, "Z": CMD_ZERO, "set": CMD_TIMEOUT,
          "R": CMD_RESTORE, "S": CMD_SAVE, "start-daemon": CMD_STARTDAEMON,
          "stop-daemon": CMD_STOPDAEMON}


def _set_option(o: Out, ce: Command, optc: int) -> None:
    bit = 1 << optc
    if ce.options & bit:
        o.fail(f"multiple '{OPTNAMES[optc]}' options specified")
    ce.options |= bit


def _parse_timeout(o: Out, buf: str | None, lo: int, hi: int) -> int:
    if buf is None:
        return PERSISTENT_TIMEOUT_DEFAULT
    v = string_to_number(buf, lo, hi)
    if v == -1:
        o.fail(f"invalid timeout value `{buf}' specified")
    return v


def _parse_sched_flags(o: Out, sched: str, arg: str) -> int:
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


def _apply_option(o: Out, ce: Command, tag: str, arg: str | None, tok: str,
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
        n = strtol(arg)
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
        # 0..INT_MAX, the kernel's range (Debian's ipvsadm 1.31; upstream 1.31 says 65535)
        ce.weight = string_to_number(arg, 0, INT_MAX)
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
            a6 = inet_pton6(arg)
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


def generic_opt_check(o: Out, cmd: int, options: int) -> None:
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


def tunnel_opt_check(o: Out, tun_type: int, options: int) -> None:
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


def parse_options(o: Out, argv: list[str]) -> Command | None:
    """parse_options(); None means a popt error was reported (return -1)."""
    ce = Command()
    state: dict = {}
    leftovers: list[str] = []
    toks = tokenize(argv)
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
        raise Exit(0)
    if tag == "v":
        o.p(VERSION_LINE)
        raise Exit(0)
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
