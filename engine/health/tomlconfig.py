"""`pyvs run --config FILE`: the same configuration in TOML, for people without keepalived.

Keys are keepalived's directive names, so keepalived.conf(5) documents both::

    [global_defs]
    lvs_timeouts = { tcp = 900, tcpfin = 120, udp = 300 }

    [[virtual_server_group]]
    name = "web"
    members = ["198.18.1.1 80", "198.18.1.2-3 80", "fwmark 7"]

    [[virtual_server]]
    address = "198.18.1.1"          # or fwmark = 5, or group = "web"
    port = 80
    lvs_sched = "rr"
    lvs_method = "NAT"              # "TUN type gue port 6080 csum" as in keepalived
    delay_loop = 2
    sorry_server = "198.18.2.99 80"

      [[virtual_server.real_server]]
      address = "198.18.2.11"
      port = 80
      weight = 2

        [[virtual_server.real_server.HTTP_GET]]
        connect_timeout = 1
        url = [{ path = "/", status_code = ["200-299"] }]

A flag is ``true`` (``false`` leaves it off); a list is the directive's words.  The
tables become keepalived statements and go through the keepalived interpreter
(keepalived.py), so both front ends accept and refuse exactly the same settings.
Errors name FILE:LINE of the key (tomllib's own message for TOML syntax errors).
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

from pyvs.engine.health import keepalived as ka
from pyvs.engine.health.kalex import Statement
from pyvs.engine.health.model import ConfigError, HealthConfig
from pyvs.engine.health.resolve import resolve

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\" ]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*=")
BLOCKS = {"real_server", "url", *ka.CHECK_EXTRA}
ADDRESSED = {"virtual_server", "real_server"}


def key_lines(text: str) -> dict[str, int]:
    """Line of each table and key, by path ("virtual_server[0].real_server[1].weight").
    Arrays of tables are counted per parent element, as TOML nests them."""
    lines: dict[str, int] = {}
    counts: dict[str, int] = {}
    current = ""
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            names = header.group(2).replace('"', "").replace(" ", "").split(".")
            path = ""
            for name in names[:-1]:  # the parents are the latest element of each array
                path = f"{path}.{name}" if path else name
                if f"{path}#" in counts:
                    path = f"{path}[{counts[f'{path}#'] - 1}]"
            path = f"{path}.{names[-1]}" if path else names[-1]
            if header.group(1) == "[[":
                n = counts.get(f"{path}#", 0)
                counts[f"{path}#"] = n + 1
                for stale in [k for k in counts if k.startswith(f"{path}[")]:
                    del counts[stale]
                path = f"{path}[{n}]"
            current = path
            lines[current] = number
            continue
        key = _KEY.match(line)
        if key:
            lines[f"{current}.{key.group(1)}" if current else key.group(1)] = number
    return lines


class _Builder:
    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = key_lines(text)

    def where(self, key: str) -> str:
        probe = key
        while probe:
            if probe in self.lines:
                return f"{self.path}:{self.lines[probe]}"
            probe = probe.rpartition(".")[0]
        return f"{self.path}:1"

    def words(self, value: object, where: str, name: str) -> list[str] | None:
        """A TOML value as the directive's words; None for ``false`` (left off)."""
        if isinstance(value, bool):
            return [] if value else None
        if isinstance(value, (int, float)):
            return [repr(value) if isinstance(value, float) else str(value)]
        if isinstance(value, str):
            return [value] if name in _WHOLE_TEXT else value.split()
        if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
            return [str(v) for v in value]
        raise ConfigError(f"{where}: {name}: expected a string, a number, true/false or a "
                          f"list of those")

    def statements(self, table: dict, path: str) -> list[Statement]:
        out = []
        for name, value in table.items():
            key = f"{path}.{name}" if path else name
            where = self.where(key)
            if name in ("address", "port") and path.rpartition(".")[2].split("[")[0] in \
                    ADDRESSED:
                continue  # the block's head, read by block()
            if name in BLOCKS or (isinstance(value, list) and value
                                  and all(isinstance(v, dict) for v in value)):
                items = value if isinstance(value, list) else [value]
                for i, item in enumerate(items):
                    if not isinstance(item, dict):
                        raise ConfigError(f"{where}: {name}: expected a table")
                    out.append(self.block(name, item, f"{key}[{i}]"))
                continue
            if isinstance(value, dict):
                raise ConfigError(f"{where}: {name}: not supported by pyvs as a table")
            words = self.words(value, where, name)
            if words is not None:
                out.append(Statement(name, words, where))
        return out

    def block(self, name: str, table: dict, path: str) -> Statement:
        where = self.where(path)
        head: list[str] = []
        if name in ADDRESSED:
            if "address" in table:
                head = [str(table["address"])] + ([str(table["port"])] if "port" in table
                                                  else [])
            elif name == "virtual_server" and "fwmark" in table:
                head = ["fwmark", str(table.pop("fwmark"))]
            elif name == "virtual_server" and "group" in table:
                head = ["group", str(table.pop("group"))]
            else:
                raise ConfigError(f"{where}: {name}: needs address (or fwmark / group)")
        return Statement(name, head, where, self.statements(table, path))


_WHOLE_TEXT = {"misc_path", "notify_up", "notify_down", "quorum_up", "quorum_down", "user",
               "regex", "path", "virtualhost", "name", "password", "ca", "certificate", "key"}


def load(path: str | os.PathLike) -> HealthConfig:
    """Parse, complete and check a native TOML configuration; raises ConfigError."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: {err.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: {err}") from None
    b = _Builder(str(path), text)
    cfg = HealthConfig(source=str(path))
    for name, value in data.items():
        where = b.where(name)
        if name == "virtual_server":
            for i, item in enumerate(value if isinstance(value, list) else [value]):
                st = b.block("virtual_server", item, f"virtual_server[{i}]")
                cfg.virtual_servers.append(ka.virtual_server(st, cfg.notices))
        elif name == "virtual_server_group":
            for i, item in enumerate(value if isinstance(value, list) else [value]):
                cfg.groups.append(_group(b, item, f"virtual_server_group[{i}]"))
        elif name == "global_defs" and isinstance(value, dict):
            _global_defs(b, value, cfg)
        elif name == "SSL" and isinstance(value, dict):
            ka.ssl_block(Statement("SSL", [], where, b.statements(value, "SSL")), cfg)
        else:
            raise ConfigError(f"{where}: {name}: not supported by pyvs at the top level")
    return resolve(cfg)


def _group(b: _Builder, item: dict, path: str) -> object:
    where = b.where(path)
    if "name" not in item or not isinstance(item.get("members", []), list):
        raise ConfigError(f"{where}: virtual_server_group: needs name and members = [...]")
    unknown = set(item) - {"name", "members"}
    if unknown:
        raise ConfigError(f"{where}: virtual_server_group: unknown key {sorted(unknown)[0]}")
    entries = []
    for member in item.get("members", []):
        words = str(member).split()
        if not words:
            raise ConfigError(f"{b.where(path + '.members')}: empty member")
        entries.append(Statement(words[0], words[1:], b.where(path + ".members")))
    return ka.virtual_server_group(Statement("virtual_server_group", [str(item["name"])],
                                             where, entries))


def _global_defs(b: _Builder, table: dict, cfg: HealthConfig) -> None:
    table = dict(table)
    timeouts = table.pop("lvs_timeouts", None)
    statements = b.statements(table, "global_defs")
    if timeouts is not None:
        where = b.where("global_defs.lvs_timeouts")
        if not isinstance(timeouts, dict):
            raise ConfigError(f"{where}: lvs_timeouts: expected {{ tcp = N, tcpfin = N, "
                              f"udp = N }}")
        words = [str(x) for k, v in timeouts.items() for x in (k, v)]
        statements.append(Statement("lvs_timeouts", words, where))
    ka.global_defs(Statement("global_defs", [], b.where("global_defs"), statements), cfg)
