"""Helpers shared by the lab tests that drive `pyvs run` with `pyvsadm`."""

from __future__ import annotations


def add_service(director, lab, *opts, weights=(1, 1, 1), proto="-t", vip=None, port=80,
                method="-m"):
    """`-A` a service on the lab's VIP, then `-a` the lab's real servers in order
    (rs1, rs2, ...: the kernel's list becomes ..., rs2, rs1)."""
    vip = vip or lab.VIP
    director.adm("-A", proto, f"{vip}:{port}", *opts)
    for rs, w in zip(lab.real_server_list(), weights, strict=False):
        director.adm("-a", proto, f"{vip}:{port}", "-r", f"{rs['addr']}:{port}", method,
                     "-w", str(w))


def answers_every_probe(bench, gen_path: str, tries: int = 3) -> dict:
    """UDP ping-pong through the director of a BenchLab until a round of 100 probes is
    answered in full (or ``tries`` rounds, about a second each); the last round."""
    from pyvs.bench import traffic
    from pyvs.engine.lab.benchtopo import ECHO_PORT

    for _ in range(tries):
        probe = traffic.pingpong(bench, gen_path, bench.VIP, ECHO_PORT, count=100,
                                 duration=1.0)
        if probe["lost"] == 0:
            break
    return probe
