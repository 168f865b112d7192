"""UDP_CHECK (check_udp.c, layer4.c udp_socket_state()).

Sends ``payload`` (random bytes without one) from a connected UDP socket.  An ICMP
error (port or host unreachable) is a failure; no answer within connect_timeout is a
success unless ``require_reply``; with it an answer must come, its length must be in
min_reply_length..max_reply_length and, with a reply string, match it over the
shorter of the two lengths (x nibbles match anything).
"""

from __future__ import annotations

import asyncio
import os
import socket

from pyvs.engine.health.checks.base import Outcome, Target, bound_socket, destination, error_text
from pyvs.engine.health.model import Checker


def reply_matches(c: Checker, data: bytes) -> bool:
    if not c.min_reply_length <= len(data) <= c.max_reply_length:
        return False
    if not c.reply:
        return True
    pattern = c.reply
    for i in range(min(len(data), len(pattern) // 2)):
        byte = f"{data[i]:02x}"
        for want, got in zip(pattern[2 * i:2 * i + 2], byte, strict=True):
            if want != "x" and want != got:
                return False
    return True


async def check(c: Checker, t: Target) -> Outcome:
    host, port = destination(c, t)
    loop = asyncio.get_running_loop()
    payload = bytes.fromhex(c.payload) if c.payload else os.urandom(16)
    try:
        sock = bound_socket(c, host, socket.SOCK_DGRAM)
    except OSError as err:
        return Outcome(False, f"UDP to {host}:{port}: {error_text(err)}")
    with sock:
        try:
            await loop.sock_connect(sock, (host, port))
            await loop.sock_sendall(sock, payload)
            data = await asyncio.wait_for(loop.sock_recv(sock, 65535), c.connect_timeout)
        except TimeoutError:
            if c.require_reply:
                return Outcome(False, f"UDP to {host}:{port}: no reply within "
                                      f"{c.connect_timeout:g}s")
            return Outcome(True, f"UDP to {host}:{port}: no ICMP error")
        except OSError as err:
            return Outcome(False, f"UDP to {host}:{port}: {error_text(err)}")
    if c.require_reply and not reply_matches(c, data):
        return Outcome(False, f"UDP to {host}:{port}: reply of {len(data)} bytes does not "
                              f"match")
    return Outcome(True, f"UDP to {host}:{port}: reply of {len(data)} bytes")
