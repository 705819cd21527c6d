"""The engines behind kvctl's long commands, one module or package per feature.

* :mod:`.migrate` -- ``kvctl migrate``: copy one store into another, resumably, in one process,
  in ``--workers`` processes or from a plan file;
* :mod:`.diff` -- ``kvctl diff``: compare two stores;
* :mod:`.dump` -- ``kvctl export`` and ``kvctl import``: JSON lines and CSV dumps;
* :mod:`.snapshot` -- ``kvctl snapshot``: full and incremental snapshot files (FORMAT.md);
* :mod:`.replicate` -- ``kvctl sync``: incremental replication, once or ``--watch``;
* :mod:`.distributed` -- ``--executor dask://``: the slices of a migrate or diff on a Dask cluster;
* :mod:`.reporting` -- what every engine tells its caller while it runs (``Reporter``) and hands
  back (``to_dict``, ``check``);
* :mod:`.keyfilter` -- ``--prefix``/``--glob``.

Each feature's entry point is synchronous, ``run(<urls...>, options, reporter=None) -> result``
(snapshot: ``create``, ``verify``, ``restore``, ``inspect``), and owns the command's only event
loop; the async cores (``migrate.migrate``, ``diff.compare``, ``dump.export_to``...) work on
stores already open, for tests and composition.  Engines never print.

The modules with a leading underscore are what the features share: ``_batches`` (the batch
writer: expiry, typed values, TTLs, limits, conflict policy), ``_pipeline`` (reader/writer over a
bounded queue), ``_slices`` (one slice of a keyspace as pages), ``_stores`` (opening stores,
typed-value calls), ``_files`` (atomic files) and ``_stopped`` (what a stopped write says).
"""
