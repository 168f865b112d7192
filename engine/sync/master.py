"""The master side of the sync daemon: entries into messages, messages into a queue.

The director calls ``observe(conn)`` after it handled an incoming packet of ``conn``
(where the kernel calls ip_vs_sync_conn from ip_vs_in_hook); the fast path calls it
for its frames too.  A record goes into the current message of the entry's sync
thread (one per ``sync_ports``); a full message is queued (at most
``sync_qlen_max``, extra ones are dropped and counted); ``due(now)`` gives what is
to be sent: the queue 20 ms after its first message or at once when 8 are waiting
(IPVS_SYNC_SEND_DELAY, IPVS_SYNC_WAKEUP_RATE), and a message that has been filling
for 2 s (IPVS_SYNC_FLUSH_TIME).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

from pyvs.engine.model import AF_INET, CONN_F_ONE_PACKET, CONN_F_TEMPLATE
from pyvs.engine.sync.codec import SyncBuffer, encode_record, encode_record_v0
from pyvs.engine.sync.policy import record_of, sync_conn_needed

SEND_DELAY = 0.02  # IPVS_SYNC_SEND_DELAY (HZ / 50)
WAKEUP_RATE = 8  # IPVS_SYNC_WAKEUP_RATE
FLUSH_TIME = 2.0  # IPVS_SYNC_FLUSH_TIME


@dataclass
class SyncConfig:
    """struct ipvs_sync_daemon_cfg, with the kernel's defaults filled in at start."""

    mcast_ifn: str
    syncid: int = 0
    sync_maxlen: int = 0
    mcast_group: str = "224.0.0.81"
    mcast_port: int = 8848
    mcast_ttl: int = 1

    @property
    def ipv6(self) -> bool:
        return ":" in self.mcast_group


class _Thread:
    """ipvs_master_sync_state: one thread's current message and queue."""

    __slots__ = ("buff", "queue", "first_queued")

    def __init__(self) -> None:
        self.buff: SyncBuffer | None = None
        self.queue: deque[bytes] = deque()
        self.first_queued = 0.0


class SyncMaster:
    def __init__(self, cfg: SyncConfig, sysctl, clock, threads: int) -> None:
        self.cfg = cfg
        self.sysctl = sysctl
        self.clock = clock
        self.threads = [_Thread() for _ in range(threads)]
        self.mask = threads - 1
        self.counters: Counter[str] = Counter()

    # -- the packet path -------------------------------------------------------------------
    def observe(self, conn) -> None:
        """ip_vs_in_hook's tail: the packet count that decides, then ip_vs_sync_conn."""
        if conn.flags & CONN_F_ONE_PACKET:
            pkts = self.sysctl.sync_threshold[0]
        else:
            pkts = conn.in_pkts
        self.sync_conn(conn, pkts)

    def sync_conn(self, conn, pkts: int) -> None:
        """ip_vs_sync_conn() (version 1) / ip_vs_sync_conn_v0(): the entry, then its
        controller (a template's own packet count goes up by one each time)."""
        sysctl = self.sysctl
        now = self.clock.now()
        v0 = sysctl.sync_version == 0
        while conn is not None:
            if v0 and (conn.af != AF_INET or conn.flags & CONN_F_ONE_PACKET):
                return
            if not conn.flags & CONN_F_ONE_PACKET and sync_conn_needed(conn, pkts,
                                                                        sysctl, now):
                self._add(conn, now, v0)
            ctl = conn.control
            if ctl is None:
                return
            if ctl.flags & CONN_F_TEMPLATE:
                ctl.in_pkts += 1
                pkts = ctl.in_pkts
            else:
                pkts = sysctl.sync_threshold[0]
            conn = ctl

    def _add(self, conn, now: float, v0: bool) -> None:
        rec = record_of(conn)
        data = encode_record_v0(rec) if v0 else encode_record(rec)
        version = 0 if v0 else 1
        k = conn.ikey  # select_master_thread_id: a fixed thread per entry (client port/address)
        th = self.threads[((k >> 48) ^ (k >> 64)) & self.mask]
        buff = th.buff
        if buff is not None and (buff.version != version or not buff.fits(len(data))):
            self._queue(th, buff, now)
            buff = None
        if buff is None:
            buff = th.buff = SyncBuffer(self.cfg.syncid, self.cfg.sync_maxlen, len(data),
                                        version, now)
        buff.add(data)
        self.counters["records"] += 1

    def _queue(self, th: _Thread, buff: SyncBuffer, now: float) -> None:
        """sb_queue_tail(): a full message waits for the sender, if there is room."""
        th.buff = None
        if len(th.queue) >= self.sysctl.sync_qlen_max:
            self.counters["queue-full-dropped"] += 1
            return
        if not th.queue:
            th.first_queued = now
        th.queue.append(buff.message())

    # -- the sender ------------------------------------------------------------------------
    def due(self, now: float) -> list[tuple[int, bytes]]:
        """(thread id, message) pairs to send now, in order."""
        out = []
        for i, th in enumerate(self.threads):
            buff = th.buff
            if buff is not None and now - buff.created >= FLUSH_TIME:
                self._queue(th, buff, now)
            if th.queue and (len(th.queue) >= WAKEUP_RATE
                             or now - th.first_queued >= SEND_DELAY
                             or buff is not None and th.buff is None):
                while th.queue:
                    out.append((i, th.queue.popleft()))
        return out

    def requeue(self, thread: int, message: bytes) -> None:
        """A message the socket could not take yet goes back to the head of its queue."""
        th = self.threads[thread]
        if not th.queue:
            th.first_queued = self.clock.now() - SEND_DELAY
        th.queue.appendleft(message)

    def next_wakeup(self) -> float | None:
        """When due() will next have something (for the daemon's select timeout)."""
        times = []
        for th in self.threads:
            if th.queue:
                times.append(th.first_queued + SEND_DELAY)
            if th.buff is not None:
                times.append(th.buff.created + FLUSH_TIME)
        return min(times) if times else None

    def discard(self) -> int:
        """The daemon stops: what is still held is dropped, as stop_sync_thread() does."""
        n = 0
        for th in self.threads:
            n += len(th.queue) + (th.buff is not None)
            th.queue.clear()
            th.buff = None
        self.counters["dropped-at-stop"] += n
        return n
