"""Lab topologies: what an LVS administrator builds around a kernel IPVS director,
so that pyvs can be dropped in where the kernel's IPVS would be.

This module is the ``Lab`` base (namespaces, bookkeeping, teardown, real-server
processes, client helpers).  The labs built on it, one module each, override ``mode``
and ``_build()`` and hold their address plans: ``NatLab`` (natlab.py), ``DrLab``
(segment.py, with the client-segment base), ``TunLab`` (tunlab.py), and the HA and
bench labs (ha.py, benchtopo.py); kinds.py names the ones `pyvs lab up` builds.

Names: a lab is called ``pyvs-<6 hex>`` (or a name you choose) and every namespace it
creates is ``<lab name>-<role>``: ``-client``, ``-director``, ``-rs1`` ... ``-rsN``.
Runtime state (owner pid, server logs, ready files) lives in ``/run/pyvs-lab/<name>/``.

NAT lab addresses (see netns-lab/README.md for the drawing)::

    client      eth0   198.18.0.10+j/24    2001:db8::(10+j)/64    j = 0..clients-1
                routes 198.18.1.0/24, 198.18.2.0/24 via 198.18.0.1
                       2001:db8:1::/64, 2001:db8:2::/64 via 2001:db8::1
    director    cli0   198.18.0.1/24       2001:db8::1/64
                br0    198.18.2.1/24       2001:db8:2::1/64   (ports rs1..rsN)
                lo     198.18.1.1/32       2001:db8:1::1/128  (the VIP)
                ip_forward=1, ipv6 forwarding=1
    rs<i>       eth0   198.18.2.(10+i)/24  2001:db8:2::(10+i)/64  i = 1..N
                default via 198.18.2.1 / 2001:db8:2::1 (replies go back through the director)
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from . import netns as nx
from . import servers
from .netns import LabError

STATE_DIR = Path("/run/pyvs-lab")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
ROLE_RE = r"[a-z]+[0-9]*"  # no '-': "pyvs" never matches "pyvs-abc123-client"
REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_READY_TIMEOUT = 10.0
MAX_REAL_SERVERS = 100
MAX_CLIENTS = 200


def new_name() -> str:
    """A fresh unique lab name, ``pyvs-<6 hex>``."""
    return f"pyvs-{secrets.token_hex(3)}"


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise LabError(f"bad lab name {name!r} (letters, digits, '_.-', at most 32)")
    return name


def lab_namespaces(name: str) -> list[str]:
    """Existing namespaces belonging to lab ``name`` (``<name>-<role>``)."""
    pat = re.compile(rf"^{re.escape(check_name(name))}-{ROLE_RE}$")
    return [n for n in nx.list_ns() if pat.match(n)]


def down_by_name(name: str, state_root: Path = STATE_DIR) -> list[str]:
    """Tear down lab ``name``: kill every process inside its namespaces, delete them,
    remove its state directory.  Returns the namespaces removed.  Idempotent."""
    found = lab_namespaces(name)
    # director first (stops forwarding), then the rest
    found.sort(key=lambda n: (not n.endswith("-director"), n))
    errors = nx.delete_all(found)
    shutil.rmtree(state_root / name, ignore_errors=True)
    if errors:
        raise LabError("; ".join(errors))
    return found


def _proc_start(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def cleanup_stale(orphans: bool = False) -> list[str]:
    """Remove labs whose owning process is gone (a test run that was killed).
    Detached labs (``lab_up``) are never stale: remove those with ``lab_down``.
    With ``orphans=True`` also remove ``pyvs-<6 hex>-<role>`` namespaces that have no
    state directory at all (only safe when no other lab tooling runs)."""
    removed: list[str] = []
    known = set()
    if STATE_DIR.is_dir():
        for d in STATE_DIR.iterdir():
            known.add(d.name)
            try:
                st = json.loads((d / "lab.json").read_text())
            except (OSError, ValueError):
                st = {}
            if st.get("detached"):
                continue
            pid = st.get("owner_pid")
            if pid and _proc_start(pid) == st.get("owner_start"):
                continue  # owner still alive
            if not st and time.time() - d.stat().st_mtime < 60:
                continue  # being written right now
            removed += down_by_name(d.name)
    if orphans:
        pat = re.compile(rf"^(pyvs-[0-9a-f]{{6}})-{ROLE_RE}$")
        for lab in sorted({m.group(1) for n in nx.list_ns() if (m := pat.match(n))}):
            if lab not in known:
                removed += down_by_name(lab)
    return removed


def stop_process(p: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 3 s: a lab's helper processes never outlive it."""
    with contextlib.suppress(ProcessLookupError):
        p.terminate()
    try:
        p.wait(timeout=3)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout=3)


def url(addr: str, port: int = 80, path: str = "/") -> str:
    """``http://ADDR:PORT/PATH`` with IPv6 brackets."""
    host = f"[{addr}]" if ipaddress.ip_address(addr).version == 6 else addr
    return f"http://{host}:{port}{path}"


class Lab:
    """Common machinery of every lab: namespaces named ``<name>-<role>``, bookkeeping of
    what was created, teardown that never leaves anything behind, real-server processes
    and client helpers.  Subclasses set ``mode`` and implement ``_build()``."""

    mode = "base"
    multi_queue = False  # the lab builds its director links with ``queues`` queues

    def __init__(
        self,
        name: str | None = None,
        real_servers: int = 1,
        clients: int = 1,
        start_servers: bool = False,
        tcp_port: int = 80,
        udp_port: int = 53,
        detached: bool = False,
        state_root: Path = STATE_DIR,
        server_options: dict[str, list[str]] | None = None,
        queues: int = 1,
    ):
        """``state_root``: where the state directory goes (a rootless lab's is the
        user's, engine/lab/rootless.py); ``server_options``: extra arguments of the real
        servers (engine/lab/servers.py), by server name, ``"*"`` for every one;
        ``queues``: receive/transmit queues of the director's links (both ends of its
        veths, its bridge), for ``--workers`` with ``--io xdp`` (one AF_XDP socket per
        queue); labs that do not build such links refuse more than one."""
        if not 1 <= real_servers <= MAX_REAL_SERVERS:
            raise LabError(f"real_servers must be 1..{MAX_REAL_SERVERS}")
        if not 1 <= clients <= MAX_CLIENTS:
            raise LabError(f"clients must be 1..{MAX_CLIENTS}")
        self.name = check_name(name or new_name())
        self.n_real = real_servers
        self.n_clients = clients
        self.want_servers = start_servers
        self.tcp_port = tcp_port
        self.udp_port = udp_port
        self.detached = detached
        self.state_root = Path(state_root)
        self.server_options = dict(server_options or {})
        if not 1 <= queues <= 16:
            raise LabError("queues must be 1..16")
        if queues > 1 and not self.multi_queue:
            raise LabError(f"the {self.mode} lab has no multi-queue director links")
        self.queues = queues
        self.created: list[str] = []  # namespaces this object created, in order
        self.servers: dict[str, subprocess.Popen | int] = {}
        self.is_up = False
        self._owns_name = False
        self._atexit = None

    # ---------------------------------------------------------------- naming

    def ns(self, role: str) -> str:
        return f"{self.name}-{role}"

    @property
    def state_dir(self) -> Path:
        return self.state_root / self.name

    @property
    def client_addrs(self) -> list[str]:
        """The clients' IPv4 addresses: one client segment 198.18.0.0/24 in every lab."""
        return [f"198.18.0.{10 + j}" for j in range(self.n_clients)]

    @property
    def client_addrs6(self) -> list[str]:
        return [f"2001:db8::{10 + j}" for j in range(self.n_clients)]

    def _new_ns(self, role: str) -> str:
        name = self.ns(role)
        nx.create_ns(name)
        self.created.append(name)
        return name

    # ------------------------------------------------------------- lifecycle

    def up(self) -> Lab:
        """Build the lab (and start the servers if asked).  On any failure everything
        built so far is removed before the exception propagates."""
        if self.is_up:
            return self
        if not nx.is_root():
            raise LabError("building a lab needs root (network namespaces)")
        if lab_namespaces(self.name) or self.state_dir.exists():
            raise LabError(f"a lab named {self.name} already exists")
        self._owns_name = True
        try:
            self.state_dir.mkdir(parents=True)
            self._write_state()
            if not self.detached:
                self._atexit = self.down
                atexit.register(self._atexit)
            self._build()
            if self.want_servers:
                self.start_servers()
            self.is_up = True
            self._write_state()
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        """Remove everything: server processes, namespaces (and whatever runs in them),
        state.  Safe after a partial ``up()``, and safe to call twice."""
        if self._atexit is not None:
            atexit.unregister(self._atexit)
            self._atexit = None
        errors: list[str] = []
        try:
            self.stop_servers()
        except Exception as e:  # noqa: BLE001 - teardown must go on
            errors.append(f"servers: {e}")
        errors += nx.delete_all(reversed(self.created))
        self.created.clear()
        if self._owns_name:
            # anything with our name that we lost track of (e.g. interrupted create)
            try:
                down_by_name(self.name, self.state_root)
            except LabError as e:
                errors.append(str(e))
            self._owns_name = False
        self.is_up = False
        if errors:
            raise LabError("teardown: " + "; ".join(errors))

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    def _build(self) -> None:
        raise NotImplementedError

    def _write_state(self) -> None:
        st = {
            "name": self.name,
            "mode": self.mode,
            "owner_pid": None if self.detached else os.getpid(),
            "owner_start": None if self.detached else _proc_start(os.getpid()),
            "detached": self.detached,
            "namespaces": list(self.created),
            "created": time.time(),
        }
        if self.is_up:
            st["describe"] = self.describe()
        tmp = self.state_dir / "lab.json.tmp"
        tmp.write_text(json.dumps(st, indent=2))
        tmp.replace(self.state_dir / "lab.json")

    # ---------------------------------------------------------- real servers

    def real_server_list(self) -> list[dict]:
        """[{name, ns, addr, addr6}] - provided by subclasses."""
        raise NotImplementedError

    def start_servers(self, timeout: float = SERVER_READY_TIMEOUT) -> None:
        """Start ``python -m pyvs.engine.lab.servers`` in every real-server namespace and wait
        (bounded) until each one listens."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        ready = {}
        for rs in self.real_server_list():
            rf = self.state_dir / f"{rs['name']}.ready"
            rf.unlink(missing_ok=True)
            log = open(self.state_dir / f"{rs['name']}.log", "ab")  # noqa: SIM115
            argv = [
                sys.executable, "-m", "pyvs.engine.lab.servers", "--name", rs["name"],
                "--tcp-port", str(self.tcp_port), "--udp-port", str(self.udp_port),
                "--ready-file", str(rf),
                *self.server_options.get("*", ()), *self.server_options.get(rs["name"], ()),
            ]
            try:
                p = nx.popen(
                    rs["ns"], argv, env=env, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True, cwd=str(REPO_ROOT),
                )
            finally:
                log.close()
            self.servers[rs["name"]] = p
            ready[rs["name"]] = (p, rf)
        deadline = time.monotonic() + timeout
        for name, (p, rf) in ready.items():
            while not rf.exists():
                if p.poll() is not None:
                    log = self.server_log(name)
                    raise LabError(f"server {name} exited ({p.returncode}): {log}")
                if time.monotonic() > deadline:
                    raise LabError(f"server {name} not listening after {timeout}s")
                time.sleep(0.02)

    def server_log(self, name: str) -> str:
        try:
            return (self.state_dir / f"{name}.log").read_text()[-2000:]
        except OSError:
            return ""

    def stop_servers(self) -> None:
        for name, p in list(self.servers.items()):
            if isinstance(p, subprocess.Popen):
                stop_process(p)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGTERM)
            del self.servers[name]

    # ------------------------------------------------------------ processes

    def run(self, role: str, argv: list[str], **kw) -> subprocess.CompletedProcess:
        """Run a command in namespace ``<name>-<role>`` (bounded; see netns.run)."""
        return nx.run(self.ns(role), argv, **kw)

    def popen(self, role: str, argv: list[str], **kw) -> subprocess.Popen:
        return nx.popen(self.ns(role), argv, **kw)

    def mac(self, role: str, ifname: str) -> str:
        """The MAC address of an interface in one of the lab's namespaces."""
        r = self.run(role, ["cat", f"/sys/class/net/{ifname}/address"], check=True,
                     capture_output=True, text=True)
        return r.stdout.strip()

    extra_roles: tuple[str, ...] = ()  # namespaces besides client, director, rs<i>

    def describe(self) -> dict:
        """A JSON-able description: namespaces, addresses, servers (what `lab up` prints)."""
        rss = self.real_server_list()
        for rs in rss:
            p = self.servers.get(rs["name"])
            rs["tcp_port"] = self.tcp_port
            rs["udp_port"] = self.udp_port
            rs["pid"] = (p.pid if isinstance(p, subprocess.Popen) else p) if p else None
        namespaces = {role: self.ns(role) for role in self.extra_roles}
        namespaces.update(client=self.ns("client"), director=self.ns("director"),
                          real_servers=[rs["ns"] for rs in rss])
        return {
            "name": self.name,
            "mode": self.mode,
            "namespaces": namespaces,
            "client_addrs": self.client_addrs,
            "client_addrs6": self.client_addrs6,
            "vip": self.VIP,
            "vip6": self.VIP6,
            "real_servers": rss,
            "director": self._director_info(),
            **self._describe_extra(),
            "state_dir": str(self.state_dir),
        }

    def _director_info(self) -> dict:
        raise NotImplementedError

    def _describe_extra(self) -> dict:
        return {}

    # Client helpers: they need ``client_addrs``, ``client_addrs6``, ``VIP`` and a
    # ``client`` namespace, which every lab with clients has.

    # ------------------------------------------------------------------ client

    def _pick_client(self, dest: str, client_addr: str | None) -> str:
        if client_addr:
            return client_addr
        v6 = ipaddress.ip_address(dest).version == 6
        return (self.client_addrs6 if v6 else self.client_addrs)[0]

    def _curl_argv(self, target: str, client_addr: str | None, timeout: float, args) -> list:
        host = urlsplit(target).hostname or ""
        src = self._pick_client(host, client_addr)
        return [
            "curl", "-sS", "-g", "--noproxy", "*", "--interface", src,
            "--connect-timeout", str(min(timeout, 5)), "--max-time", str(timeout),
            *args, target,
        ]

    def curl(
        self, target: str, client_addr: str | None = None, timeout: float = 5,
        args: list[str] | tuple = (), binary: bool = False,
    ) -> str | bytes:
        """Fetch ``target`` (a URL) with curl in the client namespace, from
        ``client_addr`` (default: the first client address of the URL's family).
        Returns the body (str, or bytes with ``binary=True``).  Raises LabError on any
        curl failure, including its ``--max-time`` timeout."""
        argv = self._curl_argv(target, client_addr, timeout, args)
        r = self.run("client", argv, timeout=timeout + 5, capture_output=True, text=False)
        if r.returncode != 0:
            err = r.stderr.decode(errors="replace").strip()
            raise LabError(f"curl {target}: rc={r.returncode} {err}")
        return r.stdout if binary else r.stdout.decode(errors="replace")

    def fetch_sha256(
        self, target: str, client_addr: str | None = None, timeout: float = 60,
    ) -> tuple[str, int]:
        """GET ``target`` and hash the body as it streams (nothing held in memory).
        Returns (sha256 hex, byte count).  Compare with servers.pattern_sha256(n)."""
        argv = self._curl_argv(target, client_addr, timeout, ())
        h, n = hashlib.sha256(), 0
        with self.popen("client", argv, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE) as p:
            try:
                while chunk := p.stdout.read(1 << 16):
                    h.update(chunk)
                    n += len(chunk)
                p.wait(timeout=timeout + 5)
            except BaseException:
                p.kill()
                raise
            if p.returncode != 0:
                err = p.stderr.read().decode(errors="replace").strip()
                raise LabError(f"curl {target}: rc={p.returncode} {err}")
        return h.hexdigest(), n

    def post_pattern(
        self, target: str, nbytes: int, client_addr: str | None = None, timeout: float = 60,
    ) -> tuple[str, str]:
        """POST ``nbytes`` of the deterministic pattern to ``target`` (e.g. ``/sha256``).
        Returns (sha256 hex of what was sent, response body stripped)."""
        with tempfile.NamedTemporaryFile(prefix="pyvs-lab-", suffix=".bin") as f:
            sent = servers.write_pattern(f.name, nbytes)
            body = self.curl(target, client_addr, timeout,
                             args=["--data-binary", f"@{f.name}",
                                   "-H", "Content-Type: application/octet-stream"])
        return sent, body.strip()

    def udp_query(
        self, addr: str, port: int, payload: str | bytes = "ping",
        client_addr: str | None = None, sport: int | None = None, timeout: float = 2,
    ) -> str:
        """Send one datagram from the client namespace and return the reply text.
        Raises TimeoutError when no reply arrives within ``timeout``."""
        if isinstance(payload, bytes):
            payload = payload.decode()
        src = self._pick_client(addr, client_addr)
        argv = [
            sys.executable, "-m", "pyvs.engine.lab.client", "udp", addr, str(port), payload,
            "--bind", src, "--timeout", str(timeout),
        ]
        if sport:
            argv += ["--sport", str(sport)]
        env = dict(os.environ)
        r = self.run("client", argv, timeout=timeout + 10, capture_output=True, env=env)
        if r.returncode == 1 and "timeout" in r.stderr:
            raise TimeoutError(f"no UDP reply from {addr}:{port} within {timeout}s")
        if r.returncode != 0:
            raise LabError(f"udp query {addr}:{port}: rc={r.returncode} {r.stderr.strip()}")
        return r.stdout

    def url(self, addr: str | None = None, path: str = "/", port: int | None = None) -> str:
        """URL of ``addr`` (default: the VIP) on the lab's TCP port."""
        return url(addr or self.VIP, port or self.tcp_port, path)
