"""export/import: JSON lines and CSV, exact round trips on every backend family, expiry, versions,
typed values, policies and malformed input."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
from test_migrate_support import (
    DictStore,
    all_families,
    caps_of,
    dataset,
    diff_urls,
    fresh_url,
    read_all,
    typed_caps,
    write,
)

from kvctl.engines.export import export_to, guess_format, import_from
from kvctl.engines.keyfilter import KeyFilter
from kvctl.engines.storeops import open_async
from kvctl.errors import CorruptError, IncompleteError, UnsupportedError
from kvctl.store import Capabilities, Record, now_ms


def export_bytes(store: Any, fmt: str = "jsonl", **kw: Any) -> bytes:
    out = io.BytesIO()
    asyncio.run(export_to(store, out, fmt, **kw))  # type: ignore[arg-type]
    return out.getvalue()


def import_bytes(store: Any, data: bytes, fmt: str = "jsonl", **kw: Any) -> Any:
    return asyncio.run(import_from(store, io.BytesIO(data), fmt, "test-input", **kw))  # type: ignore[arg-type]


def _through_urls(src: str, dst: str, fmt: str) -> bytes:
    async def work() -> bytes:
        a, b = open_async(src), open_async(dst)
        try:
            out = io.BytesIO()
            await export_to(a, out, fmt)  # type: ignore[arg-type]
            summary = await import_from(b, io.BytesIO(out.getvalue()), fmt, "dump",  # type: ignore[arg-type]
                                        batch_size=5)
            summary.check()
            return out.getvalue()
        finally:
            await a.close()
            await b.close()

    return asyncio.run(work())


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@pytest.mark.parametrize("family", all_families())
def test_round_trip_on_every_family(family: str, fmt: str, tmp_path: Path) -> None:
    src, dst = fresh_url(family, tmp_path), fresh_url(family, tmp_path)
    records = dataset(family, family, tmp_path)
    write(src, records)
    write(dst, [])
    _through_urls(src, dst, fmt)
    assert diff_urls(src, dst, ignore_expiry=False).equal
    a, b = read_all(src), read_all(dst)
    assert {k: r.value for k, r in a.items()} == {k: r.value for k, r in b.items()}
    if caps_of(family).versions:
        assert {k: r.version for k, r in a.items()} == {k: r.version for k, r in b.items()}
    if caps_of(family).ttl:
        assert {k: r.expires_at_ms for k, r in a.items()} == {k: r.expires_at_ms for k, r in b.items()}


def test_jsonl_shape_is_readable_by_any_json_tool() -> None:
    store = DictStore()
    t = now_ms() + 60_000
    store.data = {b"text": Record(b"text", "žluť".encode(), t, 9), b"\xff": Record(b"\xff", b"\x00\x80")}
    lines = [json.loads(line) for line in export_bytes(store).splitlines()]
    assert lines == [
        {"key": "text", "value": "žluť", "expires_at_ms": t, "version": 9},
        {"key_b64": "/w==", "value_b64": "AIA=", "expires_at_ms": None},
    ]


def test_csv_quotes_and_binary() -> None:
    store = DictStore()
    store.data = {b'a,"b"\n': Record(b'a,"b"\n', b"line1\nline2"), b"\x80": Record(b"\x80", b"")}
    data = export_bytes(store, "csv")
    back = DictStore()
    import_bytes(back, data, "csv")
    assert back.data == store.data


def test_import_skips_expired_records_and_counts_them() -> None:
    data = (b'{"key": "live", "value": "1", "expires_at_ms": null}\n'
            b'{"key": "dead", "value": "2", "expires_at_ms": 1000}\n')
    dst = DictStore()
    s = import_bytes(dst, data)
    assert set(dst.data) == {b"live"} and s.counts.expired == 1 and s.counts.copied == 1


def test_import_policies_and_dry_run() -> None:
    data = b'{"key": "a", "value": "new", "version": 5}\n{"key": "b", "value": "new", "version": 5}\n'
    dst = DictStore()
    dst.data = {b"a": Record(b"a", b"old", None, 9), b"b": Record(b"b", b"old", None, 1)}
    s = import_bytes(dst, data, policy="newer")
    assert dst.data[b"a"].value == b"old" and dst.data[b"b"].value == b"new" and s.counts.skipped == 1
    dry = DictStore()
    s = import_bytes(dry, data, dry_run=True)
    assert not dry.data and s.counts.copied == 2
    with pytest.raises(UnsupportedError):
        import_bytes(DictStore(Capabilities(ttl=True)), data, policy="newer")


def test_import_filter() -> None:
    data = b"".join(b'{"key": "%s", "value": ""}\n' % k for k in [b"u:1", b"u:2", b"s:1"])
    dst = DictStore()
    import_bytes(dst, data, key_filter=KeyFilter(b"u:"))
    assert set(dst.data) == {b"u:1", b"u:2"}


def test_typed_values_travel_as_dumps() -> None:
    src = DictStore(typed_caps())
    src.data = {b"h": Record(b"h", b"\x00\x01dump", None, 3, "hash"), b"s": Record(b"s", b"plain")}
    data = export_bytes(src)
    assert json.loads(data.splitlines()[0])["kind"] == "hash"
    typed = DictStore(typed_caps())
    import_bytes(typed, data).check()
    assert typed.data == src.data
    plain = DictStore()
    s = import_bytes(plain, data)
    assert set(plain.data) == {b"s"}
    with pytest.raises(IncompleteError):
        s.check()
    cannot_dump = DictStore()
    cannot_dump.data = dict(src.data)
    out = io.BytesIO()
    summary = asyncio.run(export_to(cannot_dump, out, "jsonl"))
    assert summary.incomplete == 1 and out.getvalue().count(b"\n") == 1


@pytest.mark.parametrize(("data", "line"), [
    (b'{"key": "a"}\nnot json\n', 2),
    (b'{"value": "no key"}\n', 1),
    (b'{"key": "a", "expires_at_ms": "soon"}\n', 1),
    (b'{"key_b64": "***"}\n', 1),
    (b'[1, 2]\n', 1),
    (b'{"key": "a"}\n{"key": "b", "expires_at_ms": 100000000000000000000}\n', 2),  # past 2109
    (b'{"key": "a", "expires_at_ms": -5}\n', 1),
    (b'{"key": "a", "version": 9223372036854775808}\n', 1),  # over a signed 64-bit column
])
def test_malformed_jsonl_names_the_line(data: bytes, line: int) -> None:
    with pytest.raises(CorruptError, match=f"line {line}:"):
        import_bytes(DictStore(), data)


def test_malformed_csv_is_refused() -> None:
    with pytest.raises(CorruptError, match="CSV"):
        import_bytes(DictStore(), b"a,b\n1,2\n", "csv")
    with pytest.raises(CorruptError, match="line 3"):
        import_bytes(DictStore(), b"key,value,expires_at_ms\nk,v,\nk2,v,xx\n", "csv")


def test_format_from_the_file_name() -> None:
    assert guess_format("dump.CSV", None) == "csv" and guess_format("-", None) == "jsonl"
    assert guess_format("x.csv", "jsonl") == "jsonl"
