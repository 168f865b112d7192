"""Every checker type against real servers: up while they serve, down with the reason
when they fail the way that checker notices, up again when repaired.

rs1 serves HTTP, HTTPS (a self-signed certificate made here) and DNS; rs2 HTTP and
UDP; rs3 answers ping.
"""

from __future__ import annotations

import subprocess
import time
from hashlib import md5

import pytest

from pyvs.bench.health_scenario import HealthRun, wait_for
from pyvs.engine.lab import NatLab

pytestmark = pytest.mark.lab

VIP = NatLab.VIP
FAST = "connect_timeout 0.5\n delay_before_retry 0.3\n retry 1"
MD5_RS1 = md5(b"rs1\n").hexdigest()

CONF = f"""
virtual_server {VIP} 80 {{
    delay_loop 0.5
    lb_algo rr
    lb_kind NAT
    real_server 198.18.2.11 80 {{
        HTTP_GET {{
            url {{
                path /peer
                status_code 200
                regex "^rs1 198[.]18[.]2[.]1 "
                virtualhost www.example.net
            }}
            {FAST}
        }}
    }}
    real_server 198.18.2.12 80 {{
        TCP_CHECK {{
            connect_ip 198.18.2.12
            connect_port 80
            bindto 198.18.2.1
            {FAST}
        }}
    }}
}}
virtual_server {VIP} 443 {{
    delay_loop 0.5
    lb_algo rr
    lb_kind NAT
    real_server 198.18.2.11 443 {{
        SSL_GET {{
            url {{
                path /
                digest {MD5_RS1}
            }}
            enable_sni
            sni_name www.example.net
            {FAST}
        }}
    }}
}}
virtual_server {VIP} 53 {{
    delay_loop 0.5
    lb_algo rr
    lb_kind NAT
    protocol UDP
    real_server 198.18.2.11 53 {{
        DNS_CHECK {{
            type A
            name www.example.net
            {FAST}
        }}
    }}
    real_server 198.18.2.12 53 {{
        UDP_CHECK {{
            {FAST}
        }}
    }}
    real_server 198.18.2.13 53 {{
        PING_CHECK {{
            {FAST}
        }}
    }}
}}
"""


def up(run: HealthRun, server: str) -> bool:
    state = run.server_state(server)
    return state is not None and state["state"] == "up" and state["in_table"]


def test_each_checker_sees_its_own_kind_of_failure(nat_lab_factory, tmp_path):
    lab = nat_lab_factory(real_servers=3, clients=1)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=www.example.net", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    with HealthRun(lab, CONF, tmp_path) as run:
        run.kill_server("rs1")
        run.start_server("rs1", "--tls-port", "443", "--cert", str(cert), "--key", str(key))
        servers = ["198.18.2.11:80", "198.18.2.12:80", "198.18.2.11:443", "198.18.2.11:53",
                   "198.18.2.12:53", "198.18.2.13:53"]
        wait_for(lambda: all(up(run, s) for s in servers), 20, "every checker passing")
        t0 = time.time()
        run.control("rs1", http="wrong-body", dns="refused")
        ssl_down = run.wait_transition("198.18.2.11:443", "DOWN", t0, 10)
        assert ssl_down["checker"] == "SSL_GET" and "MD5 digest" in ssl_down["reason"]
        http_down = run.wait_transition("198.18.2.11:80", "DOWN", t0, 10)
        assert "regex did not match" in http_down["reason"]
        dns_down = run.wait_transition("198.18.2.11:53", "DOWN", t0, 10)
        assert dns_down["checker"] == "DNS_CHECK" and "rcode 5" in dns_down["reason"]
        run.kill_server("rs2")
        udp_down = run.wait_transition("198.18.2.12:53", "DOWN", t0, 10)
        assert "connection refused" in udp_down["reason"]  # ICMP port unreachable
        tcp_down = run.wait_transition("198.18.2.12:80", "DOWN", t0, 10)
        assert "connection refused" in tcp_down["reason"]
        run.link("rs3", False)
        ping_down = run.wait_transition("198.18.2.13:53", "DOWN", t0, 10)
        assert ping_down["checker"] == "PING_CHECK" and "timeout" in ping_down["reason"]
        dests = [line for line in run.listing().splitlines()
                 if line.split()[:1] == ["->"] and line.split()[1][0].isdigit()]
        assert dests == []  # every real server of every service is out
        t1 = time.time()
        run.control("rs1")
        run.start_server("rs2")
        run.link("rs3", True)
        for server in servers:
            run.wait_transition(server, "UP", t1, 15)
        wait_for(lambda: all(up(run, s) for s in servers), 5, "every server back")
