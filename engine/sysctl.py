"""The net.ipv4.vs.* settings, with the kernel's names, defaults and ranges, and which
of them pyvs implements.

Source: Documentation/networking/ipvs-sysctl.rst and ip_vs_ctl.c
(ip_vs_control_net_init_sysctl).  Values are integers, as in /proc/sys.

Every setting reads back (its default until changed), but a value pyvs would not act
on is refused with the reason (REFUSED), never accepted and ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

PREFIX = "net.ipv4.vs."


@dataclass(frozen=True)
class Setting:
    default: int | tuple[int, int]
    low: int = 0
    high: int = 2**31 - 1
    doc: str = ""


SETTINGS: dict[str, Setting] = {
    "am_droprate": Setting(10, 0, 2**31 - 1, "drop rate in drop_packet mode 3"),
    "amemthresh": Setting(1024, 0, 2**31 - 1, "memory threshold (pages) for defenses"),
    "backup_only": Setting(0, 0, 1, "no director function while a backup sync daemon runs"),
    "cache_bypass": Setting(0, 0, 1, "forward to the original destination when no dest"),
    "conn_reuse_mode": Setting(1, 0, 3, "reschedule SYNs that reuse an old entry"),
    "conntrack": Setting(0, 0, 1, "keep netfilter conntrack for IPVS flows"),
    "drop_entry": Setting(0, 0, 3, "defense: drop entries under memory pressure"),
    "drop_packet": Setting(0, 0, 3, "defense: drop new-connection packets"),
    "expire_nodest_conn": Setting(0, 0, 1, "expire entries whose destination was deleted"),
    "expire_quiescent_template": Setting(0, 0, 1, "templates on weight-0 dests stop matching"),
    "ignore_tunneled": Setting(0, 0, 1, "ignore tunnelled packets"),
    "lblc_expiration": Setting(86400, 0, 2**31 - 1, "seconds an lblc entry lives unused"),
    "lblcr_expiration": Setting(86400, 0, 2**31 - 1, "seconds an lblcr set lives unmodified"),
    "nat_icmp_send": Setting(0, 0, 1, "ICMP unreachable for NAT replies with no entry"),
    "pmtu_disc": Setting(1, 0, 1, "copy DF to tunnel headers and send frag-needed"),
    "run_estimation": Setting(1, 0, 1, "run the rate estimator"),
    "schedule_icmp": Setting(0, 0, 1, "schedule ICMP errors that match no entry"),
    "secure_tcp": Setting(0, 0, 3, "use the defense TCP state tables"),
    "sloppy_sctp": Setting(0, 0, 1, "create SCTP entries without INIT"),
    "sloppy_tcp": Setting(0, 0, 1, "create TCP entries without SYN"),
    "snat_reroute": Setting(1, 0, 1, "re-route NAT replies as if locally generated"),
    "sync_persist_mode": Setting(0, 0, 1, "do not sync connections under templates"),
    "sync_ports": Setting(1, 1, 64, "sync threads/ports (power of two)"),
    "sync_qlen_max": Setting(65536, 1, 2**31 - 1, "queued sync buffers limit"),
    "sync_refresh_period": Setting(0, 0, 2**31 - 1, "resync an unchanged entry after N s"),
    "sync_retries": Setting(0, 0, 3, "sync retries for refreshed entries"),
    "sync_sock_size": Setting(0, 0, 2**31 - 1, "sync socket buffer size"),
    "sync_threshold": Setting((3, 50), 0, 2**31 - 1, "sync at in_pkts % period == threshold"),
    "sync_version": Setting(1, 0, 1, "sync message version"),
}


NOT_YET = "not implemented yet"
NOT_PYVS = "not implemented by pyvs"


@dataclass(frozen=True)
class Refusal:
    """Why pyvs refuses ``values`` of a setting (None: every value but the default)."""

    reason: str
    values: frozenset[int] | None = None


# Settings (or values) pyvs does not act on.  Every setting not listed here is read by
# the engine where the kernel reads it; implementing one is deleting its line.
REFUSED: dict[str, Refusal] = {
    "backup_only": Refusal(f"{NOT_YET} (a director running a backup sync daemon still "
                           "forwards)"),
    "conntrack": Refusal(f"{NOT_PYVS} (its connections are not entered in netfilter's "
                         "conntrack table)"),
    "ignore_tunneled": Refusal(f"{NOT_PYVS} (it cannot tell a decapsulated packet from "
                               "another)"),
    "schedule_icmp": Refusal(f"{NOT_PYVS} (ICMP errors never create connections)"),
    "sloppy_sctp": Refusal(f"{NOT_PYVS} (no SCTP)"),
    "snat_reroute": Refusal(f"{NOT_PYVS} (NAT replies keep the route the director's stack "
                            "chose for them)"),
}
assert set(REFUSED) <= set(SETTINGS)


def implemented() -> list[str]:
    """The settings pyvs acts on, every value of their range."""
    return sorted(name for name in SETTINGS if name not in REFUSED)


def refusal(name: str, value: int | tuple[int, int]) -> str | None:
    """Why pyvs refuses ``value`` for setting ``name`` (short name), or None."""
    rule = REFUSED.get(name)
    if rule is None or value == SETTINGS[name].default:
        return None
    if rule.values is not None and value not in rule.values:
        return None
    return rule.reason


class SysctlError(ValueError):
    pass


class Sysctl:
    """The current values; read by the engine on every decision that uses them."""

    def __init__(self) -> None:
        self._values: dict[str, int | tuple[int, int]] = {
            name: s.default for name, s in SETTINGS.items()
        }
        self._watchers: list[Callable[[str], None]] = []

    def watch(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(short_name)`` after every successful set() (the kernel's
        proc handlers that act on a write, e.g. proc_do_defense_mode)."""
        self._watchers.append(callback)

    def store(self, name: str, value: int) -> None:
        """Write a value from inside the engine, without the write handlers (as
        update_defense_level flips drop_entry between 1 and 2)."""
        self._values[self._key(name)] = value

    @staticmethod
    def _key(name: str) -> str:
        short = name[len(PREFIX):] if name.startswith(PREFIX) else name
        short = short.replace("/", ".").split(".")[-1]
        if short not in SETTINGS:
            raise SysctlError(f"sysctl: cannot stat /proc/sys/{name.replace('.', '/')}:"
                              " No such file or directory")
        return short

    def __getattr__(self, name: str) -> int:
        try:
            return self._values[name]  # type: ignore[return-value]
        except KeyError:
            raise AttributeError(name) from None

    def get(self, name: str) -> int | tuple[int, int]:
        return self._values[self._key(name)]

    def set(self, name: str, value: str | int | tuple[int, int]) -> None:
        key = self._key(name)
        setting = SETTINGS[key]
        if isinstance(value, str):
            parts = value.split()
            try:
                nums = [int(p) for p in parts]
            except ValueError:
                raise SysctlError(f"sysctl: setting key \"{PREFIX}{key}\": Invalid argument"
                                  ) from None
        elif isinstance(value, tuple):
            nums = list(value)
        else:
            nums = [value]
        want = 2 if isinstance(setting.default, tuple) else 1
        if len(nums) != want or any(not setting.low <= n <= setting.high for n in nums):
            raise SysctlError(f"sysctl: setting key \"{PREFIX}{key}\": Invalid argument")
        if key == "sync_threshold" and nums[1] and nums[0] >= nums[1]:
            raise SysctlError(f"sysctl: setting key \"{PREFIX}{key}\": Invalid argument")
        new = tuple(nums) if want == 2 else nums[0]
        why = refusal(key, new)  # type: ignore[arg-type]
        if why is not None:
            raise SysctlError(f"pyvs sysctl: {PREFIX}{key}: {why}")
        self._values[key] = new  # type: ignore[assignment]
        for callback in self._watchers:
            callback(key)

    def format(self, name: str) -> str:
        key = self._key(name)
        value = self._values[key]
        text = "\t".join(map(str, value)) if isinstance(value, tuple) else str(value)
        return f"{PREFIX}{key} = {text}"

    def names(self) -> list[str]:
        return sorted(self._values)
