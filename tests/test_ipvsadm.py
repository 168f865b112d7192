"""engine/ipvsadm.py: the ipvsadm command language.

Golden outputs are typed by hand from ipvsadm's printf formats (print_title,
print_service_entry, print_largenum, print_conn) and from the examples in
/work/shared/ipvs-semantics.md section 7; they are not produced by the module.
"""

from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest

from pyvs.engine.clock import VirtualClock
from pyvs.engine.ipvsadm import run
from pyvs.engine.service import ServiceTable
from pyvs.schedulers.base import Scheduler, SchedulerEnv
from pyvs.schedulers.registry import lookup, register

for _name in ("wlc", "wrr"):
    if lookup(_name) is None:  # keep these tests independent of other schedulers
        register(type(f"Test_{_name}", (Scheduler,), {
            "name": _name, "schedule": lambda self, svc, flow: None}))

TITLE = ("IP Virtual Server version 1.2.1 (size=4096)\n"
         "Prot LocalAddress:Port Scheduler Flags\n"
         "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n")
TRY = "Try `pyvsadm -h' or 'pyvsadm --help' for more information.\n"


class FakeConnTable:
    def __init__(self) -> None:
        self.conns: list = []

    def entries(self):
        return iter(self.conns)


class FakeDirector:
    conn_tab_size = 4096

    def __init__(self) -> None:
        self.clock = VirtualClock(1000.0)
        self.services = ServiceTable(SchedulerEnv(clock=self.clock))
        self.conntable = FakeConnTable()
        self.timeouts = (900, 120, 300)
        self.rate_table: dict[int, tuple] = {}

    def now(self) -> float:
        return self.clock.now()

    def get_timeouts(self):
        return self.timeouts

    def set_timeouts(self, tcp, tcpfin, udp):
        self.timeouts = tuple(new or old for new, old in zip((tcp, tcpfin, udp),
                                                             self.timeouts, strict=True))

    def rates(self, stats):
        return self.rate_table.get(id(stats), (0, 0, 0, 0, 0))


@pytest.fixture
def d():
    return FakeDirector()


def sh(director, cmdline: str, stdin: str = ""):
    return run(cmdline.split(), stdin, director)


def ok(director, *cmdlines: str) -> None:
    for line in cmdlines:
        code, out, err = sh(director, line)
        assert (code, err) == (0, ""), (line, err)


def snapshot(director) -> str:
    return sh(director, "-S -n")[1] + repr(director.timeouts)


def svc(director, key):
    return director.services.services[key]


def v4(text):
    return socket.inet_aton(text)


# ---------------------------------------------------------------------------------------------
def test_spec_example_listing(d):
    ok(d, "-A -t 207.175.44.110:8080 -s wrr -p -M 255.255.255.0",
       "-a -t 207.175.44.110:8080 -r 172.16.0.2:8080 -m -w 3")
    dest = svc(d, (socket.AF_INET, 6, v4("207.175.44.110"), 8080)).destinations[0]
    dest.activeconns, dest.inactconns = 12, 57
    code, out, err = sh(d, "-L -n")
    assert (code, err) == (0, "")
    assert out == TITLE + (
        "TCP  207.175.44.110:8080 wrr persistent 360 mask 255.255.255.0\n"
        "  -> 172.16.0.2:8080              Masq    3      12         57        \n")
    assert sh(d, "-l")[1] == out  # names are never resolved: same as -n
    assert sh(d, "--list --numeric")[1] == out
    assert run([], "", d)[1] == out  # no argument lists the table


def setup_many(d):
    ok(d,
       "-A -t 10.0.0.1:80 -s wrr -p 600 -M 255.255.255.0",
       "-a -t 10.0.0.1:80 -r 192.168.1.3:80 -m -w 2",
       "-a -t 10.0.0.1:80 -r 192.168.1.1:8080 -m -w 5",
       "-a -t 10.0.0.1:80 -r 192.168.1.2:9999 -g",      # -g: port forced to 80
       "-A -u 10.0.0.1:53 -s rr",
       "-a -u 10.0.0.1:53 -r 192.168.1.1 -m",            # port copied: 53
       "-A -t 9.0.0.1:443 -s rr",
       "-A -f 7 -s rr",
       "-a -f 7 -r 192.168.2.1 -g -w 0",
       "-A --tcp-service [2001:db8::1]:80 --scheduler rr",
       "-a -t [2001:db8::1]:80 -r [2001:db8::10]:8080 -m",
       "-A -f 3 -6 -s rr -p 60 -M 64")


def test_list_sorted(d):
    setup_many(d)
    code, out, err = sh(d, "-Ln")
    assert (code, err) == (0, "")
    assert out == TITLE + (
        "TCP  9.0.0.1:443 rr\n"
        "TCP  10.0.0.1:80 wrr persistent 600 mask 255.255.255.0\n"
        "  -> 192.168.1.1:8080             Masq    5      0          0         \n"
        "  -> 192.168.1.2:80               Route   1      0          0         \n"
        "  -> 192.168.1.3:80               Masq    2      0          0         \n"
        "UDP  10.0.0.1:53 rr\n"
        "  -> 192.168.1.1:53               Masq    1      0          0         \n"
        "TCP  [2001:db8::1]:80 rr\n"
        "  -> [2001:db8::10]:8080          Masq    1      0          0         \n"
        "FWM  3 IPv6 rr persistent 60 mask 64\n"
        "FWM  7 rr\n"
        "  -> 192.168.2.1:0                Route   0      0          0         \n")


def test_list_nosort_is_kernel_order(d):
    setup_many(d)
    out = sh(d, "-Ln --nosort")[1]
    lines = out.splitlines()[3:]
    assert lines[:4] == [
        "TCP  10.0.0.1:80 wrr persistent 600 mask 255.255.255.0",
        "  -> 192.168.1.2:80               Route   1      0          0         ",
        "  -> 192.168.1.1:8080             Masq    5      0          0         ",
        "  -> 192.168.1.3:80               Masq    2      0          0         ",
    ]
    assert sh(d, "-Ln --sort")[1] == sh(d, "-Ln")[1]


def test_list_one_service_and_missing(d):
    setup_many(d)
    code, out, err = sh(d, "-L -n -u 10.0.0.1:53")
    assert code == 0
    assert out == ("Prot LocalAddress:Port Scheduler Flags\n"
                   "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
                   "UDP  10.0.0.1:53 rr\n"
                   "  -> 192.168.1.1:53               Masq    1      0          0         \n")
    assert sh(d, "-L -n -t 10.9.9.9:80") == (1, "", "No such service\n")


def test_flags_and_ops_rendering(d):
    ok(d, "-A -t 1.2.3.4:80 -s rr -b flag-1,flag-3",
       "-A -u 1.2.3.4:53 -s rr -o -p",
       "-A -t 1.2.3.4:0 -s rr -p 10 -M 255.255.0.0")
    assert sh(d, "-Ln")[1] == TITLE + (
        "TCP  1.2.3.4:0 rr persistent 10 mask 255.255.0.0\n"
        "TCP  1.2.3.4:80 rr (flag-1,flag-3)\n"
        "UDP  1.2.3.4:53 rr persistent 360 ops\n")
    assert sh(d, "-S")[1] == (
        "-A -t 1.2.3.4:0 -s rr -p 10 -M 255.255.0.0\n"
        "-A -t 1.2.3.4:80 -s rr -b flag-1,flag-3\n"
        "-A -u 1.2.3.4:53 -s rr -p 360 -o\n")


def test_default_scheduler_is_wlc_and_edit_replaces(d):
    ok(d, "-A -t 1.2.3.4:80 -p 100")
    s = svc(d, (socket.AF_INET, 6, v4("1.2.3.4"), 80))
    assert s.sched_name == "wlc" and s.timeout == 100
    ok(d, "-E -t 1.2.3.4:80 -s rr")
    assert s.sched_name == "rr" and not s.persistent
    assert sh(d, "-Ln")[1] == TITLE + "TCP  1.2.3.4:80 rr\n"


# -- statistics ------------------------------------------------------------------------------
STATS_TITLE = ("Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n"
               "  -> RemoteAddress:Port\n")


def test_stats_spec_example(d):
    ok(d, "-A -t 207.175.44.110:8080 -s rr", "-a -t 207.175.44.110:8080 -r 172.16.0.2 -m")
    s = svc(d, (socket.AF_INET, 6, v4("207.175.44.110"), 8080))
    s.stats.conns, s.stats.inpkts, s.stats.outpkts = 1234, 99999999, 123456789
    s.stats.inbytes, s.stats.outbytes = 5000123456, 0
    ds = s.destinations[0].stats
    ds.conns, ds.inpkts, ds.inbytes = 1234, 7, 392
    assert sh(d, "-Ln --stats")[1] == (
        "IP Virtual Server version 1.2.1 (size=4096)\n" + STATS_TITLE
        + "TCP  207.175.44.110:8080              1234 99999999  123456K    5000M        0\n"
        "  -> 172.16.0.2:8080                  1234        7        0      392        0\n")


def test_stats_magnitude_bands_and_exact(d):
    ok(d, "-A -t 1.2.3.4:80 -s rr")
    st = svc(d, (socket.AF_INET, 6, v4("1.2.3.4"), 80)).stats
    st.conns = 100000000            # 10^8 -> K
    st.inpkts = 999999999           # just below 10^9 -> K
    st.outpkts = 1000000000         # 10^9 -> M
    st.inbytes = 100000000000       # 10^11 -> G
    st.outbytes = 123456789012345   # >= 10^14 -> T
    out = sh(d, "-L -n --stats -t 1.2.3.4:80")[1]
    assert out == STATS_TITLE + (
        "TCP  1.2.3.4:80                    100000K  999999K    1000M     100G     123T\n")
    out = sh(d, "-L -n --stats --exact -t 1.2.3.4:80")[1]
    assert out == STATS_TITLE + (
        "TCP  1.2.3.4:80                   100000000 999999999 1000000000 100000000000"
        " 123456789012345\n")


def test_rate(d):
    ok(d, "-A -u 1.2.3.4:53 -s rr", "-a -u 1.2.3.4:53 -r 10.1.1.1 -m")
    s = svc(d, (socket.AF_INET, 17, v4("1.2.3.4"), 53))
    d.rate_table[id(s.stats)] = (25, 1000, 998, 123456789, 64000)
    d.rate_table[id(s.destinations[0].stats)] = (25, 1000, 998, 123456789, 64000)
    assert sh(d, "-Ln --rate")[1] == (
        "IP Virtual Server version 1.2.1 (size=4096)\n"
        "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n"
        "  -> RemoteAddress:Port\n"
        "UDP  1.2.3.4:53                         25     1000      998  123456K    64000\n"
        "  -> 10.1.1.1:53                        25     1000      998  123456K    64000\n")


def test_thresholds_and_persistent_conn(d):
    ok(d, "-A -t 1.2.3.4:80 -s rr -p", "-a -t 1.2.3.4:80 -r 10.1.1.1 -m -w 4 -x 100 -y 50")
    dest = svc(d, (socket.AF_INET, 6, v4("1.2.3.4"), 80)).destinations[0]
    dest.activeconns, dest.inactconns, dest.persistconns = 7, 3, 2
    assert sh(d, "-Ln --thresholds")[1] == (
        "IP Virtual Server version 1.2.1 (size=4096)\n"
        "Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn \n"
        "  -> RemoteAddress:Port\n"
        "TCP  1.2.3.4:80 rr persistent 360\n"
        "  -> 10.1.1.1:80                  100        50         7          3         \n")
    assert sh(d, "-Ln --persistent-conn")[1] == (
        "IP Virtual Server version 1.2.1 (size=4096)\n"
        "Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn \n"
        "  -> RemoteAddress:Port\n"
        "TCP  1.2.3.4:80 rr persistent 360\n"
        "  -> 10.1.1.1:80                  4         2           7          3         \n")


def test_tunnel_info_and_save(d):
    ok(d, "-A -t 1.2.3.4:80 -s rr",
       "-a -t 1.2.3.4:80 -r 10.1.1.1 -i",
       "-a -t 1.2.3.4:80 -r 10.1.1.2 -i --tun-type gue --tun-port 6080 --tun-csum",
       "-a -t 1.2.3.4:80 -r 10.1.1.3 -i --tun-type gre --tun-nocsum")
    assert sh(d, "-Ln --tun-info")[1] == (
        "IP Virtual Server version 1.2.1 (size=4096)\n"
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n"
        "TCP  1.2.3.4:80 rr\n"
        "  -> 10.1.1.1:80                  Tunnel  ipip          1      0          0         \n"
        "  -> 10.1.1.2:80                  Tunnel  gue:6080:+c   1      0          0         \n"
        "  -> 10.1.1.3:80                  Tunnel  gre:-c        1      0          0         \n")
    assert sh(d, "-S -n")[1] == (
        "-A -t 1.2.3.4:80 -s rr\n"
        "-a -t 1.2.3.4:80 -r 10.1.1.1:80 -i -w 1 --tun-type ipip\n"
        "-a -t 1.2.3.4:80 -r 10.1.1.2:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-csum\n"
        "-a -t 1.2.3.4:80 -r 10.1.1.3:80 -i -w 1 --tun-type gre --tun-nocsum\n")


# -- connections -----------------------------------------------------------------------------
def conn(proto, caddr, cport, vaddr, vport, daddr, dport, state, ttl, flags=0):
    af = socket.AF_INET6 if ":" in caddr else socket.AF_INET

    def pack(a):
        return socket.inet_pton(af, a)

    return SimpleNamespace(af=af, protocol=proto, caddr=pack(caddr), cport=cport,
                           vaddr=vaddr if isinstance(vaddr, bytes) else pack(vaddr),
                           vport=vport, daddr=pack(daddr), dport=dport, flags=flags,
                           state_name=state, expires=1000.0 + ttl, dest=None)


def test_connection_listing(d):
    d.conntable.conns = [
        conn(6, "10.0.0.2", 45678, "207.175.44.110", 8080, "172.16.0.2", 8080,
             "ESTABLISHED", 898.7),
        conn(17, "10.0.0.3", 53000, "10.0.0.1", 53, "192.168.1.1", 53, "UDP", 299.99),
        conn(6, "10.0.0.0", 0, "10.0.0.1", 80, "192.168.1.1", 80, "ASSURED", 3600.2,
             flags=0x1000),
        conn(0, "10.0.0.0", 0, (1).to_bytes(4, "big"), 0, "172.16.0.2", 0, "NONE", 359.5,
             flags=0x1000),
        conn(6, "2001:db8::5", 1234, "2001:db8::1", 80, "2001:db8::10", 8080, "SYN_RECV",
             59),
    ]
    code, out, err = sh(d, "-Lnc")
    assert (code, err) == (0, "")
    assert out == (
        "IPVS connection entries\n"
        "pro expire state       source             virtual            destination\n"
        "TCP 14:58  ESTABLISHED 10.0.0.2:45678     207.175.44.110:8080 172.16.0.2:8080\n"
        "UDP 04:59  UDP         10.0.0.3:53000     10.0.0.1:53        192.168.1.1:53\n"
        "TCP 60:00  ASSURED     10.0.0.0:0         10.0.0.1:80        192.168.1.1:80\n"
        "IP  05:59  NONE        10.0.0.0:0         0.0.0.1:0          172.16.0.2:0\n"
        "TCP 00:59  SYN_RECV    [2001:db8::5]:1234 [2001:db8::1]:80   [2001:db8::10]:8080\n")
    out = sh(d, "-L -c --persistent-conn")[1]
    assert out.splitlines()[1] == ("pro expire state       source             virtual"
                                   "            destination        pe name          pe_data")


# -- save / restore --------------------------------------------------------------------------
def test_save_restore_round_trip(d):
    setup_many(d)
    ok(d, "-a -t 10.0.0.1:80 -r 192.168.1.9 -i --tun-type gue --tun-port 6080 --tun-remcsum",
       "-A -t 1.2.3.4:80 -s rr -b flag-2")
    saved = sh(d, "-S -n")[1]
    assert saved.splitlines()[:6] == [
        "-A -t 1.2.3.4:80 -s rr -b flag-2",
        "-A -t 9.0.0.1:443 -s rr",
        "-A -t 10.0.0.1:80 -s wrr -p 600 -M 255.255.255.0",
        "-a -t 10.0.0.1:80 -r 192.168.1.1:8080 -m -w 5",
        "-a -t 10.0.0.1:80 -r 192.168.1.2:80 -g -w 1",
        "-a -t 10.0.0.1:80 -r 192.168.1.3:80 -m -w 2",
    ]
    assert "-A -f 3 -6 -s rr -p 60 -M 64\n-A -f 7 -s rr\n-a -f 7 -r 192.168.2.1:0 -g -w 0\n" \
        in saved
    assert sh(d, "-C") == (0, "", "")
    assert sh(d, "-S") == (0, "", "")
    assert sh(d, "-R", saved) == (0, "", "")
    assert sh(d, "-S -n")[1] == saved
    # lines may carry the program name; empty lines are skipped
    ok(d, "--clear")
    stdin = "\n".join("ipvsadm " + line for line in saved.splitlines()) + "\n\n"
    assert sh(d, "--restore", stdin) == (0, "", "")
    assert sh(d, "--save")[1] == saved


def test_restore_errors(d):
    ok(d, "-A -t 1.2.3.4:80 -s rr")
    # a kernel error is reported and the next line still runs; status of the last line
    stdin = "-A -t 1.2.3.4:80 -s rr\n-A -t 1.2.3.5:80 -s rr\n"
    assert sh(d, "-R", stdin) == (0, "", "Service already exists\n")
    assert (socket.AF_INET, 6, v4("1.2.3.5"), 80) in d.services.services
    assert sh(d, "-R", "-A -t 1.2.3.6:80 -s rr\n-D -t 9.9.9.9:1\n") == (
        255, "", "No such service\n")
    # a parse error ends the run (exit 2): later lines are not applied
    stdin = "-A -t 1.2.3.7:80 -s rr\n-a -t 1.2.3.7:80 -r 10.0.0.1 -w 2147483648\n-C\n"
    assert sh(d, "-R", stdin) == (2, "", "illegal weight specified\n")
    assert len(d.services.services) == 4
    assert sh(d, "-R", "-R\n") == (255, "", TRY)


# -- timeouts --------------------------------------------------------------------------------
def test_timeout_and_set(d):
    assert sh(d, "-L --timeout") == (0, "Timeout (tcp tcpfin udp): 900 120 300\n", "")
    assert sh(d, "--set 1000 0 60") == (0, "", "")
    assert sh(d, "-L --timeout")[1] == "Timeout (tcp tcpfin udp): 1000 120 60\n"
    before = snapshot(d)
    assert sh(d, "--set 1 2") == (2, "", "--set option requires 3 timeout values\n")
    assert sh(d, "--set 1 2 2678401") == (2, "", "invalid timeout value `2678401' specified\n")
    assert sh(d, "--set 1 2 3 4") == (2, "", "unexpected argument 4\n")
    assert sh(d, "--set 1 -2 3") == (255, "", "-2: unknown option\n")  # popt sees "-2"
    assert snapshot(d) == before
    assert sh(d, "-L --daemon") == (0, "", "")


def test_zero(d):
    ok(d, "-A -t 1.2.3.4:80 -s rr", "-A -t 1.2.3.5:80 -s rr")
    a = svc(d, (socket.AF_INET, 6, v4("1.2.3.4"), 80))
    b = svc(d, (socket.AF_INET, 6, v4("1.2.3.5"), 80))
    a.stats.conns = b.stats.conns = 5
    ok(d, "-Z -t 1.2.3.4:80")
    assert (a.stats.conns, b.stats.conns) == (0, 5)
    ok(d, "--zero")
    assert b.stats.conns == 0
    assert sh(d, "-Z -t 1.2.3.9:80") == (255, "", "No such service\n")


def test_help_and_version(d):
    code, out, err = sh(d, "-h")
    assert code == 0 and err == ""
    assert out.startswith("ipvsadm v1.31 2019/12/24 (compiled with popt and IPVS v1.2.1)\n"
                          "Usage:\n  pyvsadm -A|E virtual-service [-s scheduler]")
    assert "  --tun-type      type                one of ipip|gue|gre,\n" in out
    assert sh(d, "--version") == (
        0, "ipvsadm v1.31 2019/12/24 (compiled with popt and IPVS v1.2.1)\n", "")


def test_delete(d):
    setup_many(d)
    ok(d, "-d -t 10.0.0.1:80 -r 192.168.1.1:8080")
    assert "192.168.1.1:8080" not in sh(d, "-Ln")[1]
    ok(d, "--delete-service -t 10.0.0.1:80")
    assert "10.0.0.1:80 " not in sh(d, "-Ln")[1]


# -- errors: message, exit status, nothing changed ----------------------------------------------
ERRORS = [
    # popt / usage
    ("--bogus", 255, TRY),
    ("-t 1.2.3.4:80", 255, TRY),
    ("foo", 255, TRY),
    ("-A --bogus", 255, "--bogus: unknown option\n"),
    ("-A -t", 255, "-t: missing argument\n"),
    ("-A -t 1.2.3.4:80 -s", 255, "-s: missing argument\n"),
    ("-L -A", 2, "invalid option `-A'\n"),
    ("-A -t 1.2.3.4:80 extra", 2, "unexpected argument extra\n"),
    ("-A -t 1.2.3.4:80 -t 1.2.3.4:81", 2, "multiple 'service-address' options specified\n"),
    # compatibility table
    ("-A -s rr", 2, "You need to supply the 'service-address' option for the "
                    "'add-service' command\n"),
    ("-a -t 1.2.3.4:80", 2, "You need to supply the 'real-server' option for the "
                            "'add-server' command\n"),
    ("-D -t 1.2.3.4:80 -s rr", 2, "Illegal 'scheduler' option with the 'delete-service' "
                                  "command\n"),
    ("-A -t 1.2.3.4:80 -r 10.0.0.1", 2, "Illegal 'real-server' option with the "
                                        "'add-service' command\n"),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 -s rr", 2, "Illegal 'scheduler' option with the "
                                              "'add-server' command\n"),
    ("-L -c -t 1.2.3.4:80", 2, "The option 'service-address' conflicts with the 'connection' "
                               "option in the 'list' command\n"),
    ("-L --timeout --stats", 2, "options conflicts in the list command\n"),
    ("-L -c --rate", 2, "options conflicts in the list command\n"),
    ("-C -n", 2, "Illegal 'numeric' option with the 'flush' command\n"),
    # values
    ("-A -t 1.2.3.4:0 -s rr", 2, "Zero port specified for non-persistent service\n"),
    ("-A -t 1.2.3.4:80 -o", 2, "One-Packet Scheduling is only for UDP virtual services\n"),
    ("-A -t 1.2.3.4:80 -s rr -b sh-port", 2, "incompatible scheduler flag `sh-port'\n"),
    ("-A -t 1.2.3.4:80 -b sh-fallback", 2, "incompatible scheduler flag `sh-fallback'\n"),
    ("-A -t 1.2.3.4:80 -b flag-9", 2, "invalid scheduler flag `flag-9'\n"),
    ("-A -t 1.2.3.4:80 -p 0", 2, "invalid timeout value `0' specified\n"),
    ("-A -t 1.2.3.4:80 -M 255.255.255.256", 2,
     "illegal virtual server persistent mask specified\n"),
    ("-A -t [2001:db8::1]:80 -M 129", 2, "illegal ipv6 netmask specified\n"),
    ("-A -t 1.2.3.4:99999", 2, "illegal virtual server address[:port] specified\n"),
    ("-A -t 80", 2, "illegal virtual server address[:port] specified\n"),
    ("-A -t [2001:db8::1]", 2, "illegal virtual server address[:port] specified\n"),
    ("-A -f 0", 2, "invalid fwmark value `0' specified\n"),
    ("-A -t 1.2.3.4:80 -6", 2, "-6 used before -f\n\n"),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 -w 2147483648", 2, "illegal weight specified\n"),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 -w -1", 2, "illegal weight specified\n"),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 -x abc", 2, "illegal u_threshold specified\n"),
    ("-a -t 1.2.3.4:80 -r bad.host.name.invalid", 2,
     "illegal real server address[:port] specified\n"),
    ("-a -t 1.2.3.4:80 -r [2001:db8::2]:80 -m", 2,
     "Different address family is allowed only for tunneling servers\n"),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 -m --tun-type gue", 2,
     "Tunnel options conflict with forward method\n"),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 -i --tun-type gue", 2,
     "You need to supply the 'tun-port' option for the 'gue' tunnel type\n"),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 -i --tun-port 9", 2,
     "Illegal 'tun-port' option with the 'ipip' tunnel type\n"),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 -i --tun-type gue --tun-port 9 --tun-csum --tun-remcsum",
     2, "The option 'tun-remcsum' conflicts with the 'tun-csum' option in the 'gue' tunnel "
        "type\n"),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 -i --tun-type vxlan", 2, "illegal tunnel type specified\n"),
    ("--start-daemon primary", 2, "illegal start-daemon parameter specified\n"),
    # kernel (libipvs) errors: exit 255
    ("-A -t 1.2.3.4:80 -s rr", 255, "Service already exists\n"),
    ("-A -t 1.2.3.5:80 -s nosuchsched", 255, "Scheduler or persistence engine not found\n"),
    ("-A -t 1.2.3.5:80 -s rr -p --pe nope", 255,
     "Scheduler or persistence engine not found\n"),
    # pyvs has no persistence engine: sip is refused as by a kernel without ip_vs_pe_sip
    ("-A -u 1.2.3.5:5060 -s rr -p 30 --pe sip", 255,
     "Scheduler or persistence engine not found\n"),
    ("-E -t 1.2.3.4:80 -s rr -p 30 --pe sip", 255,
     "Scheduler or persistence engine not found\n"),
    ("-E -t 1.2.3.5:80 -s rr", 255, "No such service\n"),
    ("-D -t 1.2.3.5:80", 255, "No such service\n"),
    ("-a -t 1.2.3.5:80 -r 10.0.0.1", 255, "Service not defined\n"),
    ("-a -t 1.2.3.4:80 -r 10.0.0.1 -m", 255, "Destination already exists\n"),
    ("-a -t 1.2.3.4:80 -r 10.0.0.2 -x 5 -y 10", 255, "Numerical result out of range\n"),
    ("-a -t 1.2.3.4:80 -r 224.0.0.1", 255,
     "Invalid operation.  Possibly wrong module version, address not unicast, ...\n"),
    ("-e -t 1.2.3.4:80 -r 10.0.0.9", 255, "No such destination\n"),
    ("-e -t 1.2.3.5:80 -r 10.0.0.9", 255, "Service not defined\n"),
    ("-d -t 1.2.3.4:80 -r 10.0.0.9", 255, "No such destination\n"),
    ("-d -t 1.2.3.4:80 -r 10.0.0.1:81", 255, "No such destination\n"),
    ("--start-daemon master", 255, "Protocol not available\n"),
    ("--stop-daemon backup", 255, "No daemon is running\n"),
]


@pytest.mark.parametrize("cmdline,code,err", ERRORS, ids=[e[0] or "empty" for e in ERRORS])
def test_errors_change_nothing(d, cmdline, code, err):
    ok(d, "-A -t 1.2.3.4:80 -s rr", "-a -t 1.2.3.4:80 -r 10.0.0.1 -m -w 2")
    before = snapshot(d)
    assert sh(d, cmdline) == (code, "", err)
    assert snapshot(d) == before


def test_failed_edit_changes_nothing(d):
    ok(d, "-A -t 1.2.3.4:80 -s rr -p 100", "-a -t 1.2.3.4:80 -r 10.0.0.1 -m -w 2")
    before = snapshot(d)
    assert sh(d, "-E -t 1.2.3.4:80 -s nosuchsched")[0] == 255
    assert sh(d, "-e -t 1.2.3.4:80 -r 10.0.0.1 -m -x 1 -y 2")[0] == 255
    assert snapshot(d) == before


def test_option_spellings(d):
    ok(d, "--add-service --udp-service 1.2.3.4:53 --scheduler=rr --persistent=50 "
          "--netmask 255.255.255.128 --ops",
       "--add-server -u1.2.3.4:53 --real-server 10.0.0.1:5353 --masquerading --weight=7 "
       "--u-threshold 9 --l-threshold 3",
       "-A --fwmark-service 9 -s rr --sched-flags flag-1",
       "--edit-server -u 1.2.3.4:53 -r 10.0.0.1:5353 -m -w 8",
       "-At 1.2.3.4:8080 -srr")
    assert sh(d, "-Sn")[1] == (
        "-A -t 1.2.3.4:8080 -s rr\n"
        "-A -u 1.2.3.4:53 -s rr -p 50 -M 255.255.255.128 -o\n"
        "-a -u 1.2.3.4:53 -r 10.0.0.1:5353 -m -w 8\n"
        "-A -f 9 -s rr -b flag-1\n")


def test_sctp_services_are_refused_not_silently_accepted():
    """pyvs forwards TCP and UDP only: an SCTP service would be accepted and do nothing,
    so it is refused as a kernel without IPVS SCTP support refuses it."""
    from pyvs.engine.director import Director

    d = Director()
    rc, out, err = run(["-A", "--sctp-service", "198.18.1.1:80"], "", d)
    assert (rc, out, err) == (255, "", "Protocol not supported\n")
    assert run(["-S", "-n"], "", d)[1] == ""
    # a fwmark service carries no protocol and stays accepted
    assert run(["-A", "-f", "3"], "", d)[0] == 0
