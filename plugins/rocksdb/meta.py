"""What kvctl keeps beside the records of a RocksDB store, in its own column family (invisible to
scans of the records).  The records themselves are :class:`kvctl.plugin_kit.RecordHeader` + value,
with keys stored as given, so RocksDB's bytewise comparator orders them as kvctl's scans require.
"""

META_CF = "kvctl"
FORMAT_KEY = b"format"
FORMAT = b"kvctl-rocksdb-1"
CLOCK_KEY = b"hlc"  # the newest version written, so versions keep growing across restarts
NODE_KEY = b"node"  # this store's HLC node id, chosen at random when the store is created
