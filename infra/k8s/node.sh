#!/usr/bin/env bash
# The second node of the local cluster (up.sh), for tests of losing a node:
#   node.sh kill    stop it entirely and at once: SIGKILL to its kubelet,
#                   kube-proxy, dockerd, containerd and shims (every process in
#                   its network namespace) and every container's processes
#   node.sh start   start its dockerd, kubelet and kube-proxy again; wait Ready
# Needs root.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
need_root
[ -f "$STATE_ENV" ] && grep -q '^K8S_NODE2=1' "$STATE_ENV" || die "no second node (start the cluster with infra/k8s/up.sh)"

case "${1:-}" in
  kill)
    pids=""
    for c in kubelet-node2 kube-proxy-node2 dockerd-node2; do
      p=$(proc_pid "$c") && pids="$pids $p"
    done
    if node2_docker info >/dev/null 2>&1; then
      for id in $(node2_docker ps -q); do
        p=$(node2_docker inspect -f '{{.State.Pid}}' "$id" 2>/dev/null) && [ "$p" != 0 ] && pids="$pids $p"
      done
    fi
    pids="$pids $(ip netns pids "$NODE2_NETNS" 2>/dev/null | tr '\n' ' ')"
    # the node's forwarders stay: they are the host's side of the link, not the node
    for f in "$RUN"/fwd-node2-*.pid; do
      [ -e "$f" ] || continue
      f=${f##*/}; p=$(proc_pid "${f%.pid}") && pids=$(printf '%s\n' $pids | grep -vx "$p" | tr '\n' ' ')
    done
    [ -n "${pids// /}" ] || die "nothing of the second node runs"
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    # until they are gone (a dying containerd left in place makes the next dockerd wait for it)
    for p in $pids; do
      for ((i = 0; i < 50; i++)); do
        [ -e "/proc/$p" ] && ! grep -q '^State:.*Z' "/proc/$p/status" 2>/dev/null || break
        sleep 0.1
      done
    done
    log "second node killed (pids$pids)"
    ;;
  start)
    for c in dockerd-node2 kubelet-node2 kube-proxy-node2; do
      ! proc_pid "$c" >/dev/null || die "$c still runs"
    done
    t0=$(date +%s.%N)
    rm -f "$NODE2_RUN/exec/containerd/containerd.pid"  # the killed one's
    node2_start_dockerd
    wait_for 30 dockerd-node2 node2_docker info || die "the second node's dockerd did not answer (see $LOGS/dockerd-node2.log)"
    node2_start_kubelet
    node2_start_proxy
    ready() { [ "$(kubectl_k8s get node "$NODE2_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]; }
    wait_for "$READY_TIMEOUT" node ready || die "$NODE2_NAME not Ready after ${READY_TIMEOUT}s"
    log "$NODE2_NAME Ready again after $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')s"
    ;;
  *) echo "usage: $0 kill|start" >&2; exit 2 ;;
esac
