"""Rules files: what `ipvsadm -S` prints, loaded by `pyvs run --rules FILE`.

Each non-empty line that is not a comment is one ipvsadm invocation (a leading
"ipvsadm" or "pyvsadm" is allowed).  Unlike `ipvsadm -R`, a bad line stops the
load and is reported as FILE:LINE with ipvsadm's own message, so a director never
starts with half a configuration.
"""

from __future__ import annotations

import shlex
from pathlib import Path


class RulesError(ValueError):
    pass


def load_rules(path: str | Path, director) -> int:
    """Apply every rule in path to director; returns the number of rules applied."""
    from pyvs.engine import ipvsadm

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise RulesError(f"{path}: {err.strerror}") from None
    applied = 0
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            words = shlex.split(stripped)
        except ValueError as err:
            raise RulesError(f"{path}:{number}: {err}") from None
        if words and words[0] in ("ipvsadm", "pyvsadm"):
            words = words[1:]
        if not words or words[0] in ("-L", "-l", "--list", "-S", "--save"):
            raise RulesError(f"{path}:{number}: not a rule: {stripped!r}")
        rc, _, err = ipvsadm.run(words, "", director)
        if rc != 0:
            message = " ".join(err.split()) or f"exit status {rc}"
            raise RulesError(f"{path}:{number}: {message}")
        applied += 1
    return applied
