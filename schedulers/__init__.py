"""IPVS schedulers: one module per scheduler, registered by name (see registry.py)."""
