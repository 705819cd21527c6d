"""Mapped tables on PostgreSQL: Gorkflow's and Querator's own tables, read and written by kvctl.

The databases are created the way the applications create them (apps.py) and addressed with
the URLs an operator types (README, "Your application's data").  A read never changes the
catalog; a write changes only the mapped columns of the rows it names.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvctl.testing.cli import read_commands, run_kvctl
from kvctl.testing.conformance import open_sync
from tests.backends.postgres.apps import QUERATOR_ITEMS, RUNS, database, fill_gorkflow
from tests.backends.postgres.support import catalog, sql
from tests.conftest import service_url

pytestmark = pytest.mark.server

STATE = "table=workflow_state&key=run_id,key&value=value&version=updated_at"
RUNS_JSON = "table=workflow_runs&key=run_id&value=data&version=updated_at"
ITEMS = f"table={QUERATOR_ITEMS}&key=id&value=payload"


@pytest.fixture
def gorkflow(gorkflow_app: str) -> str:
    return gorkflow_app


@pytest.fixture
def querator(querator_app: tuple[str, list[str]]) -> tuple[str, list[str]]:
    return querator_app


@pytest.fixture
def scratch() -> Iterator[str]:
    """A Gorkflow database of this test's own, for writes."""
    with database(service_url("KVCTL_TEST_POSTGRES_URL"), "gorkw") as url:
        fill_gorkflow(url)
        yield url


def kv(env: dict[str, str], *args: str, code: int = 0) -> str:
    proc = run_kvctl(env, *args)
    assert proc.returncode == code, (args, proc.returncode, proc.stdout[-800:], proc.stderr[-800:])
    if code >= 2:
        assert proc.stderr.startswith("kvctl: error: ") and "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout if code < 2 else proc.stderr


# -- reading ---------------------------------------------------------------------------------
def test_gorkflow_state_reads_as_keys_of_run_and_name(gorkflow: str, env: dict[str, str]) -> None:
    url = f"{gorkflow}?{STATE}"
    run = RUNS[1]
    assert kv(env, "-u", url, "get", f"{run}/approver/name") == json.dumps("Zoë")  # json.Marshal'ed bytes
    keys = kv(env, "-u", url, "scan", "--prefix", f"{run}/", "--keys-only").split()
    assert keys == [f"{run}/{k}" for k in ("approval", "approver/name", "count", "limits")]
    assert kv(env, "-u", url, "count", "--prefix", f"{run}/appr").strip() == "2"
    assert kv(env, "-u", url, "count").strip() == str(1 + 4 * len(RUNS))
    kv(env, "-u", url, "get", f"{run}/missing", code=1)
    kv(env, "-u", url, "get", "no-separator", code=1)


def test_a_jsonb_column_reads_as_json_and_stats_describe_the_mapping(gorkflow: str, env: dict[str, str]) -> None:
    url = f"{gorkflow}?{RUNS_JSON}"
    doc = json.loads(kv(env, "-u", url, "get", RUNS[2]))
    assert doc["input"] == {"amount": 200, "currency": "EUR"} and doc["run_id"] == RUNS[2]
    stats = json.loads(kv(env, "-u", url, "stats", "--json"))
    assert stats["key_columns"] == ["run_id"] and stats["value_columns"] == ["data"]
    assert stats["writable"] is False and stats["version_column"] == "updated_at"
    assert any("workflow_state(run_id) ON DELETE CASCADE" in r for r in stats["referenced_by"])
    assert stats["key_collation"].startswith("run_id ") and stats["scan_order"] == "byte order of the key"


def test_value_star_is_one_json_object_with_rfc3339_times(gorkflow: str, env: dict[str, str]) -> None:
    url = f"{gorkflow}?table=step_executions&key=run_id,step_id&value=*"
    doc = json.loads(kv(env, "-u", url, "get", f"{RUNS[0]}/fetch"))
    assert doc["created_at"] == "2026-03-30T08:11:12.123456Z" and doc["completed_at"] == "2026-03-30T08:11:13.123456Z"
    assert doc["data"] == {"step_id": "fetch", "status": "completed", "attempt": 1}
    assert doc["execution_index"] == 0 and doc["error"] is None


def test_querator_items_are_found_by_discovery_and_scan_in_ksuid_order(querator: tuple[str, list[str]],
                                                                        env: dict[str, str]) -> None:
    url, ids = querator
    assert kv(env, "-u", f"{url}?table=*", "scan", "--keys-only").split() == [QUERATOR_ITEMS, "queues"]
    facts = json.loads(kv(env, "-u", f"{url}?table=*", "get", QUERATOR_ITEMS))
    assert facts["mappable"] and facts["primary_key"] == ["id"]
    assert facts["url"].endswith(f"?table={QUERATOR_ITEMS}&key=id&value=*")
    items = f"{url}?{ITEMS}"
    assert kv(env, "-u", items, "scan", "--keys-only").split() == ids
    assert json.loads(kv(env, "-u", items, "get", ids[3])) in [{"order": n, "sku": f"SKU-{n:03d}"} for n in range(25)]
    assert kv(env, "-u", items, "count", "--prefix", ids[0][:20]).strip() == str(
        sum(1 for i in ids if i.startswith(ids[0][:20])))
    queues = json.loads(kv(env, "-u", f"{url}?table=queues&key=name&value=*", "get", "orders"))
    assert queues["partition_info"] == [{"partition": 0, "queue": "orders", "read_only": False}]
    assert queues["lease_timeout_ns"] == 60_000_000_000


def test_a_key_with_nul_names_no_row_of_a_text_column(querator: tuple[str, list[str]]) -> None:
    url, ids = querator
    with open_sync(f"{url}?{ITEMS}") as store:
        assert store.get(ids[0].encode() + b"\x00") is None
        assert store.get_many([b"\x00", ids[0].encode()])[0] is None
        assert list(store.scan(ids[0][:3].encode() + b"\x00")) == []
        assert store.count(ids[0][:3].encode() + b"\x00") == 0
        assert store.count(ids[0][:3].encode()) >= 1


MAPPED_READS = [STATE, RUNS_JSON, "table=step_outputs&key=run_id,step_id&value=output_data",
                "table=step_executions&key=run_id,step_id&value=*", "table=*"]


@pytest.mark.parametrize("options", MAPPED_READS)
def test_no_read_command_changes_the_catalog(gorkflow: str, options: str, env: dict[str, str],
                                             tmp_path: Path) -> None:
    url = f"{gorkflow}?{options}"
    other = f"sqlite://{tmp_path / 'other.db'}"
    kv(env, "-u", other, "set", "other", "1")
    before, rows = catalog(gorkflow), _rows(gorkflow)
    for args in read_commands(url, other, tmp_path, key=f"{RUNS[0]}/approval"):
        proc = run_kvctl(env, *args)
        assert proc.returncode in (0, 1), (args, proc.returncode, proc.stderr)
        assert catalog(gorkflow) == before, args
        assert _rows(gorkflow) == rows, args


def test_querator_reads_change_nothing(querator: tuple[str, list[str]], env: dict[str, str], tmp_path: Path) -> None:
    url, ids = querator
    other = f"sqlite://{tmp_path / 'other.db'}"
    kv(env, "-u", other, "set", "other", "1")
    before = catalog(url)
    for options in (ITEMS, f"table={QUERATOR_ITEMS}&key=id&value=*", "table=queues&key=name&value=*"):
        for args in read_commands(f"{url}?{options}", other, tmp_path, key=ids[0]):
            proc = run_kvctl(env, *args)
            assert proc.returncode in (0, 1), (args, proc.returncode, proc.stderr)
            assert catalog(url) == before, args


def _rows(url: str) -> list[str]:
    return [r[0] for r in sql(url, "SELECT to_jsonb(s)::text FROM workflow_state s ORDER BY run_id, key")]


# -- refusals --------------------------------------------------------------------------------
@pytest.mark.parametrize(("options", "code", "words"), [
    ("table=nope&key=id", 2, "no table nope"),
    ("table=workflow_state&key=run_id&value=value", 2, "not its primary key"),
    ("table=workflow_state&key=run_id,key&value=nope", 2, "no such column"),
    ("table=workflow_state&key=run_id,key", 2, "value=*"),
    ("table=workflow_state&key=run_id,key&value=value&feed=false", 2, "unknown option"),
    ("table=step_executions&key=run_id,execution_index&value=data", 2, "not its primary key"),
])
def test_a_mapping_that_cannot_work_is_one_line(gorkflow: str, env: dict[str, str], options: str, code: int,
                                                 words: str) -> None:
    before = catalog(gorkflow)
    assert words in kv(env, "-u", f"{gorkflow}?{options}", "count", code=code)
    assert catalog(gorkflow) == before


def test_the_refusal_of_a_plain_url_points_to_discovery(gorkflow: str, env: dict[str, str]) -> None:
    err = kv(env, "-u", gorkflow, "count", code=2)
    assert "none of kvctl's" in err and "table=*" in err


# -- writing ---------------------------------------------------------------------------------
def test_writes_need_write_true_and_touch_only_the_mapped_columns(scratch: str, env: dict[str, str]) -> None:
    run = RUNS[0]
    url = f"{scratch}?table=workflow_state&key=run_id,key&value=value"
    shape = _schema(scratch)
    assert "read-only" in kv(env, "-u", url, "set", f"{run}/approval", '"granted"', code=4)
    before = sql(scratch, ("SELECT updated_at FROM workflow_state WHERE run_id = $1 AND key = 'approval'", (run,)))
    kv(env, "-u", url + "&write=true", "set", f"{run}/approval", '"granted"')
    kv(env, "-u", url + "&write=true", "set", f"{run}/new/key", "[1,2]")
    rows = sql(scratch, ("SELECT key, value, updated_at FROM workflow_state WHERE run_id = $1 ORDER BY key", (run,)))
    got = {r[0]: (bytes(r[1]), r[2]) for r in rows}
    assert got["approval"] == (b'"granted"', before[0][0])  # updated_at is not mapped: kept
    assert got["new/key"][0] == b"[1,2]"  # a new row takes the column's default (NOW())
    # a state row for a run that does not exist: the foreign key refuses it, exit 6
    err = kv(env, "-u", url + "&write=true", "set", "no-such-run/k", "1", code=6)
    assert "workflow_state_run_id_fkey" in err
    assert "expires=" in kv(env, "-u", url + "&write=true", "set", f"{run}/t", "1", "--ttl", "1m", code=4)
    assert _schema(scratch) == shape  # rows written, nothing created or altered


def _schema(url: str) -> list[Any]:
    """The catalog without the digests of the rows."""
    return [r for r in catalog(url) if r[0] != "rows"]


def test_a_version_column_is_written_with_the_write_time(scratch: str, env: dict[str, str]) -> None:
    url = f"{scratch}?{STATE}&write=true"
    kv(env, "-u", url, "set", f"{RUNS[1]}/approval", '"x"')
    stamp = sql(scratch, ("SELECT updated_at > now() - interval '1 minute' FROM workflow_state "
                          "WHERE run_id = $1 AND key = 'approval'", (RUNS[1],)))
    assert stamp[0][0] is True


def test_deletes_that_cascade_need_write_cascade(scratch: str, env: dict[str, str]) -> None:
    run = RUNS[3]
    options = "table=workflow_runs&key=run_id&value=*"
    err = kv(env, "-u", f"{scratch}?{options}&write=true", "del", run, code=4)
    assert "would change other tables" in err and "workflow_state(run_id) ON DELETE CASCADE" in err
    assert sql(scratch, ("SELECT count(*) FROM workflow_state WHERE run_id = $1", (run,)))[0][0] == 4
    kv(env, "-u", f"{scratch}?{options}&write=cascade", "del", run)
    assert sql(scratch, ("SELECT count(*) FROM workflow_state WHERE run_id = $1", (run,)))[0][0] == 0
    state = f"{scratch}?table=workflow_state&key=run_id,key&value=value&write=true"
    assert kv(env, "-u", state, "del", f"{RUNS[0]}/count").strip().endswith("1")
    assert sql(scratch, ("SELECT count(*) FROM workflow_state WHERE run_id = $1", (RUNS[0],)))[0][0] == 3


def test_unmapped_not_null_columns_refuse_write_true(scratch: str, env: dict[str, str]) -> None:
    before = catalog(scratch)
    err = kv(env, "-u", f"{scratch}?{RUNS_JSON}&write=true", "set", RUNS[0], "{}", code=4)
    assert "workflow_id" in err and "status" in err
    assert catalog(scratch) == before


def test_a_value_that_does_not_fit_is_exit_5_and_writes_nothing(scratch: str, env: dict[str, str]) -> None:
    url = f"{scratch}?table=workflow_runs&key=run_id&value=*&write=true"
    doc = json.loads(kv(env, "-u", url, "get", RUNS[0]))
    assert "missing" in kv(env, "-u", url, "set", RUNS[0], json.dumps({"status": "x"}), code=5)
    doc["created_at"] = "not a time"
    kv(env, "-u", url, "set", RUNS[0], json.dumps(doc), code=5)
    assert json.loads(kv(env, "-u", url, "get", RUNS[0]))["created_at"] == "2026-03-30T08:11:12.123456Z"


# -- engines ---------------------------------------------------------------------------------
def test_migrate_export_import_snapshot_and_sync_both_ways(scratch: str, env: dict[str, str], tmp_path: Path) -> None:
    state = f"{scratch}?{STATE}"
    own = f"sqlite://{tmp_path / 'copy.db'}"
    kv(env, "migrate", state, own, "--no-progress", "--verify")
    kv(env, "diff", state, own)
    # back into the table, through a kvctl store: change one value there and copy it back
    kv(env, "-u", own, "set", f"{RUNS[2]}/approval", '"approved"')
    kv(env, "diff", state, own, code=1)
    kv(env, "migrate", own, state + "&write=true", "--no-progress")
    kv(env, "diff", state, own)
    # export / import
    out = tmp_path / "state.jsonl"
    kv(env, "export", state, "-o", str(out))
    assert len(out.read_text().splitlines()) == 1 + 4 * len(RUNS)
    sql(scratch, ("UPDATE workflow_state SET value = 'null' WHERE run_id = $1", (RUNS[1],)))
    kv(env, "import", str(out), state + "&write=true")
    kv(env, "diff", state, own)
    # snapshot create / restore
    snap = tmp_path / "state.kvs"
    kv(env, "snapshot", "create", state, "-o", str(snap))
    sql(scratch, ("UPDATE workflow_state SET value = 'null' WHERE run_id = $1", (RUNS[2],)))
    kv(env, "snapshot", "restore", "--replace", str(snap), state + "&write=true")  # the rows kept their versions
    kv(env, "diff", state, own)
    # sync by comparison, both directions
    kv(env, "-u", own, "set", f"{RUNS[0]}/approval", '"synced"')
    kv(env, "sync", own, state + "&write=true")
    assert kv(env, "-u", state, "get", f"{RUNS[0]}/approval") == '"synced"'
    kv(env, "sync", state, own)
    kv(env, "diff", state, own)


def test_a_toml_profile_holds_the_mapping(gorkflow: str, env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "config" / "kvctl" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[profiles.gork-state]\nurl = "{gorkflow}"\ntable = "workflow_state"\n'
                      'key = ["run_id", "key"]\nvalue = "value"\nversion = "updated_at"\n')
    config.chmod(0o600)
    run = RUNS[0]
    assert kv(env, "-u", "gork-state", "get", f"{run}/approval") == json.dumps("pending")
    assert kv(env, "-u", "gork-state", "count", "--prefix", f"{run}/").strip() == "4"


@pytest.fixture(scope="module")
def typed() -> Iterator[str]:
    """Tables keyed by uuid, by an integer, by (integer, text), by varchar(8) and by a timestamp."""
    with database(service_url("KVCTL_TEST_POSTGRES_URL"), "typed") as url:
        sql(url, """
            CREATE TABLE by_uuid (id uuid PRIMARY KEY, doc jsonb NOT NULL);
            CREATE TABLE by_int (id bigint PRIMARY KEY, note text);
            CREATE TABLE by_pair (n integer NOT NULL, name text NOT NULL, v bytea, PRIMARY KEY (n, name));
            CREATE TABLE by_short (code varchar(8) PRIMARY KEY, v text);
            CREATE TABLE by_time (at timestamptz PRIMARY KEY, v text);
            INSERT INTO by_uuid VALUES ('6f1c2e9a-0000-4000-8000-000000000001', '{"b": 1, "a": [true, null]}'),
                                       ('0a1c2e9a-0000-4000-8000-000000000002', '{}');
            INSERT INTO by_int VALUES (-5, 'minus'), (7, 'seven'), (70, 'seventy'), (123, NULL);
            INSERT INTO by_pair VALUES (1, 'a/b', 'x'), (1, 'c', 'y'), (12, 'a', 'z');""")
        yield url


def test_uuid_integer_and_composite_integer_keys(typed: str, env: dict[str, str]) -> None:
    uuids = f"{typed}?table=by_uuid&key=id&value=doc"
    doc = json.loads(kv(env, "-u", uuids, "get", "6f1c2e9a-0000-4000-8000-000000000001"))
    assert doc == {"a": [True, None], "b": 1}
    assert kv(env, "-u", uuids, "scan", "--keys-only").split() == ["0a1c2e9a-0000-4000-8000-000000000002",
                                                                   "6f1c2e9a-0000-4000-8000-000000000001"]
    assert kv(env, "-u", uuids, "count", "--prefix", "6f").strip() == "1"
    kv(env, "-u", uuids, "get", "6F1C2E9A-0000-4000-8000-000000000001", code=1)  # only the canonical spelling
    ints = f"{typed}?table=by_int&key=id&value=note"
    assert sorted(kv(env, "-u", ints, "scan", "--keys-only").split()) == ["-5", "123", "7", "70"]
    assert kv(env, "-u", ints, "count", "--prefix", "7").strip() == "2"
    assert kv(env, "-u", ints, "get", "70") == "seventy"
    kv(env, "-u", ints, "get", "070", code=1)
    kv(env, "-u", ints + "&write=true", "set", "8", "eight")
    kv(env, "-u", ints + "&write=true", "set", "x8", "eight", code=5)
    assert sql(typed, "SELECT note FROM by_int WHERE id = 8")[0][0] == "eight"
    pairs = f"{typed}?table=by_pair&key=n,name&value=v"
    assert kv(env, "-u", pairs, "scan", "--keys-only").split() == ["1/a/b", "1/c", "12/a"]  # last part as it is
    assert kv(env, "-u", pairs, "count", "--prefix", "1/").strip() == "2"
    assert kv(env, "-u", pairs, "count", "--prefix", "1").strip() == "3"
    assert kv(env, "-u", pairs, "get", "1/a/b") == "x"
    assert kv(env, "-u", pairs + "&write=true", "del", "12/a").strip().endswith("1")


def test_typed_refusals_are_one_line(typed: str, env: dict[str, str]) -> None:
    before = catalog(typed)
    assert "timestamp with time zone" in kv(env, "-u", f"{typed}?table=by_time&key=at&value=v", "count", code=2)
    short = f"{typed}?table=by_short&key=code&value=v&write=true"
    kv(env, "-u", short, "set", "0123456789", "v", code=5)  # longer than varchar(8)
    kv(env, "-u", short, "set", "ok", "nul\x01", code=0)
    assert catalog(typed) != before  # the one row written
    assert sql(typed, "SELECT count(*) FROM by_short")[0][0] == 1
    err = kv(env, "-u", f"{typed}?table=by_uuid&key=id&value=doc&write=true", "set",
             "6f1c2e9a-0000-4000-8000-000000000001", "not json", code=5)
    assert "is not JSON" in err
