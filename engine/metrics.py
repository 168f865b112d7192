"""`pyvs run --metrics ADDR:PORT`: Prometheus metrics, from a thread, off the packet path.

The director runs in one thread and its counters are plain Python objects, so the
scrape never reads them: on its tick, at most once per second (and on the tick after
any change to the service table) the daemon publishes a ``Snapshot`` -- a few tuples
of ints and strings copied out of the counters pyvs already keeps (the ones
`pyvsadm -Ln --stats / --rate`, `pyvs status` print).  The HTTP server
(prometheus_client's WSGI app in its threading server) builds metric families from the
latest snapshot only and keeps the formatted answer until the next one: a scrape costs
the director nothing but the GIL for as long as it formats, at most once per snapshot,
whatever the traffic and however often it is scraped, and never walks the connection
table.

The IPVS families carry node_exporter's names and labels (collector/ipvs_linux.go,
which reads /proc/net/ip_vs_stats and /proc/net/ip_vs, i.e. ip_vs_stats_show and
ip_vs_info_seq_show): ``proto`` is the kernel's ip_vs_proto_name ("TCP", "UDP",
"SCTP") or "FWM" for a fwmark service, whose ``local_address`` is "" and
``local_port`` "0" and whose ``local_mark`` is the mark as the kernel prints it
("%08X"); addresses are written as Go's net.IP.String() writes them.  So a dashboard
built on node_exporter's IPVS collector works unchanged.  pyvs's own are ``pyvs_*``.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from pyvs.engine.model import AF_INET6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP

PUBLISH_PERIOD = 1.0  # seconds between snapshots while nothing changes
DEFAULT_ADDR = "127.0.0.1"

STATS = ("connections", "incoming_packets", "outgoing_packets", "incoming_bytes",
         "outgoing_bytes")  # Stats.as_tuple() order, node_exporter's names
RATES = STATS  # Estimator.rates() has the same order: cps inpps outpps inbps outbps
BACKEND_LABELS = ("local_address", "local_port", "remote_address", "remote_port", "proto",
                  "local_mark")
SERVICE_LABELS = ("local_address", "local_port", "proto", "local_mark")

# what each port's status() calls what (engine/io/*.py): frames in, frames out, and
# frames lost because pyvs (or a ring it feeds) was behind
RECEIVED_KEYS = ("packets", "frames")
TRANSMITTED_KEYS = ("tx-sent",)
OVERLOAD_KEYS = ("overruns", "shed", "tx-full", "tx-errors")
XSK_OVERLOAD_KEYS = ("rx_dropped", "rx_ring_full", "rx_fill_ring_empty_descs")


# -- listen address ---------------------------------------------------------------------------
def parse_listen(text: str) -> tuple[str, int]:
    """``PORT``, ``:PORT``, ``ADDR:PORT`` or ``[V6ADDR]:PORT`` -> (address, port); no
    address means 127.0.0.1 (metrics are not for the world unless asked).  Raises
    ValueError saying what is wrong."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("write an IPv6 address in brackets, e.g. [::1]:9100")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"port {port_text!r} is not a number (ADDR:PORT, :PORT or "
                         "PORT)") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be in 1..65535, not {port}")
    if not host:
        return DEFAULT_ADDR, port
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    return host, port


# -- node_exporter's label values ------------------------------------------------------------
def go_ip(addr: bytes) -> str:
    """An address as Go's net.IP.String() writes it (what node_exporter's labels hold):
    dotted quad for IPv4 and IPv4-mapped IPv6, RFC 5952 text otherwise."""
    ip = ipaddress.ip_address(addr)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _dest_addr(af: int, addr: bytes) -> bytes:
    return addr + bytes(12) if af == AF_INET6 and len(addr) == 4 else addr


def service_labels(svc) -> tuple[str, str, str, str]:
    """(local_address, local_port, proto, local_mark) of a service, as node_exporter
    parses its /proc/net/ip_vs line."""
    if svc.fwmark:
        return "", "0", "FWM", f"{svc.fwmark & 0xFFFFFFFF:08X}"
    proto = {IPPROTO_TCP: "TCP", IPPROTO_UDP: "UDP", IPPROTO_SCTP: "SCTP"}.get(
        svc.protocol, "?")
    return go_ip(_dest_addr(svc.af, svc.addr)), str(svc.port), proto, ""


# -- the snapshot -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ServiceRow:
    labels: tuple[str, str, str, str]  # SERVICE_LABELS
    scheduler: str
    stats: tuple[int, int, int, int, int]
    rates: tuple[int, int, int, int, int]
    decisions: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class BackendRow:
    labels: tuple[str, str, str, str, str, str]  # BACKEND_LABELS
    active: int
    inactive: int
    persistent: int
    weight: int
    stats: tuple[int, int, int, int, int]
    rates: tuple[int, int, int, int, int]


@dataclass(frozen=True)
class Snapshot:
    """Plain values copied on the director's thread; never changed once published."""

    taken: float  # time.time()
    total: tuple[int, int, int, int, int]
    services: tuple[ServiceRow, ...]
    backends: tuple[BackendRow, ...]
    drops: tuple[tuple[str, int], ...]
    entries: int
    limit: int
    defense: tuple[tuple[str, int], ...]
    ports: tuple[tuple[str, str, str, int], ...]  # (port, family, reason, value)
    health_up: tuple[tuple[str, str, bool], ...] = ()
    health_transitions: tuple[tuple[str, str, str, int], ...] = field(default=())


def _port_rows(name: str, status: dict) -> list[tuple[str, str, str, int]]:
    rows = []
    for key in RECEIVED_KEYS:
        if isinstance(status.get(key), int):
            rows.append((name, "received", "", status[key]))
            break
    for key in TRANSMITTED_KEYS:
        if isinstance(status.get(key), int):
            rows.append((name, "transmitted", "", status[key]))
    for key in OVERLOAD_KEYS:
        if isinstance(status.get(key), int):
            rows.append((name, "overload", key, status[key]))
    sockets = status.get("sockets")
    if isinstance(sockets, dict):  # AF_XDP: the kernel's XDP_STATISTICS per socket
        for key in XSK_OVERLOAD_KEYS:
            rows.append((name, "overload", key.replace("_", "-"),
                         sum(int(s.get(key, 0)) for s in sockets.values())))
    return rows


def take_snapshot(director, ports=(), health=None) -> Snapshot:
    """Copy what the metrics show out of a director (its thread only): the services and
    destinations as `pyvsadm -Ln --stats/--rate` list them, the drop and defense
    counters and table size of `pyvs status`, each port's status(), and with a health
    checker its real servers' states and transitions."""
    services, backends = [], []
    rates = director.rates
    for svc in list(director.services.services.values()):
        slabels = service_labels(svc)
        services.append(ServiceRow(slabels, svc.sched_name, svc.stats.as_tuple(),
                                   rates(svc.stats), tuple(svc.sched_decisions.items())))
        local_address, local_port, proto, local_mark = slabels
        for d in list(svc.destinations):
            backends.append(BackendRow(
                (local_address, local_port, go_ip(_dest_addr(d.af, d.addr)), str(d.port),
                 proto, local_mark),
                d.activeconns, d.inactconns, d.persistconns, d.weight, d.stats.as_tuple(),
                rates(d.stats)))
    port_rows = []
    for port in ports:
        port_rows += _port_rows(port.name, port.status())
    defense = director.defense
    up, transitions = (), ()
    if health is not None:
        up = tuple(health.server_states())
        transitions = tuple((vs, rs, to, n) for (vs, rs, to), n in health.transitions.items())
    return Snapshot(
        taken=time.time(), total=director.total.as_tuple(), services=tuple(services),
        backends=tuple(backends), drops=tuple(dict(director.drops).items()),
        entries=len(director.conntable), limit=defense.limit,
        defense=tuple(dict(defense.counters).items()), ports=tuple(port_rows),
        health_up=up, health_transitions=transitions)


# -- the collector ----------------------------------------------------------------------------
class PyvsCollector(Collector):
    """Metric families built on scrape from the latest published snapshot."""

    def __init__(self, latest: Callable[[], Snapshot | None]) -> None:
        self.latest = latest

    def describe(self) -> list[Metric]:
        return []  # families depend on the snapshot: no describe-time collect

    def collect(self) -> Iterator[Metric]:
        snap = self.latest()
        if snap is None:
            return
        yield from self._ipvs(snap)
        yield from self._pyvs(snap)

    @staticmethod
    def _ipvs(snap: Snapshot) -> Iterator[Metric]:
        """node_exporter's ipvs collector, name for name and label for label."""
        helps = ("The total number of connections made.",
                 "The total number of incoming packets.",
                 "The total number of outgoing packets.",
                 "The total amount of incoming data.",
                 "The total amount of outgoing data.")
        for name, text, value in zip(STATS, helps, snap.total, strict=True):
            yield CounterMetricFamily(f"node_ipvs_{name}", text, value=value)
        sums: dict[tuple[str, ...], list[int]] = {}
        for b in snap.backends:  # summed by label set, as node_exporter does
            acc = sums.setdefault(b.labels, [0, 0, 0])
            acc[0] += b.active
            acc[1] += b.inactive
            acc[2] += b.weight
        families = [
            GaugeMetricFamily("node_ipvs_backend_connections_active",
                              "The current active connections by local and remote address.",
                              labels=BACKEND_LABELS),
            GaugeMetricFamily("node_ipvs_backend_connections_inactive",
                              "The current inactive connections by local and remote address.",
                              labels=BACKEND_LABELS),
            GaugeMetricFamily("node_ipvs_backend_weight",
                              "The current backend weight by local and remote address.",
                              labels=BACKEND_LABELS)]
        for labels, values in sums.items():
            for fam, v in zip(families, values, strict=True):
                fam.add_metric(labels, v)
        yield from families

    @staticmethod
    def _pyvs(snap: Snapshot) -> Iterator[Metric]:
        svc_stats = [CounterMetricFamily(f"pyvs_service_{n}", f"Service {n.replace('_', ' ')} "
                                         "(pyvsadm -Ln --stats).", labels=SERVICE_LABELS)
                     for n in STATS]
        svc_rates = [GaugeMetricFamily(f"pyvs_service_{n}_per_second",
                                       f"Service {n.replace('_', ' ')} per second, the "
                                       "kernel's 2 s estimator (pyvsadm -Ln --rate).",
                                       labels=SERVICE_LABELS) for n in RATES]
        decisions = CounterMetricFamily(
            "pyvs_scheduler_decisions", "Scheduler calls for new connections, by outcome.",
            labels=(*SERVICE_LABELS, "scheduler", "outcome"))
        for s in snap.services:
            for fam, v in zip(svc_stats, s.stats, strict=True):
                fam.add_metric(s.labels, v)
            for fam, v in zip(svc_rates, s.rates, strict=True):
                fam.add_metric(s.labels, v)
            for outcome, n in s.decisions:
                decisions.add_metric((*s.labels, s.scheduler, outcome), n)
        yield from svc_stats
        yield from svc_rates
        yield decisions

        be_stats = [CounterMetricFamily(f"pyvs_backend_{n}", f"Real server {n.replace('_', ' ')}"
                                        " (pyvsadm -Ln --stats).", labels=BACKEND_LABELS)
                    for n in STATS]
        be_rates = [GaugeMetricFamily(f"pyvs_backend_{n}_per_second",
                                      f"Real server {n.replace('_', ' ')} per second "
                                      "(pyvsadm -Ln --rate).", labels=BACKEND_LABELS)
                    for n in RATES]
        persistent = GaugeMetricFamily("pyvs_backend_connections_persistent",
                                       "Persistence templates pointing at the real server.",
                                       labels=BACKEND_LABELS)
        for b in snap.backends:
            for fam, v in zip(be_stats, b.stats, strict=True):
                fam.add_metric(b.labels, v)
            for fam, v in zip(be_rates, b.rates, strict=True):
                fam.add_metric(b.labels, v)
            persistent.add_metric(b.labels, b.persistent)
        yield from be_stats
        yield from be_rates
        yield persistent

        drops = CounterMetricFamily("pyvs_drops", "Packets pyvs dropped, by reason.",
                                    labels=("reason",))
        for reason, n in snap.drops:
            drops.add_metric((reason,), n)
        yield drops
        yield GaugeMetricFamily("pyvs_connection_table_entries",
                                "Connection table entries, templates included.",
                                value=snap.entries)
        yield GaugeMetricFamily("pyvs_connection_table_limit",
                                "Most entries the table holds (--conn-limit); 0: no bound.",
                                value=snap.limit)
        defense = CounterMetricFamily("pyvs_defense_events",
                                      "Flood-defense events (pyvs status: defense).",
                                      labels=("event",))
        for event, n in snap.defense:
            defense.add_metric((event,), n)
        yield defense

        received = CounterMetricFamily("pyvs_port_received_packets",
                                       "Packets a port took from the kernel.", labels=("port",))
        sent = CounterMetricFamily("pyvs_port_transmitted_packets",
                                   "Frames a fast port sent itself.", labels=("port",))
        overload = CounterMetricFamily("pyvs_port_overload_packets",
                                       "Packets lost because pyvs or its queue was behind, by "
                                       "port and reason.", labels=("port", "reason"))
        target = {"received": received, "transmitted": sent, "overload": overload}
        for port, family, reason, n in snap.ports:
            target[family].add_metric((port, reason) if family == "overload" else (port,), n)
        yield from (received, sent, overload)

        if snap.health_up or snap.health_transitions:
            up = GaugeMetricFamily("pyvs_health_real_server_up",
                                   "1 while the health checks hold the real server up.",
                                   labels=("virtual_server", "real_server"))
            for vs, rs, alive in snap.health_up:
                up.add_metric((vs, rs), 1 if alive else 0)
            yield up
            moves = CounterMetricFamily("pyvs_health_transitions",
                                        "Real server state changes decided by the checks.",
                                        labels=("virtual_server", "real_server", "state"))
            for vs, rs, to, n in snap.health_transitions:
                moves.add_metric((vs, rs, to), n)
            yield moves


# -- the exporter -----------------------------------------------------------------------------
class MetricsExporter:
    """The HTTP listener and the snapshot it serves.  ``start()`` binds (before the
    director starts, so a taken port refuses the run); ``tick(daemon)`` on every
    daemon tick publishes when due."""

    def __init__(self, addr: str, port: int) -> None:
        self.addr, self.port = addr, port
        self.snapshot: Snapshot | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(PyvsCollector(lambda: self.snapshot))
        self._next = 0.0
        self._generation = -1
        self._server = None
        self._thread: threading.Thread | None = None
        self._app = None
        self._lock = threading.Lock()
        self._cache: dict[tuple, tuple] = {}
        self._cached_for: Snapshot | None = None

    @property
    def where(self) -> str:
        return f"[{self.addr}]:{self.port}" if ":" in self.addr else f"{self.addr}:{self.port}"

    def start(self) -> None:
        """Listen; RuntimeError with one line if the address cannot be had."""
        import socket
        from wsgiref.simple_server import WSGIRequestHandler, make_server

        from prometheus_client import ProcessCollector
        from prometheus_client.exposition import ThreadingWSGIServer, make_wsgi_app

        class Server(ThreadingWSGIServer):
            address_family = socket.AF_INET6 if ":" in self.addr else socket.AF_INET

        class Quiet(WSGIRequestHandler):
            def log_message(self, format, *args):  # noqa: A002 - no line per scrape
                pass

        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, memory, fds
        self._app = make_wsgi_app(self.registry)
        try:
            self._server = make_server(self.addr, self.port, self.serve, Server,
                                       handler_class=Quiet)
        except OSError as err:
            raise RuntimeError(f"--metrics {self.where}: cannot listen: "
                               f"{err.strerror or err}") from None
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="pyvs-metrics", daemon=True)
        self._thread.start()

    def serve(self, environ: dict, start_response) -> list[bytes]:
        """prometheus_client's WSGI app (content negotiation, gzip), its answer kept
        until the next snapshot: formatting costs about 10 us per sample, so a scraper
        polling faster than PUBLISH_PERIOD pays it once per snapshot, and concurrent
        scrapes format one at a time (the director's thread shares the GIL with them)."""
        key = tuple(environ.get(k, "") for k in (
            "PATH_INFO", "QUERY_STRING", "HTTP_ACCEPT", "HTTP_ACCEPT_ENCODING"))
        with self._lock:
            snap = self.snapshot
            if self._cached_for is not snap:
                self._cache, self._cached_for = {}, snap
            answer = self._cache.get(key)
            if answer is None:
                got: list = []
                body = b"".join(self._app(environ, lambda status, headers, exc=None:
                                          got.append((status, headers))))
                answer = (got[0][0], got[0][1], body)
                if len(self._cache) < 8:
                    self._cache[key] = answer
        start_response(answer[0], answer[1])
        return [answer[2]]

    def tick(self, daemon) -> None:
        """Publish a new snapshot once per PUBLISH_PERIOD, or now if the service table
        changed since the last one."""
        now = time.monotonic()
        generation = daemon.director.services.generation
        if now < self._next and generation == self._generation:
            return
        self.publish(daemon)
        self._next, self._generation = now + PUBLISH_PERIOD, generation

    def publish(self, daemon) -> None:
        self.snapshot = take_snapshot(daemon.director, daemon.ports, daemon.health)

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
