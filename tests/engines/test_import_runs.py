"""JSON-lines import parses runs of plain lines as a whole (kvctl.engines.dump.jsonbatch): the records,
the refusals, their wording and their line numbers are exactly those of the line-by-line path."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvctl.engines.dump import format as format_module
from kvctl.engines.dump import import_from, jsonbatch, numbered_records
from kvctl.engines.dump.format import _from_json
from kvctl.engines.dump.jsonbatch import plain_records
from kvctl.errors import CorruptError, UsageError
from kvctl.store import MAX_VERSION
from tests.engines.support import DictStore

PLAIN = [b'{"key":"key:%08d","value":"v%d","expires_at_ms":null}\n' % (i, i) for i in range(1, 30_001)]


def line_by_line(lines: list[bytes]) -> list[Any]:
    return [_from_json(line) for line in lines]


def import_lines(lines: list[bytes], **kw: Any) -> DictStore:
    store = DictStore()
    asyncio.run(import_from(store, io.BytesIO(b"".join(lines)), "jsonl", "in.jsonl", **kw))
    return store


def refusal(lines: list[bytes]) -> str:
    with pytest.raises(CorruptError) as info:
        import_lines(lines)
    return str(info.value)


def stdlib_refusal(bad: bytes, line: int) -> str:
    """The message the line-by-line path gives for ``bad`` as line ``line``."""
    try:
        _from_json(bad)
    except Exception as exc:
        return f"in.jsonl: line {line}: {exc}"
    raise AssertionError(f"{bad!r} was accepted")


def test_a_run_gives_the_records_line_by_line_parsing_gives() -> None:
    lines = [
        *PLAIN[:2000],
        '{"key":"ключ \\u00e9 \\" \\\\ \\n \\u0000","value":"{\\"a\\":1}","expires_at_ms":1767225600000}\n'
        .encode(),
        b'{"value":"v","key":"k","version":%d}\n' % MAX_VERSION,
        b'{"key":"","value":"","expires_at_ms":null,"version":0}\n',
    ]
    fast = plain_records(lines)
    assert fast is not None
    assert fast == line_by_line(lines)
    assert fast[2000].value == b'{"a":1}' and fast[2000].key == "ключ é \" \\ \n \x00".encode()


@pytest.mark.parametrize("odd", [
    b"\n", b"   \r\n",  # blank lines are skipped, not refused
    b'{"key_b64":"AP8=","key":"k","value":"x"}\n',  # both
    b'{"key_b64":"AP8","value":"x"}\n',  # bad padding
    b'{"key_b64":"AP8=","value_b64":"A P8="}\n',
    b'{"key_b64":null,"value":"x"}\n',
    b'{"key":"k","value_b64":7}\n',
    b'{"key":null,"value_b64":"AA=="}\n',
    b'{"key_b64":"AP8=","value_b64":"\xc3\xa9"}\n',
    b'{"key":"k","value":"v","kind":"hash"}\n',
    b'{"key":"k","value":"v","key":"w"}\n',  # a field twice
    b'{"key" : "k","value":"v","key":"w"}\n',  # a field twice, a space before its colon
    b'{"key":"k","value":"v","expires_at_ms":null,"expires_at_ms":5}\n',  # twice, not as text
    b'{"key":"k","value":"\\"a\\"","version":1,"version":2}\n',  # twice, and a quote in a string
    b'{"key":"k","value":"v","colour":1}\n',
    b'{"key":"k","value":"v","version":%d}\n' % (1 << 70),  # beyond 64 bits
    b'{"key":"k","value":"v","version":1.0}\n',
    b'{"key":"k","value":"v","expires_at_ms":true}\n',
    b'{"key":"\\ud800","value":"v"}\n',  # a lone surrogate
    b'{"key":"k","value":"v","expires_at_ms":NaN}\n',
    b'["key","value"]\n',
    b'{"key":"k","value":"v"} {}\n',
    b"\xef\xbb\xbf" + b'{"key":"k","value":"v"}\n',  # a byte-order mark past line 1
])
def test_a_run_with_an_unusual_line_goes_line_by_line(odd: bytes) -> None:
    assert plain_records([*PLAIN[:100], odd, *PLAIN[100:200]]) is None


@pytest.mark.parametrize("bad", [
    b'{"key":"k"\n',
    b'{"key":"k","value":"v","key":"w"}\n',
    b'{"key" :"k","value":"v","key":"w"}\n',
    b'{"key":"k","value_b64":"AP8"}\n',
    b'{"key":"k","value_b64":"AP8=","value":"v"}\n',
    b'{"key":"k","value":"v","expires_at_ms":null,"expires_at_ms":5}\n',
    b'{"key":"k","value":"v","version":%d}\n' % (1 << 70),
    b'{"key":"k","value":"v","expires_at_ms":1.5}\n',
    b'{"key":"k","value":"v","expires_at_ms":NaN}\n',
    b'{"key":"\\ud800","value":"v"}\n',
    b'{"key":"k","value":"v","colour":"red"}\n',
    b'{"key":"k","value":"v"} {}\n',
])
def test_a_bad_line_deep_in_a_run_is_refused_with_its_own_line_and_wording(bad: bytes) -> None:
    lines = [*PLAIN[:17000], bad, *PLAIN[17000:]]
    # the whole batches before the bad line are written, as when the lines were read one by one
    assert refusal(lines) == stdlib_refusal(bad, 17_001) + (
        " (stopped with every record through line 15,000 of in.jsonl done, at least 15,000 written; "
        "resume with --from-line 15001)")


def test_blank_lines_and_a_byte_order_mark_keep_the_line_numbers() -> None:
    lines = [b"\xef\xbb\xbf" + PLAIN[0], b"\n", *PLAIN[1:9000], b"  \n", *PLAIN[9000:12000]]
    numbered = list(numbered_records(io.BytesIO(b"".join(lines)), "jsonl", "in.jsonl"))
    assert [n for n, _ in numbered[:3]] == [1, 3, 4]
    assert numbered[-1][0] == len(lines)
    assert [r for _, r in numbered] == line_by_line([PLAIN[0], *PLAIN[1:12000]])


def test_from_line_inside_a_run_writes_the_records_from_that_line_on() -> None:
    store = import_lines(PLAIN[:20_000], from_line=12_345, batch_size=5000)
    assert sorted(store.data) == [b"key:%08d" % i for i in range(12_345, 20_001)]
    assert store.data[b"key:00012345"].value == b"v12345"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.fixed_dictionaries(
    {"key": st.text(), "value": st.text()},
    optional={"expires_at_ms": st.none() | st.integers(-5, 2**64), "version": st.none() | st.integers(-5, 2**64)}),
    min_size=1, max_size=20))
def test_a_run_either_matches_line_by_line_parsing_or_is_left_to_it(objs: list[dict[str, Any]]) -> None:
    lines = [json.dumps(o, ensure_ascii=bool(i % 2)).encode() + b"\n" for i, o in enumerate(objs)]
    fast = plain_records(lines)
    try:
        expected = line_by_line(lines)
    except ValueError:
        assert fast is None  # refused line by line: the run never accepts it
        return
    assert fast is None or fast == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["key", "value", "expires_at_ms", "version"]),
                          st.text(max_size=5) | st.none() | st.integers(0, 10)), min_size=2, max_size=6),
       st.sampled_from(["", " ", "\t", "  "]))
def test_a_field_given_twice_is_refused_however_the_line_is_spaced(pairs: list[tuple[str, Any]], space: str) -> None:
    line = ("{" + ",".join(f"{json.dumps(n)}{space}:{space}{json.dumps(v)}" for n, v in pairs) + "}\n").encode()
    names = [n for n, _ in pairs]
    if len(set(names)) == len(names):
        return
    assert plain_records([line]) is None
    with pytest.raises(ValueError, match="is given twice"):
        _from_json(line)


B64 = st.sampled_from(["", "AA==", "AP8=", "3q2+7w==", "AP8", "A P8=", "AP8==", "=AP8", "é", "AP/+"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.fixed_dictionaries({}, optional={
    "key": st.text(max_size=4) | st.none(), "key_b64": B64 | st.none() | st.integers(0, 3),
    "value": st.text(max_size=4), "value_b64": B64, "expires_at_ms": st.none() | st.integers(0, 9)}),
    min_size=1, max_size=8))
def test_a_run_with_base64_fields_matches_line_by_line_parsing_or_is_left_to_it(objs: list[dict[str, Any]]) -> None:
    lines = [json.dumps(o).encode() + b"\n" for o in objs]
    fast = plain_records(lines)
    try:
        expected = line_by_line(lines)
    except (ValueError, UsageError):  # refused line by line (the import names the line)
        assert fast is None
        return
    assert fast is None or fast == expected


def test_a_run_of_base64_values_is_parsed_as_a_whole() -> None:
    lines = [b'{"key":"k%d","value_b64":"AP8=","expires_at_ms":null}\n' % i for i in range(3000)]
    lines[7] = b'{"key_b64":"3q2+7w==","value":"text","version":5}\n'
    fast = plain_records(lines)
    assert fast is not None and fast == line_by_line(lines)
    assert fast[0].value == b"\x00\xff" and fast[7].key == b"\xde\xad\xbe\xef" and fast[7].value == b"text"


def compact(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.fixed_dictionaries(
    {"key": st.text(st.characters(blacklist_categories=["Cs", "Cc"]).filter(lambda c: c not in '"\\'))},
    optional={"value": st.text(max_size=8).filter(lambda t: '"' not in t and "\\" not in t and t.isprintable()),
              "value_b64": B64.filter(lambda b: " " not in b and "é" not in b),
              "expires_at_ms": st.none() | st.integers(0, 10**13), "version": st.none() | st.integers(0, 2**63)}),
    min_size=1, max_size=8), st.booleans())
def test_lines_written_compactly_are_known_as_such(objs: list[dict[str, Any]], last_newline: bool) -> None:
    lines = list(map(compact, objs))
    if not last_newline:
        lines[-1] = lines[-1].rstrip(b"\n")
    parsed = [orjson.loads(line) for line in lines]
    sizes = [len(o) for o in parsed]
    keys, values = jsonbatch._bytes_of(parsed, "key"), jsonbatch._bytes_of(parsed, "value")
    if values is None or any(("value" in o) == ("value_b64" in o) for o in objs):
        assert plain_records(lines) is None  # neither or both value fields: not a plain run
        return
    assert keys is not None
    members = keys[1] + values[1]
    for name in ("expires_at_ms", "version"):
        members += jsonbatch._optional_size(*jsonbatch._optional(parsed, name), name)
    assert jsonbatch._compact(lines, sizes, members)
    # a space, an escape or a field given twice makes a line longer than written compactly
    for longer in (lines[0].replace(b":", b": ", 1), lines[0].replace(b'"key"', b'"\\u006bey"'),
                   lines[0].replace(b"{", b'{"key":"",', 1)):
        assert not jsonbatch._compact([longer, *lines[1:]], sizes, members)
    fast = plain_records(lines)
    assert fast is None or fast == line_by_line(lines)


def test_a_compact_run_with_a_field_given_twice_in_one_line_goes_line_by_line() -> None:
    lines = [compact({"key": f"k{i}", "value": "ü" * i, "expires_at_ms": i or None}) for i in range(3000)]
    assert plain_records(lines) == line_by_line(lines)
    # the line with a key twice is longer than its object written compactly; the others are not
    lines[1234] = b'{"key":"k","key":"k","value":"v"}\n'
    assert plain_records(lines) is None
    with pytest.raises(ValueError, match="is given twice"):
        line_by_line(lines)


@pytest.mark.parametrize("run_bytes", [1, 7, 64, 1 << 20])
@pytest.mark.parametrize("tail", [b"", b"\n", b"\r\n"])
def test_runs_are_cut_at_line_ends_wherever_a_read_stops(monkeypatch: pytest.MonkeyPatch, run_bytes: int,
                                                          tail: bytes) -> None:
    monkeypatch.setattr(format_module, "RUN_BYTES", run_bytes)
    data = b"".join(PLAIN[:50]) + b"\n\n" + b'{"key":"long","value":"%s"}' % (b"x" * 300) + tail
    inp = io.BytesIO(data)
    runs = []
    while lines := format_module._run_of_lines(inp):
        runs.append(lines)
    assert [line for run in runs for line in run] == io.BytesIO(data).readlines()
    assert all(line.endswith(b"\n") for run in runs for line in run[:-1])
