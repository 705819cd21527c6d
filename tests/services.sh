#!/usr/bin/env bash
# Start, stop or show the real servers the tests use: tests/services.sh start|stop|status
#
# Each tests/services/NAME.sh implements `start` and `stop` for one server family.  On `start` it
# installs what is missing (Debian packages), starts its servers on 127.0.0.1 only, records their
# PIDs under "$KVCTL_SERVICES_DIR/NAME/", and prints `export KVCTL_TEST_..._URL=...` lines on
# stdout (logs go to stderr).  This script gathers those lines into "$KVCTL_SERVICES_DIR/env",
# which tests/conftest.py reads.  `stop` stops exactly what was started, by the recorded PIDs.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export KVCTL_SERVICES_DIR="${KVCTL_SERVICES_DIR:-/tmp/kvctl-services}"
mkdir -p "$KVCTL_SERVICES_DIR"
envfile="$KVCTL_SERVICES_DIR/env"

case "${1:-}" in
  start)
    : > "$envfile.new"
    for part in "$here"/services/*.sh; do
      [ -e "$part" ] || continue
      case "$(basename "$part")" in _*) continue ;; esac  # shared library, not a service
      bash "$part" start >> "$envfile.new"
    done
    mv "$envfile.new" "$envfile"
    cat "$envfile"
    ;;
  stop)
    for part in "$here"/services/*.sh; do
      [ -e "$part" ] || continue
      case "$(basename "$part")" in _*) continue ;; esac  # shared library, not a service
      bash "$part" stop || true
    done
    rm -f "$envfile"
    ;;
  status)
    if [ -f "$envfile" ]; then cat "$envfile"; else echo "no services started"; fi
    ;;
  *)
    echo "usage: tests/services.sh start|stop|status" >&2
    exit 2
    ;;
esac
