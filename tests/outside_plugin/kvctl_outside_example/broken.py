"""A plugin whose driver is missing: importing it fails like a real uninstalled dependency."""

import kvctl_nonexistent_driver  # noqa: F401
