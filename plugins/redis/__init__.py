"""Redis backends: ``redis://``, ``rediss://``, ``unix://`` (one server) and ``redis+cluster://``,
``rediss+cluster://`` (Redis Cluster), each with an optional local cache kept coherent by pub/sub
invalidation in the wire format of Session's "Clustered Redis" store, and an optional change feed
from keyspace notifications (``?feed=notify``, feed.py).  See options.py for URLs."""

from .cluster import RedisClusterStore
from .store import RedisStore

__all__ = ["RedisClusterStore", "RedisStore"]
