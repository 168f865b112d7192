"""Labs without root: the user nobody builds a lab with `pyvs lab up --rootless`, runs the
director in it (`pyvs lab exec NAME director -- pyvs run`), configures it with pyvsadm
and sends real TCP through it with `pyvs lab load`, from a virtual environment made
from Debian's python3 (tests/nobody.py).  NAT (IPv4 and IPv6: the NFQUEUE port sends
the rewritten packets itself, the kernel refusing them in verdicts there) and DR carry
real connections; TUN is refused with the way to grant /dev/net/tun, and works once
the device is made accessible to that user (in a private mount namespace, so the
machine's own device is left alone).  Every lab is removed, and nothing of it stays."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest
from nobody import NOBODY, as_nobody, can_switch, nobody_venv, popen_as_nobody

pytestmark = [pytest.mark.lab,
              pytest.mark.skipif(can_switch() is not None, reason=str(can_switch()))]

MODULES = "numpy, pyroute2"


@pytest.fixture(scope="module")
def venv():
    with nobody_venv(MODULES) as made:
        yield made


class NobodyLab:
    """One rootless lab driven through the `pyvs` command as nobody."""

    def __init__(self, top: Path, python: Path, mode: str, real_servers: int = 3,
                 clients: int = 3, prefix: list[str] | None = None) -> None:
        self.top, self.python = top, python
        self.name = f"rl{mode}-{secrets.token_hex(3)}"
        self.mode = mode
        self.director: subprocess.Popen | None = None
        up = self.pyvs("lab", "up", "--rootless", "--mode", mode, "--name", self.name,
                       "--real-servers", str(real_servers), "--clients", str(clients),
                       prefix=prefix)
        assert up.returncode == 0, up.stderr
        self.info = json.loads(up.stdout)

    def pyvs(self, *args: str, prefix: list[str] | None = None, timeout: float = 180
             ) -> subprocess.CompletedProcess:
        argv = [str(self.python), "-m", "pyvs.engine.cli", *args]
        if prefix:  # a wrapper that switches to nobody itself
            env = {"PATH": "/usr/bin:/bin", "HOME": str(self.top), "LANG": "C.UTF-8",
                   "TMPDIR": str(self.top / "tmp")}
            return subprocess.run([*prefix, *NOBODY, *argv], capture_output=True, text=True,
                                  env=env, timeout=timeout, cwd=self.top)
        return as_nobody(argv, self.top, timeout=timeout, cwd=self.top)

    def run(self, role: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return self.pyvs("lab", "exec", self.name, role, "--", *argv, timeout=timeout)

    def adm(self, *args: str) -> str:
        proc = self.run("director", str(self.python), "-m", "pyvs.engine.pyvsadm", *args)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def start_director(self) -> None:
        log = open(self.top / f"{self.name}.director.log", "wb")  # noqa: SIM115
        self.director = popen_as_nobody(
            [str(self.python), "-m", "pyvs.engine.cli", "lab", "exec", self.name, "director",
             "--", str(self.python), "-m", "pyvs.engine.cli", "run"],
            self.top, stdout=log, stderr=subprocess.STDOUT, cwd=self.top,
            start_new_session=True)
        log.close()
        deadline = time.monotonic() + 30
        while self.run("director", str(self.python), "-m", "pyvs.engine.pyvsadm",
                       "-Ln").returncode != 0:
            assert self.director.poll() is None, self.director_log()
            assert time.monotonic() < deadline, "pyvs run did not answer: " + self.director_log()
            time.sleep(0.2)

    def director_log(self) -> str:
        return (self.top / f"{self.name}.director.log").read_text(errors="replace")

    def load(self, *args: str) -> dict:
        proc = self.pyvs("lab", "load", self.name, "--json", *args)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return json.loads(proc.stdout)

    def down(self) -> None:
        proc = self.pyvs("lab", "down", self.name)
        assert proc.returncode == 0, proc.stderr
        if self.director is not None:
            self.director.wait(30)  # the keeper killed it with the namespace


def _state_root(top: Path) -> Path:
    return top / "tmp" / "pyvs-lab-65534"


def _pids_of_userns(inode: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/user").st_ino == inode:
                    out.append(int(entry))
            except OSError:
                pass
    return out


def _gone(lab: NobodyLab, keeper: dict) -> None:
    """Nothing of the lab is left: no process in its user namespace, no state."""
    assert not (_state_root(lab.top) / lab.name).exists()
    assert not (_state_root(lab.top) / f"{lab.name}.keeper.log").exists()
    assert _pids_of_userns(keeper["userns"]) == []


def _balance(lab: NobodyLab, vip: str, flag: str, requests: int, *load_args: str) -> dict:
    v6 = ":" in vip
    service = f"[{vip}]:80" if v6 else f"{vip}:80"
    lab.adm("-A", "-t", service, "-s", "rr")
    for rs in lab.info["real_servers"]:
        target = f"[{rs['addr6']}]:80" if v6 else f"{rs['addr']}:80"
        lab.adm("-a", "-t", service, "-r", target, flag)
    return lab.load("--requests", str(requests), *load_args)


def test_rootless_nat_lab_carries_real_tcp_as_nobody(venv):
    top, python = venv
    lab = NobodyLab(top, python, "nat")
    keeper = json.loads((_state_root(top) / lab.name / "keeper.json").read_text())
    try:
        assert lab.info["rootless"] is True
        assert lab.info["state_dir"] == str(_state_root(top) / lab.name)
        st = os.stat(_state_root(top))
        assert (st.st_uid, st.st_mode & 0o777) == (65534, 0o700)
        assert lab.run("director", "id", "-u").stdout.strip() == "0"  # root in its namespace
        lab.start_director()
        v4 = _balance(lab, lab.info["vip"], "-m", 60, "--concurrency", "4")
        assert v4["errors"] == {} and v4["ok"] == 60
        assert {s: v["requests"] for s, v in v4["servers"].items()} == {
            "rs1": 20, "rs2": 20, "rs3": 20}  # rr: every server the same share
        assert v4["imbalance"] == 1.0
        v6 = _balance(lab, lab.info["vip6"], "-m", 30, "--ipv6")
        assert v6["errors"] == {} and {v["requests"] for v in v6["servers"].values()} == {10}
        stats = lab.adm("-Ln", "--stats")
        assert "198.18.1.1:80" in stats and "2001:db8:1::1" in stats
        status = json.loads(lab.run("director", str(python), "-m", "pyvs.engine.cli",
                                    "status").stdout)
        assert status["ports"]["nfqueue"]["rewritten-packets"] == "stack"
        assert "send-error" not in status["drops"]
        log = lab.director_log()
        assert log.count("belongs to a user namespace") == 1, log  # said once, at start
    finally:
        lab.down()
    _gone(lab, keeper)


def test_rootless_dr_lab_carries_real_tcp_as_nobody(venv):
    top, python = venv
    lab = NobodyLab(top, python, "dr", real_servers=2, clients=2)
    keeper = json.loads((_state_root(top) / lab.name / "keeper.json").read_text())
    try:
        lab.start_director()
        out = _balance(lab, lab.info["vip"], "-g", 40)
        assert out["errors"] == {} and {v["requests"] for v in out["servers"].values()} == {20}
        conns = lab.adm("-Lnc")
        assert "TCP" in conns
    finally:
        lab.down()
    _gone(lab, keeper)


def test_rootless_tun_lab_needs_dev_net_tun_and_says_how_to_grant_it(venv):
    top, python = venv
    if os.stat("/dev/net/tun").st_mode & 0o006 == 0o006:
        pytest.skip("/dev/net/tun is open to every user on this machine")
    name = f"rltun-{secrets.token_hex(3)}"
    refused = as_nobody([str(python), "-m", "pyvs.engine.cli", "lab", "up", "--rootless",
                         "--mode", "tun", "--name", name], top, cwd=top)
    assert refused.returncode == 1
    assert "setfacl -m u:nobody:rw /dev/net/tun" in refused.stderr
    assert "Traceback" not in refused.stderr and len(refused.stderr.splitlines()) == 1
    assert not (_state_root(top) / name).exists()


GRANT_TUN = ("D=$(mktemp -d) && mount -t tmpfs -o mode=0755 tun \"$D\" && "
             "mknod -m 0666 \"$D/tun\" c 10 200 && mount --bind \"$D/tun\" /dev/net/tun && "
             "exec \"$@\"")


def test_rootless_tun_lab_with_an_accessible_tun_device(venv):
    """An administrator's grant, made only for this test's mount namespace: a 0666 node
    of the same device over /dev/net/tun, then `lab up` as nobody in it."""
    top, python = venv
    prefix = ["unshare", "--mount", "--propagation", "private", "sh", "-c", GRANT_TUN, "sh"]
    lab = NobodyLab(top, python, "tun", real_servers=2, clients=1, prefix=prefix)
    keeper = json.loads((_state_root(top) / lab.name / "keeper.json").read_text())
    try:
        assert lab.info["director"]["decapsulation"] == "pyvs realserver (pyvstun0)"
        lab.start_director()
        out = _balance(lab, lab.info["vip"], "-i", 20)
        assert out["errors"] == {} and {v["requests"] for v in out["servers"].values()} == {10}
    finally:
        lab.down()
    _gone(lab, keeper)


def test_a_killed_keeper_leaves_nothing_after_down(venv):
    """`lab down` also cleans up after a keeper killed with SIGKILL (the real servers
    outlive it in the user namespace until then)."""
    top, python = venv
    lab = NobodyLab(top, python, "nat", real_servers=1, clients=1)
    keeper = json.loads((_state_root(top) / lab.name / "keeper.json").read_text())
    os.kill(keeper["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{keeper['pid']}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    gone = lab.run("client", "true")
    assert gone.returncode == 1 and "keeper of lab" in gone.stderr
    assert _pids_of_userns(keeper["userns"])  # its servers still run
    lab.down()
    _gone(lab, keeper)
