"""kvctl: administer, migrate, snapshot, sync and benchmark key-value stores through plugins."""

__version__ = "0.1.0"
