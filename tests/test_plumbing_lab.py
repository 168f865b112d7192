"""The NFQUEUE port's plumbing in a namespace of its own: install, sync, what a killed run
left (also the iptables chains of older versions), with real nft and iptables."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import json, sys
from pyvs.engine import plumbing
from pyvs.engine.io.nfqueue import NfQueuePort
from pyvs.engine.model import AF_INET, FWD_MASQ, DestSpec, ServiceSpec, pack_addr
from pyvs.engine.director import Director

d = Director(seed=0)
key = d.services.add_service(ServiceSpec(AF_INET, 6, pack_addr("198.18.1.1"), 80)).key
d.services.add_dest(key, DestSpec(pack_addr("198.18.2.11"), 80, fwd=FWD_MASQ))
p = plumbing.Plumbing()
out = {}
p.install()
p.install()  # again: the table is replaced, not doubled
p.sync(d.services.services.values())
out["synced"] = p.listing()
d.services.del_service(key, 0.0)
p.sync(d.services.services.values())
out["emptied"] = p.listing()
out["stale"] = NfQueuePort.clear_stale()
out["after"] = p.listing()
print(json.dumps(out))
"""


def test_install_sync_and_what_a_killed_run_left(lab_env):
    ns = f"pyvs-plumb-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    try:
        def run(*argv, **kw):
            return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True,
                                  text=True, timeout=60, **kw)

        for tool in ("iptables", "ip6tables"):  # what a pyvs of the iptables days left
            for hook, chain in (("PREROUTING", "PYVS-IN"), ("FORWARD", "PYVS-OUT")):
                assert run(tool, "-t", "mangle", "-N", chain).returncode == 0
                assert run(tool, "-t", "mangle", "-A", hook, "-j", chain).returncode == 0
        got = run(sys.executable, "-c", SCRIPT, cwd=ROOT, env=dict(os.environ))
        assert got.returncode == 0, got.stderr
        out = json.loads(got.stdout)
        assert out["synced"].count("queue num 20601 bypass") == 1
        assert "198.18.1.1 . tcp . 80" in out["synced"]
        assert "198.18.2.11 . tcp . 80" in out["synced"]
        assert "goto to_queue" not in out["emptied"] and "to_queue" in out["emptied"]
        assert out["stale"] == ["nftables table inet pyvs", "iptables mangle chain PYVS-IN",
                                "iptables mangle chain PYVS-OUT",
                                "ip6tables mangle chain PYVS-IN",
                                "ip6tables mangle chain PYVS-OUT"]
        assert out["after"] == ""
        for tool in ("iptables", "ip6tables"):
            assert "PYVS" not in run(tool, "-t", "mangle", "-S").stdout
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True, timeout=30)
