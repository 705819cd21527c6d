"""The ``libsql://`` backend: libSQL through libsql-client, a local file or a remote server."""

from .store import LibSQLStore

__all__ = ["LibSQLStore"]
