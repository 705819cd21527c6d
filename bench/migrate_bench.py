"""Throughput and memory of `kvctl migrate` and snapshots, beside the raw bulk-load rate, in one run.

Workload: keys of 16 bytes (``%016d``), values of 100 random bytes, no TTL unless stated.  Every
scenario runs in its own child process (so its peak RSS is its own), once:

* **migrate memory -> lmdb / file**: ``engines.migrate.run`` from a ``memory://`` store holding the
  keys; beside it, in the same child, the destination's *raw* bulk load: the plugin's
  ``set_many`` in batches of the same size from ready-made Records (the best a copy into that
  backend can do through the protocol), and section 6 of the reference (lmdb bulk load 0.8M
  keys/s).  Both durability modes: the backend's default (fsync per commit / per batch) and
  no sync.
* **snapshot create / restore**: 1,000,000 keys from and into lmdb.
* **peak memory**: a sqlite -> sqlite migrate, and a snapshot create + restore, of N and 10 N keys;
  the child's peak RSS (``ru_maxrss``) must stay flat (sqlite's page cache is bounded, so RSS
  shows the engine's own memory).
* **Redis <-> PostgreSQL** when tests/services.sh has started the servers: without and with a TTL
  on every key, beside the reference's raw figures (redis MSET 528k, asyncpg COPY 419k keys/s).

Usage::

    python bench/migrate_bench.py [--keys 1000000] [--batch 10000] [--write bench/results/migrate_RESULTS.md]
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _harness import Report, fmt_rate, parser, peak_rss_mb
from _harness import services_env as services  # bench/bulk_bench.py imports fmt_rate and services from here

REF = {"lmdb": 800_000, "sqlite": 264_000, "postgres": 419_000, "redis": 528_000}  # reference section 6


# -- children ----------------------------------------------------------------------------------
def _records(n: int, ttl_ms: int | None = None) -> list[Any]:
    from kvctl.store import Record, now_ms

    vals = os.urandom(100 * n)
    exp = None if ttl_ms is None else now_ms() + ttl_ms
    return [Record(b"%016d" % i, vals[i * 100:(i + 1) * 100], exp) for i in range(n)]


def _fill(url: str, n: int, batch: int, ttl_ms: int | None = None) -> None:
    from kvctl.adapt import to_sync
    from kvctl.registry import open_url

    store = to_sync(open_url(url))
    store.clear()
    for i in range(0, n, 100_000):
        recs = _records(min(100_000, n - i), ttl_ms)
        recs = [type(r)(b"%016d" % (i + j), r.value, r.expires_at_ms) for j, r in enumerate(recs)]
        for k in range(0, len(recs), batch):
            store.set_many(recs[k:k + batch])
    store.close()


def child_memory_to(dst: str, n: int, batch: int) -> dict[str, Any]:
    """memory:// -> dst with the engine, then the raw set_many rate of dst in the same process."""
    from kvctl.adapt import to_sync
    from kvctl.engines import migrate
    from kvctl.registry import open_url

    records = _records(n)
    src = open_url("memory://bench-src")
    src.set_many(records)
    next(iter(src.scan(batch_size=1)))  # build the memory store's sorted index outside the timing
    t0 = time.perf_counter()
    scanned = sum(len(p.records) for p in src.scan(batch_size=batch))
    scan_s = time.perf_counter() - t0
    assert scanned == n
    t0 = time.perf_counter()
    summary = migrate.run("memory://bench-src", dst + "/a" if "?" not in dst else dst.replace("?", "/a?"),
                          migrate.Plan(batch_size=batch, checkpoint_path=Path(tempfile.mkdtemp()) / "cp.json"))
    engine_s = time.perf_counter() - t0
    assert summary.counts.copied == n
    raw_url = dst + "/b" if "?" not in dst else dst.replace("?", "/b?")
    store = to_sync(open_url(raw_url))
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        store.set_many(records[i:i + batch])
    store.close()
    raw_s = time.perf_counter() - t0
    return {"engine_keys_s": n / engine_s, "raw_keys_s": n / raw_s, "scan_keys_s": n / scan_s,
            "seq_keys_s": n / (scan_s + raw_s)}


def child_snapshot_lmdb(root: str, n: int, batch: int) -> dict[str, Any]:
    from kvctl.engines import snapshot

    src = f"lmdb://{root}/src"
    _fill(src + "?sync=false", n, batch)
    out: dict[str, Any] = {}
    path = Path(root) / "snap.kvs"
    t0 = time.perf_counter()
    created = snapshot.create(src, path, batch_size=batch)
    out["create_s"] = time.perf_counter() - t0
    out["size_mb"] = created.size / 1e6
    out["codec"] = json.loads(_header_codec(path))
    t0 = time.perf_counter()
    snapshot.verify(path)
    out["verify_s"] = time.perf_counter() - t0
    for label, url, size in [("restore_s", f"lmdb://{root}/dst", batch),
                             ("restore_big_s", f"lmdb://{root}/dst3", 100_000),
                             ("restore_nosync_s", f"lmdb://{root}/dst2?sync=false", batch)]:
        t0 = time.perf_counter()
        restored = snapshot.restore(path, url, batch_size=size)
        out[label] = time.perf_counter() - t0
        assert restored.counts is not None and restored.counts.copied == n
    return out


def _header_codec(path: Path) -> str:
    from kvctl.engines.snapshot.format import SnapshotReader

    with open(path, "rb") as fh:
        return json.dumps(SnapshotReader(fh, str(path)).header.meta["codec"])


def child_rss_migrate(root: str, n: int, batch: int) -> dict[str, Any]:
    """Fill in a separate process, so this one's peak RSS is the migrate's alone."""
    from kvctl.engines import migrate

    src, dst = f"sqlite://{root}/src.db", f"sqlite://{root}/dst.db"
    before = peak_rss_mb()
    t0 = time.perf_counter()
    s = migrate.run(src, dst, migrate.Plan(batch_size=batch, checkpoint_path=Path(root) / "cp.json"))
    assert s.counts.copied == n
    return {"seconds": time.perf_counter() - t0, "rss_before_mb": before, "peak_rss_mb": peak_rss_mb()}


def child_rss_snapshot(root: str, n: int, batch: int) -> dict[str, Any]:
    from kvctl.engines import snapshot

    before = peak_rss_mb()
    path = Path(root) / "s.kvs"
    snapshot.create(f"sqlite://{root}/src.db", path, batch_size=batch)
    r = snapshot.restore(path, f"sqlite://{root}/restored.db", batch_size=batch)
    assert r.counts is not None and r.counts.copied == n
    return {"rss_before_mb": before, "peak_rss_mb": peak_rss_mb()}


def child_workers(root: str, n: int, batch: int, workers: int) -> dict[str, Any]:
    """sqlite -> lmdb (no sync) with --workers N (key-range split: both are ordered)."""
    from kvctl.engines import migrate
    from kvctl.engines.migrate.parallel import run as run_parallel

    dst = f"lmdb://{root}/dst-{workers}?sync=false"
    plan = migrate.Plan(batch_size=batch, workers=workers, checkpoint_path=Path(root) / f"cp-{workers}.json")
    t0 = time.perf_counter()
    s = (run_parallel if workers > 1 else migrate.run)(f"sqlite://{root}/src.db", dst, plan)
    assert s.counts.copied == n
    return {"keys_s": n / (time.perf_counter() - t0)}


def child_fill(url: str, n: int, batch: int, ttl_ms: int | None = None) -> dict[str, Any]:
    _fill(url, n, batch, ttl_ms)
    return {}


def child_servers(src: str, dst: str, n: int, batch: int, ttl: bool) -> dict[str, Any]:
    from kvctl.adapt import to_sync
    from kvctl.engines import migrate
    from kvctl.registry import open_url

    _fill(src, n, batch, 3_600_000 if ttl else None)
    src_store = to_sync(open_url(src))
    t0 = time.perf_counter()
    scanned = sum(len(p.records) for p in src_store.scan(batch_size=batch))
    scan_s = time.perf_counter() - t0
    src_store.close()
    assert scanned == n
    store = to_sync(open_url(dst))
    store.clear()
    store.close()
    t0 = time.perf_counter()
    s = migrate.run(src, dst, migrate.Plan(batch_size=batch, checkpoint_path=Path(tempfile.mkdtemp()) / "cp.json"))
    engine_s = time.perf_counter() - t0
    assert s.counts.copied == n, s.to_dict()
    recs = _records(n, 3_600_000 if ttl else None)
    store = to_sync(open_url(dst))
    store.clear()
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        store.set_many(recs[i:i + batch])
    raw_s = time.perf_counter() - t0
    store.clear()
    src_store = to_sync(open_url(src))
    t0 = time.perf_counter()
    for page in src_store.scan(batch_size=batch):  # the copy with no engine at all
        store.set_many(page.records)
    seq_s = time.perf_counter() - t0
    store.clear()
    store.close()
    src_store.clear()
    src_store.close()
    return {"engine_keys_s": n / engine_s, "raw_keys_s": n / raw_s, "scan_keys_s": n / scan_s,
            "seq_keys_s": n / seq_s}


_CHILDREN: list[Callable[..., dict[str, Any]]] = [child_memory_to, child_snapshot_lmdb, child_rss_migrate,
                                                  child_rss_snapshot, child_fill, child_servers, child_workers]
CHILDREN = {f.__name__: f for f in _CHILDREN}


# -- the parent --------------------------------------------------------------------------------
def run_child(name: str, *args: Any) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", name, json.dumps(args)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"{name}{args} failed:\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def families() -> set[str]:
    from kvctl.errors import PluginLoadError
    from kvctl.registry import load, schemes

    names = set()
    for scheme in schemes():
        with contextlib.suppress(PluginLoadError):
            names.add(getattr(load(scheme), "name", scheme))
    return names


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--rss-keys", type=int, default=100_000, help="N for the memory check (N and 10 N)")
    ap.add_argument("--server-keys", type=int, default=200_000)
    ap.add_argument("--child")
    ap.add_argument("args", nargs="?")
    opts = ap.parse_args()
    if opts.child:
        print(json.dumps(CHILDREN[opts.child](*json.loads(opts.args))))
        return

    n, batch = opts.keys, opts.batch
    have = families()
    report = Report("migrate and snapshot benchmark")
    lines = [
        f"One run per figure; keys of 16 bytes, values of "
        f"100 random bytes, batches of {batch:,}. Each scenario ran in its own process.", "",
    ]
    tmp = Path(tempfile.mkdtemp(prefix="kvctl-migrate-bench-"))
    try:
        lines += ["## migrate from memory:// (keys/s)", "",
                  "| destination (durability) | kvctl migrate | raw `set_many` of the destination, same batches | "
                  "raw scan of the source | raw scan then set_many, back to back | migrate / raw set_many | "
                  "reference bulk load |", "|---|---|---|---|---|---|---|"]
        for fam, url, mode in [("lmdb", "lmdb://{}", "fsync per commit (default)"),
                               ("lmdb", "lmdb://{}?sync=false", "no sync"),
                               ("file", "file://{}", "fsync per batch (default)"),
                               ("file", "file://{}?fsync=never", "no sync")]:
            if fam not in have:
                lines.append(f"| {fam} ({mode}) | not installed | | | | | |")
                continue
            d = tmp / f"{fam}-{len(lines)}"
            d.mkdir()
            r = run_child("child_memory_to", url.format(d), n, batch)
            lines.append(f"| {fam} ({mode}) | **{fmt_rate(r['engine_keys_s'])}** | {fmt_rate(r['raw_keys_s'])} | "
                         f"{fmt_rate(r['scan_keys_s'])} | {fmt_rate(r['seq_keys_s'])} | "
                         f"{r['engine_keys_s'] / r['raw_keys_s']:.2f} | {fmt_rate(REF[fam]) if fam in REF else '-'} |")
            shutil.rmtree(d, ignore_errors=True)
        lines += ["", f"{n:,} keys. Target: at least 500,000 keys/s. A copy can be no faster than the slower of "
                  "the source's scan and the destination's `set_many`; on 2 CPUs shared by the two sides' Python "
                  "code it is bounded by their sum (the back-to-back column, no engine at all). The engine adds "
                  "the batch checks, the bounded queue, a worker thread for the blocking side and checkpoints.",
                  ""]

        if "lmdb" in have:
            d = tmp / "snap"
            d.mkdir()
            r = run_child("child_snapshot_lmdb", str(d), n, batch)
            lines += ["## snapshots of lmdb", "",
                      "| step | seconds | keys/s |", "|---|---|---|",
                      f"| create from lmdb ({r['codec']}, {r['size_mb']:.0f} MB) | **{r['create_s']:.2f}** | "
                      f"{fmt_rate(n / r['create_s'])} |",
                      f"| verify (every record checksum + hash) | {r['verify_s']:.2f} | "
                      f"{fmt_rate(n / r['verify_s'])} |",
                      f"| restore into lmdb (fsync per commit) | **{r['restore_s']:.2f}** | "
                      f"{fmt_rate(n / r['restore_s'])} |",
                      f"| restore into lmdb (fsync per commit), `--batch-size 100000` | {r['restore_big_s']:.2f} | "
                      f"{fmt_rate(n / r['restore_big_s'])} |",
                      f"| restore into lmdb (no sync) | {r['restore_nosync_s']:.2f} | "
                      f"{fmt_rate(n / r['restore_nosync_s'])} |",
                      "", f"{n:,} keys. Target: create and restore each under 5 s. Restore includes its "
                      "verification pass over the file (framing, payload checksums, whole-file hash) before "
                      "anything is written.", ""]
            shutil.rmtree(d, ignore_errors=True)

        if "sqlite" in have:
            lines += ["## peak memory as the key count grows 10x", "",
                      "| keys | migrate sqlite -> sqlite: peak RSS | snapshot create + restore: peak RSS |",
                      "|---|---|---|"]
            for keys in [opts.rss_keys, opts.rss_keys * 10]:
                d = tmp / f"rss-{keys}"
                d.mkdir()
                run_child("child_fill", f"sqlite://{d}/src.db", keys, batch)
                m = run_child("child_rss_migrate", str(d), keys, batch)
                s = run_child("child_rss_snapshot", str(d), keys, batch)
                lines.append(f"| {keys:,} | {m['peak_rss_mb']:.0f} MB ({m['seconds']:.1f} s, "
                             f"{fmt_rate(keys / m['seconds'])} keys/s) | {s['peak_rss_mb']:.0f} MB |")
                shutil.rmtree(d, ignore_errors=True)
            lines += ["", "Peak resident memory of the process doing only the copy (the stores are filled by "
                      "another process). Flat: memory is bounded by a few batches in the pipeline and one "
                      "snapshot block, whatever the key count.", ""]

        if {"sqlite", "lmdb"} <= have:
            d = tmp / "workers"
            d.mkdir()
            wn = opts.rss_keys * 3
            run_child("child_fill", f"sqlite://{d}/src.db", wn, batch)
            lines += ["## --workers (sqlite -> lmdb, no sync)", "", "| workers | keys/s |", "|---|---|"]
            for w in (1, 2, 4):
                r = run_child("child_workers", str(d), wn, batch, w)
                lines.append(f"| {w} | {fmt_rate(r['keys_s'])} |")
            lines += ["", f"{wn:,} keys, split by key range (both sides are ordered); wall time including "
                      f"process start-up. {os.cpu_count()} CPUs on this machine.", ""]
            shutil.rmtree(d, ignore_errors=True)

        env = services()
        redis_url, pg_url = env.get("KVCTL_TEST_REDIS_URL"), env.get("KVCTL_TEST_POSTGRES_URL")
        lines += ["## Redis <-> PostgreSQL (keys/s)", ""]
        if redis_url and pg_url and {"redis", "postgres"} <= have:
            ns = f"namespace=kvctl-bench-{os.getpid()}:"
            r_url = redis_url + ("&" if "?" in redis_url else "?") + ns
            p_url = pg_url + ("&" if "?" in pg_url else "?") + f"table=bench_{os.getpid()}"
            lines += ["| direction | TTL | kvctl migrate | raw scan of the source | raw `set_many` of the destination "
                      "| raw scan then set_many, back to back | reference bulk load of the destination |",
                      "|---|---|---|---|---|---|---|"]
            # the same copy into a table without a change feed: what the feed's triggers and change
            # rows cost a bulk load (a user who will not sync from the table can turn it off)
            p_nofeed = pg_url + ("&" if "?" in pg_url else "?") + f"table=bench_{os.getpid()}_nofeed&feed=false"
            for src, dst, dname, label in [(r_url, p_url, "postgres", "Redis -> PostgreSQL"),
                                           (r_url, p_nofeed, "postgres", "Redis -> PostgreSQL `?feed=false`"),
                                           (p_url, r_url, "redis", "PostgreSQL -> Redis")]:
                for ttl in (False, True):
                    try:
                        r = run_child("child_servers", src, dst, opts.server_keys, batch, ttl)
                    except RuntimeError as exc:  # a backend being changed by someone else: say so
                        last = str(exc).strip().splitlines()[-1]
                        lines.append(f"| {label} | {'1 h' if ttl else 'none'} | failed: {last} | | | | |")
                        continue
                    lines.append(f"| {label} | {'1 h on every key' if ttl else 'none'} | "
                                 f"**{fmt_rate(r['engine_keys_s'])}** | {fmt_rate(r['scan_keys_s'])} | "
                                 f"{fmt_rate(r['raw_keys_s'])} | {fmt_rate(r['seq_keys_s'])} | "
                                 f"{fmt_rate(REF[dname])} |")
            lines += ["", f"{opts.server_keys:,} keys, servers on loopback on this machine. Targets: 150,000 keys/s "
                      "without TTLs, 100,000 with a TTL on every key.", ""]
        else:
            lines += ["Not measured: the Redis and PostgreSQL servers (tests/services.sh start) or plugins were "
                      "not available in this run.", ""]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lines += ["## about these figures", "",
              "This 2-CPU machine is shared with other "
              "test and benchmark runs, and single runs of the same scenario have moved by up to 2x between "
              "runs; compare the columns of one row (measured in the same process, back to back) rather than "
              "rows of different runs. Durability is stated per row.", ""]
    report.add(*lines).finish(opts.write)


if __name__ == "__main__":
    main()
