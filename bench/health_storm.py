"""Does a health-check storm cost the forwarder anything?  (`python -m pyvs.bench --case storm`)

The loss-free search of the NAT NFQUEUE case, run with and without a checker storm
(and with the storm's checker process pinned to the generator's CPU, to tell CPU
contention from anything else): a second virtual service with 200 real servers, every one checked
every second (delay_loop 1) -- 50 HTTP_GET and 50 TCP_CHECK against addresses the
sink answers on, 50 TCP_CHECK to a closed port (refused at once) and 50 TCP_CHECK to
addresses nobody holds (each times out after connect_timeout 1 s).  Both runs have
the very same IPVS table: the storm run is `pyvs run --keepalived storm.conf`, the
quiet run `pyvs run --rules` with the table the storm run settled on (`pyvsadm -S`),
so the only difference is the checker process and its traffic.  The storm service
uses direct routing, so its 200 real servers add no reply rules to the NFQUEUE
plumbing.  The runs, medians, spreads and per-repeat changes go into the results'
"health_storm".
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from pyvs.bench import traffic
from pyvs.bench.health_scenario import wait_for
from pyvs.bench.repeats import summary as repeat_summary
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


MODES = ("storm", "quiet", "storm, checker on the generator's CPU")


def measure(bench, lab: BenchLab, configure, log, repeats: int | None = None) -> dict:
    """``configure(director)``: the bench's own services (bench/variants.configure_pyvs).
    Each repeat runs the three modes back to back, in a rotating order, so slow drift
    of a shared machine hits them alike; the changes are taken pair by pair."""
    repeats = repeats or (3 if bench.s.quick else 5)
    prepare(lab)
    conf = lab.state_dir / "storm.conf"
    conf.write_text(storm_conf())
    rules = lab.state_dir / "storm.rules"
    runs: list[dict[str, float]] = []
    cpu: dict[str, list[float]] = {m: [] for m in MODES if m != "quiet"}
    down = None
    for i in range(repeats):
        order = MODES[i % 3:] + MODES[:i % 3]
        if i == 0 or not rules.exists():
            order = tuple(sorted(order, key=lambda m: m == "quiet"))  # the rules come first
        rates: dict[str, float] = {}
        for mode in order:
            storm = mode != "quiet"
            args = ("--keepalived", str(conf)) if storm else ("--rules", str(rules))
            d = _director(lab, args, f"{mode.split(',')[0]}-{i}")
            d.start()
            try:
                if storm:
                    configure(d)
                    health = wait_for(lambda d=d: _settled(d), 30, "the storm settled")
                    down = sum(rs["state"] == "down" for vs in health["virtual_servers"]
                               for rs in vs["real_servers"])
                    rules.write_text(d.adm("-S", "-n").stdout)
                    pid = health["checker_pid"]
                    if mode != "storm":
                        os.sched_setaffinity(pid, {traffic.GEN_CPU})
                    cpu0, t0 = cpu_seconds(pid), time.monotonic()
                rates[mode] = _search(bench, lab)
                if storm:
                    cpu[mode].append((cpu_seconds(pid) - cpu0) / (time.monotonic() - t0))
                log(f"  {mode} (run {i + 1}/{repeats}): loss-free {rates[mode]:,.0f} pps")
            finally:
                d.stop()
            time.sleep(0.2)  # the director's stack forgets the rules between runs
        runs.append(rates)

    def summary(mode: str) -> dict:
        out = repeat_summary(runs, mode, "quiet")
        if mode != "quiet":
            out["checker_cpu_share_of_one_core"] = round(statistics.median(cpu[mode]), 3)
        return out

    out = {
        "case": "pyvs NAT (nfqueue) loss-free, 64-byte UDP",
        "checkers": CHECKERS, "delay_loop_s": 1, "targets_down": down,
        "quiet": summary("quiet"), "storm": summary(MODES[0]),
        "storm_checker_on_generator_cpu": summary(MODES[2]),
        "note": "each repeat runs the three modes back to back (rotating order), same IPVS "
                "table in all; changes are per repeat against the quiet run",
    }
    s1, s2 = out["storm"], out["storm_checker_on_generator_cpu"]
    log(f"  check storm: loss-free median change {s1['median_change_pct']:+.1f} % "
        f"(per repeat {s1['change_vs_quiet_pct']}), checker on the generator's CPU "
        f"{s2['median_change_pct']:+.1f} % ({s2['change_vs_quiet_pct']}); the checker "
        f"used {s1['checker_cpu_share_of_one_core']:.1%} of a core")
    return out


def _settled(d: DirectorProcess) -> dict | None:
    """The storm's first round is over: every unreachable target is down."""
    health = d.status().get("health") or {}
    states = [rs["state"] for vs in health.get("virtual_servers", [])
              for rs in vs["real_servers"]]
    if len(states) == CHECKERS and states.count("down") >= len(SILENT) + 50:
        return health
    return None
