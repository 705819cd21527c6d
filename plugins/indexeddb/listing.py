"""What an origin holds: its databases and object stores, from DevTools' IndexedDB domain.

A URL without an object store scans this listing: one record per object store, keyed
``<database>/<store>`` (each part percent-encoded, exactly as it goes in a URL), whose value is
JSON metadata: database version, key path, auto-increment, indexes, entry count, and the kvctl
URL of the store.  A database without object stores is one record keyed ``<database>/``.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from kvctl.errors import UsageError
from kvctl.store import Record

from .cdp import CDPError
from .location import Location
from .tab import Tab


def _key_path(kp: dict[str, Any]) -> str | list[str] | None:
    if kp.get("type") == "string":
        return str(kp.get("string", ""))
    if kp.get("type") == "array":
        return list(kp.get("array", []))
    return None


async def database_names(tab: Tab, origin: str) -> list[str]:
    try:
        answer = await tab.send("IndexedDB.requestDatabaseNames", {"securityOrigin": origin})
    except CDPError:  # browsers that only know storage keys
        answer = await tab.send("IndexedDB.requestDatabaseNames", {"storageKey": origin + "/"})
    return sorted(answer.get("databaseNames", []))


async def list_stores(tab: Tab, where: Location) -> list[Record]:
    names = await database_names(tab, where.origin)
    if where.database is not None:
        if where.database not in names:
            raise UsageError(f"no database {where.database!r} in {where.origin} (databases: "
                             f"{', '.join(map(repr, names)) or 'none'})")
        names = [where.database]
    records = []
    for name in names:
        # Only names the browser just listed: requestDatabase never creates a database then.
        db = (await tab.send("IndexedDB.requestDatabase",
                             {"securityOrigin": where.origin, "databaseName": name}))["databaseWithObjectStores"]
        stores = sorted(db.get("objectStores", []), key=lambda s: s["name"])
        if not stores:
            meta = {"database": name, "version": db.get("version"), "stores": 0}
            records.append(Record(f"{quote(name, safe='')}/".encode(), _json(meta)))
        for store in stores:
            entries = None
            try:
                got = await tab.send("IndexedDB.getMetadata", {
                    "securityOrigin": where.origin, "databaseName": name, "objectStoreName": store["name"]})
                entries = int(got["entriesCount"])
            except (CDPError, KeyError, ValueError):
                pass
            meta = {
                "database": name,
                "version": db.get("version"),
                "store": store["name"],
                "keyPath": _key_path(store.get("keyPath", {})),
                "autoIncrement": bool(store.get("autoIncrement")),
                "indexes": [
                    {"name": ix["name"], "keyPath": _key_path(ix.get("keyPath", {})),
                     "unique": bool(ix.get("unique")), "multiEntry": bool(ix.get("multiEntry"))}
                    for ix in store.get("indexes", [])
                ],
                "entries": entries,
                "url": where.store_url(name, store["name"]),
            }
            key = f"{quote(name, safe='')}/{quote(store['name'], safe='')}"
            records.append(Record(key.encode(), _json(meta)))
    return records


def _json(meta: dict[str, Any]) -> bytes:
    return json.dumps(meta, ensure_ascii=False, separators=(",", ":")).encode()
