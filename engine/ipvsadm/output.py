"""What one ipvsadm invocation prints and how it ends: its two output streams, the
exit codes of ipvsadm 1.31 and libipvs' error texts (ipvs_strerror).

ipvsadm's fail() exits 2; popt errors, the "Try ..." hint and kernel (libipvs)
errors exit 255 (main returns -1); listing a service that does not exist exits 1.
"""

from __future__ import annotations

import errno
import os

PROG = "pyvsadm"  # ipvsadm prints its argv[0] in usage and "Try" messages

EXIT_FAIL = 2  # fail()
EXIT_MINUS1 = 255  # exit(-1) / return -1 from main: popt, tryhelp, libipvs errors
EXIT_LIST = 1  # list_service(): service not found

# libipvs ipvs_strerror(): messages that depend on the operation, then generic ones
_ERR_BY_OP = {
    ("add_service", errno.EEXIST): "Service already exists",
    ("add_service", errno.ENOENT): "Scheduler or persistence engine not found",
    ("update_service", errno.ESRCH): "No such service",
    ("update_service", errno.ENOENT): "Scheduler or persistence engine not found",
    ("del_service", errno.ESRCH): "No such service",
    ("zero_service", errno.ESRCH): "No such service",
    ("add_dest", errno.ESRCH): "Service not defined",
    ("add_dest", errno.EEXIST): "Destination already exists",
    ("update_dest", errno.ESRCH): "Service not defined",
    ("update_dest", errno.ENOENT): "No such destination",
    ("del_dest", errno.ESRCH): "Service not defined",
    ("del_dest", errno.ENOENT): "No such destination",
    ("start_daemon", errno.EEXIST): "Daemon has already run",
    ("stop_daemon", errno.ESRCH): "No daemon is running",
    ("get_services", errno.ESRCH): "No such service",
    ("get_dests", errno.ESRCH): "No such service",
    ("get_service", errno.ESRCH): "No such service",
}
_ERR_ANY = {
    errno.EPERM: "Permission denied (you must be root)",
    errno.EINVAL: "Invalid operation.  Possibly wrong module version, address not unicast, ...",
    errno.ENOPROTOOPT: "Protocol not available",
    errno.ENOMEM: "Memory allocation problem",
    errno.EOPNOTSUPP: "Operation not supported with IPv6",
    errno.EAFNOSUPPORT: "Operation not supported with specified address family",
    errno.EMSGSIZE: "Module is wrong version",
}


def ipvs_strerror(op: str, err: int) -> str:
    msg = _ERR_BY_OP.get((op, err)) or _ERR_ANY.get(err)
    return msg if msg is not None else os.strerror(err)


class Exit(Exception):
    """Ends the invocation with ``code`` (ipvsadm's exit() calls)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Out:
    """The invocation's stdout and stderr, collected for the reply to pyvsadm."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.err: list[str] = []
        self.sync = None  # engine/sync/daemon.py SyncDaemons, for the daemon commands
        self.cwd: str | None = None  # pyvsadm's directory: relative plugin paths are its

    def p(self, s: str) -> None:
        self.out.append(s)

    def e(self, s: str) -> None:
        self.err.append(s)

    def fail(self, msg: str) -> None:
        """ipvsadm's fail(2, ...)."""
        self.e(msg + "\n")
        raise Exit(EXIT_FAIL)

    def tryhelp(self) -> None:
        self.e(f"Try `{PROG} -h' or '{PROG} --help' for more information.\n")
        raise Exit(EXIT_MINUS1)
