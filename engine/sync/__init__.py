"""Connection synchronisation between directors (the kernel's ip_vs_sync.c).

A master multicasts the connections it handles; a backup builds its table from those
messages, so that when keepalived moves the virtual addresses to it, established
connections and persistence keep going.  One idea per module:

  codec.py    the messages on the wire (version 1, and version 0), never raising
  policy.py   when a connection is synced (ip_vs_sync_conn_needed) and what is sent
  master.py   the master side: buffers, the send queue, the 2 s flush
  backup.py   the backup side: records into the connection table (ip_vs_proc_conn)
  sockets.py  the multicast sockets (make_send_sock / make_receive_sock)
  daemon.py   --start-daemon / --stop-daemon / -L --daemon and the glue to `pyvs run`
"""
