"""What the bench measures pyvs and nftables with: the `pyvs run` I/O and worker
options this tree offers, the case list built from them, the virtual services each
case configures, and the nftables DNAT ruleset of the kernel DNAT case."""

from __future__ import annotations

import os
import subprocess
import sys

from pyvs.engine.lab.benchtopo import ECHO_PORT, FLOOD_PORT, HTTP_PORT, BenchLab
from pyvs.engine.runner import DirectorProcess


def pyvs_capabilities() -> dict:
    """Which `pyvs run` options exist in this tree (read from its --help)."""
    env = dict(os.environ)
    r = subprocess.run([sys.executable, "-m", "pyvs.engine.cli", "run", "--help"],
                       capture_output=True, text=True, env=env, timeout=30)
    text = r.stdout
    io_modes = []
    if "--io" in text:
        for mode in ("nfqueue", "ring", "packet", "tun", "xdp"):
            if mode in text.split("--io", 1)[1]:
                io_modes.append(mode)
    return {"io": io_modes, "workers": "--workers" in text, "help": text}


def pyvs_variants(caps: dict) -> tuple[list[dict], list[tuple[str, str]]]:
    """(case name, run options, forwarding method) to measure, best I/O last."""
    out = [{"case": "pyvs NAT (nfqueue)", "args": [], "method": "m"}]
    skipped = []
    if "ring" in caps["io"]:
        out.append({"case": "pyvs NAT (ring)", "args": ["--io", "ring"], "method": "m"})
        if caps["workers"]:
            out.append({"case": "pyvs NAT (ring, 2 workers)",
                        "args": ["--io", "ring", "--workers", "2"], "method": "m"})
    else:
        skipped.append(("pyvs NAT (ring)", "`pyvs run --io ring` is not available yet"))
    best = ["--io", "xdp"] if "xdp" in caps["io"] else ["--io", "ring"] if "ring" in caps[
        "io"] else []
    label = best[1] if best else "nfqueue"
    if best and label != "ring":
        out.append({"case": f"pyvs NAT ({label})", "args": best, "method": "m"})
        if "ring" in caps["io"]:  # the other batch port: DR and TUN take its fast path too
            out.append({"case": "pyvs DR (ring)", "args": ["--io", "ring"], "method": "g"})
            out.append({"case": "pyvs TUN (ring)", "args": ["--io", "ring"], "method": "i"})
    out.append({"case": f"pyvs DR ({label})", "args": best, "method": "g"})
    out.append({"case": f"pyvs TUN ({label})", "args": best, "method": "i"})
    return out, skipped


def configure_pyvs(d: DirectorProcess, lab: BenchLab, method: str) -> None:
    vip, rip = lab.VIP, lab.SINK
    for proto, port in (("-u", FLOOD_PORT), ("-u", ECHO_PORT), ("-t", HTTP_PORT)):
        d.adm("-A", proto, f"{vip}:{port}", "-s", "rr")
        if method == "m":
            d.adm("-a", proto, f"{vip}:{port}", "-r", f"{rip}:{port}", "-m")
        else:  # DR and TUN keep the port
            d.adm("-a", proto, f"{vip}:{port}", "-r", rip, f"-{method}")


# ---------------------------------------------------------------- nftables DNAT


def nft_dnat_script(lab: BenchLab) -> str:
    rules = "\n".join(
        f"    ip daddr {lab.VIP} {proto} dport {port} dnat to {lab.SINK}:{port}"
        for proto, port in (("udp", FLOOD_PORT), ("udp", ECHO_PORT), ("tcp", HTTP_PORT)))
    return (f"table ip benchnat {{\n  chain pre {{\n"
            f"    type nat hook prerouting priority dstnat; policy accept;\n{rules}\n"
            f"  }}\n}}\n")
