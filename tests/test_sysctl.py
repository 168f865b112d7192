"""net.ipv4.vs.* settings: nothing accepted that does nothing.

* Every setting reads back with the kernel's default.
* A setting pyvs acts on takes every value of the kernel's range; one it does not act on
  (engine/sysctl.py REFUSED) refuses any other value than its default with a message
  naming the setting and why, keeps its value, and `pyvs sysctl` exits non-zero.
* The table tells the truth about the code: every implemented setting is read by the
  engine, no refused one is.
* cache_bypass as ip_vs_leave: a fwmark service with no destination lets a packet for a
  routed unicast address go on (ACCEPT) and remembers the flow in a bypass entry.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP

from pyvs.engine import ipvsadm
from pyvs.engine.clock import VirtualClock
from pyvs.engine.daemon import Daemon
from pyvs.engine.director import Director
from pyvs.engine.model import pack_addr
from pyvs.engine.neigh import Route
from pyvs.engine.sysctl import PREFIX, REFUSED, SETTINGS, Sysctl, SysctlError, implemented
from pyvs.engine.verdict import ACCEPT, DROP

ROOT = Path(__file__).resolve().parent.parent


def _other_value(name: str) -> int | tuple[int, int]:
    s = SETTINGS[name]
    if isinstance(s.default, tuple):
        return (s.default[0] + 1, s.default[1])
    return s.default + 1 if s.default < s.high else s.default - 1


def test_every_setting_reads_back_its_kernel_default():
    sysctl = Sysctl()
    assert len(SETTINGS) == 29
    for name, setting in SETTINGS.items():
        assert sysctl.get(name) == setting.default
        sysctl.set(PREFIX + name, setting.default)  # the default is always accepted
    assert sysctl.format("net.ipv4.vs.sync_threshold") == "net.ipv4.vs.sync_threshold = 3\t50"


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_settings_name_themselves_and_keep_their_value(name):
    sysctl = Sysctl()
    value = _other_value(name)
    if name == "secure_tcp":
        value = 1
    with pytest.raises(SysctlError) as err:
        sysctl.set(name, value)
    assert str(err.value).startswith(f"pyvs sysctl: net.ipv4.vs.{name}: not implemented ")
    assert sysctl.get(name) == SETTINGS[name].default


def test_refusal_messages():
    sysctl = Sysctl()
    cases = {
        "sloppy_sctp=1": "net.ipv4.vs.sloppy_sctp: not implemented by pyvs (no SCTP)",
        "backup_only=1": "net.ipv4.vs.backup_only: not implemented yet (a director running a "
                         "backup sync daemon still forwards)",
    }
    for arg, message in cases.items():
        name, _, value = arg.partition("=")
        with pytest.raises(SysctlError, match=re.escape(f"pyvs sysctl: {message}")):
            sysctl.set(name, value)


def test_defense_modes_follow_the_tables_pressure_from_the_first_write():
    """update_defense_level() runs on every write of drop_entry, drop_packet and
    secure_tcp: without pressure the automatic modes read back 1 (engine/defense.py)."""
    d = Director(clock=VirtualClock())
    for name in ("drop_entry", "drop_packet", "secure_tcp"):
        for value, reads in (("3", 3), ("2", 1), ("1", 1), ("0", 0)):
            d.sysctl.set(name, value)
            assert d.sysctl.get(name) == reads
    with pytest.raises(SysctlError, match="Invalid argument"):  # out of range: sysctl's own
        d.sysctl.set("secure_tcp", "4")


@pytest.mark.parametrize("name", implemented())
def test_implemented_settings_take_their_whole_range(name):
    sysctl = Sysctl()
    s = SETTINGS[name]
    if isinstance(s.default, tuple):  # sync_threshold: threshold < period, or period 0
        values = [(s.low, 0), (s.high - 1, s.high), (s.high, 0)]
    else:
        values = [s.low, s.high]
    for value in values:
        sysctl.set(name, " ".join(map(str, value)) if isinstance(value, tuple) else str(value))
        assert sysctl.get(name) == value


def _engine_source() -> str:
    return "\n".join(p.read_text() for folder in ("engine", "forwarders", "schedulers")
                     for p in (ROOT / folder).rglob("*.py")
                     if p.name != "sysctl.py" and "lab" not in p.parts)


def test_the_table_matches_what_the_engine_reads():
    """An implemented setting is read by the engine (``sysctl.NAME`` or a scheduler's
    ``sysctl_name = "NAME"``); a refused one is not read anywhere."""
    source = _engine_source()
    read = set(re.findall(r"sysctl\.([a-z_]+)\b", source))
    read |= set(re.findall(r'sysctl_name = "([a-z_]+)"', source))
    read &= set(SETTINGS)
    assert read == set(implemented())
    assert not read & set(REFUSED)


def test_pyvs_sysctl_request_refuses_with_a_non_zero_status():
    daemon = Daemon(director=Director(clock=VirtualClock()))
    reply = daemon.handle_request({"op": "sysctl",
                                   "args": ["net.ipv4.vs.sloppy_sctp=1",
                                            "net.ipv4.vs.cache_bypass=1"]})
    assert reply["rc"] != 0
    assert reply["err"] == ("pyvs sysctl: net.ipv4.vs.sloppy_sctp: not implemented by pyvs "
                            "(no SCTP)\n")
    assert reply["out"] == "net.ipv4.vs.cache_bypass = 1\n"  # the next one still applies
    reply = daemon.handle_request({"op": "sysctl", "args": ["net.ipv4.vs.sloppy_sctp"]})
    assert (reply["rc"], reply["out"]) == (0, "net.ipv4.vs.sloppy_sctp = 0\n")


# --------------------------------------------------------------------------- cache_bypass
class FakeRoutes:
    """KernelRoutes stand-in: addresses in ``local`` are the director's own."""

    def __init__(self, local=()) -> None:
        self.local = {pack_addr(a) for a in local}

    def route(self, addr):
        return Route(addr, addr in self.local, 2, "eth1", pack_addr("198.18.2.1"), None,
                     1500, b"\x02\0\0\0\0\x01", 1e9)

    def mac(self, route, addr):
        return None

    def poll(self):
        return set()

    def clock(self):
        return 0.0


def _bypass_director(cache_bypass: int, local=()) -> Director:
    d = Director(clock=VirtualClock(), routes=FakeRoutes(local))
    d.sysctl.set("cache_bypass", cache_bypass)
    assert ipvsadm.run(["-A", "-f", "5", "-s", "rr"], "", d)[0] == 0  # no destination
    return d


def _pkt(dst: str, flags: str) -> bytearray:
    return bytearray(bytes(IP(src="198.18.0.10", dst=dst) / TCP(sport=40000, dport=80,
                                                                flags=flags)))


def test_cache_bypass_sends_the_packet_on_and_lists_a_bypass_entry():
    d = _bypass_director(1)
    buf = _pkt("198.18.5.5", "S")
    before = bytes(buf)
    assert d.process([buf], [5]) == [ACCEPT]
    assert bytes(buf) == before and not d.outbox  # unchanged, to its own destination
    rows = ipvsadm.run(["-Lnc"], "", d)[1].splitlines()
    assert rows[2:] == ["TCP 01:00  SYN_RECV    198.18.0.10:40000  198.18.5.5:80      "
                        "0.0.0.0:0"]
    assert d.process([_pkt("198.18.5.5", "A")], [5]) == [ACCEPT]  # the flow's next packet
    assert ipvsadm.run(["-Lnc"], "", d)[1].splitlines()[2].split()[2] == "ESTABLISHED"
    assert d.services.services[("fwm", 2, 5)].stats.conns == 0  # no real server counted


@pytest.mark.parametrize("cache_bypass,local", [(0, ()), (1, ("198.18.5.5",))])
def test_without_cache_bypass_or_for_a_local_address_port_unreachable(cache_bypass, local):
    d = _bypass_director(cache_bypass, local)
    assert d.process([_pkt("198.18.5.5", "S")], [5]) == [DROP]
    (icmp,) = d.outbox
    assert (IP(icmp)[ICMP].type, IP(icmp)[ICMP].code) == (3, 3)
    assert ipvsadm.run(["-Lnc"], "", d)[1].count("\n") == 2  # no entry
