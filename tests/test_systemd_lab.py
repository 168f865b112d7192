"""contrib/pyvs@.service run as systemd would run it, in a lab namespace: its ExecStart
with %i and ${PYVS_CONFIG} expanded, a notification socket the test binds in place of
systemd's ($NOTIFY_SOCKET), READY=1, traffic, ExecReload applying a changed --config
while an established connection carries on, and a clean stop on SIGTERM."""

from __future__ import annotations

import json
import re
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from waiting import wait_for

from pyvs.engine.lab import NatLab

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "contrib" / "pyvs@.service"
VENV_PYVS = Path(sys.executable).parent / "pyvs"


def unit_service(path: Path) -> dict[str, list[str]]:
    """[Service] settings: key -> values in order."""
    out: dict[str, list[str]] = {}
    section = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def expand(command: str, instance: str, env: dict[str, str], mainpid: int | None = None,
           ) -> list[str]:
    """systemd.service(5) "Command lines": specifiers (%i, %%), then ${VAR} as one word
    and $VAR split at spaces, from the unit's Environment= (and $MAINPID)."""
    command = command.replace("%%", "\0").replace("%i", instance).replace("\0", "%")
    env = {**env, **({"MAINPID": str(mainpid)} if mainpid is not None else {})}
    argv = []
    for word in shlex.split(command):
        whole = re.fullmatch(r"\$\{(\w+)\}|\$(\w+)", word)
        if whole:
            value = env[whole.group(1) or whole.group(2)]
            argv += [value] if whole.group(1) else value.split()
        else:
            argv.append(word)
    return argv


def installed(argv: list[str]) -> list[str]:
    """The unit names /usr/local/bin/pyvs; this checkout's pyvs is the venv's."""
    return [str(VENV_PYVS) if a == "/usr/local/bin/pyvs" else a for a in argv]


def toml(weights: dict[int, int]) -> str:
    return f"""
[[virtual_server]]
address = "{NatLab.VIP}"
port = 80
delay_loop = 0.5
lb_algo = "wrr"
lb_kind = "NAT"
""" + "".join(f"""
  [[virtual_server.real_server]]
  address = "198.18.2.{10 + i}"
  port = 80
  weight = {w}
    [[virtual_server.real_server.TCP_CHECK]]
    connect_timeout = 0.5
""" for i, w in weights.items())


KEEPALIVE = """
import http.client, sys
c = http.client.HTTPConnection(sys.argv[1], 80, timeout=10, source_address=(sys.argv[2], 0))
for _ in range(2):
    c.request("GET", "/")
    print(c.getresponse().read().decode().strip(), c.sock.getsockname()[1], flush=True)
    sys.stdin.readline()
"""


def log_events(tmp_path: Path) -> list[dict]:
    """The director's and its checker's JSON lines (PYVS_LOG_FORMAT reaches both)."""
    return [json.loads(line) for line in (tmp_path / "pyvs.log").read_text().splitlines()
            if line.startswith("{")]


def listing(lab) -> str:
    return lab.run("director", [sys.executable, "-m", "pyvs.engine.pyvsadm", "-L", "-n"],
                   capture_output=True, text=True, timeout=10).stdout


def test_the_template_unit_starts_notifies_reloads_without_a_drop_and_stops(
        nat_lab_factory, tmp_path):
    lab = nat_lab_factory(real_servers=2, clients=1)
    ns = lab.ns("director")
    settings = unit_service(UNIT)
    assert settings["Type"] == ["notify"]
    env = dict(e.split("=", 1) for e in settings["Environment"])
    assert env["PYVS_CONFIG"] == "/etc/pyvs/%i.toml"
    config = tmp_path / f"{ns}.toml"
    env["PYVS_CONFIG"] = str(config)  # a drop-in's Environment=PYVS_CONFIG=...
    config.write_text(toml({1: 1}))
    start = installed(expand(settings["ExecStart"][0], ns, env))
    assert start[:4] == ["/usr/sbin/ip", "netns", "exec", ns]
    assert start[5:] == ["run", "--config", str(config)]

    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(20)
    log = open(tmp_path / "pyvs.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(start, stdout=log, stderr=subprocess.STDOUT,
                            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                 "NOTIFY_SOCKET": str(tmp_path / "notify"),
                                 "PYVS_LOG_FORMAT": "json"},
                            start_new_session=True)
    client = None
    try:
        assert notify.recv(4096).decode().splitlines()[0] == "READY=1"
        wait_for(lambda: listing(lab), lambda s: "198.18.2.11:80" in s, timeout=10,
                 what="the configured real server")
        assert lab.curl(lab.url()).strip() == "rs1"
        client = lab.popen("client", [sys.executable, "-c", KEEPALIVE, NatLab.VIP,
                                      lab.client_addrs[0]],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        first = client.stdout.readline().split()
        assert first[0] == "rs1"

        config.write_text(toml({1: 2, 2: 1}))  # rs1 re-weighted, rs2 added
        reload = expand(settings["ExecReload"][0], ns, env, mainpid=proc.pid)
        assert reload == ["/bin/kill", "-HUP", str(proc.pid)]
        subprocess.run(reload, check=True, timeout=10)
        assert notify.recv(4096).decode().startswith("RELOADING=1\nMONOTONIC_USEC=")
        assert notify.recv(4096).decode().startswith("READY=1")
        table = listing(lab)
        assert re.search(r"198\.18\.2\.11:80\s+Masq\s+2", table), table
        assert "198.18.2.12:80" in table

        client.stdin.write("\n")
        client.stdin.flush()
        second = client.stdout.readline().split()
        assert second == first  # the same server, on the same connection (source port)
        client.stdin.write("\n")
        client.stdin.flush()
        assert client.wait(10) == 0
        answers = {lab.curl(lab.url()).strip() for _ in range(6)}
        assert answers == {"rs1", "rs2"}

        lab.run("rs2", ["ip", "link", "set", "eth0", "down"], check=True, timeout=10)
        down = wait_for(lambda: [e for e in log_events(tmp_path)
                                 if e["event"] == "realserver-down"], timeout=20,
                        interval=0.2, what="the health checker's down event")
        assert down[0]["fields"]["real_server"] == "198.18.2.12:80"
        assert down[0]["level"] == "warning"

        proc.send_signal(signal.SIGTERM)  # systemctl stop (KillSignal=SIGTERM)
        assert proc.wait(20) == 0
        assert notify.recv(4096) == b"STOPPING=1"
        gone = lab.run("director", [sys.executable, "-m", "pyvs.engine.pyvsadm", "-L"],
                       capture_output=True, text=True, timeout=10)
        assert "no pyvs director runs" in gone.stderr
        events = log_events(tmp_path)
        names = [e["event"] for e in events]
        assert names.index("start") < names.index("reload") < names.index("stop")
        reload_event = next(e for e in events if e["event"] == "reload")
        assert reload_event["fields"]["changes"] == {"-a": 1, "-e": 1}
    finally:
        if client is not None and client.poll() is None:
            client.kill()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        notify.close()
        log.close()
