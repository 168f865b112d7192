"""Rules files: a good file configures the director; a bad line is named and stops the load."""

from __future__ import annotations

import pytest

from pyvs.engine.clock import VirtualClock
from pyvs.engine.config import RulesError, load_rules
from pyvs.engine.director import Director
from pyvs.engine.ipvsadm import run


def test_rules_file_round_trips_through_save(tmp_path):
    rules = tmp_path / "rules"
    rules.write_text("# web\n"
                     "ipvsadm -A -t 198.18.1.1:80 -s wrr -p 120\n"
                     "-a -t 198.18.1.1:80 -r 198.18.2.11:80 -m -w 3\n"
                     "\n"
                     "pyvsadm -a -t 198.18.1.1:80 -r 198.18.2.12:80 -m -w 1\n")
    d = Director(clock=VirtualClock())
    assert load_rules(rules, d) == 3
    saved = run(["-S", "-n"], "", d)[1]
    again = Director(clock=VirtualClock())
    rules.write_text(saved)
    load_rules(rules, again)
    assert run(["-S", "-n"], "", again)[1] == saved
    assert "-A -t 198.18.1.1:80 -s wrr -p 120" in saved


@pytest.mark.parametrize("line,needle", [
    ("-A -t 198.18.1.1:80 -s nosuchsched", "Scheduler or persistence engine not found"),
    ("-a -t 198.18.1.9:80 -r 198.18.2.11:80", "Service not defined"),
    ("-A -t 198.18.1.1:80 --bogus", "bogus"),
    ("-L -n", "not a rule"),
    ("-A -t '198.18.1.1:80", "quotation"),
])
def test_bad_line_is_reported_with_its_number(tmp_path, line, needle):
    rules = tmp_path / "rules"
    rules.write_text(f"-A -t 198.18.1.2:80 -s rr\n{line}\n")
    with pytest.raises(RulesError) as info:
        load_rules(rules, Director(clock=VirtualClock()))
    assert f"{rules}:2:" in str(info.value) and needle in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(RulesError, match="No such file"):
        load_rules(tmp_path / "absent", Director(clock=VirtualClock()))
