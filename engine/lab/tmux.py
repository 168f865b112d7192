"""A full-screen program in a real terminal, driven as a user drives it: tmux runs it in
a detached session of a fixed size on a private server (-L), keys go in with send-keys,
the screen comes back with capture-pane (plain, or with ANSI colours for a screenshot).
Used by the `pyvs top` test and scripts/top_screenshot.py."""

from __future__ import annotations

import os
import shlex
import subprocess
import time


class TmuxPane:
    def __init__(self, argv: list[str], width: int = 150, height: int = 45,
                 env: dict[str, str] | None = None) -> None:
        self.server = f"pyvs-{os.getpid()}-{time.monotonic_ns()}"
        self.argv = argv
        self.size = (width, height)
        self.env = env or {}

    def _tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["tmux", "-L", self.server, "-f", "/dev/null", *args],
                              capture_output=True, text=True, check=check, timeout=10)

    def start(self) -> TmuxPane:
        width, height = self.size
        env = [f"{k}={shlex.quote(v)}" for k, v in self.env.items()]
        command = " ".join(["env", "-u", "COLUMNS", "-u", "LINES", "TERM=xterm-256color", *env,
                            *map(shlex.quote, self.argv)])  # the size is the terminal's
        self._tmux("new-session", "-d", "-s", "main", "-x", str(width), "-y", str(height),
                   command)
        self._tmux("set-option", "-t", "main", "remain-on-exit", "off", check=False)
        return self

    def screen(self, ansi: bool = False) -> str:
        """The visible screen, one line per row (``ansi``: with SGR colour sequences)."""
        return self._tmux("capture-pane", "-p", *(["-e"] if ansi else []), "-t", "main").stdout

    def keys(self, *keys: str, literal: bool = True) -> None:
        """Type ``keys`` (literal text; ``literal=False`` for names such as Enter)."""
        self._tmux("send-keys", "-t", "main", *(["-l"] if literal else []), *keys)

    def alive(self) -> bool:
        return self._tmux("has-session", "-t", "main", check=False).returncode == 0

    def close(self) -> None:
        self._tmux("kill-server", check=False)

    def __enter__(self) -> TmuxPane:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
