"""The health-checking configuration, as keepalived.conf(5) describes it.

Both front ends (keepalived.py, tomlconfig.py) build these objects; resolve.py then
fills every inherited setting (checker <- real server <- virtual server <- keepalived
default), so the rest of the code reads plain values.  Field names are keepalived's
directive names.  ``where`` is "FILE:LINE" of the definition, for messages.

The objects cross the control socket (daemon -> checker process) as JSON:
``to_json``/``from_json`` handle any dataclass of this module.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import types
import typing
from dataclasses import dataclass, field

CHECKER_KINDS = ("TCP_CHECK", "HTTP_GET", "SSL_GET", "UDP_CHECK", "DNS_CHECK",
                 "MISC_CHECK", "PING_CHECK")
METHODS = ("NAT", "DR", "TUN")
PROTOCOLS = ("TCP", "UDP", "SCTP")
DNS_TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28}
WEIGHT_MAX = 65535  # what ipvsadm -w takes
TIMING = ("where", "retry", "delay_before_retry", "delay_loop", "warmup", "alpha",
          "log_all_failures")


class ConfigError(ValueError):
    """A refused configuration: str() is one line, "FILE:LINE: what is wrong"."""


@dataclass
class Url:
    path: str = "/"
    digest: str | None = None  # md5 of the body, lower-case hex (genhash)
    status_code: list[list[int]] = field(default_factory=list)  # [lo, hi] ranges
    virtualhost: str | None = None
    regex: str | None = None
    regex_no_match: bool = False
    where: str = ""

    def codes(self) -> list[list[int]]:
        """keepalived's default when none is given: 200-299 (url_check())."""
        return self.status_code or [[200, 299]]


@dataclass
class Checker:
    kind: str
    where: str = ""
    connect_ip: str | None = None
    connect_port: int | None = None
    bindto: str | None = None
    bind_port: int | None = None
    bind_if: str | None = None
    fwmark: int | None = None
    connect_timeout: float | None = None
    retry: int | None = None
    delay_before_retry: float | None = None
    delay_loop: float | None = None
    warmup: float | None = None
    alpha: bool | None = None
    log_all_failures: bool = False
    # HTTP_GET / SSL_GET
    urls: list[Url] = field(default_factory=list)
    http_protocol: str = "1.0"  # 1.0, 1.0C, 1.1
    virtualhost: str | None = None
    fast_recovery: bool = False
    enable_sni: bool = False
    sni_name: str | None = None
    # UDP_CHECK (hex strings as keepalived's read_hex_str reads them)
    payload: str | None = None
    require_reply: bool = False
    reply: str | None = None  # expected reply prefix, hex with x/X wildcards
    min_reply_length: int = 0
    max_reply_length: int = 255
    # DNS_CHECK
    type: str = "SOA"
    name: str = "."
    # MISC_CHECK
    misc_path: str | None = None
    misc_timeout: float | None = None
    misc_dynamic: bool = False
    user: str | None = None

    def identity(self) -> str:
        """What makes two checkers "the same" across a reload: as keepalived's compare
        functions, the type and what is checked how (addresses, ports, timeout, urls,
        payloads, scripts), not the timing (retry, delays, warmup, alpha), so a timing
        change keeps the checker's results."""
        d = dataclasses.asdict(self)
        for name in TIMING:
            d.pop(name)
        for url in d["urls"]:
            url.pop("where")
        return repr(sorted(d.items()))


@dataclass
class Target:
    """A real server or a sorry server as IPVS sees it."""

    addr: str
    port: int = 0
    weight: int | None = None
    lvs_method: str | None = None  # NAT, DR, TUN
    tun_type: str | None = None  # ipip, gue, gre
    tun_port: int = 0
    tun_flags: str | None = None  # nocsum, csum, remcsum
    uthreshold: int = 0
    lthreshold: int = 0
    inhibit_on_failure: bool | None = None
    where: str = ""

    def packed(self) -> bytes:
        return ipaddress.ip_address(self.addr).packed

    def text(self) -> str:
        ip = ipaddress.ip_address(self.addr)
        return f"[{ip}]:{self.port}" if ip.version == 6 else f"{ip}:{self.port}"


@dataclass
class RealServer(Target):
    notify_up: str | None = None
    notify_down: str | None = None
    alpha: bool | None = None
    retry: int | None = None
    delay_before_retry: float | None = None
    warmup: float | None = None
    delay_loop: float | None = None
    connect_timeout: float | None = None
    virtualhost: str | None = None
    checkers: list[Checker] = field(default_factory=list)


@dataclass
class GroupEntry:
    """One line of a virtual_server_group: an address range with a port, or a fwmark."""

    first: str | None = None
    last: str | None = None
    port: int = 0
    fwmark: int = 0
    family: str | None = None  # inet / inet6 for fwmark entries
    where: str = ""


@dataclass
class Group:
    name: str
    entries: list[GroupEntry] = field(default_factory=list)
    where: str = ""


@dataclass
class VirtualServer:
    where: str = ""
    addr: str | None = None
    port: int = 0
    fwmark: int = 0
    group: str | None = None
    protocol: str = "TCP"
    lvs_sched: str = "wlc"
    lvs_method: str | None = None
    tun_type: str | None = None
    tun_port: int = 0
    tun_flags: str | None = None
    sched_flags: list[str] = field(default_factory=list)  # flag-1.., sh-port, ...
    ops: bool = False
    persistence_timeout: int = 0
    persistence_granularity: str | None = None
    persistence_engine: str | None = None
    ip_family: str | None = None
    delay_loop: float = 60.0
    connect_timeout: float = 5.0
    retry: int | None = None
    delay_before_retry: float | None = None
    warmup: float | None = None
    inhibit_on_failure: bool = False
    alpha: bool = False
    omega: bool = False
    ha_suspend: bool = False
    quorum: int = 1
    hysteresis: int = 0
    quorum_up: str | None = None
    quorum_down: str | None = None
    weight: int = 1  # default weight of its real servers
    virtualhost: str | None = None
    sorry_server: Target | None = None
    sorry_server_inhibit: bool = False
    real_servers: list[RealServer] = field(default_factory=list)

    def name(self) -> str:
        """keepalived's FMT_VS: "[198.18.1.1]:tcp:80", "FWM 5", "[group web]:tcp"."""
        if self.group:
            return f"[{self.group}]:{self.protocol.lower()}"
        if self.fwmark:
            return f"FWM {self.fwmark}"
        return f"[{self.addr}]:{self.protocol.lower()}:{self.port}"


@dataclass
class HealthConfig:
    source: str = ""
    virtual_servers: list[VirtualServer] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    lvs_timeouts: list[int] | None = None  # tcp, tcpfin, udp (global_defs lvs_timeouts)
    lvs_flush: bool = False
    ssl_ca: str | None = None
    ssl_certificate: str | None = None
    ssl_key: str | None = None
    ssl_password: str | None = None
    notices: list[str] = field(default_factory=list)

    def group(self, name: str) -> Group | None:
        for g in self.groups:
            if g.name == name:
                return g
        return None


# -- JSON codec -------------------------------------------------------------------------------
def to_json(obj: typing.Any) -> typing.Any:
    return dataclasses.asdict(obj)


_HINTS: dict[type, dict[str, typing.Any]] = {}


def _decode(tp: typing.Any, value: typing.Any) -> typing.Any:
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin is list:
        (inner,) = typing.get_args(tp)
        return [_decode(inner, v) for v in value]
    if origin is dict:
        _, inner = typing.get_args(tp)
        return {k: _decode(inner, v) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _decode(args[0], value)
    if dataclasses.is_dataclass(tp):
        return from_json(tp, value)
    return value


def from_json(cls: type, data: dict) -> typing.Any:
    """Rebuild a dataclass of this module from ``to_json`` output."""
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: _decode(hints[k], v) for k, v in data.items() if k in names})
