"""`kvctl sync SRC DST`: incremental replication (see kvctl.engines.sync)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from kvctl.cli.context import STATE, resolve_url
from kvctl.cli.output import QuietOpt, info, json_doc, note, warn
from kvctl.cli.usage import examples
from kvctl.codec import show_key


def sync(
    src: Annotated[str, typer.Argument(help="Source store URL or profile.")],
    dst: Annotated[str, typer.Argument(help="Destination store URL or profile.")],
    two_way: Annotated[bool, typer.Option("--two-way", help="Exchange changes both ways; conflicts: last writer wins.")]
    = False,
    watch: Annotated[bool, typer.Option("--watch", help="Keep following the source until Ctrl-C.")] = False,
    interval: Annotated[str, typer.Option("--interval", help="With --watch: time between runs.")] = "10ms",
    full: Annotated[bool, typer.Option("--full", help="Ignore the saved cursor: compare both stores.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Changes applied per batch.")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Replicate changes from SRC to DST since the last sync of this pair.

    The first run copies everything; later runs move only what changed (from the source's change
    feed, or by comparing both stores when it has none — announced). Versions decide: a change is
    applied only when it is newer than what the other side holds. Exit status 0 only when the
    destination has converged to the reported cursor.
    """
    import asyncio

    from kvctl.config import state_dir
    from kvctl.engines.sync import SyncPlan
    from kvctl.url import parse_duration_ms

    plan = SyncPlan(resolve_url(src), resolve_url(dst), state_dir(), two_way=two_way,
                    batch_size=batch_size, force_full=full)
    if watch:
        asyncio.run(_watch(plan, parse_duration_ms(interval) / 1000, as_json))
        return
    result = asyncio.run(_once(plan))
    _report(result, as_json)
    if result.skipped_typed:
        from kvctl.errors import IncompleteError

        raise IncompleteError(
            f"{len(result.skipped_typed)} keys hold values of a type the other store cannot hold "
            f"(e.g. {show_key(result.skipped_typed[0], STATE.key_encoding)}); they were not copied"
        )
    if result.failed:
        from kvctl.errors import IncompleteError

        key, why = result.failed[0]
        raise IncompleteError(f"{len(result.failed)} key(s) failed (first: {show_key(key, STATE.key_encoding)}: "
                              f"{why}); they were not copied")


async def _once(plan: Any) -> Any:
    from kvctl.engines.sync import sync as run

    return await run(plan, note=note)


async def _watch(plan: Any, interval_s: float, as_json: bool) -> None:
    import asyncio
    import signal

    from kvctl.adapt import to_async
    from kvctl.engines.sync import SyncEngine
    from kvctl.registry import open_url

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    totals: dict[str, Any] = {"runs": 0, "applied": 0, "max_lag_ms": None}
    src = to_async(open_url(plan.src_url, access="write" if plan.two_way else "read"))
    dst = to_async(open_url(plan.dst_url))

    def lag(event: str, data: dict[str, Any]) -> None:
        if data.get("lag_ms") is not None:  # known only for versioned changes (HLC time)
            totals["max_lag_ms"] = max(totals["max_lag_ms"] or 0, data["lag_ms"])

    def on_result(result: Any) -> None:
        totals["runs"] += 1
        totals["applied"] += result.applied_to_dst + result.applied_to_src
        if result.fallback:
            sys.stderr.write(f"\nkvctl: notice: {result.fallback}\n")
        if sys.stderr.isatty() and not STATE.quiet:
            sys.stderr.write(f"\rwatching: {totals['runs']} runs, {totals['applied']} changes applied, "
                             f"max lag {_ms(totals['max_lag_ms'])}   ")
            sys.stderr.flush()

    try:
        await SyncEngine(plan, src, dst, lag).watch(interval_s, stop, on_result)
    finally:
        await src.close()
        await dst.close()
    if as_json:
        json_doc(totals)
    else:
        info(f"\nstopped after {totals['runs']} runs: {totals['applied']} changes applied, "
             f"max lag {_ms(totals['max_lag_ms'])}")


def _ms(value: int | None) -> str:
    return "n/a (unversioned source)" if value is None else f"{value} ms"


def _report(result: Any, as_json: bool) -> None:
    if result.fallback:
        sys.stderr.write(f"kvctl: notice: {result.fallback}\n")
    if as_json:
        json_doc(result.to_json())
        return
    print(f"{result.mode} sync: {result.applied_to_dst} applied to destination"
          + (f", {result.applied_to_src} to source" if result.applied_to_src else "")
          + f", {result.deleted} deleted, {result.stale_skipped} stale skipped, "
          f"{len(result.conflicts)} conflicts, {result.seconds:.2f}s"
          + (f", {len(result.skipped_typed)} typed keys NOT copied" if result.skipped_typed else "")
          + (f", {len(result.failed)} keys NOT copied (refused by the store)" if result.failed else ""))
    for c in result.conflicts[:20]:
        print(f"  conflict {show_key(c.key, STATE.key_encoding)}: {c.winner} wins "
              f"(src v{c.src_version}, dst v{c.dst_version})")
    if len(result.conflicts) > 20:
        print(f"  ... {len(result.conflicts) - 20} more (see --json)")
    for key, why in result.failed[:100]:
        warn(f"not copied: {show_key(key, STATE.key_encoding)}: {why}")


def register(app: typer.Typer) -> None:
    app.command("sync", epilog=examples(
        "kvctl sync sqlite:///data/app.db redis://localhost:6379/0",
        "kvctl sync primary replica --watch --interval 1s",
        "kvctl sync laptop server --two-way --json",
    ))(sync)
