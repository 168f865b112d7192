"""Fill in every inherited and default setting, and check what the parsers cannot.

keepalived's check_check_config() and checker defaults, in the same order: a real
server takes the virtual server's value for anything it leaves unset, a checker the
real server's, then the checker type's default (retry 1, DNS_CHECK 3, MISC_CHECK 0;
delay_before_retry 3 s for HTTP_GET/SSL_GET, delay_loop for DNS_CHECK, 1 s otherwise;
warmup = delay_loop).  Ports are corrected as keepalived does (a DR/TUN real server
takes the service's port; a fwmark service's DR/TUN real servers have port 0), with a
notice.  quorum above the total weight and hysteresis >= quorum are reduced, as
keepalived does, with a notice.
"""

from __future__ import annotations

import ipaddress

from pyvs.engine.health import ipvsops
from pyvs.engine.health.model import (
    Checker,
    ConfigError,
    HealthConfig,
    RealServer,
    Target,
    VirtualServer,
)

DEFAULT_RETRY = {"DNS_CHECK": 3, "MISC_CHECK": 0}
DEFAULT_DELAY_BEFORE_RETRY = {"HTTP_GET": 3.0, "SSL_GET": 3.0, "DNS_CHECK": None}
PORTED = ("TCP_CHECK", "HTTP_GET", "SSL_GET", "UDP_CHECK", "DNS_CHECK")
INHERITED = ("alpha", "retry", "delay_before_retry", "warmup", "delay_loop", "connect_timeout")


def resolve(cfg: HealthConfig) -> HealthConfig:
    """Complete ``cfg`` in place (and return it); raises ConfigError."""
    seen: dict[tuple, str] = {}
    for vs in cfg.virtual_servers:
        if vs.group and cfg.group(vs.group) is None:
            raise ConfigError(f"{vs.where}: virtual_server_group {vs.group} is not defined")
        vs.lvs_method = vs.lvs_method or "NAT"
        refs = ipvsops.services(vs, cfg)
        for ref in refs:
            if ref.key() in seen:
                raise ConfigError(f"{vs.where}: virtual_server {ref.text()} is already "
                                  f"defined at {seen[ref.key()]}")
            seen[ref.key()] = vs.where
        _check_families(vs, refs)
        keys = set()
        for rs in vs.real_servers:
            _resolve_rs(vs, rs, cfg)
            if (rs.addr, rs.port) in keys:
                raise ConfigError(f"{rs.where}: real_server {rs.text()} is defined twice in "
                                  f"virtual_server {vs.name()}")
            keys.add((rs.addr, rs.port))
        if vs.sorry_server is not None:
            _resolve_target(vs, vs.sorry_server, cfg, "sorry server")
            vs.sorry_server.weight = 1 if vs.sorry_server.weight is None else \
                vs.sorry_server.weight
            vs.sorry_server.inhibit_on_failure = vs.sorry_server_inhibit
        _clamp_quorum(vs, cfg)
    return cfg


def _check_families(vs: VirtualServer, refs: list[ipvsops.ServiceRef]) -> None:
    """Non-tunnelled real servers must have the service's address family."""
    fams = {r.family for r in refs}
    for t in [*vs.real_servers, *([vs.sorry_server] if vs.sorry_server else [])]:
        fam = ipaddress.ip_address(t.addr).version
        method = t.lvs_method or vs.lvs_method
        if method != "TUN" and fams and fam not in fams:
            raise ConfigError(f"{t.where}: {t.addr} is not of the virtual server's address "
                              f"family (only tunnelled real servers may differ)")


def _resolve_target(vs: VirtualServer, t: Target, cfg: HealthConfig, what: str) -> None:
    if t.lvs_method is None:
        t.lvs_method, t.tun_type, t.tun_port, t.tun_flags = (
            vs.lvs_method, vs.tun_type, vs.tun_port, vs.tun_flags)
    if t.inhibit_on_failure is None:
        t.inhibit_on_failure = vs.inhibit_on_failure
    if t.lvs_method == "NAT":
        if not vs.fwmark and not vs.group and not t.port:
            t.port = vs.port
        return
    if vs.fwmark:
        if t.port:
            cfg.notices.append(f"{t.where}: fwmark virtual server {vs.name()}, {what} "
                               f"{t.text()} has a port - cleared, as keepalived does")
            t.port = 0
    elif not vs.group:
        if t.port and t.port != vs.port:
            cfg.notices.append(f"{t.where}: virtual server {vs.name()} and {what} "
                               f"{t.text()} ports do not match - reset to {vs.port}, "
                               f"as keepalived does")
        t.port = vs.port


def _resolve_rs(vs: VirtualServer, rs: RealServer, cfg: HealthConfig) -> None:
    _resolve_target(vs, rs, cfg, "real server")
    if rs.weight is None:
        rs.weight = vs.weight
    for name in INHERITED:
        if getattr(rs, name) is None:
            setattr(rs, name, getattr(vs, name))
    if rs.virtualhost is None:
        rs.virtualhost = vs.virtualhost
    for checker in rs.checkers:
        _resolve_checker(rs, checker)


def _resolve_checker(rs: RealServer, c: Checker) -> None:
    """check_check_config(): the checker's own value, else the real server's, else the
    checker type's default."""
    if c.alpha is None:
        c.alpha = bool(rs.alpha)
    if c.retry is None:
        c.retry = rs.retry if rs.retry is not None else DEFAULT_RETRY.get(c.kind, 1)
    if c.connect_timeout is None:
        c.connect_timeout = rs.connect_timeout
    if c.delay_loop is None:
        c.delay_loop = rs.delay_loop
    if c.warmup is None:
        c.warmup = rs.warmup if rs.warmup is not None else c.delay_loop
    if c.delay_before_retry is None:
        if rs.delay_before_retry is not None:
            c.delay_before_retry = rs.delay_before_retry
        else:
            default = DEFAULT_DELAY_BEFORE_RETRY.get(c.kind, 1.0)
            c.delay_before_retry = c.delay_loop if default is None else default
    if c.kind == "MISC_CHECK" and c.misc_timeout is None:
        c.misc_timeout = c.delay_loop  # misc_check_thread(): vs->delay_loop
    if c.kind in ("HTTP_GET", "SSL_GET") and c.virtualhost is None:
        c.virtualhost = rs.virtualhost
    if c.kind in PORTED and c.connect_port is None and not rs.port:
        raise ConfigError(f"{c.where}: {c.kind}: needs connect_port (real server {rs.addr} "
                          f"has no port)")
    if c.bindto and c.connect_ip and \
            ipaddress.ip_address(c.bindto).version != ipaddress.ip_address(c.connect_ip).version:
        raise ConfigError(f"{c.where}: bindto {c.bindto} and connect_ip {c.connect_ip} are "
                          f"of different address families")


def _clamp_quorum(vs: VirtualServer, cfg: HealthConfig) -> None:
    total = sum(rs.weight or 0 for rs in vs.real_servers)
    if vs.quorum > total:
        cfg.notices.append(f"{vs.where}: quorum {vs.quorum} of {vs.name()} exceeds the total "
                           f"weight of its real servers {total}; reduced to {total}, as "
                           f"keepalived does")
        vs.quorum = total
    if vs.hysteresis >= vs.quorum and vs.hysteresis:
        new = max(vs.quorum - 1, 0)
        cfg.notices.append(f"{vs.where}: hysteresis {vs.hysteresis} >= quorum {vs.quorum} of "
                           f"{vs.name()}; set to {new}, as keepalived does")
        vs.hysteresis = new
