"""The tunnelling lab: real servers at a remote site behind a router, decapsulating with
the kernel's ipip device or `pyvs realserver`; replies go straight back to the client."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from . import netns as nx
from .netns import LabError
from .segment import NO_RP_FILTER, RS_SYSCTLS, SegmentLab
from .topology import REPO_ROOT, SERVER_READY_TIMEOUT, stop_process


class TunLab(SegmentLab):
    """Tunnelling: real servers at a remote site, reached through a router; replies go
    straight back over the client segment (the kernel selftest's shape).

    ::

        lan      br0 (bridge; ports client, director, rs1..rsN)
        client   eth0 198.18.0.(10+j)/24 2001:db8::(10+j)/64; VIP nets via the director
        director eth0 198.18.0.1/24 2001:db8::1/64      (client segment)
                 eth1 198.18.2.1/24 2001:db8:2::1/64    (to the router)
                 198.18.3.0/24 via 198.18.2.2, 2001:db8:3::/64 via 2001:db8:2::2
                 lo VIP; ip_forward=0 (as the selftest: tunnel packets are local output)
        router   eth0 198.18.2.2/24 2001:db8:2::2/64;  br0 198.18.3.1/24 2001:db8:3::1/64
                 (ports rs1..rsN); forwarding on
        rs<i>    eth0 198.18.3.(10+i)/24 2001:db8:3::(10+i)/64 (tunnel endpoint),
                      198.18.2.0/24 via 198.18.3.1
                 eth1 198.18.0.(100+i)/24 2001:db8::(100+i)/64 (client segment: replies)
                 lo   the VIP; arp_ignore=1 arp_announce=2 rp_filter=0
                 decapsulation: the kernel's tunl0 if `ip link add type ipip` works,
                 otherwise `pyvs realserver` (TUN device pyvstun0); ``decap="pyvs"``
                 always uses `pyvs realserver` (IPIP, GRE and GUE)
    """

    mode = "tun"
    DIR_CORE = "198.18.2.1"
    DIR_CORE6 = "2001:db8:2::1"
    ROUTER = "198.18.2.2"
    ROUTER6 = "2001:db8:2::2"
    ROUTER_RS = "198.18.3.1"
    ROUTER_RS6 = "2001:db8:3::1"
    DIR_CORE_IF = "eth1"
    RS_LAN_IF = "eth1"
    TUN_IF = "pyvstun0"

    DECAP = ("auto", "pyvs")

    def __init__(self, *args, decap: str = "auto", **kw) -> None:
        if decap not in self.DECAP:
            raise LabError(f"decap must be one of {', '.join(self.DECAP)}")
        super().__init__(*args, **kw)
        self.decap = decap
        self.tunnels: dict[str, subprocess.Popen] = {}
        self.kernel_ipip = False

    def real_server_list(self) -> list[dict]:
        return [{"name": f"rs{i}", "ns": self.ns(f"rs{i}"), "addr": f"198.18.3.{10 + i}",
                 "addr6": f"2001:db8:3::{10 + i}", "lan_addr": f"198.18.0.{100 + i}",
                 "lan_addr6": f"2001:db8::{100 + i}"} for i in range(1, self.n_real + 1)]

    def _build(self) -> None:
        lan, client, director = self._build_segment()
        router = self._new_ns("router")
        nx.sysctl(director, {"net.ipv4.ip_forward": 0, "net.ipv6.conf.all.forwarding": 0,
                             **NO_RP_FILTER})
        nx.sysctl(router, {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1})
        self._lan_port(lan, director, "director", self.DIR_CLIENT_IF)
        nx.add_addr(director, self.DIR_CLIENT_IF, f"{self.DIR_CLIENT}/24")
        nx.add_addr(director, self.DIR_CLIENT_IF, f"{self.DIR_CLIENT6}/64")
        nx.add_veth(director, self.DIR_CORE_IF, router, "eth0")
        nx.add_addr(director, self.DIR_CORE_IF, f"{self.DIR_CORE}/24")
        nx.add_addr(director, self.DIR_CORE_IF, f"{self.DIR_CORE6}/64")
        nx.add_addr(router, "eth0", f"{self.ROUTER}/24")
        nx.add_addr(router, "eth0", f"{self.ROUTER6}/64")
        nx.add_route(director, "198.18.3.0/24", self.ROUTER)
        nx.add_route(director, "2001:db8:3::/64", self.ROUTER6)
        nx.add_bridge(router, "br0")
        nx.add_addr(router, "br0", f"{self.ROUTER_RS}/24")
        nx.add_addr(router, "br0", f"{self.ROUTER_RS6}/64")
        rss = self.real_server_list()
        for rs in rss:
            ns = self._new_ns(rs["name"])
            nx.sysctl(ns, RS_SYSCTLS)
            nx.add_veth(router, rs["name"], ns, self.RS_IF)
            nx.set_master(router, rs["name"], "br0")
            nx.add_addr(ns, self.RS_IF, f"{rs['addr']}/24")
            nx.add_addr(ns, self.RS_IF, f"{rs['addr6']}/64")
            nx.add_route(ns, "198.18.2.0/24", self.ROUTER_RS)
            nx.add_route(ns, "2001:db8:2::/64", self.ROUTER_RS6)
            self._lan_port(lan, ns, rs["name"], self.RS_LAN_IF)
            nx.add_addr(ns, self.RS_LAN_IF, f"{rs['lan_addr']}/24")
            nx.add_addr(ns, self.RS_LAN_IF, f"{rs['lan_addr6']}/64")
            self._rs_vip(ns)
        self.kernel_ipip = self.decap == "auto" and self._have_kernel_ipip(rss[0]["ns"])
        for rs in rss:
            if self.kernel_ipip:
                nx.run(rs["ns"], ["ip", "link", "set", "tunl0", "up"], check=True)
                nx.sysctl(rs["ns"], {"net.ipv4.conf.tunl0.rp_filter": 0})
            else:
                self._start_realserver(rs)

    @staticmethod
    def _have_kernel_ipip(ns: str) -> bool:
        r = nx.run(ns, ["ip", "link", "add", "pyvsipip0", "type", "ipip"],
                   capture_output=True)
        if r.returncode != 0:
            return False
        nx.run(ns, ["ip", "link", "del", "pyvsipip0"], capture_output=True)
        return True

    def _start_realserver(self, rs: dict, timeout: float = SERVER_READY_TIMEOUT) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        ready = self.state_dir / f"{rs['name']}.tun.ready"
        ready.unlink(missing_ok=True)
        log = open(self.state_dir / f"{rs['name']}.tun.log", "ab")  # noqa: SIM115
        try:
            p = nx.popen(rs["ns"], [sys.executable, "-m", "pyvs.engine.cli", "realserver",
                                    "--tun-name", self.TUN_IF, "--ready-file", str(ready)],
                         env=env, stdin=subprocess.DEVNULL, stdout=log,
                         stderr=subprocess.STDOUT, start_new_session=True,
                         cwd=str(REPO_ROOT))
        finally:
            log.close()
        self.tunnels[rs["name"]] = p
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if p.poll() is not None:
                why = self.server_log(f"{rs['name']}.tun").strip().splitlines()
                raise LabError(f"pyvs realserver in {rs['name']} exited ({p.returncode})"
                               + (f": {why[-1]}" if why else ""))
            if time.monotonic() > deadline:
                raise LabError(f"pyvs realserver in {rs['name']} not ready after {timeout}s")
            time.sleep(0.02)

    def stop_tunnels(self) -> None:
        for name, p in list(self.tunnels.items()):
            stop_process(p)
            del self.tunnels[name]

    def down(self) -> None:
        try:
            self.stop_tunnels()
        finally:
            super().down()

    def _director_info(self) -> dict:
        info = super()._director_info()
        info.update(server_if=self.DIR_CORE_IF, server_addr=self.DIR_CORE,
                    server_addr6=self.DIR_CORE6, router=self.ROUTER,
                    decapsulation="kernel ipip (tunl0)" if self.kernel_ipip
                    else f"pyvs realserver ({self.TUN_IF})")
        return info
