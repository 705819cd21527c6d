"""``--types json|dump``: how get, scan, export and migrate show or carry typed values (a Redis
hash, list, set, sorted set or stream).

``json``: the value as its JSON document, e.g. ``{"type":"hash","value":{"f":"v"}}`` (the shapes
are in :mod:`kvctl.plugin_kit.typedjson`), a plain string value from then on.  ``dump``: the
store's own dump payload with its type as ``kind`` (Redis DUMP), which only a store of the same
family restores.  get and scan show JSON by default; export and migrate carry dumps by default,
so a copy between two Redis stores stays exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import typer

from kvctl.abilities import TypedJSON, TypedValues
from kvctl.engines.typedjson import Types, replaced, typed_keys
from kvctl.store import Record

__all__ = ["Types", "TypesOpt", "typed_shown"]

TypesOpt = Annotated[Types, typer.Option(
    "--types", help="Typed values (a Redis hash, list, set, zset, stream): json (a JSON document) or dump "
    "(the store's own dump payload, with its kind).")]


def typed_shown(store: Any, records: Sequence[Record | None], types: str) -> list[Record | None]:
    """``records`` with each typed value read again as ``types`` asks (None: it vanished since)."""
    keys = typed_keys(records)
    if types == "json" and isinstance(store, TypedJSON):
        return replaced(records, keys, store.json_many(keys)) if keys else list(records)
    if types == "dump" and isinstance(store, TypedValues):
        return replaced(records, keys, store.dump_many(keys)) if keys else list(records)
    return list(records)
