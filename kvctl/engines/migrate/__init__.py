"""`kvctl migrate`: copy every (matching) key from one store to another, resumably and verifiably."""

from .copy import (
    Plan,
    Progress,
    Reporter,
    Summary,
    checkpoint_file,
    finish,
    migrate,
    migrate_urls,
    read_checkpoint,
    run,
    source_pages,
    start_count,
)

__all__ = ["Plan", "Progress", "Reporter", "Summary", "checkpoint_file", "finish", "migrate", "migrate_urls",
           "read_checkpoint", "run", "source_pages", "start_count"]
