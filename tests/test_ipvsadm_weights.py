"""Weights and thresholds over the whole kernel range, and the listings that show them.

The kernel takes any weight 0..INT_MAX (ip_vs_ctl.c refuses only a negative one), and so
does Debian's ipvsadm 1.31 (its patch for bug 814348): `-w 65536` is taken and listed
as 65536.  -x / -y take 0..INT_MAX too.  The expected rows are ipvsadm's printf
formats (print_service_entry) applied with Python's printf-style operator, which widens
a column for a wider value exactly as C does.
"""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP

from pyvs.engine import ipvsadm
from pyvs.engine.clock import VirtualClock
from pyvs.engine.director import Director
from pyvs.engine.verdict import FORWARD

INT_MAX = 2**31 - 1
ROW = "  -> %-28s %-7s %-6d %-10u %-10u\n"  # the default listing
THRESHOLDS = "  -> %-28s %-10u %-10u %-10u %-10u\n"
PERSISTENT = "  -> %-28s %-9u %-11u %-10u %-10u\n"
TUN_INFO = "  -> %-28s %-7s %-13s %-6d %-10u %-10u\n"
STATS = "%-33s%9d%9d%9d%9d%9d"  # printf("%-33s") then print_largenum() five times
HEADER = "IP Virtual Server version 1.2.1 (size=4096)\n"


@pytest.fixture
def d():
    return Director(clock=VirtualClock())


def adm(director, line: str, stdin: str = "") -> tuple[int, str, str]:
    return ipvsadm.run(line.split(), stdin, director)


def ok(director, *lines: str) -> None:
    for line in lines:
        assert adm(director, line) == (0, "", ""), line


def big_weights(d) -> None:
    ok(d, "-A -t 198.18.1.1:80 -s rr -p 60",
       "-a -t 198.18.1.1:80 -r 198.18.2.11 -m -w 65536",
       f"-a -t 198.18.1.1:80 -r 198.18.2.12 -m -w {INT_MAX} -x {INT_MAX} -y {INT_MAX}",
       "-a -t 198.18.1.1:80 -r 198.18.2.13 -i --tun-type gre -w 1000000",
       "-A -t [2001:db8:1::1]:80 -s rr",
       "-a -t [2001:db8:1::1]:80 -r [2001:db8:2::11]:80 -m -w 65536",
       f"-a -t [2001:db8:1::1]:80 -r [2001:db8:2::12]:80 -m -w {INT_MAX}",
       "-A -f 7 -6 -s rr",
       "-a -f 7 -6 -r 2001:db8:2::13 -g -w 4294967")


def test_weights_up_to_int_max_are_taken_ipv4_and_ipv6(d):
    big_weights(d)
    weights = {d_.weight for svc in d.services.services.values() for d_ in svc.destinations}
    assert weights == {65536, INT_MAX, 1000000, 4294967}


def test_default_listing_widens_the_weight_column(d):
    big_weights(d)
    assert adm(d, "-Ln") == (0, HEADER + (
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
        "TCP  198.18.1.1:80 rr persistent 60\n"
        + ROW % ("198.18.2.11:80", "Masq", 65536, 0, 0)
        + ROW % ("198.18.2.12:80", "Masq", INT_MAX, 0, 0)
        + ROW % ("198.18.2.13:80", "Tunnel", 1000000, 0, 0)
        + "TCP  [2001:db8:1::1]:80 rr\n"
        + ROW % ("[2001:db8:2::11]:80", "Masq", 65536, 0, 0)
        + ROW % ("[2001:db8:2::12]:80", "Masq", INT_MAX, 0, 0)
        + "FWM  7 IPv6 rr\n"
        + ROW % ("[2001:db8:2::13]:0", "Route", 4294967, 0, 0)), "")
    # the printf widening, spelled out once: "%-6d" of 2147483647 is 10 characters
    assert "  -> 198.18.2.12:80               Masq    2147483647 0          0         \n" \
        in adm(d, "-Ln")[1]


def test_thresholds_persistent_conn_and_tun_info_rows(d):
    big_weights(d)
    out = adm(d, "-Ln --thresholds -t 198.18.1.1:80")[1]
    assert out.splitlines(keepends=True)[3:] == [
        THRESHOLDS % ("198.18.2.11:80", 0, 0, 0, 0),
        THRESHOLDS % ("198.18.2.12:80", INT_MAX, INT_MAX, 0, 0),
        THRESHOLDS % ("198.18.2.13:80", 0, 0, 0, 0)]
    out = adm(d, "-Ln --persistent-conn -t [2001:db8:1::1]:80")[1]
    assert out.splitlines(keepends=True)[3:] == [
        PERSISTENT % ("[2001:db8:2::11]:80", 65536, 0, 0, 0),
        PERSISTENT % ("[2001:db8:2::12]:80", INT_MAX, 0, 0, 0)]
    out = adm(d, "-Ln --tun-info -t 198.18.1.1:80")[1]
    assert out.splitlines(keepends=True)[3:] == [
        TUN_INFO % ("198.18.2.11:80", "Masq", "n/a", 65536, 0, 0),
        TUN_INFO % ("198.18.2.12:80", "Masq", "n/a", INT_MAX, 0, 0),
        TUN_INFO % ("198.18.2.13:80", "Tunnel", "gre:-c", 1000000, 0, 0)]
    stats = adm(d, "-Ln --stats")[1].splitlines()
    assert stats[3] == STATS % ("TCP  198.18.1.1:80", 0, 0, 0, 0, 0)


def test_save_prints_large_weights_and_restores_them(d):
    big_weights(d)
    saved = adm(d, "-Sn")[1]
    assert f"-a -t 198.18.1.1:80 -r 198.18.2.12:80 -m -w {INT_MAX}\n" in saved
    assert "-a -t 198.18.1.1:80 -r 198.18.2.13:80 -i -w 1000000 --tun-type gre --tun-nocsum\n" \
        in saved
    assert "-a -f 7 -6 -r [2001:db8:2::13]:0 -g -w 4294967\n" in saved
    other = Director(clock=VirtualClock())
    assert adm(other, "-R", saved) == (0, "", "")
    assert adm(other, "-Sn")[1] == saved


@pytest.mark.parametrize("option,value,message", [
    ("-w", str(INT_MAX + 1), "illegal weight specified"),
    ("-w", "-1", "illegal weight specified"),
    ("-w", "99999999999", "illegal weight specified"),
    ("-x", str(INT_MAX + 1), "illegal u_threshold specified"),
    ("-y", str(INT_MAX + 1), "illegal l_threshold specified"),
    ("-y", "-1", "illegal l_threshold specified"),
])
def test_beyond_int_max_is_refused_and_changes_nothing(d, option, value, message):
    ok(d, "-A -t 198.18.1.1:80 -s rr", "-a -t 198.18.1.1:80 -r 198.18.2.11 -m")
    before = adm(d, "-Sn")[1]
    for verb in ("-a", "-e"):
        line = f"{verb} -t 198.18.1.1:80 -r 198.18.2.11 -m {option} {value}"
        assert adm(d, line) == (2, "", message + "\n")
    assert adm(d, "-Sn")[1] == before


def test_edit_to_a_large_weight(d):
    ok(d, "-A -t 198.18.1.1:80 -s rr", "-a -t 198.18.1.1:80 -r 198.18.2.11 -m",
       "-e -t 198.18.1.1:80 -r 198.18.2.11 -m -w 65536")
    assert ROW % ("198.18.2.11:80", "Masq", 65536, 0, 0) in adm(d, "-Ln")[1]


def test_schedulers_compare_weights_beyond_16_bits(d):
    """fo takes the highest weight: 65536 must beat 65535 (a 16-bit weight would be 0)."""
    ok(d, "-A -t 198.18.1.1:80 -s fo",
       "-a -t 198.18.1.1:80 -r 198.18.2.11 -m -w 65536",
       "-a -t 198.18.1.1:80 -r 198.18.2.12 -m -w 65535")
    syn = bytearray(bytes(IP(src="198.18.0.10", dst="198.18.1.1")
                          / TCP(sport=40000, dport=80, flags="S")))
    assert d.process([syn]) == [FORWARD]
    assert IP(bytes(syn)).dst == "198.18.2.11"
