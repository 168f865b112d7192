"""Start `pyvs run` inside a namespace and drive it with `pyvsadm`, as a user would.

Shared by the demo, the lab tests and the benchmarks, so all of them exercise the
real command-line path (process, control socket, plumbing) rather than a shortcut.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class DirectorError(RuntimeError):
    pass


class DirectorProcess:
    """`pyvs run` in network namespace `ns`; a context manager that always stops it."""

    def __init__(self, ns: str, log_path: str | os.PathLike | None = None,
                 log_level: str = "info", args: tuple[str, ...] = ()) -> None:
        self.ns = ns
        self.args = tuple(args)  # extra `pyvs run` options, e.g. ("--io", "ring")
        self.log_path = Path(log_path) if log_path else Path(f"/tmp/{ns}-pyvs.log")
        self.log_level = log_level
        self.proc: subprocess.Popen | None = None

    def _netns(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def start(self, timeout: float = 10.0) -> DirectorProcess:
        log = open(self.log_path, "wb")  # noqa: SIM115 - handed to the child
        env = dict(os.environ)
        self.proc = subprocess.Popen(
            self._netns([sys.executable, "-m", "pyvs.engine.cli", "run", "--log-level",
                         self.log_level, *self.args]),
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DirectorError(f"pyvs run exited: {self.log()}")
            if self.adm("-L", "-n", check=False).returncode == 0:
                return self
            time.sleep(0.05)
        self.stop()
        raise DirectorError(f"pyvs run did not answer within {timeout}s: {self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def adm(self, *args: str, stdin: str | None = None, check: bool = True,
            timeout: float = 10.0, cwd: str | os.PathLike | None = None
            ) -> subprocess.CompletedProcess:
        """Run `pyvsadm ARGS` in the director's namespace (from directory ``cwd``)."""
        env = dict(os.environ)
        proc = subprocess.run(self._netns([sys.executable, "-m", "pyvs.engine.pyvsadm", *args]),
                              input=stdin, capture_output=True, text=True, env=env,
                              timeout=timeout, cwd=cwd)
        if check and proc.returncode != 0:
            raise DirectorError(f"pyvsadm {' '.join(args)}: {proc.stderr.strip()}")
        return proc

    def sysctl(self, *settings: str) -> str:
        env = dict(os.environ)
        proc = subprocess.run(self._netns([sys.executable, "-m", "pyvs.engine.cli", "sysctl",
                                           *settings]),
                              capture_output=True, text=True, env=env, timeout=10)
        if proc.returncode != 0:
            raise DirectorError(f"pyvs sysctl {settings}: {proc.stderr.strip()}")
        return proc.stdout

    def status(self) -> dict:
        """`pyvs status`: connection count, drops by reason, port counters."""
        import json

        env = dict(os.environ)
        proc = subprocess.run(self._netns([sys.executable, "-m", "pyvs.engine.cli", "status"]),
                              capture_output=True, text=True, env=env, timeout=10)
        if proc.returncode != 0:
            raise DirectorError(f"pyvs status: {proc.stderr.strip()}")
        return json.loads(proc.stdout)

    def stop(self, timeout: float = 5.0) -> int | None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc else None
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait(timeout)

    def __enter__(self) -> DirectorProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
