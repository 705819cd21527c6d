"""Freed block-sized buffers stay in the process for the next one (glibc), instead of being
handed back to the system and faulted in again."""

from __future__ import annotations

import platform
import resource
import sys

from kvctl.engines._malloc import KEPT, keep_freed_memory


def faults_of_blocks(size: int, rounds: int) -> int:
    """Minor page faults while a buffer of ``size`` zero bytes is made and freed ``rounds`` times."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        buf = bytes(size)
        del buf
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_a_freed_block_is_reused_without_faulting_its_pages_in_again() -> None:
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is glibc
    assert keep_freed_memory() is glibc  # once per process, and still so
    if not glibc:
        return  # another C library keeps its own thresholds: nothing was changed
    size = 2 << 20
    assert size < KEPT
    faults_of_blocks(size, 2)  # the heap grows to hold one block once
    pages = size // resource.getpagesize()
    # handed back (glibc's defaults: nearly all the pages of the block over 50 rounds), the
    # pages are faulted in again; kept, the rounds reuse them
    assert faults_of_blocks(size, 50) < pages // 8
