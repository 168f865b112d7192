"""A steady stream of requests from a lab client, every outcome recorded with its time.

    python -m pyvs.engine.lab.stream http://198.18.1.1/ --rate 50 --duration 30 \\
        --timeout 1 [--bind SRC] --out FILE
    python -m pyvs.engine.lab.stream udp://198.18.1.1:53 ...

Every 1/rate seconds a new request starts on a new connection (a new UDP socket for
udp://), whatever the earlier ones are doing, so a hanging real server cannot slow
the stream.  Each outcome is appended to FILE as one JSON line as soon as it is
known: {"t": wall-clock send time, "ok": bool, "server": who answered (the first word
of the answer), "body": its first line, "error": why not, "seconds": how long}.
An HTTP answer counts as ok only with status 200.  Stops after --duration seconds or
at SIGTERM, then waits at most --timeout for the requests in flight.  Bounded: at
most rate * duration requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys
import time
from urllib.parse import urlsplit

MAX_REQUESTS = 100_000


async def http_once(host: str, port: int, path: str, bind: str | None, timeout: float
                    ) -> tuple[bool, str | None, str | None]:
    """(status 200?, first line of the body, why not)."""
    local = (bind, 0) if bind else None
    writer = None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, local_addr=local), timeout)
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(), timeout)  # HTTP/1.0: until close
    except (OSError, TimeoutError) as err:
        return False, None, type(err).__name__ if isinstance(err, TimeoutError) else str(err)
    finally:
        if writer is not None:
            writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1:2]
    first = body.decode(errors="replace").strip().split("\n")[0][:80] or None
    if status != [b"200"]:
        return False, first, f"status {status[0].decode() if status else 'none'}"
    return True, first, None


async def udp_once(host: str, port: int, bind: str | None, timeout: float
                   ) -> tuple[bool, str | None, str | None]:
    loop = asyncio.get_running_loop()
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK) as sock:
        try:
            if bind:
                sock.bind((bind, 0))
            await loop.sock_connect(sock, (host, port))
            await loop.sock_sendall(sock, b"stream")
            data = await asyncio.wait_for(loop.sock_recv(sock, 2048), timeout)
        except (OSError, TimeoutError) as err:
            return False, None, "TimeoutError" if isinstance(err, TimeoutError) else str(err)
    return True, data.decode(errors="replace").strip()[:80] or None, None


async def run(url: str, rate: float, duration: float, timeout: float, bind: str | None,
              out: str) -> int:
    parts = urlsplit(url)
    host, scheme = parts.hostname, parts.scheme
    port = parts.port or (80 if scheme == "http" else 53)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    pending: set[asyncio.Task] = set()
    sink = open(out, "a", buffering=1)  # noqa: SIM115 - closed below

    async def one(sent: float) -> None:
        started = time.monotonic()
        if scheme == "udp":
            ok, body, error = await udp_once(host, port, bind, timeout)
        else:
            ok, body, error = await http_once(host, port, parts.path or "/", bind, timeout)
        server = body.split()[0] if body else None
        sink.write(json.dumps({"t": sent, "ok": ok, "server": server, "body": body,
                               "error": error,
                               "seconds": round(time.monotonic() - started, 4)}) + "\n")

    start = time.monotonic()
    count = min(int(rate * duration), MAX_REQUESTS)
    for i in range(count):
        due = start + i / rate
        wait = due - time.monotonic()
        if wait > 0:
            try:
                await asyncio.wait_for(stop.wait(), wait)
            except TimeoutError:
                pass
        if stop.is_set():
            break
        task = asyncio.create_task(one(time.time()))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending, timeout=timeout + 1)
    sink.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pyvs.engine.lab.stream", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", help="http://HOST[:PORT]/PATH or udp://HOST:PORT")
    p.add_argument("--rate", type=float, default=50.0, help="requests per second")
    p.add_argument("--duration", type=float, default=30.0, help="seconds at most")
    p.add_argument("--timeout", type=float, default=1.0, help="per request, seconds")
    p.add_argument("--bind", help="source address")
    p.add_argument("--out", required=True, help="JSON lines are appended here")
    a = p.parse_args(argv)
    if not 0 < a.rate <= 10_000 or not 0 < a.duration <= 3600:
        p.error("--rate must be in (0, 10000] and --duration in (0, 3600]")
    return asyncio.run(run(a.url, a.rate, a.duration, a.timeout, a.bind, a.out))


if __name__ == "__main__":
    sys.exit(main())
