"""Running ``python -m kvctl`` as a user would: a real process, a clean environment, its output decoded.

Tests of the command line run kvctl in a subprocess (exit codes, stdout/stderr kept apart, signals)::

    from kvctl.testing.cli import clean_env, run_kvctl

    env = clean_env(tmp_path)
    out = run_kvctl(env, "-u", url, "get", "k")
    assert out.returncode == 1 and out.stdout == ""
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, overload

#: The command that starts kvctl with the interpreter running the tests (its venv, its plugins).
KVCTL: tuple[str, ...] = (sys.executable, "-m", "kvctl")


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """A user environment of its own: HOME and the XDG directories under ``home``, no KVCTL_* variable
    (a developer's profiles, state and settings must not leak into a test)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVCTL_")}
    env.update(XDG_DATA_HOME=str(home / "data"), XDG_CONFIG_HOME=str(home / "config"),
               XDG_STATE_HOME=str(home / "state"), HOME=str(home))
    env.update(extra)
    return env


@overload
def run_kvctl(env: Mapping[str, str] | None, *args: str, input: str | None = None, timeout: float = 300,
              binary: Literal[False] = False, cwd: Path | str | None = None) -> subprocess.CompletedProcess[str]: ...


@overload
def run_kvctl(env: Mapping[str, str] | None, *args: str, input: bytes | None = None, timeout: float = 300,
              binary: Literal[True], cwd: Path | str | None = None) -> subprocess.CompletedProcess[bytes]: ...


def run_kvctl(env: Mapping[str, str] | None, *args: str, input: str | bytes | None = None, timeout: float = 300,
              binary: bool = False, cwd: Path | str | None = None) -> subprocess.CompletedProcess[Any]:
    """Run ``kvctl *args`` to its end and return its exit code and output (text unless ``binary``).

    ``env`` None inherits this process's environment; a hung kvctl fails the test after ``timeout``."""
    return subprocess.run([*KVCTL, *args], env=None if env is None else dict(env), input=input,
                          capture_output=True, text=not binary, timeout=timeout, cwd=cwd)


def start_kvctl(env: Mapping[str, str] | None, *args: str, **popen: Any) -> subprocess.Popen[Any]:
    """Start ``kvctl *args`` without waiting (for signals, watchers, concurrent writers); stdout and
    stderr are pipes unless ``popen`` says otherwise."""
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([*KVCTL, *args], env=None if env is None else dict(env), **popen)


def interrupt(proc: subprocess.Popen[Any], sig: int = signal.SIGINT, timeout: float = 60) -> tuple[int, str, str]:
    """Send ``sig`` (Ctrl-C by default) to a started kvctl and wait for it: its exit code and decoded
    output.  A kvctl that does not stop within ``timeout`` is killed and the test fails."""
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"kvctl did not stop within {timeout}s of signal {sig}") from None
    return proc.returncode, _text(out), _text(err)


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", "replace")


def read_commands(url: str, other: str, out: Path, key: str = "k") -> list[list[str]]:
    """Every command that only reads the store at ``url``, as a user types it: what the read intent
    (``open_url(url, access="read")``) covers, so none may create, change or upgrade that store.

    ``other`` is an existing store to compare with, copy and sync to; ``out`` a directory for the
    files export and snapshot write; ``key`` the key get and ttl ask for."""
    return [
        ["-u", url, "get", key],
        ["-u", url, "scan"],
        ["-u", url, "count"],
        ["-u", url, "ttl", key],
        ["-u", url, "stats"],
        ["-u", url, "ping", "--count", "1"],
        ["export", url, "-o", str(out / "out.jsonl")],
        ["snapshot", "create", url, "-o", str(out / "out.kvs")],
        ["diff", url, other],
        ["diff", other, url],
        ["migrate", url, other, "--no-progress"],
        ["sync", url, other],
    ]


def write_commands(url: str, source: str, out: Path, key: str = "k") -> list[list[str]]:
    """Every command that writes into the store at ``url``, as a user types it: what a database
    kvctl did not create must refuse without ``?create=true``, changing nothing.

    ``source`` is an existing store to copy and sync from; ``out`` a directory where the export
    and the snapshot that import and restore read are written first (by
    :func:`write_inputs`); ``key`` the key set, expire, persist and del name."""
    return [
        ["-u", url, "set", key, "v"],
        ["-u", url, "expire", key, "1h"],
        ["-u", url, "persist", key],
        ["-u", url, "del", key],
        ["import", str(out / "in.jsonl"), url],
        ["migrate", source, url, "--no-progress"],
        ["snapshot", "restore", str(out / "in.kvs"), url],
        ["sync", source, url],
    ]


def write_inputs(env: Mapping[str, str] | None, source: str, out: Path) -> None:
    """The export and the snapshot of ``source`` that :func:`write_commands` import and restore."""
    for args in (["export", source, "-o", str(out / "in.jsonl")],
                 ["snapshot", "create", source, "-o", str(out / "in.kvs")]):
        done = run_kvctl(env, *args)
        if done.returncode != 0:
            raise AssertionError(f"kvctl {' '.join(args)}: {done.stderr}")
