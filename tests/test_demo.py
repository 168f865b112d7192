"""`pyvs demo` (the README's first command) balances real requests in kernel order and
shows the kernel's listings, on the default path and on the fast ones."""

from __future__ import annotations

import io

import pytest

from pyvs.engine.demo import run_demo

pytestmark = pytest.mark.lab


@pytest.mark.parametrize("path", ["nfqueue", "ring", "xdp"])
def test_demo_balances_thirty_requests_ten_each(lab_env, path):
    out = io.StringIO()
    assert run_demo(io=path, out=out) == 0
    text = out.getvalue()
    assert "answers per real server: rs1=10, rs2=10, rs3=10" in text
    answers = [line.rsplit(" ", 1)[1] for line in text.splitlines()
               if line.startswith("request ")]
    assert answers == ["rs3", "rs2", "rs1"] * 10  # newest destination first, as the kernel
    # the listing counts what happened: 30 finished connections, 10 per real server
    masq = [line.split() for line in text.splitlines() if "Masq" in line]
    assert [row[2:6] for row in masq] == [["Masq", "1", "0", "10"]] * 3
    assert "lab removed" in text
