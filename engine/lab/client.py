"""Lab client helpers runnable inside a namespace.

    python -m pyvs.engine.lab.client udp ADDR PORT PAYLOAD [--bind SRC] [--sport N] [--timeout S]

prints the reply text (exit status 1 and nothing printed on timeout).  One datagram
is sent and one reply awaited, so the exchange is bounded by ``--timeout``.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys


def udp_query(
    addr: str,
    port: int,
    payload: bytes,
    bind: str | None = None,
    sport: int = 0,
    timeout: float = 2.0,
) -> bytes:
    fam = socket.AF_INET6 if ipaddress.ip_address(addr).version == 6 else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if bind or sport:
            s.bind((bind or ("::" if fam == socket.AF_INET6 else "0.0.0.0"), sport or 0))
        s.settimeout(timeout)
        s.sendto(payload, (addr, port))
        data, _ = s.recvfrom(65535)
        return data


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pyvs.engine.lab.client")
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("udp", help="send one datagram, print the reply")
    u.add_argument("addr")
    u.add_argument("port", type=int)
    u.add_argument("payload")
    u.add_argument("--bind", help="source address")
    u.add_argument("--sport", type=int, default=0, help="source port")
    u.add_argument("--timeout", type=float, default=2.0)
    a = p.parse_args(argv)
    try:
        data = udp_query(a.addr, a.port, a.payload.encode(), a.bind, a.sport, a.timeout)
    except TimeoutError:
        print("timeout", file=sys.stderr)
        return 1
    sys.stdout.write(data.decode(errors="replace"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
