"""Every failure a user can cause through `pyvs` and `pyvsadm` is one clear line and a
non-zero exit status, never a traceback; an internal error says where to report it.
Each command runs as a user would run it: a subprocess, in a network namespace of its
own with no director (``unshare -n``), or as the user nobody where permissions matter."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys

import pytest

from pyvs.engine import cli

NEEDS_ROOT = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                reason="runs commands in a fresh network namespace (root)")


def run(*argv: str, module: str = "pyvs.engine.cli", prefix=("unshare", "-n"),
        stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", module, *argv], capture_output=True,
                          text=True, timeout=120, input=stdin)


TAKEN = f"rlerr-{secrets.token_hex(3)}"

# argv -> (a fragment of the one line on stderr, exit status)
PYVS = [
    (["lab", "up", "--real-servers", "0"], "--real-servers must be 1..100, not 0", 1),
    (["lab", "up", "--clients", "500"], "--clients must be 1..200, not 500", 1),
    (["lab", "up", "--name", "bad name"], "bad lab name 'bad name'", 1),
    (["lab", "up", "--name", TAKEN], f"a lab named {TAKEN} already exists", 1),
    (["lab", "up", "--delay", "rs7=0.1"], "no real server rs7 (the lab has rs1..rs3)", 1),
    (["lab", "up", "--delay", "gauss:mean=1"], "unknown distribution 'gauss'", 1),
    (["lab", "up", "--capacity", "0"], "capacity must be at least 1, not 0", 1),
    (["lab", "down", "nosuch-lab"], "no lab named nosuch-lab", 1),
    (["lab", "exec", "nosuch-lab", "client", "--", "true"], "no lab named nosuch-lab", 1),
    (["lab", "exec", TAKEN, "nosuch", "--", "true"], f"lab {TAKEN} has no namespace 'nosuch'",
     1),
    (["lab", "exec", TAKEN, "client"], "no command", 1),
    (["lab", "load", "nosuch-lab"], "no lab named nosuch-lab", 1),
    (["lab", "load", TAKEN, "--requests", "0"], "--requests must be 1..1000000, not 0", 1),
    (["lab", "load", TAKEN, "--clients", "9"], "--clients must be 1..1 (the lab's clients)", 1),
    (["run", "--io", "ring", "--interface", "nosuch0"],
     "--interface nosuch0: no such interface in this network namespace (it has lo)", 2),
    (["run", "--interface", "lo"], "--interface needs --io ring or xdp", 2),
    (["run", "--workers", "0"], "must be at least 1, not 0", 2),
    (["run", "--rules", "/nonexistent/rules"], "/nonexistent/rules", 1),
    (["status"], "no pyvs director runs in this network namespace", 1),
    (["sysctl", "net.ipv4.vs.drop_entry=1"], "no pyvs director runs", 1),
    (["demo", "--requests", "0"], "must be in 1..100000, not 0", 2),
    (["sim", "--flows", "0"], "--flows must be at least 1", 2),
    (["sim", "--schedulers", "/nonexistent/p.py:C"], "no such file /nonexistent/p.py", 2),
    (["realserver", "--mtu", "10"], "must be in 68..65535, not 10", 2),
]
PYVSADM = [
    (["-Ln"], "no pyvs director runs in this network namespace", 1),
    (["-A", "-t", "198.18.1.1:80", "-s", "rr"], "no pyvs director runs", 1),
]


@pytest.fixture(scope="module")
def taken_lab():
    """A lab whose name is taken (for `lab up --name` and `lab exec`)."""
    from pyvs.engine.lab import NatLab

    with NatLab(name=TAKEN, real_servers=1, clients=1) as lab:
        yield lab


def _one_clear_line(proc: subprocess.CompletedProcess, fragment: str, code: int) -> None:
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.returncode == code, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    errors = [x for x in lines if fragment in x]
    assert errors, proc.stderr
    if code == 1:  # argparse's usage errors (2) come with the usage lines above them
        assert len(lines) == 1, proc.stderr


@NEEDS_ROOT
@pytest.mark.lab
@pytest.mark.parametrize(("argv", "fragment", "code"), PYVS, ids=[" ".join(a) for a, _, _ in PYVS])
def test_pyvs_errors_are_one_line(taken_lab, argv, fragment, code):
    _one_clear_line(run(*argv), fragment, code)


@NEEDS_ROOT
@pytest.mark.parametrize(("argv", "fragment", "code"), PYVSADM)
def test_pyvsadm_errors_are_one_line(argv, fragment, code):
    _one_clear_line(run(*argv, module="pyvs.engine.pyvsadm"), fragment, code)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="switching to the user nobody needs root and setpriv")
@pytest.mark.parametrize(("module", "argv", "fragment"), [
    ("pyvs.engine.pyvsadm", ["-Ln"], "Permission denied (you must be root)"),
    ("pyvs.engine.cli", ["lab", "up"], "building a lab needs root (network namespaces); as "
                                       "another user add --rootless"),
    ("pyvs.engine.cli", ["run"], "this needs root"),
])
def test_unprivileged_users_are_told_why(module, argv, fragment):
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           sys.executable, "-c", "import sys, runpy; sys.argv[1:] = "
                           f"{argv!r}; runpy.run_module({module!r}, run_name='__main__')"],
                          capture_output=True, text=True, timeout=60, env={
                              "PATH": "/usr/bin:/bin", "PYTHONPATH": os.pathsep.join(sys.path)})
    if "Permission denied" in proc.stderr and "python" in proc.stderr and fragment not in \
            proc.stderr:
        pytest.skip("this python is not readable by nobody (tests/test_rootless_lab.py uses "
                    "Debian's)")
    _one_clear_line(proc, fragment, 1)


def test_an_internal_error_names_where_to_report_it(monkeypatch, capsys):
    def broken(args):
        raise ValueError("something pyvs did not expect")

    monkeypatch.setattr(cli, "cmd_status", broken)  # build_parser binds it when main runs
    monkeypatch.delenv("PYVS_TRACEBACK", raising=False)
    assert cli.main(["status"]) == 70
    err = capsys.readouterr().err
    assert err.startswith("pyvs status: internal error: ValueError: something pyvs did not "
                          "expect\n")
    assert "please report it on the pyvs issue tracker" in err and "Traceback" not in err
    monkeypatch.setenv("PYVS_TRACEBACK", "1")  # and the way to see where
    with pytest.raises(ValueError):
        cli.main(["status"])
