"""MISC_CHECK (check_misc.c): run ``misc_path`` and judge its exit status.

The command line is split into words (shlex, no shell) and run in its own session
with stdin, stdout and stderr on /dev/null, so whatever it prints reaches nothing;
it dies with the checker process (PR_SET_PDEATHSIG).  Past ``misc_timeout`` its
process group gets SIGTERM, two seconds later SIGKILL, and the check has failed.
Exit 0 is success, 1 failure; with ``misc_dynamic`` 2..255 is success and sets the
weight (status - 2), otherwise anything but 0 fails.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import subprocess

from pyvs.engine.health.checks.base import Outcome, Target
from pyvs.engine.health.model import Checker
from pyvs.engine.health.procutil import die_with_parent, kill_group

TERM_GRACE = 2.0  # keepalived: SIGTERM, then SIGKILL two seconds later


def user_group(spec: str | None) -> tuple[str | None, str | None]:
    """``user NAME [GROUP]`` or ``NAME:GROUP``."""
    if not spec:
        return None, None
    words = spec.replace(":", " ").split()
    return words[0], (words[1] if len(words) > 1 else None)


async def check(c: Checker, t: Target) -> Outcome:  # noqa: ARG001 - same shape as the others
    argv = shlex.split(c.misc_path or "")
    name = argv[0] if argv else "(empty)"
    user, group = user_group(c.user)
    parent = os.getpid()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True, user=user, group=group,
            preexec_fn=lambda: die_with_parent(parent))
    except (OSError, ValueError, KeyError) as err:
        return Outcome(False, f"MISC_CHECK {name}: cannot run: {err}")
    try:
        status = await asyncio.wait_for(proc.wait(), c.misc_timeout)
    except TimeoutError:
        kill_group(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), TERM_GRACE)
        except TimeoutError:
            kill_group(proc.pid, signal.SIGKILL)
            await proc.wait()
        kill_group(proc.pid, signal.SIGKILL)  # whatever it started
        return Outcome(False, f"MISC_CHECK {name}: timed out after {c.misc_timeout:g}s")
    except asyncio.CancelledError:
        kill_group(proc.pid, signal.SIGKILL)
        raise
    if status < 0:
        return Outcome(False, f"MISC_CHECK {name}: killed by signal {-status}")
    if status == 0 or (c.misc_dynamic and 2 <= status <= 255):
        return Outcome(True, f"MISC_CHECK {name}: exit status {status}", status=status)
    return Outcome(False, f"MISC_CHECK {name}: exit status {status}", status=status)
