"""The NAT lab: client - director - real servers, replies routed back through the director
(the address plan is in engine/lab/topology.py's docstring and netns-lab/README.md)."""

from __future__ import annotations

from . import netns as nx
from .topology import Lab


class NatLab(Lab):
    """Client - director - real servers, real servers routed back via the director.

    ``with NatLab(real_servers=3, clients=4, start_servers=True) as lab: ...``
    or ``lab = NatLab(...); lab.up(); ...; lab.down()``.
    """

    mode = "nat"
    multi_queue = True

    VIP = "198.18.1.1"
    VIP6 = "2001:db8:1::1"
    DIR_CLIENT = "198.18.0.1"
    DIR_CLIENT6 = "2001:db8::1"
    DIR_SERVER = "198.18.2.1"
    DIR_SERVER6 = "2001:db8:2::1"
    CLIENT_IF = "eth0"  # in the client namespace
    DIR_CLIENT_IF = "cli0"  # director, towards the client
    DIR_SERVER_IF = "br0"  # director, bridge towards the real servers
    RS_IF = "eth0"  # in each real-server namespace

    # -------------------------------------------------------------- addresses

    def real_server_list(self) -> list[dict]:
        return [
            {
                "name": f"rs{i}",
                "ns": self.ns(f"rs{i}"),
                "addr": f"198.18.2.{10 + i}",
                "addr6": f"2001:db8:2::{10 + i}",
            }
            for i in range(1, self.n_real + 1)
        ]

    # ------------------------------------------------------------------ build

    def _build(self) -> None:
        client = self._new_ns("client")
        director = self._new_ns("director")
        rss = self.real_server_list()
        for rs in rss:
            self._new_ns(rs["name"])

        nx.sysctl(director, {
            "net.ipv4.ip_forward": 1,
            "net.ipv6.conf.all.forwarding": 1,
        })

        # client <-> director
        nx.add_veth(director, self.DIR_CLIENT_IF, client, self.CLIENT_IF, self.queues)
        nx.add_addr(director, self.DIR_CLIENT_IF, f"{self.DIR_CLIENT}/24")
        nx.add_addr(director, self.DIR_CLIENT_IF, f"{self.DIR_CLIENT6}/64")
        for a in self.client_addrs:
            nx.add_addr(client, self.CLIENT_IF, f"{a}/24")
        for a in self.client_addrs6:
            nx.add_addr(client, self.CLIENT_IF, f"{a}/64")
        for net in ("198.18.1.0/24", "198.18.2.0/24"):
            nx.add_route(client, net, self.DIR_CLIENT)
        for net in ("2001:db8:1::/64", "2001:db8:2::/64"):
            nx.add_route(client, net, self.DIR_CLIENT6)

        # VIP on the director's loopback, as in the kernel selftest
        nx.add_addr(director, "lo", f"{self.VIP}/32")
        nx.add_addr(director, "lo", f"{self.VIP6}/128")

        # director bridge <-> real servers
        nx.add_bridge(director, self.DIR_SERVER_IF, self.queues)
        nx.add_addr(director, self.DIR_SERVER_IF, f"{self.DIR_SERVER}/24")
        nx.add_addr(director, self.DIR_SERVER_IF, f"{self.DIR_SERVER6}/64")
        for rs in rss:
            nx.add_veth(director, rs["name"], rs["ns"], self.RS_IF, self.queues)
            nx.set_master(director, rs["name"], self.DIR_SERVER_IF)
            nx.add_addr(rs["ns"], self.RS_IF, f"{rs['addr']}/24")
            nx.add_addr(rs["ns"], self.RS_IF, f"{rs['addr6']}/64")
            nx.add_route(rs["ns"], "default", self.DIR_SERVER)
            nx.add_route(rs["ns"], "default", self.DIR_SERVER6)

    # --------------------------------------------------------------- describe

    def _director_info(self) -> dict:
        return {
            "client_if": self.DIR_CLIENT_IF,
            "client_addr": self.DIR_CLIENT,
            "client_addr6": self.DIR_CLIENT6,
            "server_if": self.DIR_SERVER_IF,
            "server_addr": self.DIR_SERVER,
            "server_addr6": self.DIR_SERVER6,
            "vip_if": "lo",
        }

    def _describe_extra(self) -> dict:
        return {"interfaces": {"client": self.CLIENT_IF, "real_server": self.RS_IF}}
