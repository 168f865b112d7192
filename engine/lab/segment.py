"""Labs with one client segment (a bridge in its own namespace): the direct-routing lab
and the common base of the tunnelling lab; the real servers' VIP-on-lo sysctls."""

from __future__ import annotations

from . import netns as nx
from .topology import Lab

RS_SYSCTLS = {  # a real server holding the VIP on lo (docs/ipvs-semantics.md, "Direct routing")
    "net.ipv4.conf.all.arp_ignore": 1,
    "net.ipv4.conf.all.arp_announce": 2,
    "net.ipv4.conf.all.rp_filter": 0,
    "net.ipv4.conf.default.rp_filter": 0,
    "net.ipv4.conf.all.accept_redirects": 0,
    "net.ipv4.conf.default.accept_redirects": 0,
    "net.ipv6.conf.all.accept_redirects": 0,
    "net.ipv6.conf.default.accept_redirects": 0,
}
NO_RP_FILTER = {"net.ipv4.conf.all.rp_filter": 0, "net.ipv4.conf.default.rp_filter": 0}


class SegmentLab(Lab):
    """Common part of the DR and TUN labs: one client segment, a bridge ``br0`` in its own
    namespace ``<lab>-lan``, where the client, the director and (for the direct return
    path) the real servers all have a port.  The VIP is on the director's ``lo``; the
    client routes the VIP network via the director (as the kernel selftest does), and
    the real servers answer the client directly over the segment."""

    extra_roles = ("lan",)

    VIP = "198.18.1.1"
    VIP6 = "2001:db8:1::1"
    DIR_CLIENT = "198.18.0.1"
    DIR_CLIENT6 = "2001:db8::1"
    CLIENT_IF = "eth0"
    DIR_CLIENT_IF = "eth0"
    RS_IF = "eth0"

    def _lan_port(self, lan: str, ns: str, port: str, ifname: str) -> None:
        nx.add_veth(lan, port, ns, ifname, self.queues)
        nx.set_master(lan, port, "br0")

    def _build_segment(self) -> tuple[str, str, str]:
        lan = self._new_ns("lan")
        client = self._new_ns("client")
        director = self._new_ns("director")
        nx.sysctl(lan, {"net.ipv6.conf.all.disable_ipv6": 1,
                        "net.ipv6.conf.default.disable_ipv6": 1})
        nx.add_bridge(lan, "br0")
        nx.sysctl(client, NO_RP_FILTER)
        self._lan_port(lan, client, "client", self.CLIENT_IF)
        for a in self.client_addrs:
            nx.add_addr(client, self.CLIENT_IF, f"{a}/24")
        for a in self.client_addrs6:
            nx.add_addr(client, self.CLIENT_IF, f"{a}/64")
        nx.add_route(client, "198.18.1.0/24", self.DIR_CLIENT)
        nx.add_route(client, "2001:db8:1::/64", self.DIR_CLIENT6)
        nx.add_addr(director, "lo", f"{self.VIP}/32")
        nx.add_addr(director, "lo", f"{self.VIP6}/128")
        return lan, client, director

    def _rs_vip(self, ns: str) -> None:
        nx.add_addr(ns, "lo", f"{self.VIP}/32")
        nx.add_addr(ns, "lo", f"{self.VIP6}/128")

    def director_stats(self) -> dict[str, dict[str, int]]:
        """Interface counters in the director namespace (``ip -s link``)."""
        return nx.link_stats(self.ns("director"))

    def _director_info(self) -> dict:
        return {"client_if": self.DIR_CLIENT_IF, "client_addr": self.DIR_CLIENT,
                "client_addr6": self.DIR_CLIENT6, "vip_if": "lo"}


class DrLab(SegmentLab):
    """Direct routing: client, director and real servers on one L2 segment.

    ::

        lan     br0 (bridge; ports client, director, rs1..rsN; no addresses)
        client  eth0  198.18.0.(10+j)/24  2001:db8::(10+j)/64
                      198.18.1.0/24 via 198.18.0.1, 2001:db8:1::/64 via 2001:db8::1
                      198.18.2.0/24 and 2001:db8:2::/64 on-link
        director eth0 198.18.0.1/24 198.18.2.1/24 2001:db8::1/64 2001:db8:2::1/64
                 lo   VIP 198.18.1.1/32 2001:db8:1::1/128
                 ip_forward=1 (NAT dests too), send_redirects=0
        rs<i>   eth0  198.18.2.(10+i)/24  2001:db8:2::(10+i)/64
                      198.18.0.0/24 and 2001:db8::/64 on-link (replies go straight back)
                      from 198.18.2.(10+i) / 2001:db8:2::(10+i): table 100, default via
                      the director (so the same server also works as a NAT dest)
                lo    the VIP; arp_ignore=1 arp_announce=2 rp_filter=0
    """

    mode = "dr"
    multi_queue = True  # every port of the segment: a bridge keeps a frame's receive queue
    DIR_SERVER = "198.18.2.1"
    DIR_SERVER6 = "2001:db8:2::1"

    def real_server_list(self) -> list[dict]:
        return [{"name": f"rs{i}", "ns": self.ns(f"rs{i}"), "addr": f"198.18.2.{10 + i}",
                 "addr6": f"2001:db8:2::{10 + i}"} for i in range(1, self.n_real + 1)]

    def _build(self) -> None:
        lan, client, director = self._build_segment()
        nx.sysctl(director, {
            "net.ipv4.ip_forward": 1,
            "net.ipv6.conf.all.forwarding": 1,
            "net.ipv4.conf.all.send_redirects": 0,
            "net.ipv4.conf.default.send_redirects": 0,
            **NO_RP_FILTER,
        })
        self._lan_port(lan, director, "director", self.DIR_CLIENT_IF)
        for cidr in (f"{self.DIR_CLIENT}/24", f"{self.DIR_SERVER}/24",
                     f"{self.DIR_CLIENT6}/64", f"{self.DIR_SERVER6}/64"):
            nx.add_addr(director, self.DIR_CLIENT_IF, cidr)
        nx.add_onlink_route(client, "198.18.2.0/24", self.CLIENT_IF)
        nx.add_onlink_route(client, "2001:db8:2::/64", self.CLIENT_IF)
        for rs in self.real_server_list():
            ns = self._new_ns(rs["name"])
            nx.sysctl(ns, RS_SYSCTLS)
            self._lan_port(lan, ns, rs["name"], self.RS_IF)
            nx.add_addr(ns, self.RS_IF, f"{rs['addr']}/24")
            nx.add_addr(ns, self.RS_IF, f"{rs['addr6']}/64")
            nx.add_onlink_route(ns, "198.18.0.0/24", self.RS_IF)
            nx.add_onlink_route(ns, "2001:db8::/64", self.RS_IF)
            nx.add_source_route(ns, rs["addr"], self.DIR_SERVER, 100)
            nx.add_source_route(ns, rs["addr6"], self.DIR_SERVER6, 100)
            self._rs_vip(ns)

    def _director_info(self) -> dict:
        info = super()._director_info()
        info.update(server_if=self.DIR_CLIENT_IF, server_addr=self.DIR_SERVER,
                    server_addr6=self.DIR_SERVER6)
        return info
