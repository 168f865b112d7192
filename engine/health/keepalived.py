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
from pyvs.schedulers import registry

U32 = 2**32 - 1
LVS_MAX_TIMEOUT = 86400 * 31
GLOBAL_REFUSED = {  # global_defs settings that change LVS behaviour and are not implemented
    "lvs_sync_daemon", "lvs_notify_fifo", "lvs_notify_fifo_script", "notify_fifo",
    "notify_fifo_script", "nftables", "nftables_ipvs", "nftables_counters", "nftables_ifindex",
    "lvs_flush_on_stop", "checker_log_all_failures", "rs_init_notifies", "no_checker_emails",
}
IGNORED_HERE = ("smtp_alert", "snmp_name")


# -- value readers ----------------------------------------------------------------------------
def _one(st: Statement) -> str:
    if len(st.args) != 1:
        raise ConfigError(f"{st.where}: {st.keyword}: takes one value, got {len(st.args)}")
    return st.args[0]


def _uint(lo: int, hi: int) -> Callable[[Statement], int]:
    def read(st: Statement) -> int:
        text = _one(st)
        if not text.isdigit() or not lo <= int(text) <= hi:
            raise ConfigError(f"{st.where}: {st.keyword}: {text!r} is not an integer in "
                              f"{lo}..{hi}")
        return int(text)
    return read


def _timer(minimum: float) -> Callable[[Statement], float]:
    """read_timer(): seconds, decimals allowed (microsecond resolution)."""
    def read(st: Statement) -> float:
        text = _one(st)
        try:
            value = round(float(text), 6)
        except ValueError:
            value = -1.0
        if not value >= minimum or value > LVS_MAX_TIMEOUT or text.lower() in ("nan", "inf"):
            raise ConfigError(f"{st.where}: {st.keyword}: {text!r} is not a time in seconds "
                              f"(>= {minimum:g})")
        return value
    return read


def _bool(st: Statement) -> bool:
    """A flag, or a flag with an optional on/off value (keepalived's get_value_for_bool)."""
    if not st.args:
        return True
    word = _one(st).lower()
    if word in ("on", "yes", "true", "1"):
        return True
    if word in ("off", "no", "false", "0"):
        return False
    raise ConfigError(f"{st.where}: {st.keyword}: {word!r} is not on/off/yes/no/true/false")


def _flag(st: Statement) -> bool:
    if st.args:
        raise ConfigError(f"{st.where}: {st.keyword}: takes no value")
    return True


def _text(st: Statement) -> str:
    if not st.args:
        raise ConfigError(f"{st.where}: {st.keyword}: missing value")
    return " ".join(st.args)


def _addr(text: str, st: Statement) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ConfigError(f"{st.where}: {st.keyword}: {text!r} is not an IP address") from None


def _port(text: str, st: Statement) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise ConfigError(f"{st.where}: {st.keyword}: {text!r} is not a port")
    return int(text)


def _choice(*values: str) -> Callable[[Statement], str]:
    def read(st: Statement) -> str:
        word = _one(st)
        for v in values:
            if word.upper() == v.upper():
                return v
        raise ConfigError(f"{st.where}: {st.keyword}: {word!r} is not one of "
                          f"{', '.join(values)}")
    return read


def read_hex(words: list[str], wildcards: bool, st: Statement) -> str:
    """read_hex_str(): free-format hex, two digits per octet from the left of each word,
    a lone last digit is an octet of its own; x/X wildcards where allowed.  Returns
    two characters per octet ('x' for a wildcard nibble)."""
    digits = "0123456789abcdef" + ("x" if wildcards else "")
    out = []
    for word in words:
        w = word.lower()
        if not w or any(c not in digits for c in w):
            raise ConfigError(f"{st.where}: {st.keyword}: {word!r} is not a hex string")
        for i in range(0, len(w), 2):
            pair = w[i:i + 2]
            out.append(pair if len(pair) == 2 else "0" + pair)
    if not out:
        raise ConfigError(f"{st.where}: {st.keyword}: missing hex string")
    return "".join(out)


def _scheduler(st: Statement) -> str:
    name = _one(st)
    if registry.lookup(name) is None:
        raise ConfigError(f"{st.where}: {st.keyword}: no scheduler {name!r} (have: "
                          f"{', '.join(registry.available())})")
    return name


def _method(st: Statement, t: Target | VirtualServer) -> None:
    """lvs_method NAT|DR|TUN [type ipip|gue port N|gre] [nocsum|csum|remcsum]."""
    words = [a.upper() for a in st.args]
    if not words or words[0] not in ("NAT", "DR", "TUN"):
        raise ConfigError(f"{st.where}: {st.keyword}: expected NAT, DR or TUN")
    t.lvs_method = words[0]
    rest = [a.lower() for a in st.args[1:]]
    if rest and words[0] != "TUN":
        raise ConfigError(f"{st.where}: {st.keyword}: tunnel options need TUN")
    if rest[:1] == ["type"]:
        if len(rest) < 2 or rest[1] not in ("ipip", "gue", "gre"):
            raise ConfigError(f"{st.where}: {st.keyword}: type must be ipip, gue or gre")
        t.tun_type = rest[1]
        rest = rest[2:]
        if t.tun_type == "gue":
            if rest[:1] != ["port"] or len(rest) < 2:
                raise ConfigError(f"{st.where}: {st.keyword}: type gue needs port NUM")
            t.tun_port = _port(rest[1], st)
            rest = rest[2:]
    if rest[:1] and rest[0] in ("nocsum", "csum", "remcsum") and t.tun_type in ("gue", "gre"):
        t.tun_flags = rest[0]
        rest = rest[1:]
    if rest:
        raise ConfigError(f"{st.where}: {st.keyword}: unexpected {' '.join(rest)!r}")


# -- tables: directive -> (attribute, reader) -------------------------------------------------
TIMER_POS = _timer(1e-6)
TIMER_ANY = _timer(0.0)
COMMON_TIMING = {
    "connect_timeout": ("connect_timeout", TIMER_POS),
    "delay_before_retry": ("delay_before_retry", TIMER_ANY),
    "warmup": ("warmup", TIMER_ANY),
    "delay_loop": ("delay_loop", TIMER_POS),
}
VS_TABLE: dict[str, tuple[str, Callable]] = {
    **COMMON_TIMING,
    "retry": ("retry", _uint(1, U32)),
    "lvs_sched": ("lvs_sched", lambda st: _scheduler(st)),
    "lb_algo": ("lvs_sched", lambda st: _scheduler(st)),
    "persistence_engine": ("persistence_engine", _choice("sip")),
    "protocol": ("protocol", _choice("TCP", "UDP", "SCTP")),
    "inhibit_on_failure": ("inhibit_on_failure", _bool),
    "alpha": ("alpha", _flag),
    "omega": ("omega", _flag),
    "ha_suspend": ("ha_suspend", _flag),
    "quorum": ("quorum", _uint(1, U32)),
    "hysteresis": ("hysteresis", _uint(0, U32)),
    "quorum_up": ("quorum_up", _text),
    "quorum_down": ("quorum_down", _text),
    "weight": ("weight", _uint(1, WEIGHT_MAX)),
    "virtualhost": ("virtualhost", _one),
    "ip_family": ("ip_family", _choice("inet", "inet6")),
    "ops": ("ops", _flag),
    "sorry_server_inhibit": ("sorry_server_inhibit", _flag),
}
RS_TABLE: dict[str, tuple[str, Callable]] = {
    **COMMON_TIMING,
    "retry": ("retry", _uint(1, U32)),
    "weight": ("weight", _uint(0, WEIGHT_MAX)),
    "uthreshold": ("uthreshold", _uint(0, U32)),
    "lthreshold": ("lthreshold", _uint(0, U32)),
    "inhibit_on_failure": ("inhibit_on_failure", _bool),
    "notify_up": ("notify_up", _text),
    "notify_down": ("notify_down", _text),
    "alpha": ("alpha", _bool),
    "virtualhost": ("virtualhost", _one),
}
CHECK_COMMON: dict[str, tuple[str, Callable]] = {
    **COMMON_TIMING,
    "retry": ("retry", _uint(0, U32)),
    "alpha": ("alpha", _bool),
    "log_all_failures": ("log_all_failures", _bool),
    "connect_ip": ("connect_ip", lambda st: _addr(_one(st), st)),
    "connect_port": ("connect_port", lambda st: _port(_one(st), st)),
    "bindto": ("bindto", lambda st: _addr(_one(st), st)),
    "bind_port": ("bind_port", lambda st: _port(_one(st), st)),
    "bind_if": ("bind_if", _one),
    "fwmark": ("fwmark", _uint(1, U32)),
}
CHECK_EXTRA: dict[str, dict[str, tuple[str, Callable]]] = {
    "TCP_CHECK": {},
    "PING_CHECK": {},
    "HTTP_GET": {
        "http_protocol": ("http_protocol", _choice("1.0", "1.0C", "1.1")),
        "fast_recovery": ("fast_recovery", _bool),
        "virtualhost": ("virtualhost", _one),
        "nb_get_retry": ("retry", _uint(0, U32)),
    },
    "UDP_CHECK": {
        "payload": ("payload", lambda st: read_hex(st.args, False, st)),
        "min_reply_length": ("min_reply_length", _uint(0, 65535)),
        "max_reply_length": ("max_reply_length", _uint(0, 65535)),
    },
    "DNS_CHECK": {
        "type": ("type", _choice(*DNS_TYPES)),
        "name": ("name", _one),
    },
    "MISC_CHECK": {
        "misc_path": ("misc_path", _text),
        "misc_timeout": ("misc_timeout", _timer(1.0)),
        "misc_dynamic": ("misc_dynamic", _flag),
        "user": ("user", _text),
    },
}
CHECK_EXTRA["SSL_GET"] = {**CHECK_EXTRA["HTTP_GET"], "enable_sni": ("enable_sni", _flag),
                          "sni_name": ("sni_name", _one)}
MISC_ONLY = ("alpha", "retry", "delay_before_retry", "warmup", "delay_loop",
             "log_all_failures", "connect_timeout")
URL_TABLE: dict[str, tuple[str, Callable]] = {
    "path": ("path", _one),
    "virtualhost": ("virtualhost", _one),
    "regex": ("regex", _text),
    "regex_no_match": ("regex_no_match", _flag),
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
            text = _one(sub).lower()
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
    rs = RealServer(addr=_addr(st.args[0], st), where=st.where,
                    port=_port(st.args[1], st) if len(st.args) == 2 else 0)
    for sub in _need_block(st):
        if sub.keyword in CHECK_EXTRA:
            rs.checkers.append(_checker(sub, rs, notices))
        elif sub.keyword in ("lvs_method", "lb_kind"):
            _method(sub, rs)
        elif sub.keyword in IGNORED_HERE:
            notices.append(f"{sub.where}: {sub.keyword} ignored (pyvs sends no mail or SNMP)")
        else:
            _apply(RS_TABLE, sub, rs, "real_server")
    return rs


def virtual_server(st: Statement, notices: list[str]) -> VirtualServer:
    vs = VirtualServer(where=st.where)
    args = st.args
    if args[:1] == ["fwmark"]:
        vs.fwmark = _uint(1, U32)(Statement("fwmark", args[1:], st.where))
    elif args[:1] == ["group"]:
        vs.group = Statement("group", args[1:], st.where).word(0, "group name")
    elif 1 <= len(args) <= 2:
        vs.addr = _addr(args[0], st)
        vs.port = _port(args[1], st) if len(args) == 2 else 0
    else:
        raise ConfigError(f"{st.where}: virtual_server: expected ADDRESS [PORT], fwmark N or "
                          f"group NAME")
    for sub in _need_block(st):
        key = sub.keyword
        if key == "real_server":
            vs.real_servers.append(_real_server(sub, vs, notices))
        elif key in ("lvs_method", "lb_kind"):
            _method(sub, vs)
        elif key in SCHED_FLAGS:
            _flag(sub)
            vs.sched_flags.append(key)
        elif key == "hashed":
            _flag(sub)  # keepalived: deprecated, no effect (the kernel hashes anyway)
        elif key == "persistence_timeout":
            vs.persistence_timeout = _uint(1, LVS_MAX_TIMEOUT)(sub) if sub.args else 360
        elif key == "persistence_granularity":
            vs.persistence_granularity = _granularity(sub, vs)
        elif key == "sorry_server":
            if not 1 <= len(sub.args) <= 2:
                raise ConfigError(f"{sub.where}: sorry_server: expected ADDRESS [PORT]")
            vs.sorry_server = Target(addr=_addr(sub.args[0], sub), where=sub.where,
                                     port=_port(sub.args[1], sub) if len(sub.args) == 2 else 0)
        elif key == "sorry_server_lvs_method":
            if vs.sorry_server is None:
                raise ConfigError(f"{sub.where}: sorry_server_lvs_method before sorry_server")
            _method(sub, vs.sorry_server)
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
    text = _one(st)
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
            entry = GroupEntry(fwmark=_uint(1, U32)(Statement("fwmark", sub.args[:1],
                                                              sub.where)), where=sub.where)
            if len(sub.args) == 2:
                entry.family = _choice("inet", "inet6")(Statement("fwmark", sub.args[1:],
                                                                  sub.where))
            elif len(sub.args) > 2:
                raise ConfigError(f"{sub.where}: fwmark: expected N [inet|inet6]")
        elif len(words) <= 2:
            first, last = _range(words[0], sub)
            entry = GroupEntry(first=first, last=last, where=sub.where,
                               port=_port(words[1], sub) if len(words) == 2 else 0)
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
            cfg.lvs_flush = _flag(sub)
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
        values[name] = _uint(1, LVS_MAX_TIMEOUT)(Statement(name, [value], st.where))
    return [values["tcp"], values["tcpfin"], values["udp"]]


def ssl_block(st: Statement, cfg: HealthConfig) -> None:
    names = {"password": "ssl_password", "ca": "ssl_ca", "certificate": "ssl_certificate",
             "key": "ssl_key"}
    for sub in _need_block(st):
        if sub.keyword not in names:
            raise _refuse(sub, "SSL")
        setattr(cfg, names[sub.keyword], _one(sub))


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
