"""pyvs sim: scheduling experiments on the real director core (see docs/sim.md)."""
