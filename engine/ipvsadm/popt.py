"""A popt-like tokenizer over ipvsadm's option table (the poptOption array of
ipvsadm.c): long names, short names and what argument each takes.

popt semantics: non-options are kept as leftovers, "--" ends options, short options
cluster ("-Ln"), an argument may be attached ("-t1.2.3.4:80", "--weight=3"), and the
optional argument of -p is the next word unless that starts with "-".
"""

from __future__ import annotations

from collections.abc import Iterator

# long name -> (tag, argument kind); the tag is the short name where there is one
NONE_, REQ, OPT = 0, 1, 2
_LONG = {
    "add-service": ("A", NONE_), "edit-service": ("E", NONE_),
    "delete-service": ("D", NONE_), "clear": ("C", NONE_), "list": ("L", NONE_),
    "zero": ("Z", NONE_), "add-server": ("a", NONE_), "edit-server": ("e", NONE_),
    "delete-server": ("d", NONE_), "set": ("set", NONE_), "help": ("h", NONE_),
    "version": ("v", NONE_), "restore": ("R", NONE_), "save": ("S", NONE_),
    "start-daemon": ("start-daemon", REQ), "stop-daemon": ("stop-daemon", REQ),
    "tcp-service": ("t", REQ), "udp-service": ("u", REQ), "sctp-service": ("sctp", REQ),
    "fwmark-service": ("f", REQ), "scheduler": ("s", REQ), "persistent": ("p", OPT),
    "netmask": ("M", REQ), "real-server": ("r", REQ), "masquerading": ("m", NONE_),
    "ipip": ("i", NONE_), "gatewaying": ("g", NONE_), "weight": ("w", REQ),
    "u-threshold": ("x", REQ), "l-threshold": ("y", REQ), "numeric": ("n", NONE_),
    "connection": ("c", NONE_), "mcast-interface": ("mcast-interface", REQ),
    "syncid": ("syncid", REQ), "timeout": ("timeout", NONE_), "daemon": ("daemon", NONE_),
    "stats": ("stats", NONE_), "rate": ("rate", NONE_), "thresholds": ("thresholds", NONE_),
    "persistent-conn": ("persistent-conn", NONE_), "nosort": ("nosort", NONE_),
    "sort": ("sort", NONE_), "exact": ("X", NONE_), "ipv6": ("6", NONE_), "ops": ("o", NONE_),
    "pe": ("pe", REQ), "sched-flags": ("b", REQ), "mcast-group": ("mcast-group", REQ),
    "mcast-port": ("mcast-port", REQ), "mcast-ttl": ("mcast-ttl", REQ),
    "sync-maxlen": ("sync-maxlen", REQ), "tun-info": ("tun-info", NONE_),
    "tun-type": ("tun-type", REQ), "tun-port": ("tun-port", REQ),
    "tun-nocsum": ("tun-nocsum", NONE_), "tun-csum": ("tun-csum", NONE_),
    "tun-remcsum": ("tun-remcsum", NONE_),
}
_SHORT = {tag: kind for tag, kind in _LONG.values() if len(tag) == 1}
_SHORT["l"] = NONE_  # -l is the second short name of --list
# -V is not an ipvsadm option; accepted as an alias of -v for convenience.
_SHORT["V"] = NONE_

POPT_NOARG = "missing argument"
POPT_BADOPT = "unknown option"
POPT_UNWANTEDARG = "option does not take an argument"


def tokenize(argv: list[str]) -> Iterator[tuple]:
    """Yield ('opt', tag, arg, token) / ('err', message, token) / ('arg', value);
    nothing follows an 'err'."""
    i = 0
    n = len(argv)
    while i < n:
        tok = argv[i]
        i += 1
        if tok == "--":
            for rest in argv[i:]:
                yield ("arg", rest)
            return
        if tok.startswith("--"):
            name, eq, val = tok[2:].partition("=")
            spec = _LONG.get(name)
            if spec is None:
                yield ("err", POPT_BADOPT, tok)
                return
            tag, kind = spec
            if kind == NONE_:
                if eq:
                    yield ("err", POPT_UNWANTEDARG, tok)
                    return
                yield ("opt", tag, None, tok)
            elif eq:
                yield ("opt", tag, val, tok)
            elif i < n and (kind == REQ or not argv[i].startswith("-")):
                yield ("opt", tag, argv[i], tok)
                i += 1
            elif kind == OPT:
                yield ("opt", tag, None, tok)
            else:
                yield ("err", POPT_NOARG, tok)
                return
            continue
        if tok.startswith("-") and len(tok) > 1:
            j = 1
            while j < len(tok):
                ch = tok[j]
                j += 1
                kind = _SHORT.get(ch)
                if kind is None:
                    yield ("err", POPT_BADOPT, tok)
                    return
                tag = {"l": "L", "V": "v"}.get(ch, ch)
                if kind == NONE_:
                    yield ("opt", tag, None, tok)
                    continue
                if j < len(tok):
                    yield ("opt", tag, tok[j:], tok)
                elif i < n and (kind == REQ or not argv[i].startswith("-")):
                    yield ("opt", tag, argv[i], tok)
                    i += 1
                elif kind == OPT:
                    yield ("opt", tag, None, tok)
                else:
                    yield ("err", POPT_NOARG, tok)
                    return
                break
            continue
        yield ("arg", tok)
