"""Compile the bench's C tools (gen.c, httpd.c) with the system C compiler, once per
source version, into a cache directory ($PYVS_BENCH_CACHE, else
$XDG_CACHE_HOME/pyvs-bench, else ~/.cache/pyvs-bench)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = {"gen": HERE / "gen.c", "httpd": HERE / "httpd.c"}


class ToolError(RuntimeError):
    pass


def cache_dir() -> Path:
    if os.environ.get("PYVS_BENCH_CACHE"):
        return Path(os.environ["PYVS_BENCH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "pyvs-bench"


def compiler() -> str:
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return cc
    raise ToolError("no C compiler (cc/gcc/clang): install Debian's gcc")


def build(name: str) -> str:
    """Path of the compiled tool ``name`` (compiling it if its source changed)."""
    src = SOURCES[name]
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    out = cache_dir() / f"{name}-{digest}"
    if out.exists():
        return str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    cmd = [compiler(), "-O2", "-Wall", "-o", str(tmp), str(src)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise ToolError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    tmp.replace(out)
    return str(out)


def build_all() -> dict[str, str]:
    return {name: build(name) for name in SOURCES}
