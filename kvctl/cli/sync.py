"""`kvctl sync SRC DST`: incremental replication (see kvctl.engines.replicate)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from kvctl.cli.context import STATE, resolve_url
from kvctl.cli.output import QuietOpt, info, json_doc, note, warn
from kvctl.cli.usage import examples
from kvctl.codec import json_key, show_key


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
    from kvctl.engines.replicate import SyncPlan
    from kvctl.url import parse_duration_ms

    plan = SyncPlan(resolve_url(src, access="write" if two_way else "read"), resolve_url(dst), state_dir(),
                    two_way=two_way, batch_size=batch_size, force_full=full)
    if watch:
        asyncio.run(_watch(plan, parse_duration_ms(interval) / 1000, as_json))
        return
    result = asyncio.run(_once(plan))
    _report(result, as_json)
    refuse_uncopied(result.skipped_typed)
    refuse_failed(result.failed)


def refuse_uncopied(keys: list[bytes]) -> None:
    """Exit 8 (IncompleteError) when keys of a type the other store cannot hold were left behind."""
    if keys:
        from kvctl.errors import IncompleteError

        raise IncompleteError(
            f"{len(keys)} key{'s' if len(keys) != 1 else ''} hold{'' if len(keys) != 1 else 's'} values of a "
            f"type the other store cannot hold (e.g. {show_key(keys[0], STATE.key_encoding)}); "
            f"{'they were' if len(keys) != 1 else 'it was'} not copied"
        )


def refuse_failed(failed: list[tuple[bytes, str]]) -> None:
    """Exit 8 (IncompleteError) when keys the destination refused (over a limit) were left behind."""
    if failed:
        from kvctl.errors import IncompleteError

        key, why = failed[0]
        raise IncompleteError(f"{len(failed)} key(s) failed (first: {show_key(key, STATE.key_encoding)}: "
                              f"{why}); they were not copied")


async def _once(plan: Any) -> Any:
    from kvctl.engines.replicate import sync as run

    return await run(plan, note=note)


async def _watch(plan: Any, interval_s: float, as_json: bool) -> None:
    import asyncio
    import signal

    from kvctl.engines.replicate import SyncEngine, opened

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    totals: dict[str, Any] = {"runs": 0, "applied": 0, "deleted": 0, "max_lag_ms": None}
    # Keys of a type the destination cannot hold: each is warned about once (a comparison pass
    # meets it again on every run), and the watch then ends with exit 8 like a single sync.
    uncopied: dict[bytes, None] = {}

    def lag(event: str, data: dict[str, Any]) -> None:
        if data.get("lag_ms") is not None:  # known only for versioned changes (HLC time)
            totals["max_lag_ms"] = max(totals["max_lag_ms"] or 0, data["lag_ms"])

    def on_result(result: Any) -> None:
        totals["runs"] += 1
        totals["applied"] += result.applied_to_dst + result.applied_to_src
        totals["deleted"] += result.deleted
        if result.fallback:
            sys.stderr.write(f"\nkvctl: notice: {result.fallback}\n")
        for key in result.skipped_typed:
            if key not in uncopied:
                uncopied[key] = None
                sys.stderr.write("\n" if sys.stderr.isatty() else "")
                warn(f"not copied: {show_key(key, STATE.key_encoding)} holds a value of a type the destination "
                     "cannot hold")
        if sys.stderr.isatty() and not STATE.quiet:
            sys.stderr.write(f"\rwatching: {totals['runs']} runs, {_counts(totals)}, "
                             f"max lag {_ms(totals['max_lag_ms'])}   ")
            sys.stderr.flush()

    async with opened(plan) as (src, dst):
        await SyncEngine(plan, src, dst, lag).watch(interval_s, stop, on_result)
    if as_json:
        json_doc({**totals, "skipped_typed": [json_key(k) for k in uncopied]})
    else:
        info(f"\nstopped after {totals['runs']} runs: {_counts(totals)}, max lag {_ms(totals['max_lag_ms'])}"
             + (f", {len(uncopied)} typed keys NOT copied" if uncopied else ""))
    refuse_uncopied(list(uncopied))


def _counts(totals: dict[str, Any]) -> str:
    return f"{totals['applied']} applied, {totals['deleted']} deleted"


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
