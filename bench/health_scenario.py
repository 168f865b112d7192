"""Health-checking scenarios in a NAT lab: what the lab tests and the timeline share.

``HealthRun`` starts `pyvs run --keepalived FILE` in a lab's director namespace,
breaks and repairs real servers the ways the tests need (kill, link down, control
file modes of engine/lab/servers.py), streams requests from the client namespace
(engine/lab/stream.py) and reads back the outcomes and the director's transitions
(`pyvs status`).  Everything waits on conditions with a deadline; nothing sleeps as
synchronisation.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from hashlib import md5
from pathlib import Path

from pyvs.engine.lab import NatLab
from pyvs.engine.lab.netns import LabError
from pyvs.engine.runner import ROOT, DirectorProcess

VIP = NatLab.VIP
# the checker timing of the detection scenarios, and the bound on removal
DELAY_LOOP, CONNECT_TIMEOUT, RETRY, DELAY_BEFORE_RETRY = 1.0, 0.5, 1, 0.5
BOUND = DELAY_LOOP + RETRY * (CONNECT_TIMEOUT + DELAY_BEFORE_RETRY) + 1.0


def wait_for(cond: Callable[[], object], timeout: float, what: str, every: float = 0.05):
    """Poll ``cond`` until it returns something true; its value, or LabError."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def epoch(iso: str) -> float:
    return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@dataclass
class Outcome:
    t: float
    ok: bool
    server: str | None
    error: str | None
    seconds: float
    body: str | None = None


class Stream:
    """engine/lab/stream.py in the client namespace, writing to a file we read."""

    def __init__(self, lab: NatLab, url: str, path: Path, rate: float = 50.0,
                 duration: float = 60.0, timeout: float = 1.0) -> None:
        self.lab, self.path = lab, path
        path.unlink(missing_ok=True)
        self.proc = lab.popen("client", [
            sys.executable, "-m", "pyvs.engine.lab.stream", url, "--rate", str(rate),
            "--duration", str(duration), "--timeout", str(timeout),
            "--bind", lab.client_addrs[0], "--out", str(path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            cwd=str(ROOT))

    def records(self) -> list[Outcome]:
        try:
            lines = self.path.read_text().splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            try:
                out.append(Outcome(**json.loads(line)))
            except (ValueError, TypeError):
                continue  # a line being written
        return sorted(out, key=lambda o: o.t)

    def answered_by(self, server: str, after: float) -> bool:
        return any(o.ok and o.server == server and o.t > after for o in self.records())

    def stop(self) -> list[Outcome]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.records()


class HealthRun:
    """`pyvs run --keepalived CONF` in ``lab``'s director (a context manager)."""

    def __init__(self, lab: NatLab, conf: str, workdir: Path, kind: str = "keepalived",
                 io: tuple[str, ...] = (), sysctls: tuple[str, ...] = ()) -> None:
        self.lab, self.workdir, self.sysctls = lab, workdir, sysctls
        self.conf = workdir / ("keepalived.conf" if kind == "keepalived" else "pyvs.toml")
        self.conf.write_text(conf)
        option = "--keepalived" if kind == "keepalived" else "--config"
        self.director = DirectorProcess(lab.ns("director"), log_path=workdir / "pyvs.log",
                                        args=(option, str(self.conf), *io))

    def __enter__(self) -> HealthRun:
        self.director.start()
        try:
            for setting in self.sysctls:
                self.director.sysctl(setting)
        except BaseException:
            self.director.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.director.stop()

    # -- the director ---------------------------------------------------------------------
    def health(self) -> dict:
        return self.director.status()["health"]

    def server_state(self, server: str) -> dict | None:
        for vs in self.health()["virtual_servers"]:
            for rs in vs["real_servers"]:
                if rs["server"] == server:
                    return rs
        return None

    def transitions(self, server: str | None = None, state: str | None = None) -> list[dict]:
        return [t for t in self.health()["transitions"]
                if (server is None or t["real_server"] == server)
                and (state is None or t["state"] == state)]

    def wait_transition(self, server: str, state: str, after: float, timeout: float) -> dict:
        def found():
            for t in self.transitions(server, state):
                if epoch(t["time"]) >= after:
                    return t
            return None
        return wait_for(found, timeout, f"{server} {state}", every=0.05)

    def listing(self) -> str:
        return self.director.adm("-L", "-n").stdout

    def reload(self, conf: str | None = None) -> subprocess.CompletedProcess:
        if conf is not None:
            self.conf.write_text(conf)
        return self.lab.run("director", [sys.executable, "-m", "pyvs.engine.cli", "reload"],
                            capture_output=True, text=True, timeout=30)

    # -- real servers ---------------------------------------------------------------------
    def control(self, name: str, **modes: str) -> None:
        """Failure modes of the lab server ``name`` (engine/lab/servers.py)."""
        path = self.lab.state_dir / f"{name}.control"
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(f"{k}={v}\n" for k, v in modes.items()))
        os.replace(tmp, path)

    def kill_server(self, name: str) -> None:
        proc = self.lab.servers.pop(name)
        proc.kill()
        proc.wait(5)

    def start_server(self, name: str, *extra: str) -> None:
        """Start (again) the lab's server program in ``name``'s namespace."""
        ready = self.lab.state_dir / f"{name}.ready"
        ready.unlink(missing_ok=True)
        with open(self.lab.state_dir / f"{name}.log", "ab") as log:
            proc = self.lab.popen(name, [
                sys.executable, "-m", "pyvs.engine.lab.servers", "--name", name,
                "--tcp-port", str(self.lab.tcp_port), "--udp-port", str(self.lab.udp_port),
                "--ready-file", str(ready), *extra],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=str(ROOT))
        self.lab.servers[name] = proc
        wait_for(lambda: ready.exists() or proc.poll() is not None, 10, f"{name} listening")
        if proc.poll() is not None:
            raise LabError(f"server {name} exited: {self.lab.server_log(name)}")

    def link(self, name: str, up: bool) -> None:
        ns = self.lab.ns(name)
        self.lab.run(name, ["ip", "link", "set", NatLab.RS_IF, "up" if up else "down"],
                     check=True)
        if up:  # the IPv4 default route went away with the link (IPv6 is not restored)
            subprocess.run(["ip", "netns", "exec", ns, "ip", "route", "replace", "default",
                            "via", NatLab.DIR_SERVER], check=True, timeout=10,
                           capture_output=True)


def failure_window(records: list[Outcome], bad: Callable[[Outcome], bool]
                   ) -> tuple[int, float | None, float | None]:
    """(how many outcomes are bad, first and last bad send time)."""
    times = [o.t for o in records if bad(o)]
    return len(times), (min(times) if times else None), (max(times) if times else None)


def http_conf(lab: NatLab, digest: bool = False) -> str:
    """A NAT web farm on the lab's real servers, one HTTP_GET each."""
    servers = []
    for rs in lab.real_server_list():
        body = f"{rs['name']}\n".encode()
        dig = f"digest {md5(body).hexdigest()}" if digest else ""
        servers.append(f"""
    real_server {rs['addr']} 80 {{
        weight 1
        HTTP_GET {{
            url {{
                path /
                {dig}
            }}
            connect_timeout {CONNECT_TIMEOUT}
            retry {RETRY}
            delay_before_retry {DELAY_BEFORE_RETRY}
        }}
    }}""")
    return f"""
! a typical web farm: NAT, round robin, one HTTP check per real server
global_defs {{
    router_id LVS_LAB
}}
virtual_server {NatLab.VIP} 80 {{
    delay_loop {DELAY_LOOP}
    lb_algo rr
    lb_kind NAT
    protocol TCP
{''.join(servers)}
}}
"""
