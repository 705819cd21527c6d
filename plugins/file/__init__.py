"""The ``file`` backend: a durable, log-structured store in one directory (see :mod:`.store`)."""

from .store import FileStore, RecoveryWarning

__all__ = ["FileStore", "RecoveryWarning"]
