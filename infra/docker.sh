#!/usr/bin/env bash
# The project's own dockerd (Debian docker.io 20.10), isolated from any system one:
#   socket     $ONCOLOGY_INFRA_DIR/docker/docker.sock
#   data-root  $ONCOLOGY_INFRA_DIR/docker/data     (images, containers: can grow large)
#   exec-root  $ONCOLOGY_INFRA_DIR/docker/exec     (its containerd runs under here)
#   pidfile    $ONCOLOGY_INFRA_DIR/docker/dockerd.pid, log dockerd.log
#   bridge     $ONCOLOGY_DOCKER_BRIDGE at $ONCOLOGY_DOCKER_BIP (defaults onc-XXXXXXXX and
#              172.28.N.1/24, derived from the state folder), created here, deleted by `down`
#   runtime    infra/runc-oom-wrapper (default): runc with negative oomScoreAdj set to 0
#
# Usage: infra/docker.sh up|down|env|status
#   up      install docker.io if missing, start dockerd, wait until it answers
#   down    stop dockerd (and its containerd and containers), remove the bridge
#   env     print  export DOCKER_HOST=unix://...  and  export DOCKER_BUILDKIT=1
#   status  exit 0 if it runs
#
# Use the Debian client /usr/bin/docker: the other docker on PATH has no
# BuildKit, so `--secret` builds fail with it.
set -euo pipefail
# shellcheck source=infra/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

D=$INFRA_DIR/docker
# Unix socket paths are limited to 107 bytes; containerd's sockets live under
# the exec-root. With a deep checkout, keep the sockets under /run instead.
if [ ${#D} -le 60 ]; then
  RUN=$D
else
  RUN=/run/oncology-docker-$(printf %s "$D" | sha256sum | cut -c1-12)
fi
SOCK=$RUN/docker.sock
EXEC_ROOT=$RUN/exec
PIDFILE=$D/dockerd.pid
LOG=$D/dockerd.log
# Bridge name and subnet derive from the state folder, so that two checkouts
# (or a test instance) on one machine get different ones.
HASH=$(printf %s "$D" | sha256sum)
BRIDGE=${ONCOLOGY_DOCKER_BRIDGE:-onc-${HASH:0:8}}
BIP=${ONCOLOGY_DOCKER_BIP:-172.28.$((16#${HASH:8:2} % 200 + 20)).1/24}
WRAPPER=$INFRA_LIB_DIR/runc-oom-wrapper
DOCKER=/usr/bin/docker

dockerd_pid() {
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
  pid_is "$pid" "--pidfile $PIDFILE" && echo "$pid"
}

answers() { DOCKER_HOST=unix://$SOCK "$DOCKER" version --format '{{.Server.Version}}' >/dev/null 2>&1; }

print_env() {
  echo "export DOCKER_HOST=unix://$SOCK"
  echo "export DOCKER_BUILDKIT=1"
}

bridge_up() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add name "$BRIDGE" type bridge
    echo "$BRIDGE" >"$D/bridge.created"
  fi
  ip addr show dev "$BRIDGE" | grep -qF " ${BIP} " || ip addr add "$BIP" dev "$BRIDGE" 2>/dev/null || true
  ip link set "$BRIDGE" up
}

cleanup_network() {
  # the bridge this state folder created (its name may predate a change of default)
  [ -s "$D/bridge.created" ] && BRIDGE=$(cat "$D/bridge.created")
  # dockerd leaves its iptables rules for the bridge behind (MASQUERADE, FORWARD,
  # DOCKER chains): delete those that name it.
  local table rule
  if command -v iptables >/dev/null; then
    for table in nat filter; do
      { iptables -t "$table" -S 2>/dev/null | grep -E -- "-A .*(-i|-o) $BRIDGE( |$)" || true; } | while read -r rule; do
        # shellcheck disable=SC2086
        iptables -t "$table" ${rule/#-A/-D} 2>/dev/null || true
      done
    done
  fi
  if [ -f "$D/bridge.created" ] && ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link delete "$BRIDGE" type bridge 2>/dev/null || ip link delete "$BRIDGE" || true
  fi
  rm -f "$D/bridge.created"
}

up() {
  local t0
  t0=$(date +%s.%N)
  if dockerd_pid >/dev/null && answers; then
    log "dockerd already running (pid $(dockerd_pid)), DOCKER_HOST=unix://$SOCK"
    return 0
  fi
  need_root
  ensure_apt docker.io iptables iproute2 curl
  [ -x "$DOCKER" ] || die "$DOCKER missing after installing docker.io"
  [ -x "$WRAPPER" ] || chmod +x "$WRAPPER" 2>/dev/null || die "$WRAPPER is not executable"
  local old
  if old=$(dockerd_pid); then
    log "dockerd pid $old does not answer: restarting it"
    stop_pid "$old" 30
  fi
  mkdir -p "$D/data" "$RUN" "$EXEC_ROOT"
  [ "$RUN" = "$D" ] || ln -sfn "$RUN" "$D/run"
  rm -f "$SOCK"
  echo '{}' >"$D/daemon.json" # keeps /etc/docker/daemon.json out of it
  bridge_up
  # setsid: own session, so the caller's terminal signals do not reach it
  setsid dockerd \
    --config-file "$D/daemon.json" \
    --host "unix://$SOCK" \
    --data-root "$D/data" \
    --exec-root "$EXEC_ROOT" \
    --pidfile "$PIDFILE" \
    --bridge "$BRIDGE" \
    --ip 127.0.0.1 \
    --add-runtime "oncology-runc=$WRAPPER" \
    --default-runtime oncology-runc \
    --exec-opt native.cgroupdriver=cgroupfs \
    </dev/null >>"$LOG" 2>&1 &
  local pid=$! i
  for ((i = 0; i < 300; i++)); do
    answers && break
    pid_alive "$pid" || { tail -n 20 "$LOG" >&2; die "dockerd exited; log: $LOG"; }
    sleep 0.1
  done
  answers || { tail -n 20 "$LOG" >&2; stop_pid "$pid" 10; die "dockerd did not answer within 30 s; log: $LOG"; }
  log "dockerd up in $(elapsed "$t0")s (pid $pid, storage $(DOCKER_HOST=unix://$SOCK "$DOCKER" info -f '{{.Driver}}'), DOCKER_HOST=unix://$SOCK"
}

down() {
  local pid i
  if pid=$(dockerd_pid); then
    # dockerd stops its containers and its containerd on SIGTERM (15 s per container at most)
    stop_pid "$pid" 40
    log "dockerd (pid $pid) stopped"
  else
    log "dockerd not running"
  fi
  rm -f "$PIDFILE"
  # anything still using this exec-root (containerd, shims) was started by this dockerd
  for i in $(pgrep -f -- "$EXEC_ROOT/" || true); do
    [ "$i" = "$$" ] && continue
    log "left over: pid $i ($(tr '\0' ' ' <"/proc/$i/cmdline" | cut -c1-80)): stopping it"
    stop_pid "$i" 5
  done
  # mounts left under the data or exec root (overlay layers, netns, shm)
  { grep -oE " ($D|$RUN)/[^ ]*" /proc/mounts 2>/dev/null || true; } | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  rm -f "$SOCK"
  # the short socket folder under /run (deep checkouts only) holds nothing of value
  [ "$RUN" = "$D" ] || rm -rf --one-file-system "$RUN" "$D/run"
  cleanup_network
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) print_env ;;
  status)
    if dockerd_pid >/dev/null && answers; then
      log "running (pid $(dockerd_pid)), DOCKER_HOST=unix://$SOCK"
    else
      log "not running"
      exit 3
    fi
    ;;
  *)
    echo "usage: $0 up|down|env|status" >&2
    exit 2
    ;;
esac
