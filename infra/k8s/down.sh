#!/usr/bin/env bash
# Stop the local cluster started by up.sh and undo what it changed:
# processes (by PID), pod containers, mounts under the state directory,
# the second node (its dockerd and data, network namespace, veth, route,
# FORWARD rules, forwarders),
# KUBE-* iptables chains, the node address on lo, sysctls, and the cluster
# data (etcd, kubelet dirs).  PKI, tokens and logs stay in the state directory
# (--purge removes it all).  dockerd is stopped only if up.sh started it
# (ONCOLOGY_K8S_KEEP_DOCKER=1 keeps it).   Idempotent.  Needs root.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
need_root
lock_state
purge=0
[ "${1:-}" = --purge ] && purge=1

K8S_STARTED_DOCKER=0 K8S_ADDED_NODE_IP="" K8S_NODE2=0
# shellcheck disable=SC1090
[ -f "$STATE_ENV" ] && . "$STATE_ENV"

# 1. the kubelets first, so that they do not restart what we remove
stop_proc kubelet 20
stop_proc kubelet-node2 20

# the second node: its pod containers, kube-proxy, dockerd (and its
# containerd and shims), forwarders, mounts, network
if [ "$K8S_NODE2" = 1 ] || netns_exists "$NODE2_NETNS" || [ -d "$NODE2_RUN" ]; then
  if node2_docker info >/dev/null 2>&1; then
    ids=$(node2_docker ps -aq)
    # shellcheck disable=SC2086
    [ -z "$ids" ] || node2_docker rm -f -v $ids >/dev/null || true
  fi
  stop_proc kube-proxy-node2
  stop_proc dockerd-node2 30
  for i in $(pgrep -f -- "$NODE2_RUN/" || true); do
    log "left over from the second node's dockerd: pid $i: stopping it"
    kill -KILL "$i" 2>/dev/null || true
  done
  for f in "$RUN"/fwd-*.pid; do
    [ -e "$f" ] || continue
    f=${f##*/}
    K8S_STOP_GROUP=1 stop_proc "${f%.pid}" 5
  done
  unmount_under "$NODE2_RUN"
  [ -d "$K8S_STATE" ] && unmount_under "$NODE2_STATE"
  while iptables -w -D FORWARD -i "$NODE2_VETH_HOST" -j ACCEPT -m comment --comment oncology-k8s-node2 2>/dev/null; do :; done
  while iptables -w -D FORWARD -o "$NODE2_VETH_HOST" -j ACCEPT -m comment --comment oncology-k8s-node2 2>/dev/null; do :; done
  ip route del "$NODE2_POD_CIDR" 2>/dev/null || true
  netns_exists "$NODE2_NETNS" && { ip netns delete "$NODE2_NETNS" || log "could not delete network namespace $NODE2_NETNS"; }
  ip link show "$NODE2_VETH_HOST" >/dev/null 2>&1 && ip link delete "$NODE2_VETH_HOST"
  rm -rf "$NODE2_RUN" "$NODE2_STATE"
fi

# 2. pod containers (dockershim labels every container it creates)
if docker_env "" 2>/dev/null && docker_cli info >/dev/null 2>&1; then
  ids=$(docker_cli ps -aq --filter label=io.kubernetes.docker.type)
  if [ -n "$ids" ]; then
    log "removing $(echo "$ids" | wc -l) pod container(s)"
    # shellcheck disable=SC2086
    docker_cli rm -f -v $ids >/dev/null || true
  fi
fi

# 3. kube-proxy, then its rules; then the control plane
stop_proc kube-proxy
if [ -x "$K8S_BIN/kube-proxy" ]; then
  "$K8S_BIN/kube-proxy" --cleanup >"$LOGS/kube-proxy-cleanup.log" 2>&1 || true
fi
stop_proc kube-scheduler
stop_proc kube-controller-manager
stop_proc kube-apiserver
stop_proc etcd

# 4. mounts the kubelet made (secret/projected tmpfs volumes ...)
[ -d "$K8S_STATE" ] && unmount_under "$K8S_STATE"

# 5. iptables: chains of the kubelet (KUBE-FIREWALL, KUBE-MARK-*, ...) and
#    whatever kube-proxy --cleanup left
cleanup_kube_chains

# 6. node address, sysctls, host log dirs
if [ -n "$K8S_ADDED_NODE_IP" ] && lo_has_ip "$K8S_ADDED_NODE_IP"; then
  log "removing $K8S_ADDED_NODE_IP from lo"
  ip addr del "$K8S_ADDED_NODE_IP/32" dev lo
fi
for v in $(compgen -v K8S_SYSCTL_ || true); do
  sysctl -qw "${!v}" >/dev/null 2>&1 || log "could not restore ${!v}"
done
for v in $(compgen -v K8S_CREATED_ || true); do
  rm -rf "${!v}"
done

# 7. the container engine, if up.sh started it
if [ "$K8S_STARTED_DOCKER" = 1 ] && [ "${ONCOLOGY_K8S_KEEP_DOCKER:-0}" != 1 ] && [ -x "$REPO_ROOT/infra/docker.sh" ]; then
  log "stopping dockerd (started by up.sh)"
  "$REPO_ROOT/infra/docker.sh" down >&2 || true
fi

# 8. cluster data
if [ -d "$K8S_STATE" ]; then
  [ "$SOCK_DIR" = "$RUN" ] || rm -rf "$SOCK_DIR"
  rm -rf "$K8S_STATE/etcd" "$K8S_STATE/kubelet" "$K8S_STATE/dockershim" "$RUN" \
         "$K8S_STATE/apiserver" "$K8S_STATE/controller-manager" "$K8S_STATE/scheduler"
  [ "$purge" = 1 ] && rm -rf "$K8S_STATE"
fi
log "cluster down"
