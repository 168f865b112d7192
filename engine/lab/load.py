"""A bounded HTTP load generator for the labs, run in a lab's client namespace.

    python -m pyvs.engine.lab.load --url http://198.18.1.1/ --source 198.18.0.10 ...
        [--requests N] [--duration S] [--concurrency C] [--rate R] [--csv FILE] [--json]

Each request is one TCP connection (``Connection: close``), so each is scheduled by
the director anew, from one of the client addresses (``--source``, taken in turn: the
"clients" the director sees).  ``--concurrency`` requests are in flight at most; with
``--rate`` new requests start at that many per second (open loop: a request that
finds every worker busy starts late, and that is counted), without it each worker
starts the next as soon as the last ended (closed loop).  It stops after
``--requests`` or ``--duration``, whichever comes first; both are bounded.

The report: requests and errors per real server (the ``X-Server`` header the lab's
servers send), each server's share, response times (mean, p50, p99) with the servers'
queue wait and service time when they are paced (engine/lab/pace.py), and the
imbalance, max/mean of the requests per server over every server that answered or
was named with ``--server`` (1.0 is perfectly even).  ``--csv`` writes one row per
request.
"""

from __future__ import annotations

import argparse
import csv
import json
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

MAX_REQUESTS = 1_000_000
MAX_DURATION = 3600.0
MAX_CONCURRENCY = 1000
TIMEOUT = 10.0


@dataclass
class Result:
    start: float  # seconds since the run started
    source: str
    server: str  # "" when no answer
    status: int  # HTTP status, 0 on error
    response: float  # seconds from connect to the end of the response
    queue_wait: float | None
    service_time: float | None
    late: float  # seconds the request started after its planned time (open loop)
    error: str


def fetch(host: str, port: int, path: str, source: str, timeout: float = TIMEOUT
          ) -> tuple[int, dict[str, str], str]:
    """One HTTP/1.1 GET on a new connection from ``source``: (status, headers, error)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.bind((source, 0))
            sock.connect((host, port))
            hostname = f"[{host}]" if family == socket.AF_INET6 else host
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {hostname}\r\n"
                         "Connection: close\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        except OSError as err:
            return 0, {}, type(err).__name__ if not err.strerror else err.strerror
    head, _, _ = data.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return 0, {}, "bad response"
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, ""


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class LoadRun:
    """One bounded run; ``results`` in completion order."""

    def __init__(self, url: str, sources: list[str], requests: int, duration: float,
                 concurrency: int, rate: float | None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"--url {url}: an http:// URL with a host is needed")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.sources = sources
        self.requests = requests
        self.duration = duration
        self.concurrency = concurrency
        self.rate = rate
        self.results: list[Result] = []
        self._lock = threading.Lock()
        self._issued = 0
        self._t0 = 0.0

    def _next(self) -> tuple[int, float] | None:
        """The next request's number and planned start (run time), or None: done."""
        with self._lock:
            n = self._issued
            if n >= self.requests:
                return None
            planned = n / self.rate if self.rate else time.monotonic() - self._t0
            if planned >= self.duration:
                return None
            self._issued += 1
            return n, planned

    def _worker(self) -> None:
        while (job := self._next()) is not None:
            n, planned = job
            now = time.monotonic() - self._t0
            if planned > now:
                time.sleep(planned - now)
            began = time.monotonic()
            if began - self._t0 >= self.duration:
                return
            source = self.sources[n % len(self.sources)]
            status, headers, error = fetch(self.host, self.port, self.path, source)
            ended = time.monotonic()
            result = Result(start=began - self._t0, source=source,
                            server=headers.get("x-server", ""), status=status,
                            response=ended - began,
                            queue_wait=_float(headers.get("x-queue-wait")),
                            service_time=_float(headers.get("x-service-time")),
                            late=max(0.0, began - self._t0 - planned) if self.rate else 0.0,
                            error=error or ("" if 200 <= status < 400 else f"HTTP {status}"))
            with self._lock:
                self.results.append(result)

    def run(self) -> list[Result]:
        self._t0 = time.monotonic()
        threads = [threading.Thread(target=self._worker, daemon=True)
                   for _ in range(self.concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(self.duration + TIMEOUT + 5)
        return sorted(self.results, key=lambda r: r.start)


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def summarize(results: list[Result], servers: list[str] = ()) -> dict:
    """Per-server counts, shares and times; imbalance = max/mean of the counts."""
    names = sorted(set(servers) | {r.server for r in results if r.server},
                   key=lambda s: (len(s), s))
    ok = [r for r in results if not r.error]
    per = {}
    for name in names:
        mine = [r for r in ok if r.server == name]
        times = [r.response for r in mine]
        waits = [r.queue_wait for r in mine if r.queue_wait is not None]
        per[name] = {"requests": len(mine),
                     "share": round(len(mine) / len(ok), 4) if ok else 0.0,
                     "response_mean": round(sum(times) / len(times), 6) if times else None,
                     "response_p50": _round(_quantile(times, 0.5)),
                     "response_p99": _round(_quantile(times, 0.99)),
                     "queue_wait_mean": round(sum(waits) / len(waits), 6) if waits else None}
    counts = [v["requests"] for v in per.values()]
    mean = sum(counts) / len(counts) if counts else 0.0
    span = max((r.start + r.response for r in results), default=0.0)
    errors: dict[str, int] = {}
    for r in results:
        if r.error:
            errors[r.error] = errors.get(r.error, 0) + 1
    times = [r.response for r in ok]
    return {"requests": len(results), "ok": len(ok), "errors": errors,
            "seconds": round(span, 3),
            "rate": round(len(results) / span, 1) if span else 0.0,
            "late_p99": _round(_quantile([r.late for r in results], 0.99)),
            "response_p50": _round(_quantile(times, 0.5)),
            "response_p99": _round(_quantile(times, 0.99)),
            "imbalance": round(max(counts) / mean, 4) if mean else None,
            "servers": per}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def table(summary: dict) -> str:
    ms = lambda v: "-" if v is None else f"{v * 1000:.1f}"  # noqa: E731
    lines = [f"{'server':<8} {'requests':>8} {'share':>6} {'mean ms':>8} {'p50 ms':>7} "
             f"{'p99 ms':>7} {'queue ms':>8}"]
    for name, s in summary["servers"].items():
        lines.append(f"{name:<8} {s['requests']:>8} {s['share']:>6.3f} "
                     f"{ms(s['response_mean']):>8} {ms(s['response_p50']):>7} "
                     f"{ms(s['response_p99']):>7} {ms(s['queue_wait_mean']):>8}")
    errors = ", ".join(f"{k}: {v}" for k, v in summary["errors"].items()) or "none"
    lines.append(f"{summary['requests']} requests in {summary['seconds']} s "
                 f"({summary['rate']}/s), errors: {errors}, imbalance (max/mean) "
                 f"{summary['imbalance']}")
    return "\n".join(lines)


def write_csv(path: str, results: list[Result]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(Result.__dataclass_fields__))
        writer.writeheader()
        for r in results:
            writer.writerow({k: ("" if v is None else (round(v, 6) if isinstance(v, float)
                                                       else v))
                             for k, v in asdict(r).items()})


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--requests", type=int, default=None, metavar="N",
                   help=f"stop after N requests (1..{MAX_REQUESTS}; default 1000 unless "
                        "--duration)")
    p.add_argument("--duration", type=float, default=None, metavar="S",
                   help=f"stop after S seconds (at most {MAX_DURATION:g})")
    p.add_argument("--concurrency", type=int, default=8, metavar="C",
                   help=f"requests in flight at most (1..{MAX_CONCURRENCY}, default 8)")
    p.add_argument("--rate", type=float, default=None, metavar="R",
                   help="start R requests per second (open loop); default: as fast as "
                        "the concurrency allows")
    p.add_argument("--path", default="/", help="the path requested (default /)")
    p.add_argument("--csv", metavar="FILE", help="one row per request")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def bounds(args: argparse.Namespace) -> tuple[int, float]:
    """(requests, duration) from the options, checked; ValueError says what is wrong."""
    if args.requests is not None and not 1 <= args.requests <= MAX_REQUESTS:
        raise ValueError(f"--requests must be 1..{MAX_REQUESTS}, not {args.requests}")
    if args.duration is not None and not 0 < args.duration <= MAX_DURATION:
        raise ValueError(f"--duration must be above 0 and at most {MAX_DURATION:g}")
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        raise ValueError(f"--concurrency must be 1..{MAX_CONCURRENCY}, not {args.concurrency}")
    if args.rate is not None and args.rate <= 0:
        raise ValueError(f"--rate must be above 0, not {args.rate}")
    requests = args.requests if args.requests is not None else (
        MAX_REQUESTS if args.duration is not None else 1000)
    return requests, args.duration if args.duration is not None else MAX_DURATION


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pyvs.engine.lab.load", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--source", action="append", required=True, metavar="ADDR",
                   help="a client address to connect from (repeatable)")
    p.add_argument("--server", action="append", default=[], metavar="NAME",
                   help="a real server expected to answer (counted even with 0 answers)")
    add_arguments(p)
    a = p.parse_args(argv)
    try:
        requests, duration = bounds(a)
        run = LoadRun(a.url, a.source, requests, duration, a.concurrency, a.rate)
    except ValueError as err:
        p.exit(2, f"pyvs lab load: error: {err}\n")
    results = run.run()
    if a.csv:
        write_csv(a.csv, results)
    summary = summarize(results, a.server)
    print(json.dumps(summary, indent=2) if a.json else table(summary))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
