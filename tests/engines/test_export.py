"""export/import: JSON lines and CSV, exact round trips on every backend family, expiry, versions,
typed values, policies and malformed input."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvctl.engines._stores import open_async
from kvctl.engines.dump import export_to, guess_format, import_from
from kvctl.engines.keyfilter import KeyFilter
from kvctl.errors import CorruptError, IncompleteError, UnsupportedError
from kvctl.store import MAX_EXPIRY_MS, MAX_VERSION, Capabilities, Record, now_ms
from tests.engines.support import (
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
    (b'{"key": "a", "value": ""}\nnot json\n', 2),
    (b'{"value": "no key"}\n', 1),
    (b'{"key": "a", "expires_at_ms": "soon"}\n', 1),
    (b'{"key_b64": "***"}\n', 1),
    (b'[1, 2]\n', 1),
    (b'{"key": "a", "value": ""}\n{"key": "b", "value": "", "expires_at_ms": 100000000000000000000}\n', 2),
    (b'{"key": "a", "expires_at_ms": -5}\n', 1),
    (b'{"key": "a", "version": 9223372036854775808}\n', 1),  # over a signed 64-bit column
    (b'{"key": "a", "value": ""}\n{"key": "b"}\n', 2),  # no value: not the empty value
    (b'{"key": "a", "value": "v", "expires_at_ms": 1.5}\n', 1),
    (b'{"key": "a", "value": "v", "version": "7"}\n', 1),
    (b'{"key": "a", "value": "v", "version": true}\n', 1),
    (b'{"key": "a", "key_b64": "YQ==", "value": "v"}\n', 1),
    (b'{"key": "a", "value": "v", "value_b64": "dg=="}\n', 1),
    (b'{"key": "a", "value": "v", "expires_at": 1}\n', 1),  # a misspelt field is not ignored
    (b'{"key": "a", "value": "v"}\n{"key": "b", "value": "v", "key": "c"}\n', 2),  # json keeps the last
])
def test_malformed_jsonl_names_the_line(data: bytes, line: int) -> None:
    with pytest.raises(CorruptError, match=f"line {line}:"):
        import_bytes(DictStore(), data)


@pytest.mark.parametrize(("data", "line", "why"), [
    (b'key,value\n"unterminated,1\n', 2, "not closed"),
    (b'key,value\nok,1\n"unterminated,1\nb,2\n', 3, "not closed"),
    (b'key,value\na\n', 2, "1 fields where the header has 2"),
    (b'key,value\na,1,extra,fields\n', 2, "4 fields"),
    (b'key,value\nok,1\n"multi\nline",2,x\n', 3, "3 fields"),
    (b'key,value,version\na,v,1.5\n', 2, "version must be an integer"),
    (b'key,value,expires_at_ms\na,v, 7\n', 2, "expires_at_ms must be an integer"),
    (b'key,value,version\na,v,1_0\n', 2, "version must be an integer"),
    (b'key,key_b64,value,value_b64\na,YQ==,v,\n', 2, "both key and key_b64"),
    (b'key,key_b64,value,value_b64\na,,v,dg==\n', 2, "both value and value_b64"),
    (b'key,value\na,"x"y\n', 2, "expected after"),
    (b'key,value,value_b64\na,,***\n', 2, "base64"),
])
def test_malformed_csv_names_the_line(data: bytes, line: int, why: str) -> None:
    dst = DictStore()
    with pytest.raises(CorruptError, match=f"line {line}: .*{why}"):
        import_bytes(dst, data, "csv")


@pytest.mark.parametrize("header", [b"key,value,colour", b"key,key,value", b"key,expires_at_ms"])
def test_csv_header_must_name_known_columns(header: bytes) -> None:
    with pytest.raises(CorruptError, match="not a kvctl CSV export"):
        import_bytes(DictStore(), header + b"\n", "csv")


@pytest.mark.parametrize(("fmt", "data"), [
    ("csv", b"\xef\xbb\xbfkey,value\na,1\n"),  # Excel's "CSV UTF-8"
    ("jsonl", b'\xef\xbb\xbf{"key": "a", "value": "1"}\n'),
])
def test_a_byte_order_mark_is_not_data(fmt: str, data: bytes) -> None:
    dst = DictStore()
    import_bytes(dst, data, fmt).check()
    assert dst.data == {b"a": Record(b"a", b"1")}


def test_csv_quotes_a_bare_carriage_return() -> None:
    store = DictStore()
    t = now_ms() + 60_000
    store.data = {b"k": Record(b"k", b"abc\rdef", None, 5), b"b:\r": Record(b"b:\r", b"x", t, 6),
                  b"k2": Record(b"k2", b"fine", None, 7)}
    data = export_bytes(store, "csv")
    assert b'"abc\rdef"' in data and b'"b:\r"' in data and b"\nk2,,fine,,,7,\n" in data
    back = DictStore()
    import_bytes(back, data, "csv").check()
    assert back.data == store.data


_bytes = st.binary(max_size=40) | st.sampled_from([b"", b"\r", b"\n", b"\r\n", b"\x00", b'"', b",", b"\xff\xfe",
                                                   b'a,"b"\r\nc', "ключ:🔑".encode(), b"\xef\xbb\xbf"])
_records = st.dictionaries(
    _bytes, st.tuples(_bytes, st.none() | st.integers(now_ms() + 3_600_000, MAX_EXPIRY_MS),
                      st.none() | st.integers(0, MAX_VERSION)), max_size=12)


@settings(max_examples=300, deadline=None)
@given(records=_records, fmt=st.sampled_from(["jsonl", "csv"]))
def test_any_bytes_round_trip_exactly(records: dict[bytes, tuple[bytes, int | None, int | None]], fmt: str) -> None:
    store = DictStore()
    store.data = {k: Record(k, v, exp, ver) for k, (v, exp, ver) in records.items()}
    back = DictStore()
    import_bytes(back, export_bytes(store, fmt), fmt, batch_size=3).check()
    assert back.data == store.data


def test_malformed_csv_is_refused() -> None:
    with pytest.raises(CorruptError, match="CSV"):
        import_bytes(DictStore(), b"a,b\n1,2\n", "csv")
    with pytest.raises(CorruptError, match="line 3"):
        import_bytes(DictStore(), b"key,value,expires_at_ms\nk,v,\nk2,v,xx\n", "csv")


def test_format_from_the_file_name() -> None:
    assert guess_format("dump.CSV", None) == "csv" and guess_format("-", None) == "jsonl"
    assert guess_format("x.csv", "jsonl") == "jsonl"
