# What the service scripts share: sourced by tests/services/NAME.sh, never run on its own
# (tests/services.sh skips the files whose name starts with "_").
#
# Every helper here reads or writes only the paths it is given: the scripts keep their files under
# "$KVCTL_SERVICES_DIR/NAME/" and stop only the PIDs they recorded there.

log() { echo "$(basename "$0"): $*" >&2; }

# A process counts as gone when it no longer exists or is a zombie (exited daemons are reaped
# slowly on these machines).
alive() {
  local pid="$1" state
  [ -n "$pid" ] && [ -r "/proc/$pid/status" ] || return 1
  state="$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)"
  [ -n "$state" ] && [ "$state" != "Z" ]
}

gone() { ! alive "$1"; }

# running PIDFILE PORTFILE: the recorded server is alive and its port is known.
running() {
  [ -f "$1" ] && alive "$(cat "$1")" && [ -f "$2" ]
}

# wait_until SECONDS COMMAND...: retry COMMAND every 0.1 s until it succeeds.
wait_until() {
  local tries=$(( $1 * 10 )); shift
  local i
  for i in $(seq 1 "$tries"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  return 1
}

# apt_install PACKAGE...: Debian packages, for a machine that lacks a server.
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update >&2
  apt-get install -y --no-install-recommends "$@" >&2
}

# free_port [PREFERRED]: PREFERRED if it is free on 127.0.0.1, else any free port.
free_port() {
  python3 - "${1:-0}" <<'PY'
import socket, sys
for wanted in (int(sys.argv[1]), 0):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
        try:
            s.bind(("127.0.0.1", wanted))
        except OSError:
            continue
        print(s.getsockname()[1])
        break
PY
}

# show_log FILE: the end of a server's log, when it failed to start.
show_log() { tail -n 20 "$1" >&2 2>/dev/null || true; }

# stop_pids SIGNAL PIDFILE...: send SIGNAL to every recorded PID still alive, forget the PID files,
# then wait up to 30 s for each (exit 1 if one stays).  Sets `stopped` to the PIDs signalled.
stop_pids() {
  local signal="$1" f pid; shift
  stopped=()
  for f in "$@"; do
    [ -f "$f" ] || continue
    pid="$(cat "$f")"
    if alive "$pid"; then
      kill "-$signal" "$pid" 2>/dev/null || true
      stopped+=("$pid")
    fi
    rm -f "$f"
  done
  for pid in ${stopped[@]+"${stopped[@]}"}; do
    if ! wait_until 30 gone "$pid"; then
      log "process $pid did not stop within 30 s"
      exit 1
    fi
  done
}

# report_stopped: one line saying what stop_pids stopped.
report_stopped() {
  if [ "${#stopped[@]}" = 0 ]; then log "not running"; else log "stopped pids ${stopped[*]}"; fi
}

# dispatch START STOP ARG: the command line every service script takes.
dispatch() {
  case "${3:-}" in
    start) "$1" ;;
    stop) "$2" ;;
    *) echo "usage: tests/services/$(basename "$0") start|stop" >&2; exit 2 ;;
  esac
}
