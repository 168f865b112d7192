"""`pyvs run` refuses options it would accept and not act on, `pyvs realserver` values it
cannot use: a clear message on stderr, exit status 2 (argparse's usage error), and
nothing started."""

from __future__ import annotations

import pytest

from pyvs.engine import cli


@pytest.mark.parametrize("argv,message", [
    (["run", "--workers", "0"], "argument --workers: must be at least 1, not 0"),
    (["run", "--workers", "-2", "--io", "ring"], "argument --workers: must be at least 1, not -2"),
    (["run", "--workers", "two"], "argument --workers: invalid int value: 'two'"),
    (["run", "--interface", "eth0"], "--interface needs --io ring or xdp"),
    (["run", "--io", "nfqueue", "--interface", "eth0", "--interface", "eth1"],
     "--interface needs --io ring or xdp"),
    (["realserver", "--gue-port", "70000"],
     "argument --gue-port: must be in 0..65535, not 70000"),
    (["realserver", "--mtu", "40"], "argument --mtu: must be in 68..65535, not 40"),
])
def test_refuses_options_that_would_do_nothing(argv, message, capsys, monkeypatch):
    started = []
    for command in ("cmd_run", "cmd_realserver"):
        monkeypatch.setattr(cli, command, lambda args: started.append(args) or 0)
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"pyvs {argv[0]}: error: " + message in err
    assert not started


@pytest.mark.parametrize("argv", [
    ["run"],
    ["run", "--io", "ring", "--interface", "eth0", "--workers", "2"],
    ["run", "--io", "xdp", "--interface", "eth0"],
])
def test_run_takes_options_that_act(argv, monkeypatch):
    started = []
    monkeypatch.setattr(cli, "cmd_run", lambda args: started.append(args) or 0)
    assert cli.main(argv) == 0
    (args,) = started
    assert args.workers >= 1 and cli.run_option_errors(args) == []
