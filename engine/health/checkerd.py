"""The checker process: `python -m pyvs.engine.health.checkerd`, started by the daemon.

keepalived's checker child, in asyncio: one coroutine per checker, each running its
check (checks/), feeding the outcome to its state machine (machine.py) and, on a
transition, to its virtual server's pool (pool.py), whose ipvsadm argv go to the
director through the control socket -- the operations ipvsadm would send -- with the
pools' new state, so `pyvs status` shows it.  Requests carry the configuration
generation; after a reload the daemon refuses stale ones and sends SIGUSR1, and
this process fetches the new configuration and state ("hello") and carries on with
the checkers that did not change.  It runs in the daemon's network namespace and
dies with it (PR_SET_PDEATHSIG, set by the daemon when it starts it).  Checks never
touch the packet path: this is a separate process, at nice 10 so that on a busy
machine the forwarder gets the CPU first (keepalived has checker_process_priority
for the same reason).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import random
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field

from pyvs.engine import logs
from pyvs.engine.control import SOCKET_NAME
from pyvs.engine.health import ipvsops, model
from pyvs.engine.health.checks import CHECKS, Outcome, Target
from pyvs.engine.health.machine import RetryMachine, machine_for
from pyvs.engine.health.model import Checker, HealthConfig, RealServer, VirtualServer
from pyvs.engine.health.pool import VsPool, VsState, rs_id, vs_id
from pyvs.engine.health.procutil import die_with_parent, kill_group

log = logging.getLogger("pyvs.health")
BOOTSTRAP_DELAY = 1.0  # keepalived's first check: BOOTSTRAP_DELAY + a random warmup
TIMINGS_EVERY = 1.0
SCRIPT_TIMEOUT = 60.0


async def request(message: dict, timeout: float = 10.0) -> dict:
    """One JSON request to this namespace's director (engine/control.py)."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_unix_connection(SOCKET_NAME), timeout)
    try:
        writer.write(json.dumps(message).encode())
        writer.write_eof()
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    return json.loads(data or b"{}")


def params(machine: RetryMachine) -> dict:
    """A machine's configuration (what machine_for() set), without its running state."""
    keep = ("retry", "delay_loop", "delay_before_retry", "urls", "fast_recovery")
    return {k: getattr(machine, k) for k in keep if hasattr(machine, k)}


def report_crash(task: asyncio.Task) -> None:
    """A checker coroutine must never die quietly."""
    if not task.cancelled() and task.exception() is not None:
        log.error("checker stopped", exc_info=task.exception())


def is_local(addr: str) -> bool:
    """ha_suspend: is this address configured in the namespace?"""
    fam = socket.AF_INET6 if ipaddress.ip_address(addr).version == 6 else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        try:
            s.bind((addr, 0))
        except OSError:
            return False
    return True


def action_of(ops: list[list[str]], target: str) -> str:
    """What a transition did to IPVS, for its log line."""
    mine = [op for op in ops if target in op]
    if any(op[0] == "-d" for op in mine):
        return "removed"
    if any(op[0] == "-a" for op in mine):
        return "added"
    for op in mine:
        if op[0] == "-e":
            weight = op[op.index("-w") + 1]
            return "weight 0 (inhibited)" if weight == "0" else f"weight {weight}"
    return "none"


@dataclass
class Runtime:
    """One checker's coroutine and the state it keeps between checks; ``pool``,
    ``server`` and ``checker`` are the current configuration's (set at every sync)."""

    vs: str
    rs: str
    index: int
    identity: str
    machine: RetryMachine
    pool: VsPool | None = None
    server: RealServer | None = None
    checker: Checker | None = None
    task: asyncio.Task | None = None


@dataclass
class CheckerProcess:
    generation: int = -1
    cfg: HealthConfig | None = None
    pools: dict[str, VsPool] = field(default_factory=dict)
    runtimes: dict[tuple, Runtime] = field(default_factory=dict)
    outbox: asyncio.Queue | None = None
    timings: list = field(default_factory=list)
    ssl_context: ssl.SSLContext | None = None
    resync: asyncio.Event | None = None
    scripts: set = field(default_factory=set)

    # -- configuration -------------------------------------------------------------------
    async def sync(self) -> None:
        reply = await request({"op": "health", "action": "hello"})
        if reply.get("rc") != 0:
            raise RuntimeError(reply.get("err", "hello refused"))
        cfg = model.from_json(HealthConfig, reply["config"])
        states = {k: model.from_json(VsState, v) for k, v in reply["states"].items()}
        reload = self.cfg is not None
        self.generation, self.cfg = reply["generation"], cfg
        self.ssl_context = make_ssl_context(cfg)
        self.pools = {vs_id(vs): VsPool(vs, cfg, states[vs_id(vs)]) for vs in cfg.virtual_servers}
        wanted: dict[tuple, Runtime] = {}
        for vs in cfg.virtual_servers:
            pool = self.pools[vs_id(vs)]
            for rs in vs.real_servers:
                st = pool.server(rs)
                for i, c in enumerate(rs.checkers):
                    key = (vs_id(vs), rs_id(rs), i)
                    old = self.runtimes.get(key)
                    machine = machine_for(c.kind, c.retry, c.delay_loop, c.delay_before_retry,
                                          len(c.urls), c.fast_recovery)
                    if old is not None and old.identity == c.identity():
                        old.pool, old.server, old.checker = pool, rs, c
                        if params(machine) != params(old.machine):
                            machine.migrate(old.machine, st.checkers[i].up)
                            old.machine = machine  # its timing changed: migrate_checkers()
                        wanted[key] = old
                        continue
                    healthy = not st.failed() and (st.alive or any(
                        x.has_run for x in st.checkers))
                    if reload and healthy:
                        machine.retry_it = 0  # a healthy server's new checker
                    wanted[key] = Runtime(vs_id(vs), rs_id(rs), i, c.identity(), machine,
                                          pool, rs, c)
        for key, rt in self.runtimes.items():
            if wanted.get(key) is not rt and rt.task is not None:
                rt.task.cancel()
        for key, rt in wanted.items():
            if rt.task is None or rt.task.done():
                first = not reload or key not in self.runtimes
                rt.task = asyncio.create_task(self.run_checker(rt, first))
                rt.task.add_done_callback(report_crash)
        self.runtimes = wanted
        for script in reply.get("scripts", []):
            self.run_script(script)
        log.info("checking %d real servers with %d checkers (configuration %d)",
                 sum(len(vs.real_servers) for vs in cfg.virtual_servers), len(wanted),
                 self.generation)

    @staticmethod
    def lookup(rt: Runtime) -> tuple[VsPool, RealServer, Checker]:
        return rt.pool, rt.server, rt.checker

    # -- checking ------------------------------------------------------------------------
    async def run_checker(self, rt: Runtime, first: bool) -> None:
        pool, rs, c = self.lookup(rt)
        if first:
            await asyncio.sleep(BOOTSTRAP_DELAY + random.uniform(0, c.warmup or 0))
        while True:
            pool, rs, c = self.lookup(rt)
            if pool.vs.ha_suspend and suspended(pool.vs, self.cfg):
                await asyncio.sleep(c.delay_loop)
                continue
            started = time.monotonic()
            target = Target(rs.addr, rs.port, rt.machine.url(),
                            self.ssl_context if c.kind == "SSL_GET" else None)
            try:
                outcome = await CHECKS[c.kind](c, target)
            except Exception as err:  # a check must fail, never stop checking
                log.exception("%s of %s", c.kind, rt.rs)
                outcome = Outcome(False, f"{c.kind}: internal error: {err}")
            pool, rs, c = self.lookup(rt)  # a reload may have swapped the pool meanwhile
            state = pool.server(rs).checkers[rt.index]
            if c.kind == "MISC_CHECK" and c.misc_dynamic and outcome.ok:
                pool.dynamic_weight(rs, rt.index, outcome.status or 0)
                self.send(pool, None)
            report, delay = rt.machine.step(outcome.ok, state.up)
            if c.log_all_failures and not outcome.ok and state.up:
                log.info("check failed: %s", outcome.reason)
            if report is False and c.kind == "MISC_CHECK":
                pool.drop_dynamic_weight(rs, rt.index)
            if report is not None and report != state.up:
                self.transition(pool, rs, c, rt.index, report, outcome.reason)
            elif report is not None:
                state.has_run = True
            if outcome.seconds is not None and c.kind in ("TCP_CHECK", "HTTP_GET", "SSL_GET"):
                self.timings.append((rt.vs, rs, outcome.seconds))
            if rt.machine.from_start:
                delay = max(0.0, started + delay - time.monotonic())
            await asyncio.sleep(delay)

    def transition(self, pool: VsPool, rs: RealServer, c: Checker, index: int, up: bool,
                   reason: str) -> None:
        pool.now = time.time()
        pool.checker_result(rs, index, up, reason)
        event = {"service": pool.vs.name(), "real_server": rs_id(rs), "checker": c.kind,
                 "state": "UP" if up else "DOWN", "reason": reason}
        self.send(pool, event)

    def send(self, pool: VsPool, event: dict | None) -> None:
        ops, lines, scripts = pool.take()
        if event is None and not ops:
            return
        if event is not None:
            event["action"] = action_of(ops, event["real_server"])
        self.outbox.put_nowait({"op": "health", "action": "apply", "generation": self.generation,
                                "vs": vs_id(pool.vs), "state": model.to_json(pool.state),
                                "ops": ops, "lines": lines, "event": event})
        for script in scripts:
            self.run_script(script)

    async def sender(self) -> None:
        """Apply requests one at a time, in the order the transitions happened."""
        while True:
            message = await self.outbox.get()
            try:
                reply = await request(message)
            except (OSError, TimeoutError, ValueError) as err:
                log.warning("director did not take a health update: %s", err)
                continue
            if reply.get("rc") == 3:  # stale: a reload happened; fetch it
                self.resync.set()
                continue
            for line in message["lines"]:
                log.info("%s", line)
            event = reply.get("event")
            if event is not None:  # stamped by the director when the table changed
                log.debug("transition %s", " ".join(  # the director logs the event
                    f"{k}={json.dumps(v) if ' ' in str(v) or not v else v}"
                    for k, v in event.items()))
            for err in reply.get("errors", []):
                log.warning("ipvsadm %s", err)

    async def report_timings(self) -> None:
        """Measured response times for a scheduler's report(dest, seconds) hook."""
        while True:
            await asyncio.sleep(TIMINGS_EVERY)
            samples, self.timings = self.timings, []
            out = []
            for vs, rs, seconds in samples:
                pool = self.pools.get(vs)
                if pool is None:
                    continue
                for ref in pool.refs:
                    out.append([[ref.protocol, ref.addr, ref.port, ref.fwmark, ref.family],
                                rs.addr, ipvsops.dest_port(ref, rs), seconds])
            if out:
                with contextlib.suppress(OSError, TimeoutError, ValueError):
                    await request({"op": "health", "action": "timings", "samples": out})

    def run_script(self, command: str) -> None:
        """notify_up/down, quorum_up/down: run without a shell, not waited for."""
        task = asyncio.create_task(run_script(command))
        self.scripts.add(task)
        task.add_done_callback(self.scripts.discard)


def suspended(vs: VirtualServer, cfg: HealthConfig) -> bool:
    addrs = [ref.addr for ref in ipvsops.services(vs, cfg) if ref.addr]
    return bool(addrs) and not any(is_local(a) for a in addrs)


def make_ssl_context(cfg: HealthConfig) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cfg.ssl_ca:
        ctx.load_verify_locations(cfg.ssl_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    if cfg.ssl_certificate:
        ctx.load_cert_chain(cfg.ssl_certificate, cfg.ssl_key, cfg.ssl_password)
    return ctx


async def run_script(command: str) -> None:
    parent = os.getpid()
    try:
        proc = await asyncio.create_subprocess_exec(
            *shlex.split(command), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=lambda: die_with_parent(parent))
    except (OSError, ValueError) as err:
        log.warning("script %r: %s", command, err)
        return
    try:
        await asyncio.wait_for(proc.wait(), SCRIPT_TIMEOUT)
    except (TimeoutError, asyncio.CancelledError):
        kill_group(proc.pid, signal.SIGKILL)


async def main_async() -> int:
    loop = asyncio.get_running_loop()
    proc = CheckerProcess(outbox=asyncio.Queue(), resync=asyncio.Event())
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, proc.resync.set)
    await proc.sync()
    helpers = [asyncio.create_task(proc.sender()), asyncio.create_task(proc.report_timings())]
    while not stop.is_set():
        waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(proc.resync.wait())]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()
        if proc.resync.is_set() and not stop.is_set():
            proc.resync.clear()
            try:
                await proc.sync()
            except (OSError, TimeoutError, RuntimeError, ValueError) as err:
                log.warning("could not fetch the new configuration: %s", err)
    for task in [*helpers, *(rt.task for rt in proc.runtimes.values() if rt.task)]:
        task.cancel()
    for task in list(proc.scripts):
        task.cancel()
    await asyncio.gather(*helpers, *proc.scripts, return_exceptions=True)
    return 0


NICE = 10  # checks wait seconds anyway; under CPU contention the forwarder goes first


def main(argv: list[str] | None = None) -> int:
    os.nice(NICE)
    args = argv if argv is not None else sys.argv[1:]
    level = args[args.index("--log-level") + 1] if "--log-level" in args[:-1] else "info"
    logs.setup(level, prog="pyvs-checker")  # the director's --log-format, inherited
    with warnings.catch_warnings():  # pidfd watcher: no helper threads next to preexec_fn
        warnings.simplefilter("ignore", DeprecationWarning)
        if hasattr(asyncio, "PidfdChildWatcher"):
            asyncio.set_child_watcher(asyncio.PidfdChildWatcher())
    profile = os.environ.get("PYVS_CHECKER_PROFILE")  # a cProfile output file
    try:
        if not profile:
            return asyncio.run(main_async())
        import cProfile

        prof = cProfile.Profile()
        try:
            return prof.runcall(asyncio.run, main_async())
        finally:
            prof.dump_stats(profile)
    except (OSError, RuntimeError) as err:
        log.error("checker process cannot start: %s", err)
        return 1


if __name__ == "__main__":
    sys.exit(main())
