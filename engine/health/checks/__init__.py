"""The checkers, one module each: a coroutine ``check(checker, target) -> Outcome``.

They only observe; the state machines (machine.py) and the pool (pool.py) decide.
Every check is bounded by its own timeout and never raises: any failure is an
Outcome with ok=False and a short reason for the log and `pyvs status`.
"""

from __future__ import annotations

from pyvs.engine.health.checks import dns, http, misc, ping, tcp, udp
from pyvs.engine.health.checks.base import Outcome, Target

CHECKS = {
    "TCP_CHECK": tcp.check,
    "HTTP_GET": http.check,
    "SSL_GET": http.check,
    "UDP_CHECK": udp.check,
    "DNS_CHECK": dns.check,
    "MISC_CHECK": misc.check,
    "PING_CHECK": ping.check,
}

__all__ = ["CHECKS", "Outcome", "Target"]
