"""Running pyvs as the unprivileged user nobody, for the tests that prove it needs no root.

The default python3 of this machine may live under /root, which nobody cannot enter,
and so may the checkout: ``nobody_venv`` copies the sources into a temporary folder
nobody owns and makes a virtual environment there from Debian's /usr/bin/python3, with
Debian's packages (numpy, rich, matplotlib, scapy, pyroute2: scripts/bootstrap.sh
installs them) through ``--system-site-packages``.  ``as_nobody`` runs a command as
that user (setpriv) with a clean environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOBODY_UID = 65534
NOBODY = ["setpriv", f"--reuid={NOBODY_UID}", f"--regid={NOBODY_UID}", "--clear-groups"]
SYSTEM_PYTHON = "/usr/bin/python3"


def can_switch() -> str | None:
    """Why nobody cannot be used here (a skip reason), or None."""
    if os.geteuid() != 0:
        return "switching to the user nobody needs root"
    if shutil.which("setpriv") is None:
        return "switching to the user nobody needs setpriv (util-linux)"
    if not Path(SYSTEM_PYTHON).exists():
        return "the unprivileged runs need Debian's /usr/bin/python3"
    return None


def as_nobody(argv: list[str], home: Path, timeout: float = 600,
              **kw) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "MPLCONFIGDIR": str(home / "mpl"),
           "LANG": "C.UTF-8", "TMPDIR": str(home / "tmp")}
    (home / "tmp").mkdir(exist_ok=True)
    os.chown(home / "tmp", NOBODY_UID, NOBODY_UID)
    return subprocess.run([*NOBODY, *argv], capture_output=True, text=True, env=env,
                          timeout=timeout, **kw)


def popen_as_nobody(argv: list[str], home: Path, **kw) -> subprocess.Popen:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
           "TMPDIR": str(home / "tmp")}
    return subprocess.Popen([*NOBODY, *argv], env=env, **kw)


@contextmanager
def nobody_venv(modules: str = "numpy, rich, matplotlib, scapy",
                extra: dict[str, str] | None = None) -> Iterator[tuple[Path, Path]]:
    """(folder, python): a copy of the sources and a venv made from Debian's python3,
    both owned by nobody; ``extra`` files (name -> text) are written into the folder.
    ``modules``: what Debian's python3 must have (else the test fails, naming them)."""
    missing = subprocess.run([SYSTEM_PYTHON, "-c", f"import {modules}"], capture_output=True,
                             text=True)
    assert missing.returncode == 0, (f"Debian's python3 lacks one of {modules}: run "
                                     f"scripts/bootstrap.sh ({missing.stderr.strip()})")
    top = Path(tempfile.mkdtemp(prefix="pyvs-nobody-"))
    try:
        src = top / "src" / "pyvs"
        for part in ("engine", "schedulers", "forwarders"):
            shutil.copytree(ROOT / part, src / part,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        shutil.copytree(ROOT / "schedulers" / "examples", top / "examples",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for name, text in (extra or {}).items():
            (top / name).write_text(text)
        os.chmod(top, 0o755)
        subprocess.run(["chown", "-R", f"{NOBODY_UID}:{NOBODY_UID}", str(top)], check=True)
        made = as_nobody([SYSTEM_PYTHON, "-m", "venv", "--system-site-packages",
                          "--without-pip", str(top / "venv")], top)
        assert made.returncode == 0, made.stderr
        python = top / "venv" / "bin" / "python"
        site = as_nobody([str(python), "-c", "import sysconfig; "
                          "print(sysconfig.get_paths()['purelib'])"], top).stdout.strip()
        assert site.startswith(str(top / "venv")), site
        (Path(site) / "pyvs-src.pth").write_text(str(top / "src") + "\n")
        yield top, python
    finally:
        shutil.rmtree(top, ignore_errors=True)
