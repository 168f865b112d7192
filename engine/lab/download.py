"""A long HTTP download that records how many bytes arrived when: the client side of the
failover lab (engine/lab/ha.py) and of its timeline plot.

    python -m pyvs.engine.lab.download --bind 198.18.0.10 --host 198.18.1.1 \\
        --bytes 209715200 --rate 20000000 --timeline FILE

GETs /bytes/N from the lab's real servers (the deterministic pattern of
engine/lab/servers.py), reading at most ``--rate`` bytes/s so the transfer lasts long
enough to lose a director in the middle of it.  Prints one JSON line at the end:
``{"bytes", "sha256", "error", "server", "seconds"}``; ``error`` is null or what
ended the transfer (a reset says "ConnectionResetError").  ``--timeline`` gets one
``wall_time bytes`` line every 50 ms.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import sys
import time

SAMPLE = 0.05


def download(bind: str, host: str, port: int, nbytes: int, rate: float, timeline: str | None,
             timeout: float) -> dict:
    h = hashlib.sha256()
    got = 0
    server = None
    error = None
    start = time.monotonic()
    samples: list[tuple[float, int]] = []
    out = open(timeline, "w") if timeline else None  # noqa: SIM115
    try:
        sock = socket.create_connection((host, port), timeout=timeout,
                                        source_address=(bind, 0))
        sock.sendall(f"GET /bytes/{nbytes} HTTP/1.1\r\nHost: {host}\r\n"
                     "Connection: close\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed before the headers")
            head += chunk
        head, _, body = head.partition(b"\r\n\r\n")
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"x-server:"):
                server = line.split(b":", 1)[1].strip().decode()
        h.update(body)
        got = len(body)
        next_sample = time.monotonic()
        while got < nbytes:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed early")
            h.update(chunk)
            got += len(chunk)
            now = time.monotonic()
            if now >= next_sample:
                samples.append((time.time(), got))
                if out:
                    out.write(f"{time.time():.3f} {got}\n")
                    out.flush()
                next_sample = now + SAMPLE
            ahead = got / rate - (now - start)
            if ahead > 0:
                time.sleep(ahead)
        sock.close()
    except (OSError, ConnectionError) as err:
        error = type(err).__name__ + (f": {err}" if str(err) else "")
    if out:
        out.write(f"{time.time():.3f} {got}\n")
        out.close()
    return {"bytes": got, "sha256": h.hexdigest(), "error": error, "server": server,
            "seconds": round(time.monotonic() - start, 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pyvs.engine.lab.download")
    p.add_argument("--bind", required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--bytes", type=int, required=True)
    p.add_argument("--rate", type=float, default=20e6, help="bytes per second at most")
    p.add_argument("--timeline")
    p.add_argument("--timeout", type=float, default=30.0, help="longest silence (s)")
    a = p.parse_args(argv)
    result = download(a.bind, a.host, a.port, a.bytes, a.rate, a.timeline, a.timeout)
    print(json.dumps(result), flush=True)
    return 0 if result["error"] is None else 1


if __name__ == "__main__":
    sys.exit(main())
