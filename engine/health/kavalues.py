"""keepalived's value rules (check_parser.c, parser.c): how each directive's words are read.

Each reader takes a Statement and returns the value or raises ConfigError naming
FILE:LINE and the directive, where keepalived would log "invalid ... - ignoring".
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from pyvs.engine.health.kalex import Statement
from pyvs.engine.health.model import ConfigError, Target, VirtualServer
from pyvs.schedulers import registry

LVS_MAX_TIMEOUT = 86400 * 31


def one(st: Statement) -> str:
    if len(st.args) != 1:
        raise ConfigError(f"{st.where}: {st.keyword}: takes one value, got {len(st.args)}")
    return st.args[0]


def uint(lo: int, hi: int) -> Callable[[Statement], int]:
    def read(st: Statement) -> int:
        text = one(st)
        if not text.isdigit() or not lo <= int(text) <= hi:
            raise ConfigError(f"{st.where}: {st.keyword}: {text!r} is not an integer in "
                              f"{lo}..{hi}")
        return int(text)
    return read


def timer(minimum: float) -> Callable[[Statement], float]:
    """read_timer(): seconds, decimals allowed (microsecond resolution)."""
    def read(st: Statement) -> float:
        text = one(st)
        try:
            value = round(float(text), 6)
        except ValueError:
            value = -1.0
        if not value >= minimum or value > LVS_MAX_TIMEOUT or text.lower() in ("nan", "inf"):
            raise ConfigError(f"{st.where}: {st.keyword}: {text!r} is not a time in seconds "
                              f"(>= {minimum:g})")
        return value
    return read


def boolean(st: Statement) -> bool:
    """A flag, or a flag with an optional on/off value (keepalived's get_value_for_bool)."""
    if not st.args:
        return True
    word = one(st).lower()
    if word in ("on", "yes", "true", "1"):
        return True
    if word in ("off", "no", "false", "0"):
        return False
    raise ConfigError(f"{st.where}: {st.keyword}: {word!r} is not on/off/yes/no/true/false")


def flag(st: Statement) -> bool:
    if st.args:
        raise ConfigError(f"{st.where}: {st.keyword}: takes no value")
    return True


def text(st: Statement) -> str:
    if not st.args:
        raise ConfigError(f"{st.where}: {st.keyword}: missing value")
    return " ".join(st.args)


def addr(text: str, st: Statement) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ConfigError(f"{st.where}: {st.keyword}: {text!r} is not an IP address") from None


def port(text: str, st: Statement) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise ConfigError(f"{st.where}: {st.keyword}: {text!r} is not a port")
    return int(text)


def choice(*values: str) -> Callable[[Statement], str]:
    def read(st: Statement) -> str:
        word = one(st)
        for v in values:
            if word.upper() == v.upper():
                return v
        raise ConfigError(f"{st.where}: {st.keyword}: {word!r} is not one of "
                          f"{', '.join(values)}")
    return read


def read_hex(words: list[str], wildcards: bool, st: Statement) -> str:
    """read_hex_str(): free-format hex, two digits per octet from the left of each word,
    a lone last digit is an octet of its own; x/X wildcards where allowed.  Returns
    two characters per octet ('x' for a wildcard nibble)."""
    digits = "0123456789abcdef" + ("x" if wildcards else "")
    out = []
    for word in words:
        w = word.lower()
        if not w or any(c not in digits for c in w):
            raise ConfigError(f"{st.where}: {st.keyword}: {word!r} is not a hex string")
        for i in range(0, len(w), 2):
            pair = w[i:i + 2]
            out.append(pair if len(pair) == 2 else "0" + pair)
    if not out:
        raise ConfigError(f"{st.where}: {st.keyword}: missing hex string")
    return "".join(out)


def scheduler(st: Statement) -> str:
    name = one(st)
    if registry.lookup(name) is None:
        raise ConfigError(f"{st.where}: {st.keyword}: no scheduler {name!r} (have: "
                          f"{', '.join(registry.available())})")
    return name


def method(st: Statement, t: Target | VirtualServer) -> None:
    """lvs_method NAT|DR|TUN [type ipip|gue port N|gre] [nocsum|csum|remcsum]."""
    words = [a.upper() for a in st.args]
    if not words or words[0] not in ("NAT", "DR", "TUN"):
        raise ConfigError(f"{st.where}: {st.keyword}: expected NAT, DR or TUN")
    t.lvs_method = words[0]
    rest = [a.lower() for a in st.args[1:]]
    if rest and words[0] != "TUN":
        raise ConfigError(f"{st.where}: {st.keyword}: tunnel options need TUN")
    if rest[:1] == ["type"]:
        if len(rest) < 2 or rest[1] not in ("ipip", "gue", "gre"):
            raise ConfigError(f"{st.where}: {st.keyword}: type must be ipip, gue or gre")
        t.tun_type = rest[1]
        rest = rest[2:]
        if t.tun_type == "gue":
            if rest[:1] != ["port"] or len(rest) < 2:
                raise ConfigError(f"{st.where}: {st.keyword}: type gue needs port NUM")
            t.tun_port = port(rest[1], st)
            rest = rest[2:]
    if rest[:1] and rest[0] in ("nocsum", "csum", "remcsum") and t.tun_type in ("gue", "gre"):
        t.tun_flags = rest[0]
        rest = rest[1:]
    if rest:
        raise ConfigError(f"{st.where}: {st.keyword}: unexpected {' '.join(rest)!r}")
