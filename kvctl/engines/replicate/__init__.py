"""`kvctl sync`: incremental replication between two stores."""

from .engine import Conflict, SyncEngine, SyncPlan, SyncResult, apply_lww, opened, state_path, sync

__all__ = ["Conflict", "SyncEngine", "SyncPlan", "SyncResult", "apply_lww", "opened", "state_path", "sync"]
