#!/usr/bin/env bash
# PostgreSQL for the tests: tests/services/postgres.sh start|stop  (called by tests/services.sh)
#
# start: uses the PostgreSQL 15 binaries if present (else installs Debian's `postgresql`), creates a
# cluster under "$KVCTL_SERVICES_DIR/postgres/data" (initdb refuses root, so as root every server
# tool runs as the `postgres` user), listens on 127.0.0.1 only on a free port plus a unix socket in
# "$KVCTL_SERVICES_DIR/postgres/sock", creates the database kvctl_test and prints on stdout exactly
#   export KVCTL_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:PORT/kvctl_test
# Everything else goes to stderr.  Already running: prints the URL again.
#
# Authentication is `trust` (any password is accepted), except for members of the group role
# kvctl_password_auth over TCP, which must give a real scram-sha-256 password: the fault tests
# create a member to check that a wrong password is reported as an authentication error.
#
# The server runs with fsync=off and synchronous_commit=off: a test server's durability does not
# matter and every commit would otherwise wait for a flush.  KVCTL_POSTGRES_SERVER_OPTIONS replaces
# those options (set it to "" for PostgreSQL's defaults, as bench/postgres_bench.py does).
# A restart reuses the previous port when it is free, so the URL stays the same.
#
# stop: SIGINT (PostgreSQL's "fast" shutdown) to the recorded postmaster PID, then waits for it.
set -euo pipefail

base="${KVCTL_SERVICES_DIR:-/tmp/kvctl-services}/postgres"
data="$base/data"
sock="$base/sock"
pidfile="$base/postmaster.pid"
portfile="$base/port"
logfile="$base/server.log"
database="kvctl_test"
password_group="kvctl_password_auth"

# shellcheck source=tests/services/_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

# initdb and pg_ctl refuse to run as root.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

find_bindir() {
  local dir
  if [ -x /usr/lib/postgresql/15/bin/initdb ]; then echo /usr/lib/postgresql/15/bin; return; fi
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -z "$dir" ] || [ ! -x "$dir/initdb" ]; then
    log "PostgreSQL binaries not found: installing Debian's postgresql package"
    apt_install postgresql
    dir="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
  fi
  echo "$dir"
}

print_url() {
  echo "export KVCTL_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:$(cat "$portfile")/$database"
}

start() {
  if running "$pidfile" "$portfile"; then
    log "already running (pid $(cat "$pidfile"))"
    print_url
    return
  fi
  local bin port pid
  bin="$(find_bindir)"
  mkdir -p "$base" "$sock"
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$base" "$sock"
    if ! runuser -u postgres -- test -w "$base"; then
      log "the postgres user cannot reach $base: set KVCTL_SERVICES_DIR to a directory it can traverse"
      exit 1
    fi
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    log "initdb in $data"
    as_pg "$bin/initdb" -D "$data" -U postgres -A trust --no-sync -E UTF8 --locale=C >&2
    # First match wins: members of the password group must authenticate for real over TCP.
    local hba="$data/pg_hba.conf"
    { echo "host all +$password_group 127.0.0.1/32 scram-sha-256"; cat "$hba"; } > "$hba.new"
    mv "$hba.new" "$hba"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$hba"; fi
  fi
  port="$(free_port "$(cat "$portfile" 2>/dev/null || echo 0)")"  # the URL stays the same
  local options="${KVCTL_POSTGRES_SERVER_OPTIONS--c fsync=off -c synchronous_commit=off}"
  log "starting on 127.0.0.1:$port (socket dir $sock) ${options:+with $options}"
  as_pg "$bin/pg_ctl" -w -t 60 -D "$data" -l "$logfile" \
    -o "-p $port -c listen_addresses=127.0.0.1 -k $sock $options" start >&2 || {
      show_log "$logfile"
      exit 1
    }
  pid="$(head -n 1 "$data/postmaster.pid")"
  echo "$port" > "$portfile"
  echo "$pid" > "$pidfile"
  if ! as_pg "$bin/psql" -h "$sock" -p "$port" -U postgres -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = '$database'" | grep -q 1; then
    as_pg "$bin/createdb" -h "$sock" -p "$port" -U postgres "$database" >&2
  fi
  as_pg "$bin/psql" -q -h "$sock" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -c \
    "DO \$\$ BEGIN CREATE ROLE $password_group NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END \$\$" >&2
  log "started (pid $pid)"
  print_url
}

# stop: SIGINT is PostgreSQL's "fast" shutdown.
stop() {
  stop_pids INT "$pidfile"
  report_stopped
}

dispatch start stop "${1:-}"
