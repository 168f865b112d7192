"""The benchmark topology: client -> director -> sink, one veth each way.

    client ns   c0   198.18.0.2/24      routes 198.18.1.0/24, 198.18.2.0/24 via 198.18.0.1
    director ns lb0  198.18.0.1/24      (from the client)
                lb1  198.18.2.1/24      (to the sink)
                lo   198.18.1.1/32      the VIP
                ip_forward=1; RPS puts lb0's receive work on CPU1
    sink ns     s0   198.18.2.2/24      default via 198.18.2.1
                lo   198.18.1.1/32      the VIP too, for direct routing (arp_ignore=1,
                                        arp_announce=2 so it never answers ARP for it)

The sink drops benchmark traffic at its netdev ingress hook (nftables) and counts
it there: UDP to port ``FLOOD_PORT`` and IPIP (protocol 4, tunnelling) packets are
counted in the named counter ``pkts`` and dropped, so counting costs almost nothing
and does not depend on how the director forwarded (NAT, DR or TUN).  Everything
else reaches the sink's stack: a UDP echo server (``ECHO_PORT``) for latency and a
small HTTP server (``HTTP_PORT``) for connections per second, started by
``start_servers`` from the binaries the bench compiles (bench/tools.py).

Same guarantees as every lab (engine/lab/topology.py): unique ``pyvs-<hex>`` names,
teardown on exit and on failure, lab addresses only, no route to the host.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from . import netns as nx
from .netns import LabError
from .topology import Lab

FLOOD_PORT = 9
ECHO_PORT = 7
HTTP_PORT = 80


class BenchLab(Lab):
    """``with BenchLab(tools={"gen": path, "httpd": path}) as lab: ...``"""

    mode = "bench"

    VIP = "198.18.1.1"
    CLIENT = "198.18.0.2"
    DIR_CLIENT = "198.18.0.1"
    DIR_SINK = "198.18.2.1"
    SINK = "198.18.2.2"
    CLIENT_IF = "c0"
    DIR_IN_IF = "lb0"
    DIR_OUT_IF = "lb1"
    SINK_IF = "s0"

    def __init__(self, name: str | None = None, tools: dict[str, str] | None = None,
                 rps_cpu: int | None = 1, start_servers: bool = True) -> None:
        super().__init__(name=name, real_servers=1, clients=1, start_servers=start_servers)
        self.tools = dict(tools or {})
        self.rps_cpu = rps_cpu

    # ------------------------------------------------------------------ build

    def real_server_list(self) -> list[dict]:
        return [{"name": "sink", "ns": self.ns("sink"), "addr": self.SINK, "addr6": None}]

    def _build(self) -> None:
        client = self._new_ns("client")
        director = self._new_ns("director")
        sink = self._new_ns("sink")
        nx.sysctl(director, {"net.ipv4.ip_forward": 1})
        nx.sysctl(client, {"net.ipv4.ip_local_port_range": "1024 65000"})
        nx.sysctl(sink, {"net.ipv4.conf.all.arp_ignore": 1,
                         "net.ipv4.conf.all.arp_announce": 2,
                         "net.core.somaxconn": 4096,
                         "net.ipv4.tcp_max_syn_backlog": 4096})

        nx.add_veth(director, self.DIR_IN_IF, client, self.CLIENT_IF)
        nx.add_addr(director, self.DIR_IN_IF, f"{self.DIR_CLIENT}/24")
        nx.add_addr(client, self.CLIENT_IF, f"{self.CLIENT}/24")
        for net in ("198.18.1.0/24", "198.18.2.0/24"):
            nx.add_route(client, net, self.DIR_CLIENT)

        nx.add_addr(director, "lo", f"{self.VIP}/32")

        nx.add_veth(director, self.DIR_OUT_IF, sink, self.SINK_IF)
        nx.add_addr(director, self.DIR_OUT_IF, f"{self.DIR_SINK}/24")
        nx.add_addr(sink, self.SINK_IF, f"{self.SINK}/24")
        nx.add_addr(sink, "lo", f"{self.VIP}/32")
        nx.add_route(sink, "default", self.DIR_SINK)

        if self.rps_cpu is not None and (os.cpu_count() or 1) > self.rps_cpu:
            mask = format(1 << self.rps_cpu, "x")
            self.run("director", ["sh", "-c", f"for q in /sys/class/net/{self.DIR_IN_IF}"
                                  f"/queues/rx-*/rps_cpus; do echo {mask} > $q; done"],
                     check=True, capture_output=True)

        self.nft("sink", f"""
table netdev bench {{
  counter pkts {{ }}
  chain ingress {{
    type filter hook ingress device "{self.SINK_IF}" priority 0; policy accept;
    udp dport {FLOOD_PORT} counter name "pkts" drop
    ip protocol 4 counter name "pkts" drop
  }}
}}
""")
        # static neighbour entries: no ARP on the measured paths
        self.run("client", ["ip", "neigh", "replace", self.DIR_CLIENT, "lladdr",
                            self.mac("director", self.DIR_IN_IF), "dev", self.CLIENT_IF,
                            "nud", "permanent"], check=True)
        self.run("director", ["ip", "neigh", "replace", self.SINK, "lladdr",
                              self.mac("sink", self.SINK_IF), "dev", self.DIR_OUT_IF,
                              "nud", "permanent"], check=True)

    # -------------------------------------------------------------- helpers

    def nft(self, role: str, script: str, check: bool = True) -> subprocess.CompletedProcess:
        """Load an nftables script in a namespace (``nft -f -``)."""
        r = self.run(role, ["nft", "-f", "-"], input=script, capture_output=True)
        if check and r.returncode != 0:
            raise LabError(f"nft in {role}: {r.stderr.strip()}")
        return r

    def counter(self, role: str = "sink", table: str = "bench", name: str = "pkts") -> int:
        """Packets counted so far by a named nftables counter (netdev family)."""
        r = self.run(role, ["nft", "-j", "list", "counter", "netdev", table, name],
                     capture_output=True, check=True)
        for item in json.loads(r.stdout).get("nftables", []):
            if "counter" in item:
                return int(item["counter"]["packets"])
        raise LabError(f"counter {table}/{name} not found in {role}")

    def link_stats(self, role: str, ifname: str) -> dict:
        r = self.run(role, ["ip", "-s", "-j", "link", "show", ifname], capture_output=True,
                     check=True)
        return json.loads(r.stdout)[0]["stats64"]

    # -------------------------------------------------------------- servers

    def start_servers(self, timeout: float = 10.0) -> None:
        """Start the UDP echo and HTTP servers in the sink (compiled tools)."""
        if not self.tools:
            return
        log = open(self.state_dir / "sink.log", "ab")  # noqa: SIM115 - handed to children
        try:
            if "gen" in self.tools:
                self.servers["echo"] = self.popen(
                    "sink", [self.tools["gen"], "echo", "--port", str(ECHO_PORT),
                             "--duration", "3600"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
            if "httpd" in self.tools:
                self.servers["httpd"] = self.popen(
                    "sink", [self.tools["httpd"], "--port", str(HTTP_PORT),
                             "--duration", "3600"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        finally:
            log.close()
        want = len(self.servers)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = Path(self.state_dir / "sink.log").read_text(errors="replace")
            if text.count("listening on") >= want:
                return
            for name, p in self.servers.items():
                if isinstance(p, subprocess.Popen) and p.poll() is not None:
                    raise LabError(f"sink {name} exited: {text[-500:]}")
            time.sleep(0.02)
        raise LabError(f"sink servers not listening after {timeout}s")

    def describe(self) -> dict:
        return {
            "name": self.name,
            "mode": self.mode,
            "namespaces": {r: self.ns(r) for r in ("client", "director", "sink")},
            "vip": self.VIP,
            "client": self.CLIENT,
            "sink": self.SINK,
            "ports": {"flood": FLOOD_PORT, "echo": ECHO_PORT, "http": HTTP_PORT},
            "state_dir": str(self.state_dir),
        }
