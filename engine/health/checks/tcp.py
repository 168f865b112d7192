"""TCP_CHECK (check_tcp.c): up when a TCP connection completes within connect_timeout."""

from __future__ import annotations

from pyvs.engine.health.checks.base import Outcome, Target, close, destination, error_text, open_tcp
from pyvs.engine.health.model import Checker


async def check(c: Checker, t: Target) -> Outcome:
    host, port = destination(c, t)
    try:
        _reader, writer, seconds = await open_tcp(c, t)
    except (OSError, TimeoutError) as err:
        return Outcome(False, f"TCP connect to {host}:{port}: {error_text(err)}")
    await close(writer)
    return Outcome(True, f"TCP connect to {host}:{port} succeeded", seconds=seconds)
