"""Does a health-check storm cost the forwarder anything?  (`python -m pyvs.bench --case storm`)

The loss-free search of the NAT NFQUEUE case, run alternately with and without a
checker storm: a second virtual service with 200 real servers, every one checked
every second (delay_loop 1) -- 50 HTTP_GET and 50 TCP_CHECK against addresses the
sink answers on, 50 TCP_CHECK to a closed port (refused at once) and 50 TCP_CHECK to
addresses nobody holds (each times out after connect_timeout 1 s).  Both runs have
the very same IPVS table: the storm run is `pyvs run --keepalived storm.conf`, the
quiet run `pyvs run --rules` with the table the storm run settled on (`pyvsadm -S`),
so the only difference is the checker process and its traffic.  The storm service
uses direct routing, so its 200 real servers add no reply rules to the NFQUEUE
plumbing.  Median and spread of the runs go into the results' "health_storm".
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from pyvs.bench import traffic
from pyvs.bench.health_scenario import wait_for
from pyvs.engine.lab import netns as nx
from pyvs.engine.lab.benchtopo import FLOOD_PORT, BenchLab
from pyvs.engine.runner import DirectorProcess

STORM_VIP = "198.18.1.2"
ANSWERING = [f"198.18.2.{20 + i}" for i in range(150)]  # held by the sink
SILENT = [f"198.18.3.{20 + i}" for i in range(50)]  # held by nobody: connects time out
CHECKERS = 200


def storm_conf() -> str:
    blocks = []
    for i, addr in enumerate(ANSWERING + SILENT):
        if i < 50:
            check = "HTTP_GET {\n url {\n path /\n }\n }"
        elif i < 100:
            check = "TCP_CHECK { }"
        elif i < 150:
            check = "TCP_CHECK {\n connect_port 81\n }"  # refused
        else:
            check = "TCP_CHECK { }"  # nobody answers ARP: connect_timeout
        blocks.append(f"    real_server {addr} 80 {{\n        {check}\n    }}\n")
    return (f"virtual_server {STORM_VIP} 80 {{\n    delay_loop 1\n    connect_timeout 1\n"
            f"    retry 1\n    delay_before_retry 1\n    lb_algo rr\n    lb_kind DR\n"
            f"{''.join(blocks)}}}\n")


def prepare(lab: BenchLab) -> None:
    """The storm's targets: 150 more addresses on the sink; a route for the silent ones
    through the sink's link, where nothing answers ARP for them."""
    for addr in ANSWERING:
        nx.add_addr(lab.ns("sink"), lab.SINK_IF, f"{addr}/24")
    lab.run("director", ["ip", "route", "replace", "198.18.3.0/24", "dev", lab.DIR_OUT_IF],
            check=True)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _search(bench, lab: BenchLab) -> float:
    s = bench.s
    hi = bench.results["generator"]["ceiling_pps"] * 1.05
    res = traffic.search_loss_free(
        lambda r: traffic.trial(lab, bench.gen, lab.VIP, FLOOD_PORT, r, s.trial_s),
        hi=hi, ratio=s.ratio, max_trials=s.max_trials)
    return res.rate


def _director(lab: BenchLab, args: tuple[str, ...], name: str) -> DirectorProcess:
    return DirectorProcess(lab.ns("director"), log_path=str(lab.state_dir / f"{name}.log"),
                           log_level="warning", args=args)


def measure(bench, lab: BenchLab, configure, log, repeats: int | None = None) -> dict:
    """``configure(director)``: the bench's own services (bench/__main__.configure_pyvs)."""
    repeats = repeats or (3 if bench.s.quick else 5)
    prepare(lab)
    conf = lab.state_dir / "storm.conf"
    conf.write_text(storm_conf())
    rules = lab.state_dir / "storm.rules"
    with_storm, without, checker_cpu, down = [], [], [], None
    for i in range(repeats):
        for storm in (True, False) if i % 2 == 0 else (False, True):
            if storm:
                d = _director(lab, ("--keepalived", str(conf)), f"storm-{i}")
            else:
                d = _director(lab, ("--rules", str(rules)), f"quiet-{i}")
            d.start()
            try:
                if storm:
                    configure(d)
                    health = wait_for(lambda d=d: _settled(d), 30, "the storm settled")
                    down = sum(rs["state"] == "down" for vs in health["virtual_servers"]
                               for rs in vs["real_servers"])
                    rules.write_text(d.adm("-S", "-n").stdout)
                    pid = health["checker_pid"]
                    cpu0, t0 = cpu_seconds(pid), time.monotonic()
                rate = _search(bench, lab)
                if storm:
                    checker_cpu.append((cpu_seconds(pid) - cpu0) / (time.monotonic() - t0))
                    with_storm.append(rate)
                else:
                    without.append(rate)
                log(f"  check storm {'on ' if storm else 'off'} (run {i + 1}/{repeats}): "
                    f"loss-free {rate:,.0f} pps")
            finally:
                d.stop()
            time.sleep(0.2)  # the director's stack forgets the rules between runs

    def summary(rates: list[float]) -> dict:
        return {"runs": [round(r) for r in rates], "median": round(statistics.median(rates)),
                "min": round(min(rates)), "max": round(max(rates)),
                "spread_pct": round(100 * (max(rates) - min(rates)) / statistics.median(rates),
                                    1)}

    out = {
        "case": "pyvs NAT (nfqueue) loss-free, 64-byte UDP",
        "checkers": CHECKERS, "delay_loop_s": 1, "targets_down": down,
        "with_storm": summary(with_storm), "without_storm": summary(without),
        "checker_cpu_share_of_one_core": round(statistics.median(checker_cpu), 3),
        "note": "runs alternate with and without the storm; same IPVS table in both",
    }
    out["median_change_pct"] = round(100 * (out["with_storm"]["median"] /
                                            out["without_storm"]["median"] - 1), 1)
    log(f"  check storm: median {out['with_storm']['median']:,} pps with, "
        f"{out['without_storm']['median']:,} without ({out['median_change_pct']:+.1f} %); "
        f"the checker used {out['checker_cpu_share_of_one_core']:.1%} of a core")
    return out


def _settled(d: DirectorProcess) -> dict | None:
    """The storm's first round is over: every unreachable target is down."""
    health = d.status().get("health") or {}
    states = [rs["state"] for vs in health.get("virtual_servers", [])
              for rs in vs["real_servers"]]
    if len(states) == CHECKERS and states.count("down") >= len(SILENT) + 50:
        return health
    return None
