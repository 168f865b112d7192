"""Numbers and addresses as ipvsadm reads them: strtol()-style integers, glibc
inet_aton() for IPv4 (a, a.b, a.b.c, a.b.c.d; decimal, octal or hex parts),
inet_pton() for IPv6, port names from the services database, and parse_service()
for "host[:port]" / "[v6addr]:port".
"""

from __future__ import annotations

import re
import socket

AF_INET = socket.AF_INET
AF_INET6 = socket.AF_INET6
IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP = 6, 17, 132
SERVICE_ADDR, SERVICE_PORT = 0x1, 0x2  # parse_service() result bits

_STRTOL = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)\Z")


def strtol(s: str) -> int | None:
    """strtol() over the whole string (leading white space and a sign allowed)."""
    m = _STRTOL.match(s)
    return int(m.group(1)) if m else None


def string_to_number(s: str, lo: int, hi: int) -> int:
    """ipvsadm string_to_number(): the value if it is in lo..hi, else -1."""
    n = strtol(s)
    if n is None or not lo <= n <= hi:
        return -1
    return n


def _aton_part(p: str) -> int | None:
    try:
        if re.fullmatch(r"0[xX][0-9a-fA-F]*", p):
            return int(p[2:] or "0", 16)
        if re.fullmatch(r"0[0-7]*", p):
            return int(p, 8)
        if re.fullmatch(r"[1-9][0-9]*", p):
            return int(p)
    except ValueError:
        return None
    return None


def inet_aton(s: str) -> bytes | None:
    """glibc inet_aton: a, a.b, a.b.c, a.b.c.d; parts decimal, octal or hex."""
    s = s.split(" ", 1)[0] if s and s[0] != " " else s  # inet_aton stops at whitespace
    parts = s.split(".")
    if not s or len(parts) > 4:
        return None
    vals = [_aton_part(p) for p in parts]
    if any(v is None for v in vals):
        return None
    *head, last = vals
    if any(v > 255 for v in head) or last >= 1 << (8 * (5 - len(vals))):
        return None
    n = 0
    for v in head:
        n = (n << 8) | v
    n = (n << (8 * (5 - len(vals)))) | last
    return n.to_bytes(4, "big")


def inet_pton6(s: str) -> bytes | None:
    try:
        return socket.inet_pton(AF_INET6, s)
    except (OSError, ValueError):
        return None


def service_to_port(name: str, proto: int) -> int:
    pname = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_SCTP: "sctp"}.get(proto)
    if pname is None or not name:
        return -1
    try:
        return socket.getservbyname(name, pname)
    except (OSError, UnicodeError):
        return -1


def parse_service(buf: str, proto: int) -> tuple[int, bytes, int, int]:
    """ipvsadm parse_service(): (result bits, addr, port, af); port -1 when absent."""
    if all(c in "0123456789" for c in buf):  # str_is_digit(), true for ""
        return 0, b"", -1, 0
    portp: str | None = None
    host = buf
    if buf[0] == "[":
        close = buf.find("]", 1)
        if close < 0 or buf[close + 1:close + 2] != ":":
            return 0, b"", -1, 0
        host = buf[1:close]
        portp = buf[close + 2:]
    addr6 = inet_pton6(host)
    if addr6 is not None:
        addr, af = addr6, AF_INET6
    else:
        # strrchr(buf, ':') inside what is left: "[1.2.3.4]:80" loses its port, as in C
        idx = host.rfind(":")
        portp = None
        if idx >= 0:
            portp = host[idx + 1:]
            host = host[:idx]
        addr4 = inet_aton(host)
        if addr4 is None:
            return 0, b"", -1, 0
        addr, af = addr4, AF_INET
    result = SERVICE_ADDR
    port = -1
    if portp is not None:
        result |= SERVICE_PORT
        port = string_to_number(portp, 0, 65535)
        if port == -1:
            port = service_to_port(portp, proto)
        if port == -1:
            return 0, b"", -1, 0
    return result, addr, port, af
