"""Firewall marks set anywhere in prerouting select the fwmark service, in every I/O mode.

Kernel IPVS sees a request at LOCAL_IN, after every prerouting hook, so whatever mark
any prerouting rule set is the one ip_vs_service_find looks up.  pyvs queues requests
in a chain of its own at the last prerouting priority (engine/plumbing.py), so the
result cannot depend on the priority of the user's rule nor on which was installed
first -- before, a chain of the user's at priority ``mangle`` registered after pyvs's
own ran first and its mark came too late ("connection refused").

One lab per forwarding method (NAT, DR, TUN: 3 real servers, 8 client addresses) serves
the module; each test runs one ``pyvs run --io MODE`` in it.  Eight marking rules, one
per client address, cover every way of setting the mark -- an nftables chain of the
user's at priority ``mangle``, ``dstnat`` and ``0``, and iptables ``-j MARK`` in
mangle PREROUTING -- each installed once before ``pyvs run`` starts and once after.
Each rule has its own mark and fwmark service; the services take turns at rr, rr with
``-p``, lblc and lblcr.  There is no addr:port service at all: a request whose mark
pyvs did not see would reach the director's own stack and be refused.
"""

from __future__ import annotations

import pytest

from pyvs.engine.lab import DrLab, LabError, NatLab, TunLab
from pyvs.engine.runner import DirectorProcess

pytestmark = pytest.mark.lab

LABS = {"nat": (NatLab, "-m"), "dr": (DrLab, "-g"), "tun": (TunLab, "-i")}
SETTERS = ["nft mangle", "nft dstnat", "nft 0", "iptables"]
WHEN = ["before", "after"]
VARIANTS = [("-s", "rr"), ("-s", "rr", "-p", "60"), ("-s", "lblc"), ("-s", "lblcr")]
REQUESTS = 3
MARK_BASE = 10


class Marking:
    """Combination ``i``: client address i, mark 10+i, one setter, before or after."""

    def __init__(self, lab, i: int) -> None:
        self.lab = lab
        self.i = i
        self.setter = SETTERS[i % len(SETTERS)]
        self.when = WHEN[i // len(SETTERS)]
        self.variant = VARIANTS[i % len(VARIANTS)]
        self.client = lab.client_addrs[i]
        self.mark = MARK_BASE + i

    def __repr__(self) -> str:
        return (f"<{self.setter} {self.when} pyvs starts, mark {self.mark}, "
                f"{' '.join(self.variant)}>")

    def _iptables(self, op: str) -> list[str]:
        return ["iptables", "-t", "mangle", op, "PREROUTING", "-s", self.client, "-d",
                self.lab.VIP, "-p", "tcp", "-m", "multiport", "--dports", "80,8080", "-j",
                "MARK", "--set-mark", str(self.mark)]

    def install(self) -> None:
        if self.setter == "iptables":
            self.lab.run("director", self._iptables("-A"), check=True, capture_output=True)
            return
        priority = self.setter.split()[1]
        rules = (f"table ip user{self.i} {{\n  chain pre {{\n"
                 f"    type filter hook prerouting priority {priority}; policy accept;\n"
                 f"    ip saddr {self.client} ip daddr {self.lab.VIP} tcp dport {{ 80, 8080 }} "
                 f"meta mark set {self.mark}\n  }}\n}}\n")
        self.lab.run("director", ["nft", "-f", "-"], input=rules, text=True, check=True,
                     capture_output=True)

    def remove(self) -> None:
        argv = (self._iptables("-D") if self.setter == "iptables"
                else ["nft", "delete", "table", "ip", f"user{self.i}"])
        self.lab.run("director", argv, capture_output=True)


@pytest.fixture(scope="module", params=list(LABS))
def lab(request, lab_env):
    cls, method = LABS[request.param]
    lab = cls(real_servers=3, clients=2 * len(SETTERS), start_servers=True)
    try:
        lab.up()
        yield lab, method
    finally:
        lab.down()


def diagnostics(lab, director) -> str:
    ruleset = lab.run("director", ["nft", "list", "ruleset"], capture_output=True).stdout
    conns = director.adm("-L", "-n", "-c", check=False).stdout
    return f"{ruleset}\n{conns}\n{director.log()[-3000:]}"


def fwm_conns(director) -> dict[int, int]:
    """Connections per fwmark service (``pyvsadm -L -n --stats --exact``)."""
    out = {}
    for line in director.adm("-L", "-n", "--stats", "--exact").stdout.splitlines():
        fields = line.split()
        if fields and fields[0] == "FWM":
            out[int(fields[1])] = int(fields[2])
    return out


@pytest.mark.parametrize("io", ["nfqueue", "ring", "xdp"])
def test_marks_set_anywhere_in_prerouting_select_the_fwmark_service(lab, io):
    lab, method = lab
    markings = [Marking(lab, i) for i in range(2 * len(SETTERS))]
    director = DirectorProcess(lab.ns("director"), args=("--io", io),
                               log_path=lab.state_dir / f"pyvs-fwmark-{io}.log")
    try:
        for m in markings:
            if m.when == "before":
                m.install()
        director.start()
        for m in markings:
            director.adm("-A", "-f", str(m.mark), *m.variant)
            for rs in lab.real_server_list():
                director.adm("-a", "-f", str(m.mark), "-r", f"{rs['addr']}:80", method)
        for m in markings:
            if m.when == "after":
                m.install()
        answers = {}
        for m in markings:
            urls = [lab.url()] * REQUESTS
            if method == "-m" and "-p" not in m.variant:
                # NAT sends 8080 (marked too) to the real server's port 80; a persistent
                # service keeps the client's port (ip_vs_sched_persist), as in the kernel
                urls.append(lab.url(port=8080))
            try:
                answers[m.mark] = [lab.curl(u, client_addr=m.client).strip() for u in urls]
            except LabError as err:
                pytest.fail(f"{m}: {err}\n{diagnostics(lab, director)}")
        conns = fwm_conns(director)
        for m in markings:
            got = answers[m.mark]
            assert conns.get(m.mark) == len(got), (m, conns)
            assert set(got) <= {"rs1", "rs2", "rs3"}, (m, got)
            if m.variant == ("-s", "rr"):  # one service per mark: its own rotation
                assert len(set(got[:REQUESTS])) == REQUESTS, (m, got)
            else:  # persistence, or lblc/lblcr keeping the VIP's server
                assert len(set(got)) == 1, (m, got)
    finally:
        director.stop()
        for m in markings:
            m.remove()
