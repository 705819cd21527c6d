"""`kvctl migrate`: copy every (matching) key from one store to another, resumably and verifiably.

:func:`run` is the command's entry point; the pieces, in the order a copy meets them:

* :mod:`.plan` -- what was asked (:class:`Plan`) and what happened (:class:`Summary`);
* :mod:`.copy` -- the copy in one process: scan, batches, checkpoints, then ``--delete-extra``
  and ``--verify``;
* :mod:`.resume` -- ``--resume`` under skip, newer or fail: its own earlier writes are not conflicts;
* :mod:`.checkpoint` -- the checkpoint file;
* :mod:`.split` -- slicing the keyspace for several workers;
* :mod:`.parallel` -- ``--workers N``: one process per slice;
* :mod:`.planfile` -- ``--plan-out``, ``--plan --slice``: slices run by an outside scheduler.

``--executor dask://...`` runs the slices on a Dask cluster (:mod:`kvctl.engines.distributed`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..reporting import Reporter
from .copy import migrate, migrate_urls, source_pages
from .plan import Plan, Summary
from .planfile import run_slice, write_plan

if TYPE_CHECKING:
    from ..distributed.executor import Placement

__all__ = ["Plan", "Summary", "migrate", "migrate_urls", "run", "run_slice", "source_pages", "write_plan"]


def run(src_url: str, dst_url: str, plan: Plan, reporter: Reporter | None = None,
        placement: Placement | None = None) -> Summary:
    """Copy ``src_url`` into ``dst_url`` as ``plan`` says: in this process, in ``plan.workers``
    processes, or on the Dask cluster of ``placement``.  Owns the command's only event loop."""
    if placement is not None and placement.spec.kind == "dask":
        from ..distributed.migrate import run as on_dask

        src_ref, dst_ref = placement.refs or (src_url, dst_url)
        return on_dask(src_ref, dst_ref, src_url, dst_url, plan, placement.spec, slices=placement.slices,
                       shared_fs=placement.shared_fs, reporter=reporter)
    if plan.workers > 1:
        from .parallel import run as in_processes

        return in_processes(src_url, dst_url, plan, reporter)
    from .copy import run as in_this_process

    return in_this_process(src_url, dst_url, plan, reporter)
