"""The backend-independent mapped-table kit: options, key and value codecs, times, refusals."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvctl.errors import BadURLError, LimitError, UnsupportedError, UsageError
from kvctl.plugin_kit.mapped import (
    Column,
    ForeignRef,
    KeyCodec,
    Kind,
    MappingSpec,
    TableInfo,
    ValueCodec,
    is_mapped,
    mapped_capabilities,
    parse_time_us,
    read_time_ms,
    resolve,
    rfc3339,
    suggested_options,
    table_listing,
    text_successor,
    time_param,
)
from kvctl.plugin_kit.mapped.columns import TimeMapping
from kvctl.store import Capabilities, StoreURL

T, B, INT = Kind.TEXT, Kind.BLOB, Kind.INTEGER


def spec(query: str) -> MappingSpec:
    return MappingSpec.from_url(StoreURL.parse(f"sqlite:///x.db?{query}"))


STATE = TableInfo(
    "workflow_state",
    (Column("run_id", T, "TEXT", True), Column("key", T, "TEXT", True), Column("value", B, "BLOB"),
     Column("updated_at", Kind.TIME_TEXT, "DATETIME", has_default=True)),
    primary_key=("run_id", "key"),
)
RUNS = TableInfo(
    "workflow_runs",
    (Column("run_id", T, "TEXT", True), Column("workflow_id", T, "TEXT", True), Column("data", T, "TEXT"),
     Column("created_at", Kind.TIME_TEXT, "DATETIME", True)),
    primary_key=("run_id",),
    referenced_by=(ForeignRef("workflow_state", ("run_id",), "CASCADE"),),
)


# -- options -------------------------------------------------------------------------------
def test_spec_parses_every_option() -> None:
    s = spec("table=t&key=a,b&value=c,d&expires=e:s&version=v:rfc3339&json=d&sep=::&write=cascade")
    assert s.key == ("a", "b") and s.value == ("c", "d") and s.json == ("d",)
    assert s.expires is not None and (s.expires.column, s.expires.unit) == ("e", "s")
    assert s.version is not None and s.version.unit == "rfc3339"
    assert s.sep == b"::" and s.write and s.cascade
    assert spec("table=t&key=a&value=*").value == ("*",)
    assert spec("table=t&key=a").value is None and not spec("table=t&key=a").write


@pytest.mark.parametrize("query", [
    "key=a", "table=*&key=a", "table=t&key=a&write=maybe", "table=t&key=a&expires=e:weeks",
    "table=t&key=a,a", "table=t&key=a&value=a", "table=t&key=a&sep=%25", "table=t&key=a&version=a",
])
def test_spec_refuses_malformed_options(query: str) -> None:
    with pytest.raises(BadURLError):
        spec(query)


def test_is_mapped() -> None:
    assert is_mapped(StoreURL.parse("sqlite:///x.db?table=t&key=id"))
    assert is_mapped(StoreURL.parse("sqlite:///x.db?table=*"))
    assert not is_mapped(StoreURL.parse("sqlite:///x.db?table=t"))


# -- resolving against a table ------------------------------------------------------------------
def test_resolve_gorkflow_state() -> None:
    m = resolve(spec("table=workflow_state&key=run_id,key&value=value&version=updated_at"), STATE, "u",
                writes=False)
    assert [c.name for c in m.key] == ["run_id", "key"] and m.single and not m.ordered
    assert m.version is not None and m.version.column.name == "updated_at"
    caps = mapped_capabilities(Capabilities(ttl=True, ordered_scan=True, change_feed=True), m)
    assert (caps.ttl, caps.ordered_scan, caps.versions, caps.change_feed, caps.json_values) == \
        (False, False, True, False, False)


def test_resolve_value_default_and_star() -> None:
    with pytest.raises(UsageError, match="candidates: value, updated_at"):
        resolve(spec("table=workflow_state&key=run_id,key"), STATE, "u", writes=False)
    m = resolve(spec("table=workflow_runs&key=run_id&value=*&json=data"), RUNS, "u", writes=False)
    assert [c.name for c in m.value] == ["workflow_id", "data", "created_at"]
    assert m.value[1].kind is Kind.JSON and m.json_values and m.ordered
    one = resolve(spec("table=workflow_runs&key=run_id&value=data&json=data"), RUNS, "u", writes=False)
    assert one.single and one.json_values


@pytest.mark.parametrize(("table", "query", "error", "message"), [
    (None, "table=nope&key=a", UsageError, "no table nope"),
    (STATE, "table=workflow_state&key=run_id&value=value", UsageError, "not its primary key"),
    (STATE, "table=workflow_state&key=run_id,nope&value=value", UsageError, "no such column"),
    (TableInfo("t", (Column("id", Kind.REAL, "REAL", True), Column("v", B)), ("id",)), "table=t&key=id",
     UsageError, "id is REAL"),
    (TableInfo("t", (Column("id", T, "TEXT", True, binary_equality=False), Column("v", B)), ("id",)),
     "table=t&key=id", UsageError, "collation"),
    (TableInfo("t", (Column("id", T, "TEXT", True), Column("n", INT, "INTEGER"))), "table=t&key=id",
     UsageError, "found: none"),
    (TableInfo("t", (Column("id", T, "TEXT", True), Column("n", INT, "INTEGER")), ("id",)), "table=t&key=id&expires=n",
     UsageError, "unit"),
    (RUNS, "table=workflow_runs&key=run_id&value=data&write=true", UnsupportedError, "workflow_id, created_at"),
])
def test_refusals_are_one_line(table: TableInfo | None, query: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message) as caught:
        resolve(spec(query), table, "sqlite:///x.db", writes=True)
    assert "\n" not in str(caught.value)


def test_unique_index_key_needs_not_null() -> None:
    table = TableInfo("t", (Column("id", INT, "INTEGER", True), Column("slug", T, "TEXT", True),
                            Column("v", B)), ("id",), unique=(("slug",),))
    assert resolve(spec("table=t&key=slug&value=v"), table, "u", writes=False).key[0].name == "slug"
    nullable = TableInfo("t", (Column("slug", T, "TEXT"), Column("v", B)), unique=(("slug",),))
    with pytest.raises(UsageError):
        resolve(spec("table=t&key=slug&value=v"), nullable, "u", writes=False)


def test_write_checks_only_for_writing_commands_and_cascade() -> None:
    ro = resolve(spec("table=workflow_runs&key=run_id&value=data"), RUNS, "u", writes=False)
    with pytest.raises(UnsupportedError, match="read-only"):
        ro.require_write()
    rw = resolve(spec("table=workflow_runs&key=run_id&value=*&write=true"), RUNS, "u", writes=True)
    rw.require_write()
    with pytest.raises(UnsupportedError, match=r"workflow_state.*CASCADE"):
        rw.require_delete()
    resolve(spec("table=workflow_runs&key=run_id&value=*&write=cascade"), RUNS, "u", writes=True).require_delete()


# -- keys ------------------------------------------------------------------------------------
def test_single_key_bytes_are_the_column() -> None:
    codec = KeyCodec([Column("id", T)])
    assert codec.encode(["a/b%"]) == b"a/b%" and codec.decode(b"a/b%") == ("a/b%",)
    assert codec.decode(b"\xff") is None  # not UTF-8: no text key has these bytes
    ints = KeyCodec([Column("id", INT)])
    assert ints.encode([42]) == b"42" and ints.decode(b"42") == (42,)
    assert ints.decode(b"042") is None and ints.decode(b"-0") is None and ints.decode(b"x") is None


def test_composite_escapes_all_but_the_last_component() -> None:
    codec = KeyCodec([Column("a", T), Column("b", T)])
    assert codec.encode(["run", "a/b"]) == b"run/a/b"
    assert codec.encode(["r/1%", "x"]) == b"r%2F1%25/x"
    assert codec.decode(b"r%2F1%25/x") == ("r/1%", "x")
    assert codec.decode(b"run/a/b") == ("run", "a/b")
    assert codec.decode(b"r%41/x") is None  # not the canonical spelling of any row
    assert codec.decode(b"nosep") is None
    assert codec.encode(["a", None]) is None


def test_uuid_keys_are_canonical_text() -> None:
    codec = KeyCodec([Column("id", Kind.UUID)])
    u = "6f1c2e9a-0000-4000-8000-000000000001"
    assert codec.decode(u.encode()) == (u,) and codec.decode(u.upper().encode()) is None


components = st.text(alphabet=st.sampled_from("ab/%-:é"), max_size=4)


@given(st.lists(st.tuples(components, components, components), min_size=1, max_size=12),
       st.text(alphabet=st.sampled_from("ab/%-:é2F5"), max_size=7), st.sampled_from(["/", "::", "-"]))
def test_prefix_plan_selects_what_startswith_selects(rows: list[tuple[str, str, str]], prefix_text: str,
                                                      sep: str) -> None:
    codec = KeyCodec([Column("a", T), Column("b", T), Column("c", T)], sep.encode())
    prefix = prefix_text.encode()[:len(prefix_text.encode()) - (len(prefix_text) % 2)]  # sometimes cut mid-char
    plan = codec.plan(prefix)
    for row in set(rows):
        key = codec.encode(row)
        assert key is not None and codec.decode(key) == row
        wanted = key.startswith(prefix)
        if plan.empty:
            assert not wanted
            continue
        selected = all(row[i] == v for i, v in enumerate(plan.equal))
        if plan.lower is not None:
            col = row[len(plan.equal)]
            selected = selected and col >= plan.lower and (plan.upper is None or col < plan.upper)  # type: ignore[operator]
        if wanted:
            assert selected, (row, plan)
        if plan.exact:
            assert selected == wanted, (row, plan)


def test_prefix_plan_examples() -> None:
    codec = KeyCodec([Column("run_id", T), Column("key", T)])
    assert codec.plan(b"6f1c/appr").equal == ("6f1c",)
    assert (codec.plan(b"6f1c/appr").lower, codec.plan(b"6f1c/appr").upper) == ("appr", "apps")
    whole = codec.plan(b"6f1c")
    assert whole.equal == () and (whole.lower, whole.upper) == ("6f1c", "6f1d") and whole.exact
    blobs = KeyCodec([Column("k", B)]).plan(b"a\xff")
    assert (blobs.lower, blobs.upper) == (b"a\xff", b"b")
    assert KeyCodec([Column("k", INT)]).plan(b"4").exact is False
    assert text_successor("a\U0010ffff") == "b" and text_successor("\ud7ff") == "\ue000"


# -- values ----------------------------------------------------------------------------------
def test_single_column_values() -> None:
    m = resolve(spec("table=workflow_state&key=run_id,key&value=value"), STATE, "u", writes=False)
    codec = ValueCodec(m)
    assert codec.read([b"\x00\x01"]) == b"\x00\x01" and codec.read([None]) == b""
    assert codec.write(b"k", b"\x00") == [b"\x00"]
    text = ValueCodec(resolve(spec("table=workflow_runs&key=run_id&value=data&json=data"), RUNS, "u",
                              writes=False))
    assert text.write(b"k", b'{"a":1}') == ['{"a":1}']
    with pytest.raises(LimitError, match="not JSON"):
        text.write(b"k", b"{nope")


def test_json_object_values_round_trip() -> None:
    table = TableInfo("t", (Column("id", T, "TEXT", True), Column("n", INT, "INTEGER", True),
                            Column("r", Kind.REAL), Column("b", B), Column("d", T), Column("at", Kind.TIME_TEXT),
                            Column("s", T)), ("id",))
    m = resolve(spec("table=t&key=id&value=*&json=d"), table, "u", writes=False)
    codec = ValueCodec(m)
    row = [7, 1.5, b"\xff", '{"x":[1,2]}', "2026-03-30 10:11:12.5 +0200 CEST m=+0.0012", None]
    value = codec.read(row)
    assert value == (b'{"n":7,"r":1.5,"b":{"$base64":true,"encoded":"/w=="},"d":{"x":[1,2]},'
                     b'"at":"2026-03-30T08:11:12.5Z","s":null}')
    assert codec.read(row) == value  # canonical
    assert codec.write(b"k", value) == [7, 1.5, b"\xff", '{"x":[1,2]}', "2026-03-30T08:11:12.5Z", None]
    for bad, why in [(b"[]", "JSON object"), (b'{"n":1}', "missing r, b, d, at, s"),
                     (json.dumps({**json.loads(value), "zz": 1}).encode(), "unknown zz"),
                     (json.dumps({**json.loads(value), "n": "x"}).encode(), "column n"),
                     (json.dumps({**json.loads(value), "n": None}).encode(), "NOT NULL")]:
        with pytest.raises(LimitError, match=why):
            codec.write(b"k", bad)


# -- times ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "iso"), [
    ("2026-03-30 10:11:12", "2026-03-30T10:11:12Z"),
    ("2026-03-30T10:11:12.123456+02:00", "2026-03-30T08:11:12.123456Z"),
    ("2026-03-30T10:11:12Z", "2026-03-30T10:11:12Z"),
    ("2026-03-30 10:11:12.5 +0200 CEST m=+0.001200001", "2026-03-30T08:11:12.5Z"),
    ("2026-03-30 10:11:12.000000001 +0000 UTC", "2026-03-30T10:11:12Z"),
])
def test_time_text_forms(text: str, iso: str) -> None:
    us = parse_time_us(text)
    assert us is not None and rfc3339(us) == iso


def test_time_units_and_unreadable() -> None:
    assert parse_time_us(1_700_000_000, "s") == 1_700_000_000_000_000
    assert parse_time_us(1_700_000_000_000_000_000, "ns") == 1_700_000_000_000_000
    assert parse_time_us(1_700_000_000) is None  # no unit: not guessed
    assert parse_time_us("yesterday") is None and parse_time_us("2026-02-30 00:00:00") is None
    assert parse_time_us(datetime(2026, 1, 1, tzinfo=UTC)) == parse_time_us("2026-01-01 00:00:00")


def test_time_columns_read_and_written_in_their_unit() -> None:
    secs = TimeMapping(Column("t", INT, "INTEGER"), "s")
    assert read_time_ms(secs, 10) == 10_000 and time_param(secs, 10_999) == 10
    text = TimeMapping(Column("t", Kind.TIME_TEXT, "DATETIME"), None)
    assert time_param(text, 1_000) == "1970-01-01 00:00:01" and time_param(text, 1_500) == "1970-01-01 00:00:01.500"
    assert read_time_ms(text, "1970-01-01 00:00:01.500") == 1_500
    rfc = TimeMapping(Column("t", T, "TEXT"), "rfc3339")
    assert time_param(rfc, 1_500) == "1970-01-01T00:00:01.5Z"
    assert time_param(TimeMapping(Column("t", Kind.TIMESTAMP), None), 0) == datetime(1970, 1, 1, tzinfo=UTC)


# -- discovery -----------------------------------------------------------------------------------
def test_listing_suggests_urls() -> None:
    assert suggested_options(STATE) == "table=workflow_state&key=run_id,key&value=*"
    assert suggested_options(TableInfo("t", (Column("id", Kind.REAL, "REAL", True), Column("v", B)), ("id",))) is None
    url = StoreURL.parse("sqlite:///srv/app.db?table=*")
    records = table_listing([STATE, RUNS, TableInfo("nokey", (Column("a", T),))], url)
    assert [r.key for r in records] == [b"nokey", b"workflow_runs", b"workflow_state"]
    first = json.loads(records[0].value)
    assert first["mappable"] is False and "no primary key" in first["why_not"]
    assert json.loads(records[2].value)["url"] == \
        "sqlite:///srv/app.db?table=workflow_state&key=run_id,key&value=*"


# -- the same options in a TOML profile ------------------------------------------------------
def test_profile_keys_are_url_options(tmp_path) -> None:
    from kvctl.config import Config

    conf = Config(tmp_path / "c.toml", profiles={
        "gork": {"url": "sqlite:///srv/w.db", "table": "workflow_state", "key": ["run_id", "key"],
                 "value": "value", "write": False},
        "twice": {"url": "sqlite:///srv/w.db?table=a", "table": "b"},
    })
    url = StoreURL.parse(conf.profile_url("gork"))
    assert url.options == {"table": "workflow_state", "key": "run_id,key", "value": "value", "write": "false"}
    assert MappingSpec.from_url(url).key == ("run_id", "key")
    with pytest.raises(BadURLError, match="both in its url and as a key"):
        conf.profile_url("twice")
