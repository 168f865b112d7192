"""`pyvs demo`: a NAT lab, the pyvs director, real HTTP requests, and what happened.

Builds client / director / real-server namespaces, starts `pyvs run` in the
director namespace, configures it with `pyvsadm` exactly as one would configure
kernel IPVS with `ipvsadm`, sends real curl requests from several client
addresses, prints which real server answered each, the `pyvsadm -Ln` and
`-Ln --stats` tables, and removes everything.
"""

from __future__ import annotations

import collections
import sys

from pyvs.engine.lab import NatLab
from pyvs.engine.runner import DirectorProcess


def run_demo(requests: int = 30, real_servers: int = 3, clients: int = 3,
             scheduler: str = "rr", io: str = "nfqueue", out=sys.stdout) -> int:
    """``io``: the packet path of `pyvs run` (nfqueue, ring or xdp)."""
    def say(text: str = "") -> None:
        out.write(text + "\n")
        out.flush()

    with NatLab(real_servers=real_servers, clients=clients, start_servers=True) as lab:
        info = lab.describe()
        director_ns = info["namespaces"]["director"]
        vip = info["vip"]
        say(f"lab {info['name']}: client {', '.join(info['client_addrs'])} -> "
            f"VIP {vip}:80 on {director_ns} -> "
            f"{', '.join(rs['addr'] for rs in info['real_servers'])}")
        run_args = () if io == "nfqueue" else ("--io", io)
        say(" ".join(("# pyvs run", *run_args)) + "   (in the director namespace)")
        with DirectorProcess(director_ns, args=run_args) as director:
            commands = [["-A", "-t", f"{vip}:80", "-s", scheduler]]
            commands += [["-a", "-t", f"{vip}:80", "-r", f"{rs['addr']}:80", "-m"]
                         for rs in info["real_servers"]]
            for argv in commands:
                say("# pyvsadm " + " ".join(argv))
                director.adm(*argv)
            say()
            answered = []
            for n in range(requests):
                client = info["client_addrs"][n % len(info["client_addrs"])]
                try:
                    body = lab.curl(lab.url(vip), client_addr=client).strip()
                except Exception as err:  # show the failure, keep going
                    body = f"FAILED ({err})"
                answered.append(body)
                say(f"request {n + 1:3d} from {client:<13} answered by {body}")
            say()
            counts = collections.Counter(answered)
            say("answers per real server: "
                + ", ".join(f"{name}={counts[name]}" for name in sorted(counts)))
            say()
            say("# pyvsadm -Ln")
            out.write(director.adm("-L", "-n").stdout)
            say()
            say("# pyvsadm -Ln --stats")
            out.write(director.adm("-L", "-n", "--stats").stdout)
            say()
            say("# pyvsadm -Lnc (first lines)")
            conns = director.adm("-L", "-n", "-c").stdout.splitlines()
            out.write("\n".join(conns[:8]) + "\n")
        ok = not any(a.startswith("FAILED") for a in answered)
    say()
    say("lab removed" + ("" if ok else "; some requests failed"))
    return 0 if ok else 1
