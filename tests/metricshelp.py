"""Reading `pyvsadm -Ln` listings and a Prometheus exposition side by side (the metrics
tests, in-process and in the lab, compare one with the other)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

STATS = ("connections", "incoming_packets", "outgoing_packets", "incoming_bytes",
         "outgoing_bytes")


def parse_listing(text: str, columns: int) -> dict[tuple[str, str | None], list[int]]:
    """`-Ln` with --stats/--rate (columns=5: the last five numbers) or plain (columns=3:
    weight, active, inactive) -> {(service, dest or None): numbers}.  Services are
    named "TCP 198.18.1.1:80" / "FWM 7", dests "198.18.2.11:80"."""
    out: dict[tuple[str, str | None], list[int]] = {}
    service = None
    for line in text.splitlines():
        tokens = line.split()
        if not tokens or tokens[0] in ("IP", "Prot") or tokens[1:2] == ["RemoteAddress:Port"]:
            continue
        if tokens[0] == "->":
            out[(service, tokens[1])] = [int(t) for t in tokens[-columns:]]
        elif tokens[0] in ("TCP", "UDP", "SCTP", "FWM"):
            service = f"{tokens[0]} {tokens[1]}"
            if columns == 5:
                out[(service, None)] = [int(t) for t in tokens[-5:]]
    return out


def _addr(address: str, port: str) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def service_name(labels: dict) -> str:
    """node_exporter's labels -> the listing's name of the service."""
    if labels["proto"] == "FWM":
        return f"FWM {int(labels['local_mark'], 16)}"
    return f"{labels['proto']} {_addr(labels['local_address'], labels['local_port'])}"


def dest_name(labels: dict) -> str:
    return _addr(labels["remote_address"], labels["remote_port"])


def samples(text: str) -> dict[str, list]:
    """Exposition text -> {sample name: [(labels, value), ...]} via prometheus-client's
    own parser (what a Prometheus server would read)."""
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def metric_rows(scraped: dict, prefix: str, suffix: str, dests: bool) -> dict:
    """{(service, dest or None): [five values]} from pyvs_{service,backend}_<stat><suffix>."""
    rows: dict = {}
    for i, stat in enumerate(STATS):
        for labels, value in scraped.get(f"{prefix}_{stat}{suffix}", []):
            key = (service_name(labels), dest_name(labels) if dests else None)
            rows.setdefault(key, [None] * 5)[i] = int(value)
    return rows


def backend_rows(scraped: dict) -> dict:
    """{(service, dest): [weight, active, inactive]} from node_ipvs_backend_*."""
    rows: dict = {}
    for i, name in enumerate(("node_ipvs_backend_weight", "node_ipvs_backend_connections_active",
                              "node_ipvs_backend_connections_inactive")):
        for labels, value in scraped.get(name, []):
            key = (service_name(labels), dest_name(labels))
            rows.setdefault(key, [None] * 3)[i] = int(value)
    return rows
