"""The ``postgres://`` / ``postgresql://`` backend: a table in PostgreSQL through asyncpg."""

from .store import PostgresStore

__all__ = ["PostgresStore"]
