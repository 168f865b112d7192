"""Flow lists as CSV or JSON: a Workload written out, or one brought from elsewhere.

One flow per row (CSV with this header, or JSON ``{"flows": [{...}, ...]}`` or a bare
list of such objects)::

    start,duration,client,sport,proto,vip,vport,req_bytes,resp_bytes
    0.000125,0.0521,198.19.3.7,40121,tcp,198.18.1.1,80,300,18211

``start`` and ``duration`` in seconds, ``client``/``vip`` IPv4 addresses, ``proto``
tcp or udp.  Every distinct (proto, vip, vport) becomes a service.  ``sport`` may be
left out (ports are then given per client from the ephemeral range, as the synthetic
generator does), as may the byte counts (0).
"""

from __future__ import annotations

import csv
import ipaddress
import json
from pathlib import Path

import numpy as np

from pyvs.engine.sim.workload import ServiceDef, Workload, WorkloadError, ephemeral_ports

COLUMNS = ("start", "duration", "client", "sport", "proto", "vip", "vport", "req_bytes",
           "resp_bytes")
REQUIRED = ("start", "duration", "client", "proto", "vip", "vport")


def _rows_to_workload(rows: list[dict], where: str) -> Workload:
    if not rows:
        raise WorkloadError(f"{where}: no flows")
    missing = [c for c in REQUIRED if c not in rows[0]]
    if missing:
        raise WorkloadError(f"{where}: missing columns {', '.join(missing)} "
                            f"(expected {','.join(COLUMNS)})")
    services: dict[tuple[str, str, int], int] = {}
    n = len(rows)
    start = np.empty(n)
    duration = np.empty(n)
    caddr = np.empty(n, dtype=np.uint32)
    sport = np.zeros(n, dtype=np.int32)
    service = np.empty(n, dtype=np.int16)
    req = np.zeros(n, dtype=np.int64)
    resp = np.zeros(n, dtype=np.int64)
    has_ports = "sport" in rows[0] and all(str(r.get("sport", "")).strip() for r in rows)
    for k, row in enumerate(rows):
        try:
            start[k] = float(row["start"])
            duration[k] = float(row["duration"])
            caddr[k] = int(ipaddress.IPv4Address(str(row["client"]).strip()))
            key = (str(row["proto"]).strip().lower(), str(row["vip"]).strip(),
                   int(row["vport"]))
            if key not in services:
                services[key] = len(services)
                ServiceDef(key[1], key[2], key[0])  # validates
            service[k] = services[key]
            if has_ports:
                sport[k] = int(row["sport"])
            req[k] = int(float(row.get("req_bytes") or 0))
            resp[k] = int(float(row.get("resp_bytes") or 0))
        except (ValueError, KeyError, TypeError) as err:
            raise WorkloadError(f"{where}: flow {k + 1}: {err}") from None
        except WorkloadError as err:
            raise WorkloadError(f"{where}: flow {k + 1}: {err}") from None
    if np.any(duration < 0) or np.any(start < 0):
        raise WorkloadError(f"{where}: start and duration must be >= 0")
    if len(services) > 32767:
        raise WorkloadError(f"{where}: too many services")
    if not has_ports:
        index = np.unique(caddr, return_inverse=True)[1]
        sport = ephemeral_ports(np.random.default_rng(0), index, int(index.max()) + 1)
    defs = [ServiceDef(vip, port, proto) for (proto, vip, port) in services]
    return Workload(start, duration, req, resp, caddr, sport, service, defs,
                    {"kind": "flows", "file": str(where), "flows": n})


def load(path: str | Path) -> Workload:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise WorkloadError(f"cannot read {path}: {err}") from None
    if path.suffix.lower() == ".json" or text.lstrip()[:1] in "[{":
        try:
            data = json.loads(text)
        except ValueError as err:
            raise WorkloadError(f"{path}: {err}") from None
        rows = data.get("flows") if isinstance(data, dict) else data
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise WorkloadError(f"{path}: expected {{\"flows\": [{{...}}, ...]}}")
        return _rows_to_workload(rows, str(path))
    return _rows_to_workload(list(csv.DictReader(text.splitlines())), str(path))


def rows(workload: Workload) -> list[dict]:
    svc = workload.services
    return [{"start": float(s), "duration": float(d), "client": str(ipaddress.IPv4Address(int(c))),
             "sport": int(p), "proto": svc[k].proto, "vip": svc[k].vip, "vport": svc[k].port,
             "req_bytes": int(q), "resp_bytes": int(r)}
            for s, d, c, p, k, q, r in zip(workload.start, workload.duration, workload.caddr,
                                          workload.sport, workload.service,
                                          workload.req_bytes, workload.resp_bytes,
                                          strict=True)]


def save(workload: Workload, path: str | Path) -> None:
    """Write the flows as CSV (or JSON when the name ends in .json)."""
    path = Path(path)
    data = rows(workload)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps({"flows": data}))
        return
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for row in data:
            row["start"] = repr(row["start"])
            row["duration"] = repr(row["duration"])
            writer.writerow(row)
