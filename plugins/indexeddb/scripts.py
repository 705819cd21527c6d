"""The JavaScript kvctl runs in its own tab with ``Runtime.evaluate``, and the value wire format.

DevTools has no write command for IndexedDB, and its ``requestData`` returns binary values and
non-string keys as remote object references (``returnByValue`` turns an ArrayBuffer into
``{}``).  So every operation is one call into a small helper installed in kvctl's tab
(``globalThis.__kvctl``), and everything crosses the wire as *tagged* JSON, base64 for bytes:

* keys: see :mod:`.keys` (``["s", text]``, ``["n", "42"]``, ``["b", base64]``, ...);
* values read: ``["s", text]`` (a string), ``["b", base64]`` (ArrayBuffer, any typed array or
  DataView, or a Blob/File: its bytes), ``["j", json]`` (anything else: objects, arrays,
  numbers, booleans, null, dates... as JSON text; inside them BigInts become strings, Maps
  objects, Sets arrays and binary data base64 strings), ``["u", text]`` (a cyclic object JSON
  cannot hold: its ``String()``);
* values written: packed per batch, one base64 string for all value bytes with a kind letter
  per value (``s``: write as a string, ``b``: as a Uint8Array; see :func:`value_kind`).

Each helper call opens the database *without a version* (so it can never create a database or
trigger an upgrade; an ``upgradeneeded`` means "no such database" and is aborted), runs one
transaction, closes the connection and answers one JSON string: ``{"ok": result}`` or
``{"error": [name, message]}``.  The helper catches everything, so no exception object is ever
left in DevTools' object registry.  A scan page is one ``getAllRecords`` over a key range
(``getAllKeys`` + ``getAll`` in one transaction where that is missing), faster than a cursor;
the next page is read ahead while Python decodes this one.
"""

from __future__ import annotations

import base64
import json
from binascii import a2b_base64
from typing import Any

# Value write modes (the ``values`` URL option).
AUTO, BYTES, JSON_MODE = "auto", "bytes", "json"
VALUE_MODES = (AUTO, BYTES, JSON_MODE)

HELPER = r"""
(() => {
"use strict";
if (globalThis.__kvctl) return "ok";
const native64 = typeof Uint8Array.fromBase64 === "function" && typeof Uint8Array.prototype.toBase64 === "function";
const b64enc = native64 ? (u8) => u8.toBase64() : (u8) => {
  let s = "";
  for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode.apply(null, u8.subarray(i, i + 0x8000));
  return btoa(s);
};
const b64dec = native64 ? (s) => Uint8Array.fromBase64(s) : (s) => {
  const t = atob(s), u = new Uint8Array(t.length);
  for (let i = 0; i < t.length; i++) u[i] = t.charCodeAt(i);
  return u;
};
const isBinary = (v) => v instanceof ArrayBuffer || ArrayBuffer.isView(v);
const bytesOf = (v) => v instanceof ArrayBuffer
  ? new Uint8Array(v) : new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
const fail = (name, message) => { const e = new Error(message); e.name = name; return e; };

function keyOut(k) {
  if (typeof k === "string") return ["s", k];
  if (typeof k === "number") return ["n", String(k)];
  if (k instanceof Date) return ["d", String(k.getTime())];
  if (Array.isArray(k)) return ["a", k.map(keyOut)];
  if (isBinary(k)) return ["b", b64enc(bytesOf(k))];
  throw fail("DataError", "not an IndexedDB key: " + Object.prototype.toString.call(k));
}
function keyIn(w) {
  switch (w[0]) {
    case "s": return w[1];
    case "n": return Number(w[1]);
    case "d": return new Date(Number(w[1]));
    case "b": return b64dec(w[1]);
    case "a": return w[1].map(keyIn);
  }
  throw fail("DataError", "bad wire key " + JSON.stringify(w));
}
function replacer(_k, v) {
  if (typeof v === "bigint") return v.toString();
  if (v instanceof Map) return Object.fromEntries(v);
  if (v instanceof Set) return Array.from(v);
  if (isBinary(v)) return b64enc(bytesOf(v));
  return v;
}
function valueOut(v, i, blobs) {
  if (typeof v === "string") return ["s", v];
  if (isBinary(v)) return ["b", b64enc(bytesOf(v))];
  if (typeof Blob !== "undefined" && v instanceof Blob) { blobs.push([i, v]); return null; }
  try {
    const text = JSON.stringify(v, replacer);
    return ["j", text === undefined ? "null" : text];
  } catch (e) {
    return ["u", String(v)];
  }
}
function range(r) {
  if (!r) return null;
  const [lo, hi, loOpen, hiOpen] = r;
  if (lo && hi) return IDBKeyRange.bound(keyIn(lo), keyIn(hi), loOpen, hiOpen);
  if (lo) return IDBKeyRange.lowerBound(keyIn(lo), loOpen);
  if (hi) return IDBKeyRange.upperBound(keyIn(hi), hiOpen);
  return null;
}
const req = (r) => new Promise((ok, bad) => { r.onsuccess = () => ok(r.result); r.onerror = () => bad(r.error); });
const done = (tx) => new Promise((ok, bad) => {
  tx.oncomplete = () => ok();
  tx.onabort = () => bad(tx.error || fail("AbortError", "the transaction was aborted"));
});
// Open an existing database at its current version; never create one, never upgrade one.
function openDb(name) {
  return new Promise((ok, bad) => {
    let missing = false;
    const r = indexedDB.open(name);
    r.onupgradeneeded = () => { missing = true; r.transaction.abort(); };
    r.onsuccess = () => { const db = r.result; db.onversionchange = () => db.close(); ok(db); };
    r.onerror = (e) => {
      e.preventDefault();
      bad(missing ? fail("NoDatabase", "no database " + JSON.stringify(name)) : r.error);
    };
  });
}
function storeOf(db, name, mode, durability) {
  if (!db.objectStoreNames.contains(name)) {
    throw fail("NoStore", "database " + JSON.stringify(db.name) + " has no object store " + JSON.stringify(name)
      + " (stores: " + JSON.stringify(Array.from(db.objectStoreNames)) + ")");
  }
  const opts = durability ? {durability} : undefined;
  return db.transaction(name, mode, opts).objectStore(name);
}
async function withStore(a, mode, body) {
  const db = await openDb(a.db);
  try {
    const st = storeOf(db, a.store, mode, a.durability);
    let result;
    try {
      result = body(st);
    } catch (e) {
      try { st.transaction.abort(); } catch (_) {}
      throw e;
    }
    await done(st.transaction);
    return typeof result === "function" ? result() : result;
  } finally {
    db.close();
  }
}
async function blobsIn(values, blobs) {
  for (const [i, blob] of blobs) values[i] = ["b", b64enc(new Uint8Array(await blob.arrayBuffer()))];
  return values;
}
function pathValue(value, path) {
  if (path === "") return value;
  let v = value;
  for (const part of path.split(".")) {
    if (v === null || typeof v !== "object" || !(part in v)) return undefined;
    v = v[part];
  }
  return v;
}
function inlineKey(st, value) {
  const kp = st.keyPath;
  return Array.isArray(kp) ? kp.map((p) => pathValue(value, p)) : pathValue(value, kp);
}

// One page of a scan.  Encoding stops once ``budget`` characters are used (big values), and
// the answer says so: the caller resumes after the last key returned.
async function readPage(a) {
  let keys, raw = null;
  await withStore(a, "readonly", (st) => {
    const q = range(a.range);
    if (a.keysOnly) {
      req(st.getAllKeys(q, a.count)).then((k) => { keys = k; });
    } else if (typeof st.getAllRecords === "function") {
      req(st.getAllRecords({query: q, count: a.count})).then((rs) => {
        keys = rs.map((r) => r.key);
        raw = rs.map((r) => r.value);
      });
    } else {
      req(st.getAllKeys(q, a.count)).then((k) => { keys = k; });
      req(st.getAll(q, a.count)).then((vs) => { raw = vs; });
    }
  });
  if (raw === null) return [keys.map(keyOut), null, false];
  const values = [], blobs = [];
  let used = 0;
  for (let i = 0; i < raw.length && used <= a.budget; i++) {
    const v = valueOut(raw[i], i, blobs);
    values.push(v);
    used += v ? v[1].length : raw[i].size * 1.34;
  }
  if (blobs.length) await blobsIn(values, blobs);
  return [keys.slice(0, values.length).map(keyOut), values, values.length < raw.length];
}
let ahead = null;  // {sig, page}: the scan page read ahead

// A batch of records travels packed: wire keys, one kind letter per value ("s": UTF-8 text to
// write as a string, "b": bytes to write as a Uint8Array), the value lengths, and all value
// bytes as one base64 string.  Far cheaper to build, send and parse than one entry per value.
const utf8 = new TextDecoder("utf-8", {ignoreBOM: true});  // keep a leading BOM: bytes are exact
function unpack(batch) {
  const all = b64dec(batch.blob), out = new Array(batch.keys.length);
  let offset = 0;
  for (let i = 0; i < out.length; i++) {
    const end = offset + batch.lens[i];
    out[i] = [batch.keys[i], batch.kinds[i], all.subarray(offset, end)];
    offset = end;
  }
  return out;
}

// Batches too big for one DevTools message arrive in parts and are applied in one transaction.
const staged = new Map();
function takeStaged(a, items) {
  if (!a.staged) return items;
  const all = (staged.get(a.staged) || []).concat(items);
  staged.delete(a.staged);
  return all;
}

const api = {
  // A scan page.  While Python decodes it, the next page (after its last key) is already
  // being read: the two overlap.  Any write through kvctl drops the page read ahead.
  async read(a) {
    const sig = (x) => JSON.stringify([x.db, x.store, x.range, x.count, x.keysOnly, x.budget]);
    let page = null;
    if (ahead !== null && ahead.sig === sig(a)) {
      try { page = await ahead.page; } catch (_) { page = null; }
    }
    ahead = null;
    if (page === null) page = await readPage(a);
    const [keys, , truncated] = page;
    if (a.readAhead && keys.length > 0 && (keys.length === a.count || truncated)) {
      const next = {...a, range: [keys[keys.length - 1], a.range ? a.range[1] : null, true, true]};
      const p = readPage(next);
      p.catch(() => {});
      ahead = {sig: sig(next), page: p};
    }
    return page;
  },
  // Values of ``keys`` in order (null: absent); answers a prefix of them when over ``budget``.
  async get(a) {
    const out = new Array(a.keys.length).fill(null), blobs = [];
    let cut = a.keys.length, used = 0;
    await withStore(a, "readonly", (st) => {
      a.keys.forEach((w, i) => {
        const key = keyIn(w);
        const r = st.get(key);
        r.onsuccess = () => {
          if (i >= cut) return;
          if (r.result !== undefined) {
            const v = valueOut(r.result, i, blobs);
            out[i] = v;
            used += v ? v[1].length : r.result.size * 1.34;
            if (used > a.budget && i + 1 < cut) cut = i + 1;
            return;
          }
          // A stored value may itself be undefined: ask whether the key exists.
          const e = st.getKey(key);
          e.onsuccess = () => { if (e.result !== undefined) out[i] = ["j", "null"]; };
        };
      });
    });
    out.length = cut;
    if (blobs.length) await blobsIn(out, blobs);
    return out;
  },
  async stage(a) {
    const list = staged.get(a.id) || [];
    for (const item of a.batch ? unpack(a.batch) : a.keys) list.push(item);
    staged.set(a.id, list);
    return list.length;
  },
  async unstage(a) {
    return staged.delete(a.id);
  },
  async put(a) {
    ahead = null;
    const records = takeStaged(a, unpack(a.batch));
    return withStore(a, "readwrite", (st) => {
      const inline = st.keyPath !== null;
      const keyPathError = (why) => fail("DataError", "object store " + JSON.stringify(a.store)
        + " takes its keys from the values (keyPath " + JSON.stringify(st.keyPath) + "): " + why);
      for (const [w, kind, bytes] of records) {
        const key = keyIn(w);
        let value;
        if (kind === "b") {
          if (inline) throw keyPathError("values must be JSON objects, not bytes");
          value = bytes.slice();  // its own buffer: a view would store the whole batch
        } else {
          value = utf8.decode(bytes);
          if (inline || a.json) {
            try { value = JSON.parse(value); } catch (e) {
              if (inline) throw keyPathError("a value is not JSON");
            }
          }
        }
        if (inline) {
          const found = inlineKey(st, value);
          let same = false;
          try { same = found !== undefined && indexedDB.cmp(found, key) === 0; } catch (_) {}
          if (!same) throw keyPathError("a value does not hold its record's key there");
          st.put(value);
        } else {
          st.put(value, key);
        }
      }
      return records.length;
    });
  },
  async delete(a) {
    ahead = null;
    const keys = takeStaged(a, a.keys);  // staged parts of a delete hold keys
    let n = 0;
    await withStore(a, "readwrite", (st) => {
      for (const w of keys) {
        const key = keyIn(w);
        const r = st.getKey(key);
        r.onsuccess = () => { if (r.result !== undefined) n++; };
        st.delete(key);
      }
    });
    return n;
  },
  async clear(a) {
    ahead = null;
    return withStore(a, "readwrite", (st) => {
      const c = st.count();
      st.clear();
      return () => c.result;
    });
  },
  async count(a) {
    return withStore(a, "readonly", (st) => {
      const c = st.count(range(a.range));
      return () => c.result;
    });
  },
  async info(a) {
    return withStore(a, "readonly", (st) => ({
      version: st.transaction.db.version, keyPath: st.keyPath, autoIncrement: st.autoIncrement,
      indexes: Array.from(st.indexNames),
    }));
  },
  // Create the database and/or the object store (the ``create`` URL option): a deliberate upgrade.
  async ensure(a) {
    ahead = null;
    let db;
    try { db = await openDb(a.db); } catch (e) { if (e.name !== "NoDatabase") throw e; }
    let version = 1;
    if (db) {
      const has = db.objectStoreNames.contains(a.store);
      version = db.version + 1;
      db.close();
      if (has) return false;
    }
    await new Promise((ok, bad) => {
      let gaveUp = false;
      const r = indexedDB.open(a.db, version);
      r.onupgradeneeded = () => {
        if (gaveUp) { r.transaction.abort(); return; }
        const up = r.result;
        if (!up.objectStoreNames.contains(a.store)) up.createObjectStore(a.store);
      };
      r.onsuccess = () => { r.result.close(); ok(); };
      r.onerror = (e) => { e.preventDefault(); bad(r.error); };
      r.onblocked = () => {
        gaveUp = true;
        bad(fail("Blocked", "creating object store " + JSON.stringify(a.store) + " needs an upgrade of "
          + JSON.stringify(a.db) + " to version " + version + ", blocked by a page holding it open"));
      };
    });
    return true;
  },
};

globalThis.__kvctl = async (name, a) => {
  try {
    return JSON.stringify({ok: await api[name](a)});
  } catch (e) {
    return JSON.stringify({error: [String(e && e.name || "Error"), String(e && e.message || e)]});
  }
};
return "ok";
})()
"""


def call_expression(name: str, args: dict[str, Any]) -> str:
    """The ``Runtime.evaluate`` expression for one helper call (JSON is a JS expression)."""
    return f"__kvctl({json.dumps(name)},{json.dumps(args, separators=(',', ':'))})"


def value_from_wire(wire: list[Any]) -> bytes:
    """The bytes kvctl shows for a value read from IndexedDB."""
    kind, payload = wire
    if kind == "b":
        return a2b_base64(payload)
    # Strings, JSON text and String() fallbacks are text; a lone surrogate (JS strings are
    # UTF-16) has no UTF-8 form and is kept in WTF-8 rather than dropped.
    return str(payload).encode("utf-8", "surrogatepass")


def value_kind(value: bytes, mode: str) -> str:
    """How kvctl writes bytes: ``s``, valid UTF-8 as a JS string, or ``b``, as a Uint8Array.

    That makes a round trip exact both ways: kvctl's bytes read back identical, and a string an
    application wrote (read as its UTF-8 bytes) is written back as the same string.  ``bytes``
    mode always writes a Uint8Array; ``json`` mode writes valid JSON text as the structured value
    it describes (the way back for objects read as JSON).  Stores with in-line keys (a keyPath)
    always take JSON objects.
    """
    if mode != BYTES:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            return "b"
        return "s"
    return "b"


def pack(keys: list[Any], kinds: list[str], values: list[bytes]) -> dict[str, Any]:
    """A batch of records as the helper's ``unpack`` reads it."""
    return {"keys": keys, "kinds": "".join(kinds), "lens": [len(v) for v in values],
            "blob": base64.b64encode(b"".join(values)).decode("ascii")}

