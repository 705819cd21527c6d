"""Store-level commands: stats, ping, plugins."""

from __future__ import annotations

import os
import time
from typing import Annotated, Any

import typer

from kvctl.cli.context import open_store, store_name
from kvctl.cli.output import JsonOpt, json_doc, table
from kvctl.cli.progress import ProgressBar, show_progress
from kvctl.cli.usage import examples
from kvctl.engines.reporting import plural

# Columns of the `kvctl plugins` table, in the spirit of the seed documents' comparison tables.
_CAPABILITY_COLUMNS = [
    ("persistent", "Persistent"), ("ttl", "TTL"), ("ordered_scan", "Ordered"), ("versions", "Versions"),
    ("atomic_batch", "Atomic"), ("multi_node", "Multi-node"), ("change_feed", "Feed"),
    ("typed_values", "Types"),
]


def stats(as_json: JsonOpt = False) -> None:
    """Show the store's statistics (keys, sizes, backend specifics)."""
    with open_store(access="read") as store:
        data = store.stats()
        name = store_name(store)
    if as_json:
        json_doc({"store": name, **data})
        return
    flat, groups = _grouped(data)
    table(name, ["stat", "value"], [row for k, v in flat.items() for row in _stat_rows(k, v)])
    if groups:
        columns = list(dict.fromkeys(c for g in groups.values() for c in g))
        table(None, ["", *columns], [[gid, *(_stat_value(c, g.get(c)) for c in columns)]
                                     for gid, g in groups.items()])


def _grouped(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Split flat ``<id>.<stat>`` names (a shard's children) from the rest: when two or more
    share an id, they read better as one row per id than as rows of dotted names."""
    ids = [k.rpartition(".")[0] for k in data if "." in k]
    shared = {i for i in ids if ids.count(i) > 1}
    flat: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {}
    for k, v in data.items():
        gid, _, stat = k.rpartition(".")
        if gid in shared:
            groups.setdefault(gid, {})[stat] = v
        else:
            flat[k] = v
    return flat, groups


def _stat_rows(name: str, value: Any) -> list[list[Any]]:
    """One stat as table rows: a dict or list one row per entry (``file=2.5 MiB``), the stat's
    name on the first; an empty one ``-``."""
    if isinstance(value, dict):
        items = [f"{k}={_stat_value(name if _sized(name) else str(k), v)}" for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        items = [str(_stat_value(name, v)) for v in value]
    else:
        return [[name, _stat_value(name, value)]]
    return [[name if i == 0 else "", item] for i, item in enumerate(items or ["-"])]


def _sized(name: str) -> bool:
    """Byte counts by the backends' naming: ``*_bytes``, ``bytes_*``, and ``*_files`` (file name
    to size)."""
    return name.endswith(("_bytes", "_files")) or name.startswith("bytes_")


def _stat_value(name: str, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        return value
    return _size(value) if _sized(name) else f"{value:,}"


def ping(
    count: Annotated[int, typer.Option("--count", "-c", min=1, help="Round trips to time.")] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Round-trip latency to the store (min/avg/max of single gets), like redis-cli --latency."""
    probe = b"kvctl:ping:" + os.urandom(4).hex().encode()
    with open_store(access="read") as store:
        store.get(probe)  # connect first; the first round trip includes the handshake
        times = []
        for _ in range(count):
            t0 = time.perf_counter_ns()
            store.get(probe)
            times.append((time.perf_counter_ns() - t0) / 1e6)
        name = store_name(store)
    if as_json:
        json_doc({"store": name, "round_trips": count, "min_ms": round(min(times), 3),
                  "avg_ms": round(sum(times) / len(times), 3), "max_ms": round(max(times), 3)})
        return
    print(f"{name}: min {min(times):.3f} ms, avg {sum(times) / len(times):.3f} ms, "
          f"max {max(times):.3f} ms ({plural(count, 'round trip')})")


def rebalance(
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Count what would move; change nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Move keys to the child store that owns them after weights changed (shard stores).

    Only keys whose owner changed move; each is copied before it is removed, so an interrupted
    run leaves a duplicate, never a loss, and running again finishes the job.
    """
    from kvctl.abilities import Rebalancing
    from kvctl.errors import UnsupportedError

    with open_store() as store, ProgressBar(show_progress()) as bar:
        if not isinstance(store, Rebalancing):
            raise UnsupportedError(f"the {store.name} backend places no keys: nothing to rebalance")
        report = store.rebalance(dry_run=dry_run, **_progress_of(store, bar)).as_dict()
    if as_json:
        json_doc(report)
        return
    verb = "would move" if dry_run else "moved"
    print(f"examined {report['examined']:,}, {verb} {report['moved']:,}, "
          f"dropped {report['stale_dropped']:,} stale cop{'y' if report['stale_dropped'] == 1 else 'ies'}")
    for route, n in sorted(report.get("moves", {}).items()):
        print(f"  {route}: {n:,}")


def _progress_of(store: Any, bar: ProgressBar) -> dict[str, Any]:
    """``progress=`` for a rebalance that reports the keys it examined (out of the store's count),
    when a bar is drawn; else nothing."""
    import inspect

    from kvctl.engines.reporting import Counts, Progress

    if bar.reporter is None or "progress" not in inspect.signature(store.rebalance).parameters:
        return {}
    total, t0 = store.count(), time.perf_counter()

    def told(examined: int) -> None:
        bar.progress(Progress("rebalance", Counts(read=examined), total, time.perf_counter() - t0))

    return {"progress": told}


def plugins(as_json: JsonOpt = False) -> None:
    """List installed backends: schemes, version, capabilities, durability, and any load error."""
    from kvctl.registry import backends

    rows = [info.as_dict() for info in backends()]
    if as_json:
        json_doc(rows)
        return
    columns = ["Backend"] + [label for _, label in _CAPABILITY_COLUMNS] + ["Max key", "Max value"]
    out = []
    for r in rows:
        caps = r["capabilities"]
        head = [r["name"]]
        if caps is None:
            state = "not installed" if r["error"].startswith("not installed") else "[red]✗ error[/red]"
            out.append([*head, state] + [""] * (len(columns) - 2))
        else:
            out.append(head + [caps[k] for k, _ in _CAPABILITY_COLUMNS]
                       + [_size(caps["max_key_size"]), _size(caps["max_value_size"])])
    table("kvctl backends (✓ yes, · no)", columns, out, wide=True)
    for r in rows:
        where = f"{', '.join(s + '://' for s in r['schemes'])} ({r['distribution']} {r['version']})"
        if r["error"]:
            print(f"{r['name']}: {where}: {r['error']}")
        else:
            durability = r["capabilities"]["durability"] or "-"
            print(f"{r['name']}: {where}: {r['description']} Durability: {durability}.")


_BINARY = (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))
_DECIMAL = (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3))


def _size(n: int | None) -> str:
    """A byte limit as people write one: in the largest unit it reaches, whole when exact
    (``1 GiB``, ``1 GB``, ``512 MiB``), else to one decimal (``1.5 GiB``, and ``1.0 GiB`` for a
    byte short of it: never ``1024.0 MiB`` or ``1048512 KiB``); small odd limits in bytes
    (``2,692 B``)."""
    if n is None:
        return "-"
    for unit, size in _DECIMAL:  # 10**9 is "1 GB", not "953.7 MiB"
        if n >= size and n % size == 0 and n // size < 1000:
            return f"{n // size} {unit}"
    reached = [(u, z) for u, z in _BINARY if round(n / z, 1) >= 1]
    if not reached or (n % reached[0][1] and n < 100 * 1024):
        return f"{n:,} B"
    unit, size = reached[0]
    return f"{n // size} {unit}" if n % size == 0 else f"{n / size:.1f} {unit}"


def register(app: typer.Typer) -> None:
    app.command("stats", epilog=examples(
        "kvctl stats",
        "kvctl -u redis://localhost:6379/0 stats --json",
    ))(stats)
    app.command("ping", epilog=examples(
        "kvctl -u redis://localhost:6379/0 ping",
        "kvctl -u postgresql://app@db/app ping -c 100",
    ))(ping)
    app.command("plugins", epilog=examples(
        "kvctl plugins",
        "kvctl plugins --json | jq '.[].schemes'",
    ))(plugins)
    app.command("rebalance", epilog=examples(
        "kvctl -u my-shards rebalance --dry-run   # count what would move",
        "kvctl -u my-shards rebalance",
    ))(rebalance)
