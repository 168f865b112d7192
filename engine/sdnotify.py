"""systemd's readiness protocol (sd_notify(3)) without libsystemd: one datagram
"KEY=VALUE\n..." to the unix socket named by $NOTIFY_SOCKET (a leading "@" names an
abstract socket).  No $NOTIFY_SOCKET (not started by systemd with Type=notify): nothing."""

from __future__ import annotations

import os
import socket
import time


def notify(*lines: str) -> bool:
    """Send ``lines`` (e.g. "READY=1"); True if a notification socket took them."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(lines).encode(), path)
    except OSError:
        return False
    return True


def ready(status: str = "") -> bool:
    return notify("READY=1", *([f"STATUS={status}"] if status else []))


def reloading() -> bool:
    """Type=notify-reload (systemd 253) wants the monotonic time with RELOADING=1."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}")


def stopping() -> bool:
    return notify("STOPPING=1")
