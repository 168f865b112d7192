"""pyvsadm: ipvsadm for pyvs.  A thin client: argv and stdin go to the director.

Kept to the standard library's lightest modules so scripts can call it in loops;
parsing and formatting happen in the daemon (engine/ipvsadm.py).
"""

from __future__ import annotations

import os
import sys


def _cwd() -> str | None:
    """This directory, against which the director reads relative plugin paths."""
    try:
        return os.getcwd()
    except OSError:  # removed under us: relative paths then name nothing
        return None


def main(argv: list[str] | None = None) -> int:
    from pyvs.engine.control import client_request

    args = list(sys.argv[1:] if argv is None else argv)
    stdin = ""
    if any(a in ("-R", "--restore") for a in args):
        stdin = sys.stdin.read()
    if os.geteuid() != 0:
        sys.stderr.write("Permission denied (you must be root)\n")
        return 1
    try:
        reply = client_request({"op": "ipvsadm", "argv": args, "stdin": stdin,
                                "cwd": _cwd()})
    except (FileNotFoundError, ConnectionRefusedError):
        sys.stderr.write("Can't initialize ipvs: no pyvs director runs in this network "
                         "namespace (start one with `pyvs run`)\n")
        return 1
    except OSError as err:
        sys.stderr.write(f"pyvsadm: cannot reach the pyvs director: {err}\n")
        return 1
    sys.stdout.write(reply.get("out", ""))
    sys.stderr.write(reply.get("err", ""))
    return int(reply.get("rc", 1))


if __name__ == "__main__":
    sys.exit(main())
