#!/usr/bin/env bash
# Set up a fresh Debian machine for pyvs (as root), then run the demo or the tests.
#   bash scripts/bootstrap.sh demo   # NAT lab + pyvs + curl, shows the balancing
#   bash scripts/bootstrap.sh test   # ruff (lint), then the whole test suite
#   bash scripts/bootstrap.sh bench  # benchmarks (see bench/README.md)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "pyvs labs need root (network namespaces, netfilter, raw sockets)" >&2
  exit 1
fi

need=()
for tool in ip:iproute2 iptables:iptables nft:nftables curl:curl socat:socat python3:python3 \
            tmux:tmux \
            cc:gcc wrk:wrk keepalived:keepalived tcpdump:tcpdump \
            openssl:openssl pgrep:procps; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool##*:}")
done
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
# Debian's own python3 with the libraries `pyvs sim` uses: the unprivileged test
# (tests/test_sim_unprivileged.py, tests/test_rootless_lab.py) runs pyvs sim and a
# rootless lab as nobody from a venv made from it.
for mod in numpy:python3-numpy rich:python3-rich matplotlib:python3-matplotlib \
           scapy:python3-scapy pyroute2:python3-pyroute2; do
  /usr/bin/python3 -c "import ${mod%%:*}" >/dev/null 2>&1 || need+=("${mod##*:}")
done
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test,bench]' \
  >.venv/pip-install.log 2>&1 || { cat .venv/pip-install.log >&2; exit 1; }

case "${1:-demo}" in
  demo) shift || true; exec .venv/bin/pyvs demo "$@" ;;
  test) shift || true; .venv/bin/ruff check .; exec .venv/bin/python -m pytest -q "$@" ;;
  bench) shift || true; exec .venv/bin/python -m pyvs.bench "$@" ;;
  *) echo "usage: $0 demo|test|bench [args]" >&2; exit 2 ;;
esac
