"""The generated nftables rules, loaded into a real kernel, take what the model says.

One network namespace holds a veth pair: frames are sent on ``x1`` and arrive on ``x0``,
whose MAC they carry.  The namespace's virtual addresses (takes_frames.LOCAL) sit on
``lo``; everything else is routed out of ``x0`` (ip_forward on, a default gateway with a
permanent neighbour), and whatever comes back in on ``x1`` is dropped there.  Around
pyvs's own plumbing the test puts:

  * two recorder chains on x0's ingress, before (priority -1000) and after (0) the ring's
    table (-500), each adding the frame's source MAC -- its tag -- to a set: a frame in
    the first set and not the second was dropped by the ring's rules;
  * a mangle chain that sets the firewall mark from the IPv4 ID / IPv6 flow label, as a
    user's rule would (takes_frames.stamp puts the mark there);
  * a sentinel: after each batch one more frame, queued by a chain of the test's own at
    priority -400.  The sending process is pinned to one CPU, so the frames are handled
    in order on that CPU's backlog, and when the sentinel reaches the queue every frame
    before it has been through ingress, prerouting and forward.

A child process in the namespace sends the frames, reads the queue (an NfQueueSocket,
with a DROP verdict for everything) and reads the sets.  For each frame the test
compares what happened with ``Takes.where``: dropped at ingress = FAST, queued in
prerouting = REQUESTS, queued in forward = REPLIES, neither = the kernel's.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from takes_frames import (
    LOCAL,
    SRC_MAC,
    UDP,
    a,
    config_st,
    describe,
    eth,
    frame_st,
    ipv4,
    l4,
    stamp,
)

from pyvs.engine import plumbing, plumbing_ring
from pyvs.engine.model import format_addr
from pyvs.engine.takes import FAST, REPLIES, REQUESTS, Takes, read

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parent.parent
REPLY_TIMEOUT = 30.0
SENTINEL_SRC = "198.19.255.254"
GATEWAY_MAC = "02:00:00:00:00:99"
DST_MAC = "02:00:00:00:00:02"
HOOKS = {0: REQUESTS, 2: REPLIES}  # NF_INET_PRE_ROUTING, NF_INET_FORWARD

SETUP = f"""
table netdev sink {{
  chain c {{
    type filter hook ingress device "x1" priority 0; policy drop;
  }}
}}
table netdev rec {{
  set before {{
    type ether_addr
    flags dynamic
    size 65536
  }}
  set after {{
    type ether_addr
    flags dynamic
    size 65536
  }}
  chain early {{
    type filter hook ingress device "x0" priority -1000; policy accept;
    add @before {{ ether saddr }}
  }}
  chain late {{
    type filter hook ingress device "x0" priority 0; policy accept;
    add @after {{ ether saddr }}
  }}
}}
table ip marks {{
  chain pre {{
    type filter hook prerouting priority mangle; policy accept;
    meta mark set @nh,32,32 >> 16
  }}
}}
table ip6 marks {{
  chain pre {{
    type filter hook prerouting priority mangle; policy accept;
    meta mark set @nh,0,32 << 12 >> 12
  }}
}}
table ip sentinel {{
  chain q {{
  }}
  chain pre {{
    type filter hook prerouting priority -400; policy accept;
    ip saddr {SENTINEL_SRC} goto q
  }}
}}
"""

CHILD = r"""
import json, os, select, socket, subprocess, sys, time
from pyvs.engine import plumbing
from pyvs.engine.io.nfqueue import NF_DROP, NfQueueSocket

os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one backlog: frames in order
plumbing.Plumbing().install()  # inet pyvs with its queue rule, as `pyvs run` does
plumbing.add_queue_rule(2, "sentinel", "q", plumbing.QUEUE_NUM)
queue = NfQueueSocket(plumbing.QUEUE_NUM)
tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
tx.bind(("x1", 0))
SENTINEL = bytes.fromhex(sys.argv[1])


def nft(*args, text=None):
    return subprocess.run(["nft", *args], input=text, capture_output=True, text=True,
                          timeout=30)


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def elements(name):
    out = json.loads(nft("-j", "list", "set", "netdev", "rec", name).stdout)
    for item in out["nftables"]:
        if "set" in item:
            return [e if isinstance(e, str) else e["elem"]["val"]
                    for e in item["set"].get("elem", [])]
    return []


reply({"ready": True})
for line in sys.stdin:
    try:
        req = json.loads(line)
        if req["op"] == "nft":
            p = nft("-f", "-", text=req["text"])
            reply({"rc": p.returncode, "err": p.stderr})
        elif req["op"] == "run":
            nft("flush", "set", "netdev", "rec", "before")
            nft("flush", "set", "netdev", "rec", "after")
            for f in req["frames"]:
                tx.send(bytes.fromhex(f))
            tx.send(SENTINEL)
            queued, deadline, done = [], time.monotonic() + 10, False
            while not done and time.monotonic() < deadline:
                select.select([queue], [], [], 1.0)
                batch = queue.recv_batch()
                queue.send_verdicts(batch, [NF_DROP] * len(batch), [False] * len(batch))
                for p in batch:
                    if bytes(p.buf[12:16]) == SENTINEL[26:30]:
                        done = True
                    else:
                        queued.append({"hook": p.hook, "mark": p.mark, "ip": p.buf.hex()})
            if not done:
                reply({"error": "the sentinel never reached the queue"})
                continue
            reply({"queued": queued, "before": elements("before"),
                   "after": elements("after")})
        else:
            reply({"error": "unknown op " + repr(req["op"])})
    except Exception as err:  # report, keep serving
        reply({"error": repr(err)})
"""


class ChildError(RuntimeError):
    pass


class KernelChild:
    """The child process in the namespace; every read has a deadline."""

    def __init__(self, ns: str) -> None:
        self.buf = b""
        self.stderr = tempfile.TemporaryFile()
        sentinel = eth(0x0800, ipv4(a(SENTINEL_SRC), a("198.19.255.253"), UDP, l4(UDP, 9, 9)),
                       src=bytes.fromhex("02ffffffffff"), dst=bytes.fromhex("020000000002"))
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", CHILD, sentinel.hex()],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, bufsize=0,
            env=dict(os.environ), cwd=ROOT)
        first = self._read()
        if not first.get("ready"):
            raise ChildError(f"child did not start: {first}{self._stderr()}")

    def _stderr(self) -> str:
        self.stderr.seek(0)
        text = self.stderr.read().decode(errors="replace").strip()
        return f"\nchild stderr:\n{text[-3000:]}" if text else ""

    def _read(self) -> dict:
        deadline = time.monotonic() + REPLY_TIMEOUT
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChildError(f"no reply from the child{self._stderr()}")
            if not select.select([fd], [], [], left)[0]:
                continue
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise ChildError(f"the child exited ({self.proc.poll()}){self._stderr()}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line)

    def request(self, obj: dict) -> dict:
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        self.proc.stdin.flush()
        out = self._read()
        if "error" in out:
            raise ChildError(out["error"])
        return out

    def nft(self, text: str) -> None:
        out = self.request({"op": "nft", "text": text})
        if out["rc"] != 0:
            raise ChildError(f"nft -f: {out['err']}\n{text}")

    def run(self, frames: list[bytes]) -> dict:
        return self.request({"op": "run", "frames": [f.hex() for f in frames]})

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=10)
        finally:
            self.proc.stdin.close()
            self.proc.stdout.close()
            self.stderr.close()


def _ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def kernel(lab_env):
    """The namespace and its child, torn down in any case."""
    ns = f"pyvs-takes-{secrets.token_hex(4)}"
    created, child = False, None
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
        created = True
        _ip(ns, "link", "add", "x0", "type", "veth", "peer", "name", "x1")
        _ip(ns, "link", "set", "x0", "address", DST_MAC)
        for dev in ("lo", "x0", "x1"):
            _ip(ns, "link", "set", dev, "up")
        for name, value in (("net.ipv4.ip_forward", 1), ("net.ipv6.conf.all.forwarding", 1),
                            ("net.ipv4.conf.all.rp_filter", 0),
                            ("net.ipv4.conf.x0.rp_filter", 0),
                            ("net.ipv6.conf.x1.disable_ipv6", 1)):
            subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"{name}={value}"],
                           check=True, timeout=30)
        for addr in sorted(LOCAL):
            plen = 32 if len(addr) == 4 else 128
            _ip(ns, "addr", "add", f"{format_addr(addr)}/{plen}", "dev", "lo",
                *(["nodad"] if plen == 128 else []))
        _ip(ns, "neigh", "add", "198.19.255.2", "lladdr", GATEWAY_MAC, "dev", "x0", "nud",
            "permanent")
        _ip(ns, "route", "add", "default", "via", "198.19.255.2", "dev", "x0", "onlink")
        _ip(ns, "-6", "neigh", "add", "fe80::99", "lladdr", GATEWAY_MAC, "dev", "x0", "nud",
            "permanent")
        _ip(ns, "-6", "route", "add", "default", "via", "fe80::99", "dev", "x0")
        subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=SETUP, text=True,
                       check=True, capture_output=True, timeout=30)
        child = KernelChild(ns)
        yield child
    finally:
        try:
            if child is not None:
                child.close()
        finally:
            if created:
                subprocess.run(["ip", "netns", "del", ns], check=True, timeout=30)


def tagged(frame: bytes, tag: int) -> bytes:
    """The frame with its tag as the source MAC (02:00:00:00:TT:TT)."""
    return frame[:6] + SRC_MAC[:4] + tag.to_bytes(2, "big") + frame[12:]


def mac(tag: int) -> str:
    return ":".join(f"{b:02x}" for b in SRC_MAC[:4] + tag.to_bytes(2, "big"))


def forwarded(frame: bytes) -> bool:
    """Whether the namespace routes it on: not to a local address, TTL above 1, and for
    IPv4 not from a local address (fib_validate_source: a martian source)."""
    pkt = read(frame)
    return (pkt.daddr not in LOCAL and pkt.ttl > 1
            and (pkt.family == 6 or pkt.saddr not in LOCAL))


def _unrouted(ip: bytes) -> bytes:
    """An IP packet without what forwarding changes (TTL / hop limit, header checksum)."""
    b = bytearray(ip)
    if b and b[0] >> 4 == 4 and len(b) >= 20:
        b[8] = b[10] = b[11] = 0
    elif len(b) >= 40:
        b[7] = 0
    return bytes(b)


def observed(result: dict, frames: list[bytes]) -> list[tuple[str | None, int | None]]:
    """(where, mark) of each frame (tagged 0..n-1), from one ``run``.  Queued packets
    that are none of the frames are the namespace's own (an ICMP error it sent itself
    to a local address passes prerouting on ``lo``) and are left out."""
    before, after = set(result["before"]), set(result["after"])
    queued: dict[int, dict] = {}
    for q in result["queued"]:
        ip = bytes.fromhex(q["ip"])
        tag = ip[1] if ip[0] >> 4 == 4 else ((ip[0] & 15) << 4 | ip[1] >> 4)
        if tag >= len(frames) or _unrouted(ip) != _unrouted(frames[tag][14:]):
            continue
        assert tag not in queued, f"frame {tag} queued twice"
        queued[tag] = q
    out = []
    for tag in range(len(frames)):
        if tag in queued:
            out.append((HOOKS.get(queued[tag]["hook"], f"hook {queued[tag]['hook']}"),
                        queued[tag]["mark"]))
        elif mac(tag) in before and mac(tag) not in after:
            out.append((FAST, None))
        else:
            out.append((None, None))
    return out


COMMON = settings(max_examples=120, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("fast", [False, True], ids=["nfqueue", "ring"])
@COMMON
@given(config=config_st(), data=st.data())
def test_loaded_rules_take_what_the_model_says(kernel, fast, config, data):
    """``fast`` False: the NFQUEUE rules alone (``--io nfqueue``); True: the ring's netdev
    table in front of them (``--io ring``).  Valid IP packets: ip_rcv drops the others
    before any of pyvs's hooks."""
    drawn = data.draw(st.lists(frame_st(config, valid=True), min_size=1, max_size=24),
                      label="frames")
    frames = [tagged(stamp(f, tag, mark), tag) for tag, (f, mark) in enumerate(drawn)]
    takes = Takes.of(config)
    kernel.nft(plumbing.ruleset(takes))
    kernel.nft(plumbing_ring.ruleset(config, ["x0"]) if fast else
               "table netdev pyvs {}\ndelete table netdev pyvs\n")
    got = observed(kernel.run(frames), frames)
    for frame, (_, mark), (where, queued_mark) in zip(frames, drawn, got, strict=True):
        want = takes.where(read(frame, mark, LOCAL, forwarded(frame)), fast)
        event(f"{want}")
        assert where == want, (f"the kernel: {where}, the model: {want}, for mark {mark} "
                               f"{describe(frame)}\nconfiguration: {config}")
        if where in (REQUESTS, REPLIES):
            assert queued_mark == mark


@COMMON
@given(config=config_st(), data=st.data())
def test_netdev_rules_drop_exactly_what_the_model_gives_a_fast_port(kernel, config, data):
    """Any frame, also what netfilter refuses (lengths, versions, VLAN tags, cut short)."""
    drawn = data.draw(st.lists(frame_st(config), min_size=1, max_size=24), label="frames")
    frames = [tagged(f, tag) for tag, (f, _) in enumerate(drawn)]
    takes = Takes.of(config)
    kernel.nft(plumbing.ruleset(Takes()))
    kernel.nft(plumbing_ring.ruleset(config, ["x0"]))
    result = kernel.run(frames)
    before, after = set(result["before"]), set(result["after"])
    for tag, frame in enumerate(frames):
        fast = bool(takes.fast_kind(read(frame)))
        event(f"fast: {fast}")
        if mac(tag) not in before:  # the kernel dropped it before the ingress hook
            assert not fast, f"taken by the model, never reached ingress: {describe(frame)}"
            continue
        dropped = mac(tag) not in after
        assert dropped == fast, (f"dropped: {dropped}, the model: {fast}, for "
                                 f"{describe(frame)}\nconfiguration: {config}")

