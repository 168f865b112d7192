"""Labs without root: ``pyvs lab up --rootless`` and ``pyvs lab exec``.

An unprivileged user may create a user namespace, and in it be root over network and
mount namespaces of its own.  A rootless lab lives in such a user namespace, held by
one *keeper* process (``python -m pyvs.engine.lab.rootless``, started detached by
``lab up``):

* user namespace: the user is root inside (uid map ``0 UID 1``), with no privilege
  outside it;
* mount namespace: a tmpfs on /run, so named network namespaces (/run/netns, what
  ``ip netns`` and pyroute2 use) can be made without touching the host's /run;
* network namespace: the keeper's own, so nothing is created in the user's.

The lab in it is the same NatLab/DrLab/TunLab a root lab is.  Its state (lab.json, the
servers' logs, keeper.json) lives in ``$TMPDIR/pyvs-lab-UID/NAME`` (a directory only
that user may enter), not /run/pyvs-lab.  ``pyvs lab exec NAME ROLE -- CMD`` enters the
keeper's user and mount namespaces (setns) and runs ``ip netns exec NAME-ROLE CMD``:
there CMD is root of that namespace, so ``pyvs run``, ``pyvsadm`` and curl work as in a
root lab.  ``lab down`` stops the keeper, which tears the lab down; whatever is left in
its user namespace (a killed keeper) is killed by that namespace's identity.

The NFQUEUE port works there (engine/io/nfqueue.py: the kernel refuses rewritten
packets in verdicts, pyvs sends them itself); ``--io xdp`` does not (BPF needs
privileges in the initial user namespace).  TUN labs need /dev/net/tun, which many
systems give to root only (``TUN_ADVICE``).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import select
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .kinds import LABS
from .netns import LabError
from .topology import check_name, new_name

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_REC, MS_PRIVATE = 0x4000, 1 << 18
SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")  # ip, sysctl, nft: not on a user's PATH
UP_TIMEOUT = 120.0
DOWN_TIMEOUT = 30.0
TUN_DEVICE = "/dev/net/tun"
TUN_ADVICE = ("TUN labs need read/write access to /dev/net/tun for `pyvs realserver`, "
              "which this user lacks ({mode}); an administrator grants it with "
              "`setfacl -m u:{user}:rw /dev/net/tun` (or `chmod 0666 /dev/net/tun`, "
              "which many distributions ship); or use --mode nat or dr")


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise LabError(f"{what}: {os.strerror(err)}")


# -- where the state lives ---------------------------------------------------------------
def state_root() -> Path:
    """``$TMPDIR/pyvs-lab-UID``, created private (0700) and checked to be this user's
    own directory, as tmux does for its sockets (a shared /tmp)."""
    root = Path(tempfile.gettempdir()) / f"pyvs-lab-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        root.mkdir(mode=0o700)
    st = os.lstat(root)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise LabError(f"{root} is not a private directory of this user (owner uid "
                       f"{st.st_uid}, mode {stat.filemode(st.st_mode)}): remove it")
    if root.resolve().is_relative_to("/run"):
        raise LabError(f"{root} is under /run, which a rootless lab hides: set TMPDIR")
    return root


def keeper_info(name: str, root: Path | None = None) -> dict | None:
    """The keeper of rootless lab ``name`` ({pid, start, userns}) if it exists."""
    path = (root or state_root()) / check_name(name) / "keeper.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _proc_start(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(info: dict) -> bool:
    return _proc_start(info["pid"]) == info["start"]


# -- the namespaces ------------------------------------------------------------------------
def tun_problem() -> str | None:
    """Why this user cannot open /dev/net/tun (TUN_ADVICE), or None."""
    if os.access(TUN_DEVICE, os.R_OK | os.W_OK):
        return None
    try:
        mode = stat.filemode(os.stat(TUN_DEVICE).st_mode)
    except OSError:
        mode = "missing"
    import pwd

    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = str(os.getuid())
    return TUN_ADVICE.format(mode=f"{TUN_DEVICE} is {mode}", user=user)


def enter_new_namespaces() -> None:
    """The keeper's start: new user, mount and network namespaces, root inside, a tmpfs
    on /run with /run/netns in it, sbin directories on PATH."""
    uid, gid = os.getuid(), os.getgid()
    libc = _libc()
    _check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET),
           "cannot create a user namespace (is kernel.unprivileged_userns_clone or "
           "user.max_user_namespaces 0?)")
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"0 {uid} 1")
    Path("/proc/self/gid_map").write_text(f"0 {gid} 1")
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None),
           "cannot make the mounts private")
    _check(libc.mount(b"tmpfs", b"/run", b"tmpfs", 0, b"mode=0755"),
           "cannot mount a tmpfs on /run")
    Path("/run/netns").mkdir()
    _add_sbin_to_path()


def enter_keeper(info: dict) -> None:
    """Join a keeper's user and mount namespaces (setns): root of the lab's namespaces."""
    libc = _libc()
    cwd = os.getcwd()
    for kind, flag in (("user", CLONE_NEWUSER), ("mnt", CLONE_NEWNS)):
        fd = os.open(f"/proc/{info['pid']}/ns/{kind}", os.O_RDONLY)
        try:
            _check(libc.setns(fd, flag), f"cannot enter the lab's {kind} namespace")
        finally:
            os.close(fd)
    try:
        os.chdir(cwd)  # setns into a mount namespace moves to its root
    except OSError:
        os.chdir("/")
    _add_sbin_to_path()


def _add_sbin_to_path() -> None:
    path = os.environ.get("PATH", "/usr/bin:/bin").split(":")
    os.environ["PATH"] = ":".join(path + [d for d in SBIN if d not in path])


# -- the user's side: up, exec, down -----------------------------------------------------
def lab_up(mode: str, real_servers: int, clients: int, name: str | None = None,
           timeout: float = UP_TIMEOUT, server_options: dict | None = None) -> dict:
    """Start a keeper that builds the lab; returns its ``describe()`` once it is up."""
    if mode not in LABS:
        raise LabError(f"lab mode {mode!r} not available (have: {', '.join(LABS)})")
    if mode == "tun" and (problem := tun_problem()):
        raise LabError(problem)
    root = state_root()
    name = check_name(name or new_name())
    if (root / name).exists():
        raise LabError(f"a lab named {name} already exists")
    log_path = root / f"{name}.keeper.log"
    argv = [sys.executable, "-m", "pyvs.engine.lab.rootless", "keep", "--name", name,
            "--mode", mode,
            "--real-servers", str(real_servers), "--clients", str(clients),
            "--state-root", str(root), "--server-options", json.dumps(server_options or {})]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=log, start_new_session=True)
    line = _first_line(proc, timeout)
    proc.stdout.close()
    try:
        reply = json.loads(line) if line else {}
    except ValueError:
        reply = {}
    if "describe" in reply:
        return reply["describe"]
    if proc.poll() is None:  # hung: take it down
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(DOWN_TIMEOUT)
    error = reply.get("error") or _tail(log_path) or f"keeper exited ({proc.poll()})"
    with contextlib.suppress(LabError):
        lab_down(name)
    raise LabError(error)


def _first_line(proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    data = b""
    fd = proc.stdout.fileno()
    while b"\n" not in data and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").partition("\n")[0]


def _tail(path: Path) -> str:
    try:
        lines = [x for x in path.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def exec_argv(name: str, role: str, argv: list[str]) -> list[str]:
    """The command that runs ``argv`` in namespace ``NAME-ROLE`` of rootless lab
    ``name``: this module's ``enter`` in a fresh process (setns into a user namespace
    needs a single-threaded process, and the caller may have started threads: numpy's
    BLAS does).  Raises LabError when there is no such running lab."""
    info = keeper_info(name)
    if info is None:
        raise LabError(f"no lab named {name}")
    if not _alive(info):
        raise LabError(f"the keeper of lab {name} is gone: run `pyvs lab down {name}`")
    return [sys.executable, "-m", "pyvs.engine.lab.rootless", "enter", "--name", name,
            "--role", role, "--", *argv]


def enter(args: argparse.Namespace) -> int:
    """Join the keeper's namespaces and exec ``ip netns exec NAME-ROLE CMD``."""
    try:
        info = keeper_info(args.name)
        if info is None or not _alive(info):
            raise LabError(f"no running lab named {args.name}")
        enter_keeper(info)
        ns = f"{args.name}-{args.role}"
        if not Path("/run/netns", ns).exists():
            roles = sorted(p.name[len(args.name) + 1:] for p in Path("/run/netns").iterdir()
                           if p.name.startswith(args.name + "-"))
            raise LabError(f"lab {args.name} has no namespace {args.role!r} (it has: "
                           f"{', '.join(roles)})")
        argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        os.execvp("ip", ["ip", "netns", "exec", ns, *argv])
    except (LabError, OSError) as err:
        sys.stderr.write(f"pyvs lab: {err}\n")
        return 1


def lab_down(name: str, timeout: float = DOWN_TIMEOUT) -> bool:
    """Stop rootless lab ``name``: the keeper tears it down; processes left in its user
    namespace are killed.  Returns False if there was no such lab."""
    root = state_root()
    check_name(name)
    state = root / name
    log_path = root / f"{name}.keeper.log"
    if not state.exists() and not log_path.exists():
        return False
    info = keeper_info(name, root)
    if info is not None and _alive(info):
        os.kill(info["pid"], signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(info) and time.monotonic() < deadline:
            time.sleep(0.05)
    if info is not None:
        _kill_userns(info, timeout)
    subprocess.run(["rm", "-rf", "--one-file-system", str(state)], check=False, timeout=60)
    log_path.unlink(missing_ok=True)
    return True


def _kill_userns(info: dict, timeout: float) -> None:
    """SIGKILL every process of this user in the lab's user namespace (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [pid for pid in _pids() if _userns(pid) == info["userns"]]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _userns(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/user").st_ino
    except OSError:
        return None


# -- the keeper --------------------------------------------------------------------------
def keep(args: argparse.Namespace) -> int:
    """Build the lab inside new namespaces, report on stdout, hold it until SIGTERM."""
    lab = None
    stopping = False

    def stop(signum, frame):  # noqa: ARG001
        nonlocal stopping
        stopping = True

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    root = Path(args.state_root)
    try:
        enter_new_namespaces()
        cls = LABS[args.mode]
        lab = cls(name=args.name, real_servers=args.real_servers, clients=args.clients,
                  start_servers=True, detached=True, state_root=root,
                  server_options=json.loads(args.server_options))
        lab.up()
        info = {"pid": os.getpid(), "start": _proc_start(os.getpid()),
                "userns": os.stat("/proc/self/ns/user").st_ino}
        (lab.state_dir / "keeper.json").write_text(json.dumps(info))
        describe = lab.describe()
        describe.update(rootless=True, keeper_pid=os.getpid())
        _report({"describe": describe})
    except Exception as err:  # noqa: BLE001 - whatever it was, `lab up` says it in one line
        _report({"error": f"rootless lab {args.name}: {err}"})
        return 1
    while not stopping:
        signal.pause()
    lab.down()
    return 0


def _report(reply: dict) -> None:
    """One JSON line to ``lab up``, then stdout goes to the log (stderr)."""
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
    os.dup2(2, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyvs.engine.lab.rootless",
                                     description="a rootless lab's keeper, and the way into "
                                                 "it (used by `pyvs lab`)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keep")
    k.add_argument("--name", required=True)
    k.add_argument("--mode", choices=sorted(LABS), required=True)
    k.add_argument("--real-servers", type=int, required=True)
    k.add_argument("--clients", type=int, required=True)
    k.add_argument("--state-root", required=True)
    k.add_argument("--server-options", default="{}")
    e = sub.add_parser("enter")
    e.add_argument("--name", required=True)
    e.add_argument("--role", required=True)
    e.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    return keep(args) if args.cmd == "keep" else enter(args)


if __name__ == "__main__":
    sys.exit(main())
