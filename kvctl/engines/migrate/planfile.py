"""Plan files: a migrate's split written once, then run one slice at a time with no engine.

``kvctl migrate SRC DST --plan-out plan.json --slices 16`` splits the source exactly as an
executor would (:func:`.split.plan_slices`) and writes the slices;
``kvctl migrate SRC DST --plan plan.json --slice K/16`` (K from 0) copies slice K only, so a
Kubernetes indexed job (``$JOB_COMPLETION_INDEX``) or a Slurm array (``$SLURM_ARRAY_TASK_ID``)
can run the copy.  Each slice keeps its own checkpoint (its fingerprint names the slice), so a
rerun with ``--resume`` continues it.  The file holds redacted URLs and the plan's fingerprint,
so a slice is never run against other stores or filters than the plan was made for.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from kvctl.errors import CorruptError, UsageError

from .._files import write_atomic
from .._stores import describe, open_async
from ..reporting import Reporter
from .copy import migrate_urls
from .plan import Plan, Summary
from .split import plan_slices, slice_plan

FORMAT = 1


def write_plan(src_url: str, dst_url: str, plan: Plan, n: int, path: Path) -> int:
    """Split the source into about ``n`` slices and write them to ``path``; the slice count."""
    async def split() -> tuple[str, list[dict[str, Any]]]:
        src = open_async(src_url, access="read")
        try:
            return describe(src), await plan_slices(src, plan, n)
        finally:
            await src.close()

    src_name, slices = asyncio.run(split())
    doc = {"format": FORMAT, "kind": "kvctl-migrate-plan", "src": src_name,
           "fingerprint": plan.fingerprint(src_url, dst_url), "slices": slices}
    write_atomic(path, json.dumps(doc, indent=1).encode("utf-8"), mode=0o644)
    return len(slices)


def parse_slice(text: str) -> tuple[int, int]:
    """``K/N``: slice K (from 0) of a plan of N slices."""
    k, sep, n = text.partition("/")
    if not (sep and k.strip().isdigit() and n.strip().isdigit()) or not 0 <= int(k) < int(n):
        raise UsageError(f"--slice: {text!r} is not K/N with 0 <= K < N (e.g. 3/16)")
    return int(k), int(n)


def run_slice(src_url: str, dst_url: str, plan: Plan, path: Path, which: str,
              reporter: Reporter | None = None) -> Summary:
    """Copy one slice of the plan file at ``path``."""
    k, n = parse_slice(which)
    if plan.delete_extra or plan.verify:
        raise UsageError("--delete-extra and --verify need every slice: run them once all slices are done "
                         "(e.g. kvctl diff SRC DST)")
    doc = _load(path)
    if doc["fingerprint"] != plan.fingerprint(src_url, dst_url):
        raise UsageError(f"{path} is a plan for other stores or options than this command's",
                         hint="give the same SRC, DST, --prefix, --glob, --on-conflict, --drop-ttl and --types")
    if len(doc["slices"]) != n:
        raise UsageError(f"--slice {which}: {path} has {len(doc['slices'])} slices, not {n}")
    one = replace(slice_plan(plan, doc["slices"][k], k), keep_checkpoint=False)
    return asyncio.run(migrate_urls(src_url, dst_url, one, reporter or Reporter()))


def _load(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    try:
        doc = json.loads(raw)
        if doc.get("kind") != "kvctl-migrate-plan" or doc.get("format") != FORMAT:
            raise ValueError("not a kvctl migrate plan")
        if not isinstance(doc["slices"], list) or not isinstance(doc["fingerprint"], str):
            raise ValueError("no slices")
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CorruptError(f"{path} is not a readable plan file ({exc})") from None
    return doc
