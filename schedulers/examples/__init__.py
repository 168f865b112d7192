"""Example third-party schedulers (see schedulers/README.md)."""
