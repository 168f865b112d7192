"""From configuration objects to IPVS services and the ipvsadm argv that edit them.

A virtual_server is one IPVS service, or with ``group`` one per entry of its
virtual_server_group (keepalived's ipvs_group_cmd sends every operation to each).
The argv are pyvsadm's (ipvsadm's) language, so the checker process edits the table
with exactly the operations an administrator would type.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pyvs.engine.health.model import ConfigError, HealthConfig, Target, VirtualServer

MAX_GROUP_SERVICES = 4096
PROTO_FLAG = {"TCP": "-t", "UDP": "-u", "SCTP": "--sctp-service"}
PROTO_NUMBER = {"TCP": 6, "UDP": 17, "SCTP": 132}
METHOD_FLAG = {"NAT": "-m", "DR": "-g", "TUN": "-i"}
TUN_FLAG_OPT = {"nocsum": "--tun-nocsum", "csum": "--tun-csum", "remcsum": "--tun-remcsum"}


@dataclass(frozen=True)
class ServiceRef:
    """One IPVS service: (protocol, address, port) or a fwmark of one family."""

    protocol: str
    addr: str | None
    port: int
    fwmark: int
    family: int  # 4 or 6

    def selector(self) -> list[str]:
        if self.fwmark:
            return ["-f", str(self.fwmark), *(["-6"] if self.family == 6 else [])]
        return [PROTO_FLAG[self.protocol], addr_port(self.addr, self.port)]

    def key(self) -> tuple:
        """The director's service key (engine/model.py ServiceSpec.key)."""
        af = 10 if self.family == 6 else 2
        if self.fwmark:
            return ("fwm", af, self.fwmark)
        return (af, PROTO_NUMBER[self.protocol], ipaddress.ip_address(self.addr).packed,
                self.port)

    def text(self) -> str:
        if self.fwmark:
            return f"FWM {self.fwmark}{' IPv6' if self.family == 6 else ''}"
        return f"{self.protocol} {addr_port(self.addr, self.port)}"


def addr_port(addr: str, port: int) -> str:
    """"198.18.2.11:80", "[2001:db8::1]:80" ("ADDR" alone for port 0); the parsers
    keep addresses in their normal text form, so no parsing here (a hot path)."""
    host = f"[{addr}]" if ":" in addr else addr
    return f"{host}:{port}" if port else host


def vs_family(vs: VirtualServer, cfg: HealthConfig) -> int:
    """keepalived: an address service has its address's family; a fwmark service the
    family of ``ip_family``, else of its real servers, else IPv4."""
    if vs.addr:
        return ipaddress.ip_address(vs.addr).version
    if vs.ip_family:
        return 6 if vs.ip_family == "inet6" else 4
    if vs.group:
        group = cfg.group(vs.group)
        for entry in group.entries if group else []:
            if entry.first:
                return ipaddress.ip_address(entry.first).version
    for rs in vs.real_servers:
        return ipaddress.ip_address(rs.addr).version
    return 4


def services(vs: VirtualServer, cfg: HealthConfig) -> list[ServiceRef]:
    """The IPVS services ``vs`` stands for, in configuration order."""
    family = vs_family(vs, cfg)
    if not vs.group:
        return [ServiceRef(vs.protocol, vs.addr, vs.port, vs.fwmark, family)]
    group = cfg.group(vs.group)
    if group is None:
        raise ConfigError(f"{vs.where}: virtual_server_group {vs.group} is not defined")
    out: list[ServiceRef] = []
    for entry in group.entries:
        if entry.fwmark:
            fam = {"inet": 4, "inet6": 6}.get(entry.family or "", family)
            out.append(ServiceRef(vs.protocol, None, 0, entry.fwmark, fam))
            continue
        first = ipaddress.ip_address(entry.first)
        last = ipaddress.ip_address(entry.last or entry.first)
        count = int(last) - int(first) + 1
        if len(out) + count > MAX_GROUP_SERVICES:
            raise ConfigError(f"{entry.where}: virtual_server_group {group.name} makes more "
                              f"than {MAX_GROUP_SERVICES} services")
        for n in range(count):
            out.append(ServiceRef(vs.protocol, str(first + n), entry.port, 0, first.version))
    return out


# -- argv -------------------------------------------------------------------------------------
def service_options(vs: VirtualServer) -> list[str]:
    """-s, -p, -M, -b, -o, --pe as ipvs_set_srule() fills the service rule."""
    argv = ["-s", vs.lvs_sched]
    if vs.persistence_timeout:
        argv += ["-p", str(vs.persistence_timeout)]
        if vs.persistence_granularity:
            argv += ["-M", vs.persistence_granularity]
        if vs.persistence_engine:
            argv += ["--pe", vs.persistence_engine]
    if vs.sched_flags:
        argv += ["-b", ",".join(vs.sched_flags)]
    if vs.ops:
        argv.append("-o")
    return argv


def add_service(vs: VirtualServer, ref: ServiceRef) -> list[str]:
    return ["-A", *ref.selector(), *service_options(vs)]


def edit_service(vs: VirtualServer, ref: ServiceRef) -> list[str]:
    return ["-E", *ref.selector(), *service_options(vs)]


def del_service(ref: ServiceRef) -> list[str]:
    return ["-D", *ref.selector()]


def dest_port(ref: ServiceRef, target: Target) -> int:
    """ipvs_cmd(): a NAT destination keeps its port; DR/TUN use the service's (0 for
    a fwmark service)."""
    if target.lvs_method == "NAT":
        return target.port or ref.port
    return 0 if ref.fwmark else ref.port


def dest_selector(ref: ServiceRef, target: Target) -> list[str]:
    return ["-r", addr_port(target.addr, dest_port(ref, target))]


def dest_options(target: Target, weight: int) -> list[str]:
    argv = [METHOD_FLAG[target.lvs_method or "NAT"], "-w", str(weight)]
    if target.uthreshold:
        argv += ["-x", str(target.uthreshold)]
    if target.lthreshold:
        argv += ["-y", str(target.lthreshold)]
    if target.lvs_method == "TUN" and target.tun_type and target.tun_type != "ipip":
        argv += ["--tun-type", target.tun_type]
        if target.tun_port:
            argv += ["--tun-port", str(target.tun_port)]
        if target.tun_flags:
            argv.append(TUN_FLAG_OPT[target.tun_flags])
    return argv


def add_dest(ref: ServiceRef, target: Target, weight: int) -> list[str]:
    return ["-a", *ref.selector(), *dest_selector(ref, target), *dest_options(target, weight)]


def edit_dest(ref: ServiceRef, target: Target, weight: int) -> list[str]:
    return ["-e", *ref.selector(), *dest_selector(ref, target), *dest_options(target, weight)]


def del_dest(ref: ServiceRef, target: Target) -> list[str]:
    return ["-d", *ref.selector(), *dest_selector(ref, target)]


def set_timeouts(tcp: int, tcpfin: int, udp: int) -> list[str]:
    return ["--set", str(tcp), str(tcpfin), str(udp)]
