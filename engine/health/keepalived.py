"""`pyvs run --keepalived FILE`: keepalived.conf(5)'s LVS part, read unchanged.

Every directive pyvs implements is in a table below with keepalived's value rules
(check_parser.c, check_*.c); anything else is refused as "FILE:LINE: NAME: ..." so
an administrator never runs with a silently dropped setting.  Left alone, with one
notice each: ``vrrp_*`` blocks (VRRP is not part of `pyvs run`), the ``global_defs``
settings that only concern VRRP, mail, SNMP, D-Bus and logging, and per-server
``smtp_alert``/``snmp_name``.  Unlike keepalived, which logs a bad value and goes on
without it, pyvs refuses the file: a reload that would silently lose a setting is
worse than one that says why it did nothing.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable

from pyvs.engine.health.kalex import Statement, parse_file
from pyvs.engine.health.kavalues import (
    LVS_MAX_TIMEOUT,
    addr,
    boolean,
    choice,
    flag,
    method,
    one,
    port,
    read_hex,
    scheduler,
    text,
    timer,
    uint,
)
from pyvs.engine.health.model import (
    DNS_TYPES,
    WEIGHT_MAX,
    Checker,
    ConfigError,
    Group,
    GroupEntry,
    HealthConfig,
    RealServer,
    Target,
    Url,
    VirtualServer,
)
from pyvs.engine.health.resolve import resolve

U32 = 2**32 - 1
GLOBAL_REFUSED = {  # global_defs settings that change LVS behaviour and are not implemented
    "lvs_sync_daemon", "lvs_notify_fifo", "lvs_notify_fifo_script", "notify_fifo",
    "notify_fifo_script", "nftables", "nftables_ipvs", "nftables_counters", "nftables_ifindex",
    "lvs_flush_on_stop", "checker_log_all_failures", "rs_init_notifies", "no_checker_emails",
}
IGNORED_HERE = ("smtp_alert", "snmp_name")


# -- tables: directive -> (attribute, reader) -------------------------------------------------
TIMER_POS = timer(1e-6)
TIMER_ANY = timer(0.0)
COMMON_TIMING = {
    "connect_timeout": ("connect_timeout", TIMER_POS),
    "delay_before_retry": ("delay_before_retry", TIMER_ANY),
    "warmup": ("warmup", TIMER_ANY),
    "delay_loop": ("delay_loop", TIMER_POS),
}
VS_TABLE: dict[str, tuple[str, Callable]] = {
    **COMMON_TIMING,
    "retry": ("retry", uint(1, U32)),
    "lvs_sched": ("lvs_sched", lambda st: scheduler(st)),
    "lb_algo": ("lvs_sched", lambda st: scheduler(st)),
    "persistence_engine": ("persistence_engine", choice("sip")),
    "protocol": ("protocol", choice("TCP", "UDP", "SCTP")),
    "inhibit_on_failure": ("inhibit_on_failure", boolean),
    "alpha": ("alpha", flag),
    "omega": ("omega", flag),
    "ha_suspend": ("ha_suspend", flag),
    "quorum": ("quorum", uint(1, U32)),
    "hysteresis": ("hysteresis", uint(0, U32)),
    "quorum_up": ("quorum_up", text),
    "quorum_down": ("quorum_down", text),
    "weight": ("weight", uint(1, WEIGHT_MAX)),
    "virtualhost": ("virtualhost", one),
    "ip_family": ("ip_family", choice("inet", "inet6")),
    "ops": ("ops", flag),
    "sorry_server_inhibit": ("sorry_server_inhibit", flag),
}
RS_TABLE: dict[str, tuple[str, Callable]] = {
    **COMMON_TIMING,
    "retry": ("retry", uint(1, U32)),
    "weight": ("weight", uint(0, WEIGHT_MAX)),
    "uthreshold": ("uthreshold", uint(0, U32)),
    "lthreshold": ("lthreshold", uint(0, U32)),
    "inhibit_on_failure": ("inhibit_on_failure", boolean),
    "notify_up": ("notify_up", text),
    "notify_down": ("notify_down", text),
    "alpha": ("alpha", boolean),
    "virtualhost": ("virtualhost", one),
}
CHECK_COMMON: dict[str, tuple[str, Callable]] = {
    **COMMON_TIMING,
    "retry": ("retry", uint(0, U32)),
    "alpha": ("alpha", boolean),
    "log_all_failures": ("log_all_failures", boolean),
    "connect_ip": ("connect_ip", lambda st: addr(one(st), st)),
    "connect_port": ("connect_port", lambda st: port(one(st), st)),
    "bindto": ("bindto", lambda st: addr(one(st), st)),
    "bind_port": ("bind_port", lambda st: port(one(st), st)),
    "bind_if": ("bind_if", one),
    "fwmark": ("fwmark", uint(1, U32)),
}
CHECK_EXTRA: dict[str, dict[str, tuple[str, Callable]]] = {
    "TCP_CHECK": {},
    "PING_CHECK": {},
    "HTTP_GET": {
        "http_protocol": ("http_protocol", choice("1.0", "1.0C", "1.1")),
        "fast_recovery": ("fast_recovery", boolean),
        "virtualhost": ("virtualhost", one),
        "nb_get_retry": ("retry", uint(0, U32)),
    },
    "UDP_CHECK": {
        "payload": ("payload", lambda st: read_hex(st.args, False, st)),
        "min_reply_length": ("min_reply_length", uint(0, 65535)),
        "max_reply_length": ("max_reply_length", uint(0, 65535)),
    },
    "DNS_CHECK": {
        "type": ("type", choice(*DNS_TYPES)),
        "name": ("name", one),
    },
    "MISC_CHECK": {
        "misc_path": ("misc_path", text),
        "misc_timeout": ("misc_timeout", timer(1.0)),
        "misc_dynamic": ("misc_dynamic", flag),
        "user": ("user", text),
    },
}
CHECK_EXTRA["SSL_GET"] = {**CHECK_EXTRA["HTTP_GET"], "enable_sni": ("enable_sni", flag),
                          "sni_name": ("sni_name", one)}
MISC_ONLY = ("alpha", "retry", "delay_before_retry", "warmup", "delay_loop",
             "log_all_failures", "connect_timeout")
URL_TABLE: dict[str, tuple[str, Callable]] = {
    "path": ("path", one),
    "virtualhost": ("virtualhost", one),
    "regex": ("regex", text),
    "regex_no_match": ("regex_no_match", flag),
}
SCHED_FLAGS = ("flag-1", "flag-2", "flag-3", "sh-port", "sh-fallback", "mh-port",
               "mh-fallback")


def _refuse(st: Statement, context: str) -> ConfigError:
    return ConfigError(f"{st.where}: {st.keyword}: not supported by pyvs in {context}")


def _apply(table: dict, st: Statement, obj: object, context: str) -> None:
    if st.keyword not in table:
        raise _refuse(st, context)
    if st.block is not None:
        raise ConfigError(f"{st.where}: {st.keyword}: takes no block")
    attr, reader = table[st.keyword]
    setattr(obj, attr, reader(st))


def _need_block(st: Statement) -> list[Statement]:
    if st.block is None:
        raise ConfigError(f"{st.where}: {st.keyword}: needs a {{ ... }} block")
    return st.block


# -- blocks -----------------------------------------------------------------------------------
def _url(st: Statement) -> Url:
    url = Url(where=st.where)
    for sub in _need_block(st):
        if sub.keyword == "digest":
            text = one(sub).lower()
            if len(text) != 32 or any(c not in "0123456789abcdef" for c in text):
                raise ConfigError(f"{sub.where}: digest: {text!r} is not 32 hex digits (MD5)")
            url.digest = text
        elif sub.keyword == "status_code":
            url.status_code += [_code_range(word, sub) for word in sub.args or [""]]
        else:
            _apply(URL_TABLE, sub, url, "url")
    return url


def _code_range(word: str, st: Statement) -> list[int]:
    lo, _, hi = word.partition("-")
    hi = hi or lo
    if not (lo.isdigit() and hi.isdigit() and 100 <= int(lo) <= int(hi) <= 599):
        raise ConfigError(f"{st.where}: status_code: {word!r} is not a code or range in "
                          f"100..599")
    return [int(lo), int(hi)]


def _checker(st: Statement, rs: RealServer, notices: list[str]) -> Checker:
    c = Checker(kind=st.keyword, where=st.where, connect_ip=None)
    common = {k: v for k, v in CHECK_COMMON.items()
              if st.keyword != "MISC_CHECK" or k in MISC_ONLY}
    table = {**common, **CHECK_EXTRA[st.keyword]}
    for sub in _need_block(st):
        if sub.keyword == "url" and st.keyword in ("HTTP_GET", "SSL_GET"):
            c.urls.append(_url(sub))
        elif sub.keyword == "require_reply" and st.keyword == "UDP_CHECK":
            c.require_reply = True
            c.reply = read_hex(sub.args, True, sub) if sub.args else None
        else:
            _apply(table, sub, c, st.keyword)
            if sub.keyword == "connect_timeout" and st.keyword == "MISC_CHECK":
                notices.append(f"{sub.where}: connect_timeout has no effect on MISC_CHECK "
                               f"(as in keepalived; misc_timeout bounds the script)")
    if c.kind in ("HTTP_GET", "SSL_GET") and not c.urls:
        raise ConfigError(f"{st.where}: {st.keyword}: needs at least one url {{ }} block")
    if c.kind == "MISC_CHECK" and not c.misc_path:
        raise ConfigError(f"{st.where}: MISC_CHECK: needs misc_path")
    if c.sni_name:
        c.enable_sni = True
    return c


def _real_server(st: Statement, vs: VirtualServer, notices: list[str]) -> RealServer:
    if not 1 <= len(st.args) <= 2:
        raise ConfigError(f"{st.where}: real_server: expected ADDRESS [PORT]")
    rs = RealServer(addr=addr(st.args[0], st), where=st.where,
                    port=port(st.args[1], st) if len(st.args) == 2 else 0)
    for sub in _need_block(st):
        if sub.keyword in CHECK_EXTRA:
            rs.checkers.append(_checker(sub, rs, notices))
        elif sub.keyword in ("lvs_method", "lb_kind"):
            method(sub, rs)
        elif sub.keyword in IGNORED_HERE:
            notices.append(f"{sub.where}: {sub.keyword} ignored (pyvs sends no mail or SNMP)")
        else:
            _apply(RS_TABLE, sub, rs, "real_server")
    return rs


def virtual_server(st: Statement, notices: list[str]) -> VirtualServer:
    vs = VirtualServer(where=st.where)
    args = st.args
    if args[:1] == ["fwmark"]:
        vs.fwmark = uint(1, U32)(Statement("fwmark", args[1:], st.where))
    elif args[:1] == ["group"]:
        vs.group = Statement("group", args[1:], st.where).word(0, "group name")
    elif 1 <= len(args) <= 2:
        vs.addr = addr(args[0], st)
        vs.port = port(args[1], st) if len(args) == 2 else 0
    else:
        raise ConfigError(f"{st.where}: virtual_server: expected ADDRESS [PORT], fwmark N or "
                          f"group NAME")
    for sub in _need_block(st):
        key = sub.keyword
        if key == "real_server":
            vs.real_servers.append(_real_server(sub, vs, notices))
        elif key in ("lvs_method", "lb_kind"):
            method(sub, vs)
        elif key in SCHED_FLAGS:
            flag(sub)
            vs.sched_flags.append(key)
        elif key == "hashed":
            flag(sub)  # keepalived: deprecated, no effect (the kernel hashes anyway)
        elif key == "persistence_timeout":
            vs.persistence_timeout = uint(1, LVS_MAX_TIMEOUT)(sub) if sub.args else 360
        elif key == "persistence_granularity":
            vs.persistence_granularity = _granularity(sub, vs)
        elif key == "sorry_server":
            if not 1 <= len(sub.args) <= 2:
                raise ConfigError(f"{sub.where}: sorry_server: expected ADDRESS [PORT]")
            vs.sorry_server = Target(addr=addr(sub.args[0], sub), where=sub.where,
                                     port=port(sub.args[1], sub) if len(sub.args) == 2 else 0)
        elif key == "sorry_server_lvs_method":
            if vs.sorry_server is None:
                raise ConfigError(f"{sub.where}: sorry_server_lvs_method before sorry_server")
            method(sub, vs.sorry_server)
        elif key in IGNORED_HERE:
            notices.append(f"{sub.where}: {key} ignored (pyvs sends no mail or SNMP)")
        else:
            _apply(VS_TABLE, sub, vs, "virtual_server")
    if vs.sorry_server_inhibit and vs.sorry_server is None:
        raise ConfigError(f"{st.where}: sorry_server_inhibit without sorry_server")
    if vs.addr and not vs.port and not vs.persistence_timeout:
        raise ConfigError(f"{st.where}: virtual_server {vs.addr}: a port is needed unless the "
                          f"service is persistent")
    if vs.ops and vs.protocol != "UDP" and not vs.fwmark:
        raise ConfigError(f"{st.where}: ops (one-packet scheduling) is only for UDP services")
    return vs


def _granularity(st: Statement, vs: VirtualServer) -> str:
    text = one(st)
    if "." in text:
        try:
            ipaddress.IPv4Address(text)
        except ValueError:
            raise ConfigError(f"{st.where}: persistence_granularity: {text!r} is not an "
                              f"IPv4 netmask") from None
        return text
    if not text.isdigit() or not 1 <= int(text) <= 128:
        raise ConfigError(f"{st.where}: persistence_granularity: {text!r} is not a netmask "
                          f"or an IPv6 prefix length")
    return text


def virtual_server_group(st: Statement) -> Group:
    group = Group(name=st.word(0, "group name"), where=st.where)
    for sub in _need_block(st):
        words = [sub.keyword, *sub.args]
        if sub.keyword == "fwmark":
            entry = GroupEntry(fwmark=uint(1, U32)(Statement("fwmark", sub.args[:1],
                                                              sub.where)), where=sub.where)
            if len(sub.args) == 2:
                entry.family = choice("inet", "inet6")(Statement("fwmark", sub.args[1:],
                                                                  sub.where))
            elif len(sub.args) > 2:
                raise ConfigError(f"{sub.where}: fwmark: expected N [inet|inet6]")
        elif len(words) <= 2:
            first, last = _range(words[0], sub)
            entry = GroupEntry(first=first, last=last, where=sub.where,
                               port=port(words[1], sub) if len(words) == 2 else 0)
        else:
            raise ConfigError(f"{sub.where}: virtual_server_group entry: expected ADDRESS "
                              f"[PORT], ADDRESS-RANGE [PORT] or fwmark N")
        group.entries.append(entry)
    return group


def _range(text: str, st: Statement) -> tuple[str, str]:
    """192.168.200.1-10, 192.168.200.250-192.168.201.10 or 192.168.202.8/29."""
    try:
        if "/" in text:
            net = ipaddress.ip_network(text, strict=False)
            return str(net[0]), str(net[-1])
        first, sep, last = text.partition("-")
        lo = ipaddress.ip_address(first)
        if not sep:
            return str(lo), str(lo)
        if all(c.isdigit() for c in last) and lo.version == 4:
            hi = ipaddress.ip_address(first.rsplit(".", 1)[0] + "." + last)
        elif all(c in "0123456789abcdefABCDEF" for c in last) and lo.version == 6:
            hi = ipaddress.ip_address(int(lo) & ~0xFFFF | int(last, 16))
        else:
            hi = ipaddress.ip_address(last)
    except ValueError:
        raise ConfigError(f"{st.where}: {text!r} is not an address or address range") from None
    if hi.version != lo.version or hi < lo:
        raise ConfigError(f"{st.where}: {text!r}: the range ends before it starts")
    return str(lo), str(hi)


def global_defs(st: Statement, cfg: HealthConfig) -> None:
    ignored = []
    for sub in _need_block(st):
        if sub.keyword == "lvs_timeouts":
            cfg.lvs_timeouts = _lvs_timeouts(sub)
        elif sub.keyword == "lvs_flush":
            cfg.lvs_flush = flag(sub)
        elif sub.keyword in GLOBAL_REFUSED:
            raise _refuse(sub, "global_defs")
        else:
            ignored.append(sub.keyword)
    if ignored:
        cfg.notices.append(f"{st.where}: global_defs: ignored (VRRP, mail, SNMP, D-Bus and "
                           f"logging settings): {', '.join(ignored)}")


def _lvs_timeouts(st: Statement) -> list[int]:
    values = {"tcp": 0, "tcpfin": 0, "udp": 0}
    args = list(st.args)
    if not args or len(args) % 2:
        raise ConfigError(f"{st.where}: lvs_timeouts: expected tcp N tcpfin N udp N")
    for name, value in zip(args[::2], args[1::2], strict=True):
        if name not in values:
            raise ConfigError(f"{st.where}: lvs_timeouts: {name!r} is not tcp, tcpfin or udp")
        values[name] = uint(1, LVS_MAX_TIMEOUT)(Statement(name, [value], st.where))
    return [values["tcp"], values["tcpfin"], values["udp"]]


def ssl_block(st: Statement, cfg: HealthConfig) -> None:
    names = {"password": "ssl_password", "ca": "ssl_ca", "certificate": "ssl_certificate",
             "key": "ssl_key"}
    for sub in _need_block(st):
        if sub.keyword not in names:
            raise _refuse(sub, "SSL")
        setattr(cfg, names[sub.keyword], one(sub))


def load(path: str | os.PathLike) -> HealthConfig:
    """Parse, complete and check a keepalived.conf; raises ConfigError."""
    statements, notices = parse_file(path)
    cfg = HealthConfig(source=str(path), notices=notices)
    vrrp = []
    for st in statements:
        if st.keyword == "virtual_server":
            cfg.virtual_servers.append(virtual_server(st, cfg.notices))
        elif st.keyword == "virtual_server_group":
            group = virtual_server_group(st)
            if cfg.group(group.name):
                raise ConfigError(f"{st.where}: virtual_server_group {group.name} is defined "
                                  f"twice")
            cfg.groups.append(group)
        elif st.keyword == "global_defs":
            global_defs(st, cfg)
        elif st.keyword == "SSL":
            ssl_block(st, cfg)
        elif st.keyword.startswith("vrrp_") or st.keyword == "garp_group":
            vrrp.append(f"{st.keyword} {' '.join(st.args)}".strip())
        else:
            raise _refuse(st, "the top level")
    if vrrp:
        cfg.notices.append(f"{cfg.source}: ignored, VRRP is not part of pyvs run: "
                           f"{', '.join(vrrp)}")
    return resolve(cfg)
