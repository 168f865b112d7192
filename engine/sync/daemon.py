"""The sync daemons of one director: what --start-daemon, --stop-daemon and -L --daemon
act on, and the part `pyvs run` drives (sockets in its selector, a send deadline).

``start(state, cfg)`` is start_sync_thread(): the kernel's defaults are filled in
(group 224.0.0.81, port 8848, TTL 1; ``sync_maxlen`` 1500 minus the IP and UDP
headers for a master, the interface MTU (at least 1500) minus them for a backup, or
the given value clamped), ``sync_ports`` sockets are opened (port + thread id), and a
master hooks into the director (``Director.sync_observer``).  Errors are the
kernel's errno values (EEXIST: already running, ENODEV: no such interface, ESRCH on
stop: not running), raised as engine/service.py IPVSError for pyvsadm to print.
A master and a backup may run at the same time, as in the kernel; keepalived's
notify scripts switch a director between the two.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from collections import Counter

from pyvs.engine.service import IPVSError
from pyvs.engine.sync import sockets
from pyvs.engine.sync.backup import SyncBackup
from pyvs.engine.sync.master import SyncConfig, SyncMaster

log = logging.getLogger("pyvs.sync")

STATE_MASTER, STATE_BACKUP = 1, 2  # IP_VS_STATE_*
SYNC_PORTS_MAX = 64  # IPVS_SYNC_PORTS_MAX
RECV_BATCH = 256  # datagrams read per wake-up, so a flood cannot starve the packet path


def _mtu(ifname: str) -> int:
    try:
        with open(f"/sys/class/net/{ifname}/mtu") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1500


class SyncDaemons:
    def __init__(self, director) -> None:
        self.director = director
        self.master: SyncMaster | None = None
        self.backup: SyncBackup | None = None
        self.configs: dict[int, SyncConfig] = {}
        self.send_socks: list[socket.socket] = []
        self.recv_socks: list[socket.socket] = []
        self.threads = 0  # threads_mask + 1, fixed while any daemon runs
        self.counters: Counter[str] = Counter()

    # -- control (ipvsadm) -----------------------------------------------------------------
    def start(self, state: int, cfg: SyncConfig) -> None:
        if state not in (STATE_MASTER, STATE_BACKUP):
            raise IPVSError(errno.EINVAL)
        if state in self.configs:
            raise IPVSError(errno.EEXIST)
        try:
            sockets.if_index(cfg.mcast_ifn)
        except OSError:
            raise IPVSError(errno.ENODEV) from None
        if any(dest.af != svc.af for svc in self.director.services.services.values()
               for dest in svc.destinations):
            raise IPVSError(errno.EINVAL)  # the sync protocol has no mixed families
        threads = self.threads or max(1, min(self.director.sysctl.sync_ports,
                                             SYNC_PORTS_MAX))
        hlen = (40 if cfg.ipv6 else 20) + 8
        if cfg.sync_maxlen:
            low = 1024 if state == STATE_BACKUP else 1
            cfg.sync_maxlen = max(low, min(cfg.sync_maxlen, 65535 - hlen))
        else:
            mtu = max(1500, min(_mtu(cfg.mcast_ifn), 65535)) if state == STATE_BACKUP \
                else 1500
            cfg.sync_maxlen = mtu - hlen
        sock_size = self.director.sysctl.sync_sock_size
        make = sockets.make_send_sock if state == STATE_MASTER else sockets.make_receive_sock
        opened: list[socket.socket] = []
        try:
            for thread in range(threads):
                opened.append(make(cfg, thread, sock_size))
        except OSError as err:
            for s in opened:
                s.close()
            raise IPVSError(err.errno or errno.EINVAL) from None
        self.threads = threads
        self.configs[state] = cfg
        d = self.director
        if state == STATE_MASTER:
            self.send_socks = opened
            self.master = SyncMaster(cfg, d.sysctl, d.clock, threads)
            d.sync_observer = self.master.observe
        else:
            self.recv_socks = opened
            self.backup = SyncBackup(d, cfg.syncid, self._source_filter(cfg.mcast_ifn))
        log.info("sync daemon started: state = %s, mcast_ifn = %s, syncid = %d",
                 "MASTER" if state == STATE_MASTER else "BACKUP", cfg.mcast_ifn, cfg.syncid)

    def stop(self, state: int) -> None:
        if state not in (STATE_MASTER, STATE_BACKUP):
            raise IPVSError(errno.EINVAL)
        if state not in self.configs:
            raise IPVSError(errno.ESRCH)
        del self.configs[state]
        if state == STATE_MASTER:
            self.director.sync_observer = None
            if self.master is not None:
                self.master.discard()
                self.counters.update(self.master.counters)
            self.master = None
            socks, self.send_socks = self.send_socks, []
        else:
            if self.backup is not None:
                self.counters.update(self.backup.counters)
            self.backup = None
            socks, self.recv_socks = self.recv_socks, []
        for s in socks:
            s.close()
        if not self.configs:
            self.threads = 0
        log.info("sync daemon stopped: state = %s",
                 "MASTER" if state == STATE_MASTER else "BACKUP")

    def running(self) -> list[tuple[str, SyncConfig]]:
        """("master"|"backup", config) of each running daemon, master first."""
        names = {STATE_MASTER: "master", STATE_BACKUP: "backup"}
        return [(names[s], self.configs[s]) for s in (STATE_MASTER, STATE_BACKUP)
                if s in self.configs]

    def close(self) -> None:
        for state in list(self.configs):
            self.stop(state)

    # -- the event loop -------------------------------------------------------------------
    def readers(self) -> list[socket.socket]:
        return list(self.recv_socks)

    def serve(self, sock: socket.socket) -> None:
        """Read what the backup socket holds (a bounded number) and apply it."""
        backup = self.backup
        if backup is None:
            return
        bufsize = self.configs[STATE_BACKUP].sync_maxlen  # longer ones fail the size check
        for _ in range(RECV_BATCH):
            try:
                data, addr = sock.recvfrom(bufsize)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                backup.counters[f"receive-error:{errno.errorcode.get(err.errno, '?')}"] += 1
                return
            backup.receive(data, addr[0])

    def poll(self, now: float) -> None:
        """Send what the master has due; a socket that is full keeps the rest queued."""
        master = self.master
        if master is None:
            return
        for thread, message in master.due(now):
            try:
                self.send_socks[thread].send(message)
                master.counters["messages-sent"] += 1
            except (BlockingIOError, InterruptedError):
                master.requeue(thread, message)
                master.counters["send-would-block"] += 1
            except OSError as err:  # ip_vs_send_sync_msg: logged, message dropped
                master.counters[f"send-error:{errno.errorcode.get(err.errno, '?')}"] += 1

    def next_wakeup(self) -> float | None:
        return self.master.next_wakeup() if self.master is not None else None

    def status(self) -> dict:
        out: dict = {"running": [name for name, _ in self.running()]}
        if self.master is not None:
            out["master"] = dict(self.master.counters)
        if self.backup is not None:
            out["backup"] = dict(self.backup.counters)
        if self.counters:
            out["stopped"] = dict(self.counters)
        return out

    # -------------------------------------------------------------------------------------
    @staticmethod
    def _source_filter(ifname: str):
        """Messages are taken only from another address on the sync interface's own
        networks (a peer director), never from this director's addresses."""
        try:
            nets = sockets.interface_neighbours(ifname)
        except Exception:  # no netlink: take every source, as the kernel does
            log.warning("cannot read the addresses of %s: sync sources not checked", ifname)
            return None
        own = {i.ip for i in nets}

        def allowed(source: str) -> bool:
            try:
                ip = ipaddress.ip_address(source.split("%")[0])
            except ValueError:
                return False
            return ip not in own and any(ip in i.network for i in nets)

        return allowed


__all__ = ["STATE_BACKUP", "STATE_MASTER", "SyncConfig", "SyncDaemons"]
