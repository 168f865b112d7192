"""DNS_CHECK (check_dns.c): a query for ``name``/``type`` (class IN, recursion desired)
must be answered within connect_timeout by a response with the query's id and
rcode 0 (NOERROR).  Answers with another id, or queries, are skipped, as keepalived
does."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time

from pyvs.engine.health.checks.base import Outcome, Target, bound_socket, destination, error_text
from pyvs.engine.health.model import DNS_TYPES, Checker

FLAG_QR, FLAG_RD = 0x8000, 0x0100


def query(ident: int, name: str, qtype: str) -> bytes:
    labels = [p for p in name.strip(".").split(".") if p]
    qname = b"".join(bytes([len(p)]) + p.encode("idna") for p in labels) + b"\0"
    return struct.pack("!HHHHHH", ident, FLAG_RD, 1, 0, 0, 0) + qname + \
        struct.pack("!HH", DNS_TYPES[qtype], 1)


async def check(c: Checker, t: Target) -> Outcome:
    host, port = destination(c, t)
    loop = asyncio.get_running_loop()
    ident = int.from_bytes(os.urandom(2), "big")
    what = f"DNS {c.type} {c.name} to {host}:{port}"
    try:
        sock = bound_socket(c, host, socket.SOCK_DGRAM)
    except OSError as err:
        return Outcome(False, f"{what}: {error_text(err)}")
    deadline = time.monotonic() + c.connect_timeout
    with sock:
        try:
            await loop.sock_connect(sock, (host, port))
            await loop.sock_sendall(sock, query(ident, c.name, c.type))
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                data = await asyncio.wait_for(loop.sock_recv(sock, 4096), left)
                if len(data) < 12:
                    continue
                rid, flags = struct.unpack_from("!HH", data)
                if rid != ident or not flags & FLAG_QR:
                    continue
                if flags & 0xF:
                    return Outcome(False, f"{what}: rcode {flags & 0xF}")
                return Outcome(True, f"{what}: answered")
        except (OSError, TimeoutError) as err:
            return Outcome(False, f"{what}: {error_text(err)}")
