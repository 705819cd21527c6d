"""``kvctl bench``: the seed documents' benchmark tables, reproduced on any registered backend.

How a run flows (the parent is the CLI process; nothing here names a backend)::

    suite.run ── backends.resolve      probe each URL once (or find the embedded backends)
              ├─ plan_jobs             one job = one backend x one workload; capability skips
              ├─ runner (harness)      empty-op cost and the gate's reference, in-process
              └─ runner (each job)     a process that is pyperf's manager:
                   ├─ pyperf workers   this same module: open the store, time plans (kernels)
                   ├─ latency.py       per-op percentiles (network backends, latency tables)
                   ├─ load.py          --clients: asyncio tasks or processes
                   ├─ alloc.py         memray allocations per op (GridKV)
                   └─ instr.py         instructions per op under valgrind (GridKV), in its own process
    results.Run ── report.py (rich, markdown, csv, json, mermaid, html), gate.py (baseline)

``workloads.py`` and ``ycsb.py`` say *what* is measured; ``kernels.py`` and ``target.py`` are
the only code inside a timed region; ``seeds.py`` holds the seed documents' figures.
"""
