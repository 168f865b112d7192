"""The ipvsadm command language, executed inside the pyvs daemon.

`pyvsadm` is a thin client: it sends argv (without the program name) and stdin to
the daemon, which calls run() and sends back (exit code, stdout, stderr).  This
package is pure logic over the director object; it never touches the network or
the file system.  Its modules, by idea: output (streams, exit codes, libipvs'
messages), addresses (numbers and addresses as ipvsadm reads them), popt (the
tokenizer), options (the option tables and parse_options), listing (every output
format), commands (running a parsed command; run()), daemon (the sync daemon's
commands and listing), usage (-h, -v).

Behaviour follows ipvsadm 1.31 (ipvsadm.c / libipvs.c) as Debian ships it (its patch
for bug 814348 takes weights up to INT_MAX, as the kernel does):

* option parsing imitates popt, then the commands_v_options compatibility table;
* error texts and exit codes are ipvsadm's: fail() exits 2; popt errors,
  "Try `pyvsadm -h'..." and kernel (libipvs) errors exit 255 (ipvsadm returns
  -1 from main); listing a missing service exits 1;
* listing / save formats are the printf formats of print_title,
  print_service_entry, print_largenum, list_conn and print_conn.

Deliberate differences from ipvsadm (documented here once):
* Output is always numeric: without -n ipvsadm resolves addresses and ports to
  names (gethostbyaddr/getservbyport); pyvs never does name look-ups in the
  daemon, so -n is accepted but changes nothing.  On input, host names are not
  resolved either (an unparsable host gives ipvsadm's "illegal ... address"
  error); port *names* are looked up in the services database.
* Sorting uses true numeric order.  libipvs compares with int subtraction of
  u32 values, which misorders addresses that differ by 2^31 or more.
* The program name printed in usage/"Try" messages is "pyvsadm" (ipvsadm prints
  its argv[0]).
* The sync daemon (--start-daemon, --stop-daemon, -L --daemon; module daemon) acts
  on the director's engine/sync/daemon.py SyncDaemons, handed to run() by `pyvs
  run`; called without one (a bare director, or `pyvs run --workers N`),
  --start-daemon answers "Protocol not available" (ENOPROTOOPT) as a kernel
  without the command would.
* pyvs has no persistence engine: --pe NAME gets libipvs' message for the kernel's
  ENOENT ("Scheduler or persistence engine not found", exit 255) for every NAME, sip
  included, as from a kernel without the ip_vs_pe_NAME module.
* Scheduler names are not truncated to 15 characters, so pyvs' "file.py:Class"
  and "module:Class" scheduler specs work.
"""

from __future__ import annotations

from pyvs.engine.ipvsadm.commands import run
from pyvs.engine.ipvsadm.usage import usage_text

__all__ = ["run", "usage_text"]
