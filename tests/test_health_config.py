"""Reading configurations: keepalived.conf as deployments write it, and the TOML twin.

tests/keepalived/ holds files shaped like real deployments; the first line of each
says what must happen: ``# expect: ok`` or ``# expect: error [FILE:]LINE NAME`` (the
refusal must name that file and line and the directive).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pyvs.engine.health import ipvsops
from pyvs.engine.health.keepalived import load as load_keepalived
from pyvs.engine.health.model import ConfigError, HealthConfig
from pyvs.engine.health.supervisor import load
from pyvs.engine.health.tomlconfig import load as load_toml

CORPUS = Path(__file__).parent / "keepalived"
FILES = sorted(CORPUS.glob("*.conf")) + sorted((CORPUS / "bad").glob("*.conf"))


def icmp_allowed() -> bool:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
        return True
    except OSError:
        return False


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(CORPUS)))
def test_corpus_file_parses_or_is_refused_at_the_right_line(path):
    expect = path.read_text().splitlines()[0].removeprefix("# expect:").split()
    if "PING_CHECK" in path.read_text() and not icmp_allowed():
        pytest.skip("PING_CHECK needs raw ICMP (root)")
    if expect[0] == "ok":
        cfg = load(str(path), "keepalived")
        assert cfg.virtual_servers
        for vs in cfg.virtual_servers:
            assert ipvsops.services(vs, cfg)
        return
    where, name = expect[1], expect[2]
    file, _, line = where.rpartition(":") if ":" in where else ("", "", where)
    with pytest.raises(ConfigError) as err:
        load(str(path), "keepalived")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path.parent / file if file else path}:{line}: "), message
    assert name in message


def test_web_farm_values_and_inheritance():
    cfg = load_keepalived(CORPUS / "web-farm.conf")
    vs = cfg.virtual_servers[0]
    assert (vs.addr, vs.port, vs.lvs_sched, vs.lvs_method) == ("198.18.1.1", 80, "wlc", "NAT")
    assert (vs.persistence_timeout, vs.persistence_granularity) == (50, "255.255.255.0")
    assert (vs.quorum, vs.hysteresis, vs.alpha) == (2, 1, True)
    assert cfg.lvs_timeouts == [900, 120, 300]
    rs1, rs2 = vs.real_servers
    assert (rs1.weight, rs1.inhibit_on_failure) == (3, True)
    http = rs1.checkers[0]
    assert [u.path for u in http.urls] == ["/health", "/status"]
    assert http.urls[0].digest == "9b3a0c85a887a256d6939da88aabd8cd"
    assert http.urls[0].codes() == [[200, 299]]
    assert http.urls[1].codes() == [[200, 299], [301, 301], [302, 302]]
    assert (http.retry, http.delay_before_retry, http.connect_timeout) == (3, 2.0, 3.0)
    assert http.alpha is True and http.delay_loop == 6.0 and http.warmup == 6.0
    tcp = rs2.checkers[1]
    # keepalived's defaults: retry 1, delay_before_retry 1 s (3 s for HTTP), warmup =
    # delay_loop, connect_timeout 5 s
    assert (tcp.retry, tcp.delay_before_retry, tcp.connect_timeout) == (1, 1.0, 2.0)
    assert rs2.checkers[0].delay_before_retry == 3.0
    assert rs2.checkers[0].virtualhost == "www.example.net"
    assert vs.sorry_server.addr == "198.18.2.99" and vs.sorry_server.port == 8080
    ssl_vs = cfg.virtual_servers[1]
    assert ssl_vs.real_servers[0].checkers[0].sni_name == "www.example.net"
    assert any("VRRP" in n and "vrrp_instance VI_1" in n for n in cfg.notices)
    assert sum("vrrp" in n for n in cfg.notices) == 1


def test_group_and_fwmark_services_and_included_real_servers():
    cfg = load_keepalived(CORPUS / "dr-fwmark-group.conf")
    fwm, group = cfg.virtual_servers
    assert [r.text() for r in ipvsops.services(fwm, cfg)] == ["FWM 10"]
    assert [r.text() for r in ipvsops.services(group, cfg)] == [
        "TCP 198.18.1.10:80", "TCP 198.18.1.11:80", "TCP 198.18.1.12:80",
        "TCP 198.18.1.0:8080", "TCP 198.18.1.1:8080", "TCP 198.18.1.2:8080",
        "TCP 198.18.1.3:8080", "FWM 20"]
    assert [rs.addr for rs in fwm.real_servers] == ["198.18.2.11", "198.18.2.12"]
    assert fwm.persistence_timeout == 360  # the keyword alone: 6 minutes
    assert fwm.sched_flags == ["mh-port", "mh-fallback"]
    assert fwm.real_servers[0].where.endswith("conf.d/web-1.conf:1")
    # DR real servers of a fwmark service have no port
    assert all(rs.port == 0 for rs in fwm.real_servers)
    ping = fwm.real_servers[1].checkers[0]
    assert (ping.kind, ping.retry) == ("PING_CHECK", 2)


def test_udp_dns_and_hex_strings():
    cfg = load_keepalived(CORPUS / "dns-udp.conf")
    udp = cfg.virtual_servers[0]
    assert (udp.protocol, udp.ops, udp.sched_flags) == ("UDP", True, ["sh-port"])
    dns = udp.real_servers[0].checkers[0]
    assert (dns.type, dns.name, dns.retry, dns.delay_before_retry) == (
        "A", "www.example.net", 3, 3.0)  # DNS_CHECK: retry 3, delay_before_retry = delay_loop
    check = udp.real_servers[1].checkers[0]
    assert check.payload.startswith("000101000001")
    assert check.reply == "00018x" and check.require_reply
    assert (check.min_reply_length, check.max_reply_length) == (12, 512)


def test_misc_check_defaults_and_quoting():
    cfg = load_keepalived(CORPUS / "app-misc.conf")
    vs = cfg.virtual_servers[0]
    a, b = vs.real_servers
    assert a.checkers[0].misc_path == "/bin/sh -c 'exit 0'"
    assert a.checkers[0].misc_dynamic and a.checkers[0].misc_timeout == 5.0
    assert b.checkers[0].misc_path == '/bin/true --quoted "arg"'
    assert (b.checkers[0].retry, b.checkers[0].misc_timeout) == (0, 2.0)  # MISC: retry 0
    assert a.inhibit_on_failure and vs.sorry_server.inhibit_on_failure
    assert any("smtp_alert ignored" in n for n in cfg.notices)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def refused(path: Path) -> str:
    with pytest.raises(ConfigError) as err:
        load_keepalived(path)
    return str(err.value)


def test_lexer_comments_braces_quotes_and_continuations(tmp_path):
    path = write(tmp_path, "k.conf", """\
virtual_server 198.18.1.1 80 { ! comment after a brace
    lb_algo rr # another comment
    delay_loop \\
        7
    real_server 198.18.2.11 80
    {
        HTTP_GET { url { path "/a path#with!chars" } }
        notify_up "/bin/echo \\"up\\" now"
    }
}
""")
    vs = load_keepalived(path).virtual_servers[0]
    assert (vs.lvs_sched, vs.delay_loop) == ("rr", 7.0)
    rs = vs.real_servers[0]
    assert rs.checkers[0].urls[0].path == "/a path#with!chars"
    assert rs.notify_up == '/bin/echo "up" now'


def test_includes_are_relative_to_the_including_file_and_loops_are_refused(tmp_path):
    write(tmp_path, "main.conf", "include sub/vs.conf\n")
    write(tmp_path, "sub/vs.conf", "virtual_server 198.18.1.1 80 {\n include rs/*.conf\n}\n")
    write(tmp_path, "sub/rs/b.conf", "real_server 198.18.2.12 80 {\n}\n")
    write(tmp_path, "sub/rs/a.conf", "real_server 198.18.2.11 80 {\n}\n")
    vs = load_keepalived(tmp_path / "main.conf").virtual_servers[0]
    assert [rs.addr for rs in vs.real_servers] == ["198.18.2.11", "198.18.2.12"]  # sorted
    write(tmp_path, "loop.conf", "include loop2.conf\n")
    write(tmp_path, "loop2.conf", "\ninclude loop.conf\n")
    message = refused(tmp_path / "loop.conf")
    assert message.startswith(f"{tmp_path / 'loop2.conf'}:2: include loop")
    write(tmp_path, "none.conf", "include nothing/*.conf\n")
    assert load_keepalived(tmp_path / "none.conf").notices[0].endswith("no file matches")


@pytest.mark.parametrize("text, line, name", [
    ("virtual_server 198.18.1.1 80 {\n  lb_algo rr\n  retry 0\n}\n", 3, "retry"),
    ("virtual_server 198.18.1.1 {\n  lb_algo rr\n}\n", 1, "port"),
    ("virtual_server 198.18.1.1 80 {\n real_server 198.18.2.11 80 {\n"
     "  HTTP_GET {\n   connect_timeout 2\n  }\n }\n}\n", 3, "url"),
    ("virtual_server 198.18.1.1 80 {\n real_server 198.18.2.11 80 {\n"
     "  HTTP_GET {\n   url {\n    digest 1234\n   }\n  }\n }\n}\n", 5, "digest"),
    ("virtual_server 198.18.1.1 80 {\n real_server 198.18.2.11 80 {\n"
     "  HTTP_GET {\n   url {\n    status_code 200-700\n   }\n  }\n }\n}\n", 5, "status_code"),
    ("virtual_server 198.18.1.1 80 {\n lvs_method TUN type gue\n}\n", 2, "gue"),
    ("virtual_server 198.18.1.1 80 {\n sorry_server_inhibit\n}\n", 1, "sorry_server"),
    ("virtual_server 198.18.1.1 80 {\n real_server 2001:db8::1 80 {\n }\n}\n", 2,
     "family"),
    ("virtual_server 198.18.1.1 80 {\n protocol TCP\n ops\n}\n", 1, "ops"),
    ("virtual_server group nope {\n lb_algo rr\n}\n", 1, "virtual_server_group nope"),
    ("}\n", 1, "'}'"),
    ("virtual_server 198.18.1.1 80 {\n real_server 198.18.2.11 80 {\n"
     "  UDP_CHECK {\n   payload zz\n  }\n }\n}\n", 4, "payload"),
    ("@main virtual_server 198.18.1.1 80 {\n}\n", 1, "@main"),
    ("virtual_server fwmark 4 {\n lb_kind DR\n real_server 198.18.2.11 {\n"
     "  TCP_CHECK {\n  }\n }\n}\n", 4, "connect_port"),
])
def test_bad_directives_are_refused_with_file_line_and_name(tmp_path, text, line, name):
    path = write(tmp_path, "bad.conf", text)
    message = refused(path)
    assert message.startswith(f"{path}:{line}: "), message
    assert name in message


TOML_TWIN = """
[global_defs]
router_id = "LVS_WEB"
lvs_timeouts = { tcp = 900, tcpfin = 120, udp = 300 }

[[virtual_server]]
address = "198.18.1.1"
port = 80
delay_loop = 6
lb_algo = "wlc"
lb_kind = "NAT"
persistence_timeout = 50
persistence_granularity = "255.255.255.0"
protocol = "TCP"
sorry_server = "198.18.2.99 8080"
alpha = true
quorum = 2
hysteresis = 1
quorum_up = "/bin/true up"
quorum_down = "/bin/true down"

  [[virtual_server.real_server]]
  address = "198.18.2.11"
  port = 80
  weight = 3
  inhibit_on_failure = true
  notify_up = "/bin/true"

    [[virtual_server.real_server.HTTP_GET]]
    connect_timeout = 3
    retry = 3
    delay_before_retry = 2
    url = [{ path = "/health", digest = "9b3a0c85a887a256d6939da88aabd8cd" },
           { path = "/status", status_code = ["200-299", 301, 302] }]

  [[virtual_server.real_server]]
  address = "198.18.2.12"
  port = 80
  weight = 1

    [[virtual_server.real_server.HTTP_GET]]
    url = [{ path = "/" }]
    connect_port = 8080
    bindto = "198.18.2.1"
    virtualhost = "www.example.net"
    http_protocol = "1.1"

    [[virtual_server.real_server.TCP_CHECK]]
    connect_timeout = 2
    connect_port = 80

[[virtual_server]]
address = "198.18.1.1"
port = 443
delay_loop = 10
lvs_sched = "rr"
lvs_method = "DR"
protocol = "TCP"

  [[virtual_server.real_server]]
  address = "198.18.2.11"
  port = 443

    [[virtual_server.real_server.SSL_GET]]
    url = [{ path = "/", status_code = [200] }]
    enable_sni = true
    sni_name = "www.example.net"

  [[virtual_server.real_server]]
  address = "198.18.2.12"
  port = 443
  SSL_GET = { url = [{ path = "/" }] }
"""


def strip_where(cfg: HealthConfig) -> dict:
    """The configuration without source locations and notices."""
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()
                    if k not in ("where", "source", "notices")}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value
    return clean(dataclasses.asdict(cfg))


def test_toml_twin_reads_exactly_like_the_keepalived_file(tmp_path):
    path = write(tmp_path, "web.toml", TOML_TWIN)
    assert strip_where(load_toml(path)) == strip_where(load_keepalived(CORPUS / "web-farm.conf"))


@pytest.mark.parametrize("text, line, name", [
    ("[[virtual_server]]\naddress = \"198.18.1.1\"\nport = 80\nlb_algo = \"rr\"\n"
     "bogus = 1\n", 5, "bogus"),
    ("[[virtual_server]]\naddress = \"198.18.1.1\"\nport = 80\n\n"
     "  [[virtual_server.real_server]]\n  address = \"198.18.2.11\"\n  weight = -1\n", 7,
     "weight"),
    ("[[virtual_server]]\nport = 80\n", 1, "address"),
    ("[[virtual_server]\n", 1, ""),  # TOML syntax: tomllib's own message and position
    ("[[virtual_server]]\naddress = \"198.18.1.1\"\nport = 80\n"
     "[[virtual_server.real_server]]\naddress = \"198.18.2.11\"\n"
     "[[virtual_server.real_server.SMTP_CHECK]]\nhelo_name = \"x\"\n", 6, "SMTP_CHECK"),
])
def test_toml_errors_name_file_and_line(tmp_path, text, line, name):
    path = write(tmp_path, "bad.toml", text)
    with pytest.raises(ConfigError) as err:
        load_toml(path)
    message = str(err.value)
    assert message.startswith(f"{path}:{line}" if name else f"{path}: "), message
    assert name in message


def test_runtime_checks_refuse_missing_scripts(tmp_path):
    path = write(tmp_path, "k.conf", "virtual_server 198.18.1.1 80 {\n"
                 " quorum_down /nonexistent/alert\n}\n")
    with pytest.raises(ConfigError, match=r"k.conf:1: quorum_down: '?/nonexistent/alert"):
        load(str(path), "keepalived")
    assert os.path.exists(path)  # nothing else was touched


def test_pyvs_run_refuses_a_bad_file_with_one_line_and_status_1(tmp_path):
    """Refused before anything starts (no namespace needed: nothing is set up)."""
    if os.geteuid() != 0:
        pytest.skip("pyvs run needs root")
    path = write(tmp_path, "k.conf", "virtual_server 198.18.1.1 80 {\n  lb_algo rr\n"
                 "  SMTP_CHECK\n}\n")
    r = subprocess.run([sys.executable, "-m", "pyvs.engine.cli", "run", "--keepalived",
                        str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert r.stderr == f"pyvs run: {path}:3: SMTP_CHECK: not supported by pyvs in " \
                       f"virtual_server\n"
