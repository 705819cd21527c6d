"""How kvctl words what it says: notices are warnings, counts are plural and grouped, stats and
histograms read as text, not as Python values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kvctl.registry import open_sync
from kvctl.store import Record
from tests.cli.test_json import documents, in_process


@pytest.fixture
def cli(env: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    return in_process(env, capsys, monkeypatch)


def _fill(url: str, keys: list[bytes]) -> None:
    store = open_sync(url)
    try:
        store.set_many(Record(k, b"v") for k in keys)
    finally:
        store.close()


def test_an_engine_notice_is_a_warning_line(cli: Any, tmp_path: Path) -> None:
    src, dst = f"sqlite://{tmp_path / 'a.db'}", f"sqlite://{tmp_path / 'b.db'}"
    _fill(src, [b"k"])
    code, _, err = cli("migrate", src, dst, "--resume")
    assert code == 0
    assert "kvctl: warning: no checkpoint of this migrate to resume: starting from the beginning\n" in err


def test_diff_of_different_stores_exits_1_with_no_error_line(cli: Any, tmp_path: Path) -> None:
    a, b = f"sqlite://{tmp_path / 'a.db'}", f"sqlite://{tmp_path / 'b.db'}"
    _fill(a, [b"k%05d" % i for i in range(1500)])
    _fill(b, [b"k00000"])
    code, out, err = cli("diff", a, b)
    assert code == 1 and err == ""
    assert "differ: 1,499 missing from B, 0 extra in B, 0 differing (1 equal)" in out
    code, out, err = cli("diff", b, b)
    assert code == 0 and out.endswith("are equal (1 key)\n")
    code, out, err = cli("diff", a, b, "--json")
    assert code == 1 and err == "" and documents(out)[0]["missing"] == 1499


def test_an_unreachable_source_claims_no_saved_progress(cli: Any, tmp_path: Path) -> None:
    code, _, err = cli("migrate", "redis://127.0.0.1:1/0", f"sqlite://{tmp_path / 'b.db'}")
    assert code != 0 and err.startswith("kvctl: error:")
    assert "progress saved" not in err and "--resume" not in err


def test_stats_shows_nested_values_as_rows_and_byte_counts_as_sizes(cli: Any, tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'f'}"
    _fill(url, [b"a", b"b"])
    code, out, _ = cli("-u", url, "stats")
    assert code == 0
    assert not any(c in out for c in "{}[]'"), out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[3:] if line.strip()}
    assert rows["segment_files"][0].startswith("000000000001.log=") and rows["segment_files"][1] == "B"
    assert rows["damage"] == ["-"] and rows["last_compaction"] == ["-"]
    assert rows["feed_retention_bytes"] == ["64", "MiB"]
    code, out, _ = cli("-u", url, "stats", "--json")
    doc = documents(out)[0]
    assert doc["damage"] == [] and doc["feed_retention_bytes"] == 64 << 20  # --json keeps raw values


def test_stats_of_a_shard_store_is_one_row_per_child(cli: Any) -> None:
    url = "shard://?child=memory://msg-s1&name=left&weight=1&child=memory://msg-s2&name=right&weight=3"
    code, out, _ = cli("-u", url, "stats")
    assert code == 0 and "left.weight" not in out
    lines = out.splitlines()
    header = next(line.split() for line in lines if "weight_share" in line)
    left = next(line.split() for line in lines if line.split()[:1] == ["left"])
    assert dict(zip(header, left[1:], strict=False))["weight"] == "1.0"
    assert any(line.split()[:1] == ["right"] for line in lines)
