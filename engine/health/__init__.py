"""Health checking: keepalived's checkers and failure handling in front of the director.

`pyvs run --keepalived FILE` or `--config FILE` parses a configuration (keepalived.py,
tomlconfig.py -> model.py), applies the initial IPVS table itself (pool.py, ipvsops.py)
and starts a checker process (checkerd.py, checks/*) that edits the table through the
control socket as keepalived's checker process does through netlink; reload is
validated and applied as a difference (diff.py) by the daemon's supervisor.py.
"""
