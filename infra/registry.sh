#!/usr/bin/env bash
# A local container registry: CNCF distribution (Debian package docker-registry)
# on 127.0.0.1:$ONCOLOGY_REGISTRY_PORT (default 5000), deletes enabled.
# State: $ONCOLOGY_INFRA_DIR/registry/ (data/, registry.yml, registry.pid, registry.log).
#
# Usage: infra/registry.sh up|down|status
#
# docker treats 127.0.0.0/8 as an insecure registry by default:
#   docker tag IMG 127.0.0.1:5000/NAME:TAG && docker push 127.0.0.1:5000/NAME:TAG
# podman/skopeo need --tls-verify=false. /v2/_catalog lists the repositories.
set -euo pipefail
# shellcheck source=infra/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PORT=${ONCOLOGY_REGISTRY_PORT:-5000}
D=$INFRA_DIR/registry
PIDFILE=$D/registry.pid
CONFIG=$D/registry.yml
LOG=$D/registry.log
URL=http://127.0.0.1:$PORT

registry_pid() {
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
  pid_is "$pid" "serve $CONFIG" && echo "$pid"
}

answers() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL/v2/")" = 200 ]; }

up() {
  local t0 pid
  t0=$(date +%s.%N)
  if pid=$(registry_pid) && answers; then
    log "already running (pid $pid) at $URL"
    return 0
  fi
  need_root
  ensure_apt docker-registry curl
  if pid=$(registry_pid); then
    log "pid $pid does not answer: restarting it"
    stop_pid "$pid" 10
  fi
  port_listening "$PORT" && die "127.0.0.1:$PORT is already taken by another process (set ONCOLOGY_REGISTRY_PORT)"
  mkdir -p "$D/data"
  cat >"$CONFIG" <<EOF
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $D/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$PORT
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 30s
    threshold: 3
EOF
  # the package's binary; on Debian it is /usr/bin/docker-registry
  local bin
  bin=$(command -v docker-registry) || die "docker-registry not found after installing it"
  setsid "$bin" serve "$CONFIG" </dev/null >>"$LOG" 2>&1 &
  pid=$!
  echo "$pid" >"$PIDFILE"
  await_started registry "$pid" "$LOG" answers
  log "up in $(elapsed "$t0")s (pid $pid) at $URL"
}

down() {
  local pid
  if pid=$(registry_pid); then
    stop_pid "$pid" 10
    log "stopped (pid $pid)"
  else
    log "not running"
  fi
  rm -f "$PIDFILE"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status)
    if registry_pid >/dev/null && answers; then
      log "running (pid $(registry_pid)) at $URL"
    else
      log "not running"
      exit 3
    fi
    ;;
  *)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac
