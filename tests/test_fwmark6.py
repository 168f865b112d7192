"""IPv6 fwmark services (`-f N -6`) behave as the IPv4 ones.

* A service is keyed by (family, mark): the same mark serves an IPv4 and an IPv6
  service side by side, each only for packets of its own family.
* A persistence template of a fwmark service has protocol IP (0) and the mark as its
  virtual address: ip_vs_sched_persist builds ``{ .ip = htonl(svc->fwmark) }``, the rest
  of the address zero.  The kernel prints an IPv6 entry's addresses with %pI6 in
  /proc/net/ip_vs_conn (ip_vs_conn_seq_show) and ipvsadm's print_conn reads them back
  with inet_pton and prints them with inet_ntop, so mark 1 shows as ``[0:1::]:0`` and an
  IPv4 template as ``0.0.0.1:0``.  Rows follow print_conn's
  "%-3s %-6s %-11s %-18s %-18s %s".
* Lab: an IPv6 (and IPv4) fwmark NAT service in a NatLab, the mark set by the user's own
  ip6tables / iptables mangle rule in the director's namespace, real TCP through it.
"""

from __future__ import annotations

import re

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6

from pyvs.engine import ipvsadm
from pyvs.engine.clock import VirtualClock
from pyvs.engine.director import Director
from pyvs.engine.verdict import ACCEPT, DROP, FORWARD

CONN = "%-3s %-6s %-11s %-18s %-18s %s"
CLIENT6, VIP6 = "2001:db8::10", "2001:db8:1::1"
CLIENT4, VIP4 = "198.18.0.10", "198.18.1.1"


def adm(d, line: str) -> str:
    code, out, err = ipvsadm.run(line.split(), "", d)
    assert (code, err) == (0, ""), (line, err)
    return out


def side_by_side(*extra: str) -> Director:
    """Mark 1 on an IPv4 and an IPv6 NAT service, one real server each."""
    d = Director(clock=VirtualClock())
    opts = " ".join(extra)
    for line in (f"-A -f 1 -s rr {opts}", "-a -f 1 -r 198.18.2.11 -m",
                 f"-A -f 1 -6 -s rr {opts}", "-a -f 1 -6 -r 2001:db8:2::11 -m"):
        adm(d, line)
    return d


def syn6(src=CLIENT6, dst=VIP6, sport=40000, dport=80) -> bytearray:
    return bytearray(bytes(IPv6(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="S")))


def syn4(src=CLIENT4, dst=VIP4, sport=40000, dport=80) -> bytearray:
    return bytearray(bytes(IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="S")))


def conn_rows(d) -> list[str]:
    lines = adm(d, "-Lnc").splitlines()
    assert lines[:2] == ["IPVS connection entries",
                         "pro expire state       source             virtual            "
                         "destination"]
    return sorted(lines[2:])


def test_one_mark_two_families_side_by_side():
    d = side_by_side()
    b4, b6 = syn4(), syn6()
    assert d.process([b4, b6], [1, 1]) == [FORWARD, FORWARD]
    assert IP(bytes(b4)).dst == "198.18.2.11" and IPv6(bytes(b6)).dst == "2001:db8:2::11"
    assert adm(d, "-Ln").splitlines()[3:] == [
        "FWM  1 rr",
        "  -> 198.18.2.11:0                Masq    1      1          0         ",
        "FWM  1 IPv6 rr",
        "  -> [2001:db8:2::11]:0           Masq    1      1          0         "]
    assert adm(d, "-Sn") == ("-A -f 1 -s rr\n-a -f 1 -r 198.18.2.11:0 -m -w 1\n"
                             "-A -f 1 -6 -s rr\n-a -f 1 -6 -r [2001:db8:2::11]:0 -m -w 1\n")
    # the NAT reply of each family goes back from its VIP
    reply = bytearray(bytes(IPv6(src="2001:db8:2::11", dst=CLIENT6)
                            / TCP(sport=80, dport=40000, flags="SA")))
    assert d.process([reply]) == [FORWARD] and IPv6(bytes(reply)).src == VIP6


def test_a_mark_serves_only_its_own_family():
    d = Director(clock=VirtualClock())
    adm(d, "-A -f 1 -s rr")
    adm(d, "-a -f 1 -r 198.18.2.11 -m")
    b6 = syn6()
    before = bytes(b6)
    assert d.process([b6], [1]) == [ACCEPT] and bytes(b6) == before
    assert conn_rows(d) == []
    adm(d, "-A -f 1 -6 -s rr")  # an IPv6 service without real server: port unreachable
    assert d.process([syn6()], [1]) == [DROP] and d.drops["no-destination"] == 1


def test_templates_carry_the_mark_as_the_kernel_shows_them():
    d = side_by_side("-p", "60")
    assert d.process([syn4(), syn6()], [1, 1]) == [FORWARD, FORWARD]
    assert conn_rows(d) == sorted([
        CONN % ("IP", "01:00", "NONE", "198.18.0.10:0", "0.0.0.1:0", "198.18.2.11:0"),
        CONN % ("IP", "01:00", "NONE", "[2001:db8::10]:0", "[0:1::]:0", "[2001:db8:2::11]:0"),
        CONN % ("TCP", "01:00", "SYN_RECV", "198.18.0.10:40000", "198.18.1.1:80",
                "198.18.2.11:80"),
        CONN % ("TCP", "01:00", "SYN_RECV", "[2001:db8::10]:40000", "[2001:db8:1::1]:80",
                "[2001:db8:2::11]:80")])
    # the IPv6 rows, spelled out once (print_conn's widths widen for long addresses)
    assert ("IP  01:00  NONE        [2001:db8::10]:0   [0:1::]:0          [2001:db8:2::11]:0"
            in conn_rows(d))


def test_large_marks_fill_the_first_32_bits_of_the_address():
    d = Director(clock=VirtualClock())
    mark = 0x12345678
    adm(d, f"-A -f {mark} -6 -s rr -p 60")
    adm(d, f"-a -f {mark} -6 -r 2001:db8:2::11 -m")
    adm(d, f"-A -f {mark} -s rr -p 60")
    adm(d, f"-a -f {mark} -r 198.18.2.11 -m")
    assert d.process([syn6(), syn4()], [mark, mark]) == [FORWARD, FORWARD]
    virtuals = {row.split()[4] for row in conn_rows(d) if row.startswith("IP ")}
    assert virtuals == {"[1234:5678::]:0", "18.52.86.120:0"}


def test_ipv6_template_is_shared_across_protocols_within_the_prefix():
    """-M 64: one template per client /64 and mark, whatever the protocol and port, so
    HTTP from one address and DNS from its neighbour stick to the same real server."""
    d = Director(clock=VirtualClock())
    adm(d, "-A -f 3 -6 -s rr -p 300 -M 64")
    for rs in ("2001:db8:2::11", "2001:db8:2::12"):
        adm(d, f"-a -f 3 -6 -r {rs} -m")
    tcp = syn6(src="2001:db8::10")
    udp = bytearray(bytes(IPv6(src="2001:db8::11", dst=VIP6) / UDP(sport=5353, dport=53)
                          / b"q"))
    other = syn6(src="2001:db8:0:1::10")  # another /64: rr moves on
    assert d.process([tcp, udp, other], [3, 3, 3]) == [FORWARD] * 3
    assert IPv6(bytes(tcp)).dst == IPv6(bytes(udp)).dst == "2001:db8:2::12"
    assert IPv6(bytes(other)).dst == "2001:db8:2::11"
    templates = [row for row in conn_rows(d) if row.startswith("IP ")]
    assert templates == sorted([
        CONN % ("IP", "05:00", "NONE", "[2001:db8::]:0", "[0:3::]:0", "[2001:db8:2::12]:0"),
        CONN % ("IP", "05:00", "NONE", "[2001:db8:0:1::]:0", "[0:3::]:0",
                "[2001:db8:2::11]:0")])


# ------------------------------------------------------------------------------------ lab
@pytest.mark.lab
def test_ipv6_fwmark_nat_service_with_the_users_ip6tables_mark(nat_lab_factory):
    from pyvs.engine.lab import servers
    from pyvs.engine.runner import DirectorProcess

    lab = nat_lab_factory(real_servers=2, clients=1)
    for tool, vip in (("ip6tables", f"{lab.VIP6}/128"), ("iptables", f"{lab.VIP}/32")):
        lab.run("director", [tool, "-t", "mangle", "-I", "PREROUTING", "1", "-d", vip, "-p",
                             "tcp", "--dport", "80", "-j", "MARK", "--set-mark", "7"],
                check=True)
    rss = lab.real_server_list()
    with DirectorProcess(lab.ns("director"), log_path=lab.state_dir / "pyvs.log") as proc:
        proc.adm("-A", "-f", "7", "-6", "-s", "rr", "-p", "300")
        proc.adm("-A", "-f", "7", "-s", "rr")
        for rs in rss:
            proc.adm("-a", "-f", "7", "-6", "-r", f"[{rs['addr6']}]:80", "-m")
            proc.adm("-a", "-f", "7", "-r", f"{rs['addr']}:80", "-m")
        # IPv4 beside it, same mark: round robin, newest real server first
        assert [lab.curl(lab.url()).strip() for _ in range(4)] == ["rs2", "rs1"] * 2
        # IPv6: persistent, every request to the first choice
        assert [lab.curl(lab.url(lab.VIP6)).strip() for _ in range(4)] == ["rs2"] * 4
        size = 5_000_000
        digest, n = lab.fetch_sha256(lab.url(lab.VIP6, path=f"/bytes/{size}"), timeout=120)
        assert n == size and digest == servers.pattern_sha256(size)
        sent, received = lab.post_pattern(lab.url(lab.VIP6, path="/sha256"), 1_000_000)
        assert received == sent
        listing = proc.adm("-L", "-n").stdout
        assert "FWM  7 rr\n" in listing and "FWM  7 IPv6 rr persistent 300\n" in listing
        conns = proc.adm("-L", "-n", "-c").stdout
        template = re.compile(r"^IP  0[45]:\d\d  (NONE|ASSURED) +\[2001:db8::10\]:0   "
                              r"\[0:7::\]:0          \[2001:db8:2::12\]:0$", re.M)
        assert len(template.findall(conns)) == 1, conns
        assert "Traceback" not in proc.log()
