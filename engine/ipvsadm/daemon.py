"""The sync daemon's commands: --start-daemon / --stop-daemon (ipvs_start_daemon,
ipvs_stop_daemon) and -L --daemon (list_daemon), against the director's sync daemons
(engine/sync/daemon.py) that `pyvs run` hands to run()."""

from __future__ import annotations

import errno

from pyvs.engine.ipvsadm.options import CMD_STARTDAEMON, CMD_STOPDAEMON
from pyvs.engine.service import IPVSError

DEF_MCAST_IFN = "eth0"  # ipvsadm's default --mcast-interface
DAEMON_STATES = {"master": 1, "backup": 2}  # IP_VS_STATE_MASTER, IP_VS_STATE_BACKUP


def daemon_command(o, ce) -> None:
    """Start or stop the daemon ``ce`` names; kernel errors raise IPVSError."""
    sync = o.sync
    state = DAEMON_STATES[ce.daemon_state]
    if sync is None:
        raise IPVSError(errno.ENOPROTOOPT if ce.cmd == CMD_STARTDAEMON else errno.ESRCH)
    if ce.cmd == CMD_STOPDAEMON:
        sync.stop(state)
        return
    from pyvs.engine.sync.master import SyncConfig

    cfg = SyncConfig(mcast_ifn=ce.mcast_ifn or DEF_MCAST_IFN, syncid=ce.syncid,
                     sync_maxlen=ce.sync_maxlen)
    if ce.mcast_group:
        cfg.mcast_group = ce.mcast_group
    if ce.mcast_port:
        cfg.mcast_port = ce.mcast_port
    if ce.mcast_ttl:
        cfg.mcast_ttl = ce.mcast_ttl
    sync.start(state, cfg)


def list_daemon(o) -> None:
    """list_daemon(): one line per running daemon, master first; the kernel reports
    every default it filled in, so every part is printed."""
    sync = o.sync
    for name, cfg in (sync.running() if sync is not None else []):
        line = f"{name} sync daemon (mcast={cfg.mcast_ifn}, syncid={cfg.syncid}"
        if cfg.sync_maxlen:
            line += f", maxlen={cfg.sync_maxlen}"
        line += f", group={cfg.mcast_group}"
        if cfg.mcast_port:
            line += f", port={cfg.mcast_port}"
        if cfg.mcast_ttl:
            line += f", ttl={cfg.mcast_ttl}"
        o.p(line + ")\n")
