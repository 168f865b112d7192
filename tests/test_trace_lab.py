"""`pyvs trace` on a real director: a real curl through NAT (every I/O mode) and direct
routing, traced as a user would (`pyvs trace ... -- curl ...` in the director's
namespace), checking the printed decisions, the pcapng files of both sides (read back
with scapy) and the ladder diagram."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from labhelp import add_service
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap

from pyvs.engine.lab import DrLab, NatLab
from pyvs.engine.runner import DirectorProcess

pytestmark = pytest.mark.lab
CLIENT = "198.18.0.11"


def trace(lab, *options: str, client: str = CLIENT, timeout: float = 60):
    """`pyvs trace OPTIONS -- curl` (from ``client``); returns the finished process."""
    curl = ["ip", "netns", "exec", lab.ns("client"), "curl", "-sS", "--max-time", "10",
            "--interface", client, "-o", "/dev/null", "-w", "answered %{http_code}\\n",
            "-H", "X-Trace: yes", f"http://{lab.VIP}/"]
    return subprocess.run(["ip", "netns", "exec", lab.ns("director"), sys.executable, "-m",
                           "pyvs.engine.cli", "trace", *options, "--", *curl],
                          capture_output=True, text=True, timeout=timeout)


def packets(stdout: str) -> list[str]:
    """The printed packets, one text block each."""
    return [b for b in re.split(r"\n(?=#\d+ )", stdout.strip()) if b.startswith("#")]


def states(blocks: list[str]) -> list[str]:
    return [m.group(1) for b in blocks
            if (m := re.search(r"state +(\S+ -> \S+),", b))]


@pytest.fixture(scope="module")
def nat(lab_env):
    with NatLab(real_servers=2, clients=2, start_servers=True) as lab:
        yield lab


@pytest.mark.parametrize("io", ["nfqueue", "ring", "xdp"])
def test_curl_through_nat_traced_with_pcaps_and_ladder(nat, io, tmp_path):
    with DirectorProcess(nat.ns("director"), log_path=tmp_path / "pyvs.log",
                         args=("--io", io)) as director:
        add_service(director, nat, "-s", "rr")
        # someone else's connection first: rr moves on, the trace must not show it
        assert nat.curl(nat.url(), client_addr="198.18.0.10").strip() == "rs2"
        files = {k: tmp_path / f"{k}.{ext}" for k, ext in
                 (("in", "pcapng"), ("out", "pcapng"), ("ladder", "svg"))}
        r = trace(nat, "--client", CLIENT, "--pcap-in", str(files["in"]),
                  "--pcap-out", str(files["out"]), "--ladder", str(files["ladder"]))
        assert r.returncode == 0, r.stderr + director.log()
        assert "answered 200" in r.stdout
        assert f"pyvs trace: tracing client {CLIENT}" in r.stderr
        blocks = packets(r.stdout)
        assert all(CLIENT in b.splitlines()[0] for b in blocks)
        first = blocks[0]
        assert re.search(rf"TCP {CLIENT}:\d+ > 198\.18\.1\.1:80 \[S\]", first)
        assert "connection miss" in first
        assert "rr chose 198.18.2.11:80" in first  # after rs2, the list's head
        assert "the walk starts after 198.18.2.12:80" in first
        assert re.search(r"198\.18\.2\.12:80 +weight 1 +active 0 +inactive 1", first)
        assert re.search(rf"before  IP / TCP {CLIENT}:\d+ > 198\.18\.1\.1:http S", first)
        assert re.search(rf"after   IP / TCP {CLIENT}:\d+ > 198\.18\.2\.11:http S", first)
        assert "reply of connection" in blocks[1] and "source rewritten back" in blocks[1]
        seen = states(blocks)
        assert seen[:2] == ["NONE -> SYN_RECV", "SYN_RECV -> ESTABLISHED"]
        assert any(s.endswith("-> TIME_WAIT") for s in seen), seen
        how = "the director's stack routes it on" if io == "nfqueue" else "the port transmits it"
        assert all(f"FORWARD: {how}" in b for b in blocks)
        # both sides, read back
        pin, pout = rdpcap(str(files["in"])), rdpcap(str(files["out"]))
        assert len(pin) == len(pout) == len(blocks)
        for a, b in zip(pin, pout, strict=True):
            if a[IP].src == CLIENT:  # request: destination VIP -> real server
                assert (a[IP].dst, b[IP].dst, b[IP].src) == ("198.18.1.1", "198.18.2.11", CLIENT)
            else:  # reply: source real server -> VIP
                assert (a[IP].src, b[IP].src, b[IP].dst) == ("198.18.2.11", "198.18.1.1", CLIENT)
            assert a[TCP].flags == b[TCP].flags and a[TCP].seq == b[TCP].seq
        assert any(b"X-Trace: yes" in bytes(p[TCP].payload) for p in pout
                   if p[IP].dst == "198.18.2.11")  # the request, as the real server got it
        svg = files["ladder"].read_text()
        assert "<svg" in svg and "SYN_RECV -&gt; ESTABLISHED" in svg
        assert "real server" in svg and "198.18.2.11" in svg
        assert "trace detached" in director.log()


def test_filters_on_a_live_director(nat, tmp_path):
    with DirectorProcess(nat.ns("director"), log_path=tmp_path / "pyvs.log") as director:
        add_service(director, nat, "-s", "rr")
        # rs2 gets the first connection (from .11): trace only rs1's packets
        nat.curl(nat.url(), client_addr=CLIENT)
        r = trace(nat, "--real-server", "198.18.2.11:80", "--count", "3",
                  client="198.18.0.10")
        assert r.returncode == 0, r.stderr
        blocks = packets(r.stdout)
        assert len(blocks) == 3 and all("198.18.2.11" in b for b in blocks)
        r = trace(nat, "--vip", "198.18.1.99", "--duration", "2")
        assert r.returncode == 0 and packets(r.stdout) == []
        bad = subprocess.run(["ip", "netns", "exec", nat.ns("director"), sys.executable, "-m",
                              "pyvs.engine.cli", "trace", "--client", "nosuch"],
                             capture_output=True, text=True, timeout=30)
        assert (bad.returncode, bad.stderr) == (2, "pyvs trace: not an IP address: 'nosuch'\n")


def test_no_director_is_one_clear_line(nat):
    r = subprocess.run(["ip", "netns", "exec", nat.ns("client"), sys.executable, "-m",
                        "pyvs.engine.cli", "trace"], capture_output=True, text=True, timeout=30)
    assert (r.returncode, r.stderr) == \
        (1, "pyvs trace: no pyvs director runs in this network namespace\n")


@pytest.mark.parametrize("io", ["nfqueue", "xdp"])
def test_curl_through_direct_routing_traced(lab_env, io, tmp_path):
    with DrLab(real_servers=2, clients=2, start_servers=True) as lab, \
            DirectorProcess(lab.ns("director"), log_path=tmp_path / "pyvs.log",
                            args=("--io", io)) as director:
        add_service(director, lab, "-s", "rr", method="-g")
        out = tmp_path / "out.pcapng"
        r = trace(lab, "--vip", "198.18.1.1:80", "--pcap-out", str(out))
        assert r.returncode == 0, r.stderr + director.log()
        assert "answered 200" in r.stdout
        blocks = packets(r.stdout)
        # the director sees the client's side only: the real server answers directly
        assert all(re.search(rf"TCP {CLIENT}:\d+ > 198\.18\.1\.1:80", b) for b in blocks)
        assert "rr chose 198.18.2.12:80" in blocks[0]
        assert "Route (direct routing)" in blocks[0]
        assert states(blocks)[0] == "NONE -> SYN_RECV"
        assert "SYN_RECV -> ESTABLISHED" in states(blocks)
        assert any(s.endswith("-> FIN_WAIT") for s in states(blocks))
        mac = lab.mac("rs2", "eth0")
        frames = rdpcap(str(out))
        assert frames and all(f[Ether].dst == mac and f[IP].dst == "198.18.1.1"
                              for f in frames)
        # the first SYN may wait for the kernel to resolve rs2's MAC address (and is sent
        # then); every frame the trace saw leave has rs2's MAC and the VIP unchanged
        assert re.search(r"queued: held until|after   Ether", blocks[0])
        sent = [b for b in blocks if "after   Ether" in b]
        assert sent and all(f"Ether {lab.mac('director', 'eth0')} > {mac} / IP / TCP "
                            f"{CLIENT}" in b for b in sent)
