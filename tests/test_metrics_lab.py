"""`pyvs run --metrics` in a real NAT lab: curl traffic through the director, the
metrics scraped over HTTP from inside the director's namespace and read with
prometheus-client's parser; they equal `pyvsadm -Ln --stats` / `-Ln` and
`pyvs status`.  The listener binds 127.0.0.1 when no address is given, and a port
already taken refuses the run in one line."""

from __future__ import annotations

import sys
import time

import pytest
from labhelp import add_service
from metricshelp import backend_rows, metric_rows, parse_listing, samples

from pyvs.engine.lab import netns as nx
from pyvs.engine.runner import DirectorProcess

pytestmark = pytest.mark.lab

PORT = 9192
REQUESTS = 20


def scrape(ns: str) -> str:
    proc = nx.run(ns, ["curl", "-sS", "--max-time", "5", f"http://127.0.0.1:{PORT}/metrics"],
                  capture_output=True, timeout=10)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def views(director: DirectorProcess) -> tuple[dict, dict, dict]:
    """What the metrics say and what pyvsadm and pyvs status say, side by side."""
    scraped = samples(scrape(director.ns))
    stats = parse_listing(director.adm("-L", "-n", "--stats", "--exact").stdout, columns=5)
    plain = parse_listing(director.adm("-L", "-n").stdout, columns=3)
    status = director.status()
    metrics = {
        "stats": {**metric_rows(scraped, "pyvs_service", "_total", dests=False),
                  **metric_rows(scraped, "pyvs_backend", "_total", dests=True)},
        "backends": backend_rows(scraped),
        "entries": int(scraped["pyvs_connection_table_entries"][0][1]),
        "drops": {lab["reason"]: int(v) for lab, v in scraped.get("pyvs_drops_total", [])},
        "received": {lab["port"]: int(v)
                     for lab, v in scraped["pyvs_port_received_packets_total"]},
    }
    listed = {
        "stats": stats, "backends": plain, "entries": status["connections"],
        "drops": status["drops"],
        "received": {name: p["packets"] for name, p in status["ports"].items()},
    }
    return metrics, listed, scraped


def test_scraped_metrics_equal_the_listings(nat_lab_factory):
    lab = nat_lab_factory(real_servers=2, clients=1)
    ns = lab.ns("director")
    with DirectorProcess(ns, args=("--metrics", str(PORT))) as director:
        add_service(director, lab, "-s", "rr", weights=(2, 1))
        answers = [lab.curl(lab.url()).strip() for _ in range(REQUESTS)]
        assert sorted(set(answers)) == ["rs1", "rs2"]
        deadline = time.monotonic() + 10  # the snapshot is at most a second old
        while True:
            metrics, listed, scraped = views(director)
            if metrics == listed or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert metrics == listed
        svc = ("TCP 198.18.1.1:80", None)
        assert listed["stats"][svc][0] == REQUESTS and listed["stats"][svc][2] > 0
        assert scraped["node_ipvs_connections_total"][0][1] == REQUESTS
        assert scraped["node_ipvs_incoming_bytes_total"][0][1] == listed["stats"][svc][3]
        weights = {lab_["remote_address"]: v for lab_, v in scraped["node_ipvs_backend_weight"]}
        assert weights == {"198.18.2.11": 2, "198.18.2.12": 1}
        decisions = {lab_["outcome"]: v for lab_, v in scraped["pyvs_scheduler_decisions_total"]}
        assert decisions == {"scheduled": REQUESTS, "no-destination": 0, "error": 0}

        listening = nx.run(ns, ["ss", "-ltnH", f"sport = :{PORT}"], capture_output=True)
        addresses = [line.split()[3] for line in listening.stdout.splitlines()]
        assert addresses == [f"127.0.0.1:{PORT}"]  # the default: not reachable from outside

        # a second director asking for the same port is refused, in one line
        second = nx.run(ns, [sys.executable, "-m", "pyvs.engine.cli", "run", "--metrics",
                             str(PORT)], capture_output=True, timeout=30)
        lines = [x for x in second.stderr.splitlines() if x.strip()]
        assert second.returncode == 1 and len(lines) == 1, second.stderr
        assert lines[0] == (f"pyvs run: --metrics 127.0.0.1:{PORT}: cannot listen: Address "
                            "already in use")
        assert "pyvs_port_received_packets_total" in scrape(ns)  # the first one still serves
