#!/usr/bin/env bash
# The whole test suite from a fresh clone: install what the tests need, start the real servers
# (Redis, Redis Cluster, PostgreSQL, libSQL: tests/services.sh), check lint, types and the architecture,
# run the CI performance gate, then every test (pytest's summary is the last line).  `.ci/run` calls exactly this.
#   bash tests/run.sh              everything
#   bash tests/run.sh -k sqlite    extra arguments go to pytest (-n 0: one process, no workers)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
# tools installed below (lint-imports, kvctl) come from this interpreter's environment
PATH="$("$PY" -c 'import os, sys; print(os.path.dirname(sys.executable))'):$PATH"
export PATH

echo "== installing kvctl with its test dependencies"
"$PY" -m pip install --quiet --disable-pip-version-check -e '.[test]' -e tests/outside_plugin -e tests/bench_plugin

echo "== browser for the indexeddb backend (Debian's chromium); valgrind for the performance gate"
command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
command -v sqlite3 >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sqlite3 >/dev/null; }  # the other-program writer in tests/backends/sqlite/test_other_writers.py
command -v valgrind >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }

echo "== starting servers"
# Stop at the end only what this run started: servers a developer already runs (their env file
# exists) are used and left running.
services_dir="${KVCTL_SERVICES_DIR:-/tmp/kvctl-services}"
already_running=false
if [ -s "$services_dir/env" ]; then already_running=true; fi
bash tests/services.sh start
if [ "$already_running" = false ]; then
    trap 'bash tests/services.sh stop >/dev/null 2>&1 || true' EXIT
fi
export KVCTL_SERVICES=required  # a test that needs a server fails, never skips, when one is missing

echo "== ruff, mypy, import contracts"
"$PY" -m ruff check .
"$PY" -m mypy
lint-imports

echo "== performance gate: instructions and allocations per op fail the run, times are reported (bench/ci/suite-ci.toml)"
kvctl bench --suite bench/ci/suite-ci.toml --baseline bench/ci/baseline-ci.json

echo "== tests"
# Two workers (the CI machine has two cores); a file's tests stay on one worker, so a module's
# server fixtures start once and a file's whole-database tests never meet each other.
"$PY" -m pytest -n 2 --dist loadfile "$@"
