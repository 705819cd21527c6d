#!/usr/bin/env bash
# Redis for the tests: tests/services/redis.sh start|stop  (called by tests/services.sh)
#
# start: installs Debian's redis-server and redis-tools when `redis-server` is missing, then starts
# on 127.0.0.1 only, under "$KVCTL_SERVICES_DIR/redis/":
#   - one standalone server on a free port, plus a unix socket (standalone/redis.sock);
#   - a Redis Cluster of 3 masters (no replicas) on free ports whose bus ports (+10000) are free too.
# It waits until the standalone answers PING and every cluster node reports cluster_state:ok, records
# the PIDs, and prints on stdout exactly
#   export KVCTL_TEST_REDIS_URL=redis://127.0.0.1:PORT/0
#   export KVCTL_TEST_REDIS_UNIX_URL=unix://DIR/standalone/redis.sock?db=0
#   export KVCTL_TEST_REDIS_CLUSTER_URL=redis+cluster://127.0.0.1:P1?seeds=127.0.0.1:P2,127.0.0.1:P3
# (kvctl's URL parser reads one host:port per URL, so further seeds go in the seeds option.)
# Everything else goes to stderr.  Already running: says so and prints the URLs again.
#
# stop: SIGTERM to every recorded PID, then waits (a zombie counts as stopped).
set -euo pipefail

base="${KVCTL_SERVICES_DIR:-/tmp/kvctl-services}/redis"
single="$base/standalone"
cluster="$base/cluster"
nodes=3

# shellcheck source=tests/services/_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

ensure_installed() {
  if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then return; fi
  log "redis-server not found: installing Debian's redis-server and redis-tools"
  apt_install redis-server redis-tools
}

# Free TCP ports on 127.0.0.1 whose cluster bus port (port + 10000) is free as well.
free_ports() {
  python3 - "$1" <<'EOF'
import random, socket, sys

def free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True

wanted, found = int(sys.argv[1]), []
while len(found) < wanted:
    port = random.randint(20000, 55000)
    if port not in found and free(port) and free(port + 10000):
        found.append(port)
print(" ".join(map(str, found)))
EOF
}

pong() { [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ]; }
cluster_ok() { redis-cli -h 127.0.0.1 -p "$1" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; }

# start_server DIR PORT [extra redis-server arguments...]
start_server() {
  local dir="$1" port="$2"; shift 2
  mkdir -p "$dir"
  rm -f "$dir/redis.pid"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --dir "$dir" "$@" >&2
  if ! wait_until 10 pong "$port"; then
    log "redis-server on port $port did not answer PING; its log:"
    show_log "$dir/redis.log"
    return 1
  fi
  wait_until 5 test -s "$dir/redis.pid"
  cp "$dir/redis.pid" "$dir/pid"
  echo "$port" > "$dir/port"
}

pidfiles() {
  local f
  for f in "$single/pid" "$cluster"/node-*/pid; do
    [ -f "$f" ] && echo "$f"
  done
  return 0
}

all_running() {
  local f count=0
  [ -f "$single/port" ] || return 1
  for f in $(pidfiles); do
    alive "$(cat "$f")" || return 1
    count=$((count + 1))
  done
  [ "$count" = $((nodes + 1)) ]
}

print_urls() {
  local seeds=() i
  echo "export KVCTL_TEST_REDIS_URL=redis://127.0.0.1:$(cat "$single/port")/0"
  echo "export KVCTL_TEST_REDIS_UNIX_URL=unix://$single/redis.sock?db=0"
  for i in $(seq 2 "$nodes"); do seeds+=("127.0.0.1:$(cat "$cluster/node-$i/port")"); done
  echo "export KVCTL_TEST_REDIS_CLUSTER_URL=redis+cluster://127.0.0.1:$(cat "$cluster/node-1/port")?seeds=$(IFS=,; echo "${seeds[*]}")"
}

start() {
  if all_running; then
    log "already running"
    print_urls
    return
  fi
  # A half-started or half-stopped set is stopped and started afresh.
  stop_all quiet
  ensure_installed
  local ports i addrs=()
  read -r -a ports <<< "$(free_ports $((nodes + 1)))"
  log "starting standalone redis on 127.0.0.1:${ports[0]}"
  start_server "$single" "${ports[0]}" --unixsocket "$single/redis.sock" --unixsocketperm 700
  rm -rf "$cluster"
  for i in $(seq 1 "$nodes"); do
    log "starting cluster node $i on 127.0.0.1:${ports[$i]}"
    start_server "$cluster/node-$i" "${ports[$i]}" --cluster-enabled yes \
      --cluster-config-file "$cluster/node-$i/nodes.conf" --cluster-node-timeout 2000
    addrs+=("127.0.0.1:${ports[$i]}")
  done
  redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >&2
  for i in $(seq 1 "$nodes"); do
    if ! wait_until 30 cluster_ok "${ports[$i]}"; then
      log "cluster node 127.0.0.1:${ports[$i]} did not reach cluster_state:ok"
      exit 1
    fi
  done
  log "started: standalone pid $(cat "$single/pid"), cluster pids $(cat "$cluster"/node-*/pid | tr '\n' ' ')"
  print_urls
}

# stop_all [quiet]: SIGTERM every recorded PID, wait for all of them, forget them.
stop_all() {
  local f files
  files="$(pidfiles)"
  for f in $files; do rm -f "$(dirname "$f")/port"; done
  # shellcheck disable=SC2086  # one PID file a word; the paths hold no spaces
  stop_pids TERM $files
  [ "${1:-}" = quiet ] || report_stopped
}

dispatch start stop_all "${1:-}"
