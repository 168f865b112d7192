"""Two directors, keepalived's VRRP between them and pyvs's connection sync: the lab of an
LVS site that survives the loss of its active director.

::

    lan     br0: client, dir1, dir2 (and the real servers in DR mode)
    srv     br0: dir1, dir2, rs1..rsN                       (NAT mode only)
    client  eth0 198.18.0.(10+j)/24; 198.18.1.0/24 on-link (the VIP is found by ARP)
    dir<k>  eth0 198.18.0.(1+k)/24 (+ 198.18.2.(1+k)/24 in DR mode)
            eth1 198.18.2.(1+k)/24                             (NAT mode)
            VRRP (keepalived --vrrp, instance VI_1, router id 51, advert_int 1):
              198.18.1.1/32 dev eth0        the VIP, on the active director only
              198.18.2.1/24 dev eth1        NAT: the real servers' gateway follows it
            notify_master / notify_backup: pyvsadm switches the sync daemon's role
    rs<i>   NAT: eth0 198.18.2.(10+i)/24 on srv, default via 198.18.2.1
            DR:  eth0 198.18.2.(10+i)/24 on lan, 198.18.0.0/24 on-link, VIP on lo

The sync daemon runs on the real-server side (eth1) for NAT and on the segment (eth0)
for DR, syncid 51.  ``kill_director(k)`` is a dead host: every process in its
namespace gets SIGKILL and its links go down.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pyvs.engine.runner import DirectorProcess

from . import netns as nx
from .segment import NO_RP_FILTER, RS_SYSCTLS
from .topology import Lab

SYNCID = 51
ROUTER_ID = 51
KEEPALIVED_CONF = """\
global_defs {{
    router_id {name}
    script_user root
    enable_script_security
}}

vrrp_instance VI_1 {{
    state {state}
    interface eth0
    virtual_router_id {router_id}
    priority {priority}
    advert_int 1
    virtual_ipaddress {{
{addresses}
    }}
    notify_master "{notify} master"
    notify_backup "{notify} backup"
    notify_fault "{notify} backup"
}}
"""
NOTIFY_SCRIPT = """\
#!/bin/sh
# keepalived notify script: the director's role in connection sync follows VRRP
PYVSADM="{python} -m pyvs.engine.pyvsadm"
echo "$(date +%s.%N) $1" >> {events}
case "$1" in
master)
    $PYVSADM --stop-daemon backup
    $PYVSADM --start-daemon master --mcast-interface {sync_if} --syncid {syncid} ;;
backup)
    $PYVSADM --stop-daemon master
    $PYVSADM --start-daemon backup --mcast-interface {sync_if} --syncid {syncid} ;;
esac
exit 0
"""


class HaLab(Lab):
    """``HaLab(forwarding="nat"|"dr", real_servers=3, clients=3, start_servers=True)``;
    ``start_directors(config)`` starts pyvs and keepalived in both directors."""

    mode = "ha"
    extra_roles = ("lan", "srv", "dir1", "dir2")
    VIP = "198.18.1.1"
    GATEWAY = "198.18.2.1"
    DIRECTORS = ("dir1", "dir2")

    def __init__(self, *args, forwarding: str = "nat", **kw) -> None:
        super().__init__(*args, **kw)
        if forwarding not in ("nat", "dr"):
            raise ValueError("forwarding must be nat or dr")
        self.forwarding = forwarding
        self.directors: dict[str, DirectorProcess] = {}
        self.keepalived: dict[str, subprocess.Popen] = {}

    @property
    def sync_if(self) -> str:
        return "eth1" if self.forwarding == "nat" else "eth0"

    @property
    def client_addrs6(self) -> list[str]:
        return []

    VIP6 = None

    def _director_info(self) -> dict:
        return {"directors": [self.ns(r) for r in self.DIRECTORS], "vip_if": "eth0",
                "sync_if": self.sync_if, "forwarding": self.forwarding}

    def real_server_list(self) -> list[dict]:
        return [{"name": f"rs{i}", "ns": self.ns(f"rs{i}"), "addr": f"198.18.2.{10 + i}",
                 "addr6": None} for i in range(1, self.n_real + 1)]

    def _port(self, seg: str, port: str, ns: str, ifname: str) -> None:
        nx.add_veth(seg, port, ns, ifname)
        nx.set_master(seg, port, "br0")

    def _build(self) -> None:
        nat = self.forwarding == "nat"
        lan = self._new_ns("lan")
        srv = self._new_ns("srv") if nat else lan
        for seg in {lan, srv}:
            nx.sysctl(seg, {"net.ipv6.conf.all.disable_ipv6": 1,
                            "net.ipv6.conf.default.disable_ipv6": 1})
            nx.add_bridge(seg, "br0")
        client = self._new_ns("client")
        self._port(lan, "client", client, "eth0")
        for a in self.client_addrs:
            nx.add_addr(client, "eth0", f"{a}/24")
        nx.add_onlink_route(client, "198.18.1.0/24", "eth0")
        for k, role in enumerate(self.DIRECTORS, start=1):
            ns = self._new_ns(role)
            nx.sysctl(ns, {"net.ipv4.ip_forward": 1, **NO_RP_FILTER,
                           "net.ipv4.conf.all.send_redirects": 0,
                           "net.ipv4.conf.default.send_redirects": 0})
            self._port(lan, role, ns, "eth0")
            nx.add_addr(ns, "eth0", f"198.18.0.{1 + k}/24")
            if nat:
                self._port(srv, role, ns, "eth1")
                nx.add_addr(ns, "eth1", f"198.18.2.{1 + k}/24")
            else:
                nx.add_addr(ns, "eth0", f"198.18.2.{1 + k}/24")
        for rs in self.real_server_list():
            ns = self._new_ns(rs["name"])
            self._port(srv, rs["name"], ns, "eth0")
            nx.add_addr(ns, "eth0", f"{rs['addr']}/24")
            if nat:
                nx.add_route(ns, "default", self.GATEWAY)
            else:
                nx.sysctl(ns, RS_SYSCTLS)
                nx.add_onlink_route(ns, "198.18.0.0/24", "eth0")
                nx.add_addr(ns, "lo", f"{self.VIP}/32")

    # -- directors ------------------------------------------------------------------------
    def keepalived_conf(self, role: str) -> str:
        """The keepalived.conf of one director (dir1 starts as MASTER, priority 150)."""
        addresses = [f"        {self.VIP}/32 dev eth0"]
        if self.forwarding == "nat":
            addresses.append(f"        {self.GATEWAY}/24 dev eth1")
        first = role == self.DIRECTORS[0]
        return KEEPALIVED_CONF.format(
            name=f"pyvs-{role}", state="MASTER" if first else "BACKUP",
            router_id=ROUTER_ID, priority=150 if first else 100,
            addresses="\n".join(addresses), notify=self.state_dir / f"{role}-notify.sh")

    def events(self, role: str) -> list[tuple[float, str]]:
        """(wall time, "master"|"backup") for each notify keepalived ran in ``role``."""
        try:
            lines = (self.state_dir / f"{role}-events").read_text().split("\n")
        except OSError:
            return []
        return [(float(t), s) for t, s in (line.split() for line in lines if line)]

    def start_directors(self, config: list[list[str]], run_args: tuple[str, ...] = (),
                        keepalived: bool = True) -> None:
        """pyvs run + the same pyvsadm configuration in both directors, then keepalived."""
        for role in self.DIRECTORS:
            d = DirectorProcess(self.ns(role), log_path=self.state_dir / f"{role}-pyvs.log",
                                args=run_args)
            self.directors[role] = d.start()
            for argv in config:
                d.adm(*argv)
        for role in self.DIRECTORS if keepalived else ():
            script = self.state_dir / f"{role}-notify.sh"
            script.write_text(NOTIFY_SCRIPT.format(
                python=sys.executable, events=self.state_dir / f"{role}-events",
                sync_if=self.sync_if, syncid=SYNCID))
            script.chmod(0o700)
            conf = self.state_dir / f"{role}-keepalived.conf"
            conf.write_text(self.keepalived_conf(role))
            log = open(self.state_dir / f"{role}-keepalived.log", "ab")  # noqa: SIM115
            try:
                self.keepalived[role] = nx.popen(self.ns(role), [
                    "keepalived", "--vrrp", "--dont-fork", "--log-console", "--log-detail",
                    "--no-syslog", "-f", str(conf),
                    "-p", str(self.state_dir / f"{role}-keepalived.pid"),
                    "-r", str(self.state_dir / f"{role}-vrrp.pid")],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True)
            finally:
                log.close()

    def holds_vip(self, role: str) -> bool:
        return any(a.split("/")[0] == self.VIP for a in nx.addrs(self.ns(role), "eth0"))

    def kill_director(self, role: str) -> None:
        """A dead host: everything in the namespace stops at once (SIGSTOP first, so no
        process gets to act on another's death: keepalived's VRRP child would otherwise
        see its parent die and send a goodbye advertisement), its links go down, then
        every process gets SIGKILL."""
        pids = nx.ns_pids(self.ns(role))
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            if sig == signal.SIGSTOP:
                for ifname in ("eth0", "eth1"):
                    nx.run(self.ns(role), ["ip", "link", "set", ifname, "down"], check=False)
        deadline = time.monotonic() + 5
        for proc in [self.keepalived.get(role), self.directors[role].proc]:
            if proc is not None:
                proc.wait(max(0.1, deadline - time.monotonic()))

    def stop_directors(self) -> None:
        for proc in self.keepalived.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
        self.keepalived.clear()
        for d in self.directors.values():
            d.stop()
        self.directors.clear()

    def down(self) -> None:
        try:
            self.stop_directors()
        finally:
            super().down()

    def log(self, name: str) -> str:
        try:
            return Path(self.state_dir / name).read_text(errors="replace")[-4000:]
        except OSError:
            return ""
