"""Running one ipvsadm invocation against the director: process_options() and the
switch at its end, restore_table() for -R, and run(), the entry point the daemon
calls with argv (without the program name) and stdin.
"""

from __future__ import annotations

import errno
import ipaddress
import re

from pyvs.engine.ipvsadm.addresses import AF_INET, IPPROTO_UDP
from pyvs.engine.ipvsadm.daemon import daemon_command, list_daemon
from pyvs.engine.ipvsadm.listing import list_all, list_conn, print_service_entry, print_title
from pyvs.engine.ipvsadm.options import (
    CMD_ADD,
    CMD_ADDDEST,
    CMD_DEL,
    CMD_DELDEST,
    CMD_EDIT,
    CMD_EDITDEST,
    CMD_FLUSH,
    CMD_LIST,
    CMD_RESTORE,
    CMD_SAVE,
    CMD_STARTDAEMON,
    CMD_STOPDAEMON,
    CMD_TIMEOUT,
    CMD_ZERO,
    FMT_RULE,
    OPTC_CONNECTION,
    OPTC_DAEMON,
    OPTC_PERSISTENTCONN,
    OPTC_RATE,
    OPTC_SERVICE,
    OPTC_STATS,
    OPTC_THRESHOLDS,
    OPTC_TIMEOUT,
    OPTC_TUN_CSUM,
    OPTC_TUN_NOCSUM,
    OPTC_TUN_PORT,
    OPTC_TUN_REMCSUM,
    OPTC_TUN_TYPE,
    Command,
    generic_opt_check,
    parse_options,
    tunnel_opt_check,
)
from pyvs.engine.ipvsadm.output import EXIT_LIST, EXIT_MINUS1, Exit, Out, ipvs_strerror
from pyvs.engine.ipvsadm.usage import DEF_SCHED
from pyvs.engine.model import (
    FWD_DROUTE,
    FWD_TUNNEL,
    SVC_F_ONEPACKET,
    SVC_F_PERSISTENT,
    DestSpec,
    ServiceSpec,
)
from pyvs.engine.service import IPVSError
from pyvs.schedulers.registry import absolute

# Persistence engines pyvs implements: none.  The kernel loads ip_vs_pe_<name> for
# --pe and answers ENOENT when there is no such module, which is what pyvs answers
# for every name ("Scheduler or persistence engine not found", exit 255): sip would
# need the SIP Call-ID parser of ip_vs_pe_sip.c.
PERSISTENCE_ENGINES: frozenset[str] = frozenset()


def _svc_spec(ce: Command, cwd: str | None = None) -> ServiceSpec:
    """The service of the command line; a relative plugin path is made absolute against
    ``cwd``, pyvsadm's directory (schedulers/registry.py ``absolute``)."""
    af = ce.af or AF_INET
    addr = ce.addr or bytes(4 if af == AF_INET else 16)
    return ServiceSpec(af=af, protocol=ce.protocol, addr=addr, port=ce.port, fwmark=ce.fwmark,
                       scheduler=absolute(ce.sched or DEF_SCHED, cwd), flags=ce.flags,
                       timeout=ce.timeout, netmask=ce.netmask, pe_name=ce.pe)


def _dest_spec(ce: Command) -> DestSpec:
    return DestSpec(addr=ce.d_addr, port=ce.d_port, fwd=ce.fwd, weight=ce.weight,
                    u_threshold=ce.u_thr, l_threshold=ce.l_thr, tun_type=ce.tun_type,
                    tun_port=ce.tun_port, tun_flags=ce.tun_flags)


def _check_dest_addr(addr: bytes) -> None:
    """The kernel refuses destinations that are neither local nor unicast (EINVAL)."""
    ip = ipaddress.ip_address(addr)
    if ip.is_multicast or ip.is_unspecified or (ip.version == 4 and addr == b"\xff" * 4):
        raise IPVSError(errno.EINVAL)


def _execute(o: Out, ce: Command, director) -> int:
    """The switch at the end of process_options(); returns 0 or -1."""
    table = director.services
    op = ""
    try:
        if ce.cmd == CMD_FLUSH:
            op = "flush"
            table.flush(director.now())
        elif ce.cmd in (CMD_ADD, CMD_EDIT):
            op = "add_service" if ce.cmd == CMD_ADD else "update_service"
            spec = _svc_spec(ce, o.cwd)
            if ce.pe and ce.pe not in PERSISTENCE_ENGINES:
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
            daemon_command(o, ce)
    except IPVSError as err:
        o.e((err.detail or ipvs_strerror(op, err.errno)) + "\n")
        return -1
    return 0


def _process(o: Out, argv: list[str], stdin: str, director, reading_stdin: bool) -> int:
    """process_options(): returns 0 / -1; fail() and friends raise Exit."""
    ce = parse_options(o, argv)
    if ce is None:
        return -1
    generic_opt_check(o, ce.cmd, ce.options)

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
        tunnel_opt_check(o, ce.tun_type, ce.options)

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
                raise Exit(EXIT_LIST)
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


def _restore(o: Out, stdin: str, director, reading_stdin: bool) -> int:
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


def run(argv: list[str], stdin: str, director, sync=None,
        cwd: str | None = None) -> tuple[int, str, str]:
    """Execute one ipvsadm invocation; argv excludes the program name.  ``sync``: the
    director's sync daemons (engine/sync/daemon.py), if it has any; ``cwd``: the
    caller's directory, against which relative plugin paths are read."""
    o = Out()
    o.sync = sync
    o.cwd = cwd
    try:
        if not argv:
            list_all(o, director, 0)
            code = 0
        else:
            code = _process(o, list(argv), stdin, director, False)
            code = EXIT_MINUS1 if code else 0
    except Exit as ex:
        code = ex.code
    return code, "".join(o.out), "".join(o.err)
