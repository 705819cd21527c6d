"""How the command line fails, through real `kvctl` processes: one line on stderr and the
documented exit code, whatever the backend or the command.

- a TTL too long for kvctl's expiry times is a usage error (2) on every backend;
- a full disk or a file-size limit on stdout is an I/O error (74), never a silent truncation;
- a reader that went away (`kvctl scan | head`) is a quiet 141;
- Python warnings (the file store's recovery notice) print as `kvctl: warning: ...`;
- the internal-error hint names where --debug goes, and it works there;
- an input file named on the command line that cannot be opened is a usage error (2).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from kvctl.errors import UsageError
from kvctl.plugin_kit import deadline_ms
from kvctl.registry import open_url
from kvctl.store import MAX_EXPIRY_MS, Record, now_ms
from tests.families import FACTORIES, families


def kv(env: dict[str, str], *args: str, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    kwargs.setdefault("capture_output", "stdout" not in kwargs)
    if "stdout" in kwargs:
        kwargs["stderr"] = subprocess.PIPE
    return subprocess.run([sys.executable, "-m", "kvctl", *args], env=env, timeout=120, **kwargs)


def one_error_line(proc: subprocess.CompletedProcess[bytes], code: int, *needles: str) -> str:
    err = proc.stderr.decode()
    assert proc.returncode == code, err
    assert err.count("\n") == 1 and err.startswith("kvctl: error: "), err
    assert "Traceback" not in err and "internal error" not in err
    for needle in needles:
        assert needle in err, err
    return err


def sqlite_with(tmp_path: Path, records: list[Record]) -> str:
    url = f"sqlite://{tmp_path / 'data.db'}"
    with open_url(url) as store:
        store.set_many(records)
    return url


# -- TTLs: one range, checked where a TTL becomes a deadline ----------------------------------------
@pytest.mark.parametrize("family", ["sqlite", "lmdb", "file", "memory", "rocksdb", "libsql", "redis", "postgres"])
def test_a_ttl_past_2109_is_a_usage_error_on_every_backend(family: str, env: dict[str, str], tmp_path: Path) -> None:
    if family not in families():
        pytest.skip(f"the {family} plugin does not load here")
    url = FACTORIES[family](tmp_path)
    proc = kv(env, "-u", url, "set", "h", "v", "--ttl", "9999999999999d")
    one_error_line(proc, 2, "--ttl 9999999999999d is out of range", "2109-05-15", "42-bit")
    if family != "memory":  # nothing was written: the key is not found, or the store was never created
        assert kv(env, "-u", url, "get", "h").returncode in (1, 2)


def test_a_long_ttl_within_the_range_is_kept(env: dict[str, str], tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'long.db'}"
    assert kv(env, "-u", url, "set", "h", "v", "--ttl", "30000d").returncode == 0
    left = int(kv(env, "-u", url, "ttl", "--ms", "h").stdout)
    assert 30000 * 86_400_000 - 60_000 < left <= 30000 * 86_400_000


def test_deadline_ms_refuses_expiries_outside_the_version_time_field() -> None:
    assert deadline_ms(None) is None
    assert abs(deadline_ms(1000) - (now_ms() + 1000)) < 1000  # type: ignore[operator]
    assert deadline_ms(MAX_EXPIRY_MS - now_ms() - 60_000) is not None
    for ttl in (MAX_EXPIRY_MS, 10**21, -(10**15)):
        with pytest.raises(UsageError, match="2109-05-15"):
            deadline_ms(ttl)


# -- stdout: a full disk is 74, a reader that went away a quiet 141 ----------------------------------
@pytest.mark.parametrize("args", [["get", "k1"], ["scan"], ["stats", "--json"], ["count"], ["export"], ["--help"]])
def test_a_full_stdout_is_an_io_error(args: list[str], env: dict[str, str], tmp_path: Path) -> None:
    url = sqlite_with(tmp_path, [Record(b"k1", b"v1")])
    with open("/dev/full", "wb") as full:  # the kernel's always-full device, only as the child's stdout
        proc = kv(env, "-u", url, *args, stdout=full)
    one_error_line(proc, 74, "cannot write to standard output: No space left on device")


def _limit_file_size() -> None:  # in the child: a 64 KiB file-size limit, reported as EFBIG
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))


@pytest.mark.parametrize("args", [["get", "big"], ["--values", "hex", "get", "big"], ["export"]])
def test_a_write_cut_short_is_an_error_not_a_truncated_file(args: list[str], env: dict[str, str],
                                                            tmp_path: Path) -> None:
    # Python's own stdout drops the rest of a large write cut short by a limit or a full disk,
    # without an error: the file was silently truncated and the exit status 0.
    url = sqlite_with(tmp_path, [Record(b"big", os.urandom(1 << 20))])
    out = tmp_path / "out"
    with open(out, "wb") as fh:
        proc = kv(env, "-u", url, *args, stdout=fh, preexec_fn=_limit_file_size)
    one_error_line(proc, 74, "cannot write to standard output", "File too large")
    assert out.stat().st_size <= 65536


def _read_a_little_then_close(env: dict[str, str], args: list[str]) -> tuple[int, bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "kvctl", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(10)  # like `head -c 10`: read, then go away
    proc.stdout.close()
    err = proc.stderr.read()
    return proc.wait(timeout=120), err


@pytest.mark.parametrize("args", [["scan"], ["scan", "--json"], ["export"], ["get", "big"]])
def test_a_reader_that_went_away_is_a_quiet_141(args: list[str], env: dict[str, str], tmp_path: Path) -> None:
    records = [Record(b"k%06d" % i, b"v" * 50) for i in range(20_000)]  # ~1.3 MB: many pipe buffers
    url = sqlite_with(tmp_path, [*records, Record(b"big", b"x" * (4 << 20))])
    code, err = _read_a_little_then_close(env, ["-u", url, *args])
    assert (code, err) == (141, b"")  # no traceback, no "Exception ignored" from the exit flush


def test_output_through_the_guard_is_exact(env: dict[str, str], tmp_path: Path) -> None:
    blob = os.urandom(3 << 20)
    url = sqlite_with(tmp_path, [Record(b"big", blob), Record(b"k", b"v")])
    assert kv(env, "-u", url, "get", "big").stdout == blob
    rows = [json.loads(line) for line in kv(env, "-u", url, "scan", "--json", "--keys-only").stdout.splitlines()]
    assert [r["key"] for r in rows] == ["big", "k"]


def test_a_closed_stdout_is_an_io_error(env: dict[str, str], tmp_path: Path) -> None:
    url = sqlite_with(tmp_path, [Record(b"k1", b"v1")])
    for args in (["get", "k1"], ["count"]):
        proc = kv(env, "-u", url, *args, stdout=None, preexec_fn=lambda: os.close(1))  # `kvctl ... >&-`
        one_error_line(proc, 74, "cannot write to standard output")


# -- warnings ------------------------------------------------------------------------------------------
def test_a_recovery_warning_is_one_kvctl_line(env: dict[str, str], tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'store'}"
    for key in ("a", "b"):
        assert kv(env, "-u", url, "set", key, "1").returncode == 0
    (segment,) = sorted((tmp_path / "store").glob("*.log"))
    os.truncate(segment, segment.stat().st_size - 50)  # a torn tail, as after a crash
    proc = kv(env, "-u", url, "count")
    err = proc.stderr.decode()
    assert proc.returncode == 0 and proc.stdout == b"0\n"
    assert err.count("\n") == 1 and err.startswith("kvctl: warning: ") and "torn tail" in err, err
    assert "RecoveryWarning" not in err and ".py:" not in err


def test_any_warning_prints_as_one_line_with_secrets_scrubbed(capsys: pytest.CaptureFixture[str]) -> None:
    from kvctl.cli.context import STATE
    from kvctl.cli.output import show_warning

    STATE.seen_urls.append("redis://:hunter22@db:6379/0")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = show_warning
            warnings.warn("connection to redis://:hunter22@db:6379/0\n  is slow", UserWarning, stacklevel=1)
    finally:
        STATE.seen_urls.pop()
    err = capsys.readouterr().err
    assert err.startswith("kvctl: warning: connection to redis://") and err.endswith(" is slow\n")
    assert err.count("\n") == 1 and "hunter22" not in err and "UserWarning" not in err


# -- --debug -------------------------------------------------------------------------------------------
BOOM = ("import sys, kvctl.registry as r\n"
        "def boom(url, **kw): raise RuntimeError('boom')\n"
        "r.open_url = boom\n"
        "from kvctl.cli.app import main\n"
        "main(sys.argv[1:])\n")


def test_the_internal_error_hint_says_where_debug_goes_and_that_works(env: dict[str, str]) -> None:
    plain = subprocess.run([sys.executable, "-c", BOOM, "-u", "memory://", "count"], env=env, capture_output=True,
                           text=True, timeout=60)
    assert plain.returncode == 70 and plain.stderr.count("\n") == 1
    assert 'kvctl --debug COMMAND ...' in plain.stderr and "Traceback" not in plain.stderr
    debug = subprocess.run([sys.executable, "-c", BOOM, "--debug", "-u", "memory://", "count"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert debug.returncode == 70 and "Traceback" in debug.stderr and "RuntimeError: boom" in debug.stderr


# -- input files named on the command line ------------------------------------------------------------
def test_an_input_file_that_cannot_be_opened_is_a_usage_error(env: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "missing.kvs"
    url = f"file://{tmp_path / 'store'}"
    for args in (["set", "k", "--file", str(tmp_path / "missing")], ["set", "k", "--file", str(tmp_path)],
                 ["snapshot", "verify", str(missing)], ["snapshot", "verify", str(tmp_path)],
                 ["snapshot", "inspect", str(missing)], ["snapshot", "restore", str(missing)],
                 ["snapshot", "restore", str(missing), url],
                 ["snapshot", "create", url, "--since", str(missing), "-o", str(tmp_path / "out.kvs")],
                 ["import", str(tmp_path / "missing.jsonl"), url]):
        one_error_line(kv(env, "-u", url, *args), 2, "cannot read ")
    assert not (tmp_path / "out.kvs").exists()
