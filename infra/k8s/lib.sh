# Shared helpers for infra/k8s/*.sh (sourced, not executed).
# shellcheck disable=SC2034  # variables are used by the scripts that source this
# shellcheck shell=bash

K8S_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$K8S_LIB_DIR/../.." && pwd)"

# Debian bookworm's `kubernetes` source package carries upstream 1.20.2.
K8S_VERSION="${ONCOLOGY_K8S_VERSION:-1.20.2}"
K8S_CACHE_ROOT="${ONCOLOGY_K8S_CACHE:-/var/cache/oncology/k8s}"
K8S_CACHE="$K8S_CACHE_ROOT/$K8S_VERSION"
K8S_BIN="$K8S_CACHE/bin"
K8S_COMPONENTS="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl"

INFRA_DIR="${ONCOLOGY_INFRA_DIR:-$REPO_ROOT/.infra}"
case "$INFRA_DIR" in /*) ;; *) INFRA_DIR="$PWD/$INFRA_DIR" ;; esac
K8S_STATE="$INFRA_DIR/k8s"

# Debian packages: build (golang-go make rsync), control plane and node
# (etcd, iptables, conntrack, ipset, socat for port-forward), tooling.
K8S_APT_PACKAGES="golang-go make patch rsync jq socat iptables conntrack ipset etcd-server etcd-client openssl ca-certificates curl iproute2 util-linux procps"

log() { printf '[k8s %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "run as root"; }

# apt-get with a wait on the dpkg lock (other jobs may be installing too).
apt_get() {
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@"
}

# Install the Debian packages that are missing; `apt-get update` only when
# something has to be installed.
ensure_apt_packages() {
  local missing="" p
  for p in "$@"; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing="$missing $p"
  done
  [ -z "$missing" ] && return 0
  log "apt-get install:$missing"
  # Keep package scripts from starting system services (etcd-server would
  # otherwise try to start a system etcd on 2379): policy-rc.d "101".
  local policy=0 rc=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && policy=1
  fi
  apt_get update -qq || log "apt-get update failed; trying the install anyway"
  # shellcheck disable=SC2086
  apt_get install -y -qq --no-install-recommends $missing >/dev/null || rc=$?
  [ "$policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ "$rc" = 0 ] || die "apt-get install$missing failed"
}

# --- cluster settings (all overridable) --------------------------------------
NODE_IP="${ONCOLOGY_K8S_NODE_IP:-10.200.0.1}"        # added to lo by up.sh
NODE_NAME="${ONCOLOGY_K8S_NODE_NAME:-oncology-node}"
SERVICE_CIDR="${ONCOLOGY_K8S_SERVICE_CIDR:-10.96.0.0/16}"
SERVICE_IP="${ONCOLOGY_K8S_SERVICE_IP:-10.96.0.1}"     # first address of SERVICE_CIDR
API_PORT="${ONCOLOGY_K8S_API_PORT:-6443}"
ETCD_PORT="${ONCOLOGY_K8S_ETCD_PORT:-2379}"            # peer = +1, metrics = +2
KUBELET_PORT=10250
KUBELET_HEALTHZ_PORT=10248
PROXY_METRICS_PORT=10249
PROXY_HEALTHZ_PORT=10256
CM_PORT=10257
SCHED_PORT=10259
PAUSE_IMAGE="oncology/pause:1"
# Losing a node, tuned for a small cluster (the defaults are 40 s and 300 s):
# the node controller marks a node whose kubelet stopped renewing its lease
# (every 2.5 s: nodeLeaseDurationSeconds 10 in kubelet-config.yaml.in) NotReady
# after NODE_MONITOR_GRACE, which takes its pods out of the Services' endpoints;
# NODE_LOSS_TOLERATION seconds later the pods are deleted and replaced elsewhere.
NODE_MONITOR_GRACE="${ONCOLOGY_K8S_NODE_MONITOR_GRACE:-12s}"
NODE_LOSS_TOLERATION="${ONCOLOGY_K8S_NODE_LOSS_TOLERATION:-5}"
READY_TIMEOUT="${ONCOLOGY_K8S_READY_TIMEOUT:-240}"

PKI="$K8S_STATE/pki"
RUN="$K8S_STATE/run"
LOGS="$K8S_STATE/logs"
STATE_ENV="$RUN/state.env"     # what up.sh changed on the machine, for down.sh
# The kubelet's CRI socket (dockershim): unix socket paths are limited to 107
# bytes, so a deep checkout gets it under /run instead.
if [ ${#RUN} -le 80 ]; then
  SOCK_DIR="$RUN"
else
  SOCK_DIR="/run/oncology-k8s-$(printf %s "$K8S_STATE" | sha256sum | cut -c1-12)"
fi

# One up.sh/down.sh at a time per state directory.
lock_state() {
  [ "${K8S_STATE_LOCKED:-}" = "$K8S_STATE" ] && return 0
  mkdir -p "$K8S_STATE"
  exec 8>"$K8S_STATE/.lock"
  flock 8
  export K8S_STATE_LOCKED="$K8S_STATE"
}
KUBECONFIG_ADMIN="$K8S_STATE/kubeconfig"

# Sysctls the kubelet and kube-proxy set; saved by up.sh, restored by down.sh.
K8S_SYSCTLS="vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.conf.all.route_localnet"

# --- the second node ------------------------------------------------------------
# A second kubelet, kube-proxy and dockerd inside a network namespace that up.sh
# creates: a veth pair to the host (host end NODE2_GW, node end NODE2_IP), its
# own docker bridge and pod range (NODE2_POD_CIDR, routed by the host through
# the veth), and socat forwarders that make the API server and the registry/S3
# ports (NODE2_PORTS) answer on the node's own 127.0.0.1, as on the first node.
# ONCOLOGY_K8S_NODES=1 starts the first node alone.
NODES="${ONCOLOGY_K8S_NODES:-2}"
K8S_HASH=$(printf %s "$K8S_STATE" | sha256sum | cut -c1-8)
NODE2_NAME="${ONCOLOGY_K8S_NODE2_NAME:-oncology-node-2}"
NODE2_IP="${ONCOLOGY_K8S_NODE2_IP:-10.200.1.2}"
NODE2_GW="${ONCOLOGY_K8S_NODE2_GW:-10.200.1.1}"
NODE2_POD_CIDR="${ONCOLOGY_K8S_NODE2_POD_CIDR:-10.244.2.0/24}"
NODE2_BIP="${NODE2_POD_CIDR%.*/*}.1/${NODE2_POD_CIDR#*/}"
NODE2_PORTS="${ONCOLOGY_K8S_NODE2_PORTS:-5000 8333}"  # besides API_PORT
NODE2_NETNS="onc-k8s-$K8S_HASH"
NODE2_VETH_HOST="onck${K8S_HASH}h"
NODE2_VETH_NODE="onck${K8S_HASH}n"
NODE2_STATE="$K8S_STATE/node2"
# dockerd's and containerd's sockets: short paths under /run
NODE2_RUN="/run/onc-k8s-$K8S_HASH-n2"
NODE2_DOCKER_HOST="unix://$NODE2_RUN/docker.sock"
# Its mount namespace (slave of the host's: the host's mounts show in it, its
# own do not leak out), kept by a bind mount of this file: there the kubelet's
# hard-wired host folders (/var/log/pods, /var/log/containers,
# /var/lib/kubelet/device-plugins) are the node's own, or each kubelet's
# garbage collector would delete the other one's pod logs.
NODE2_MNTNS="$NODE2_RUN/ns/mnt"
NODE2_PRIVATE_DIRS="/var/log/pods /var/log/containers /var/lib/kubelet/device-plugins"
netns_exists() { [ -e "/run/netns/$1" ]; }
# node2_docker ARGS: the Debian docker client against the second node's dockerd
node2_docker() { DOCKER_HOST="$NODE2_DOCKER_HOST" docker_cli "$@"; }

# The second node's processes (up.sh starts them; node.sh kills and restarts them).
node2_start_dockerd() {
  # its own dockerd: own socket, data and exec roots, bridge docker0 in the
  # namespace on the node's pod range, no masquerading (pods keep their
  # addresses across nodes), the runc wrapper of infra/docker.sh
  mkdir -p "$NODE2_STATE/docker" "$NODE2_RUN"
  echo '{}' >"$NODE2_STATE/docker/daemon.json"
  rm -f "$NODE2_RUN/dockerd.pid"
  K8S_NETNS="/run/netns/$NODE2_NETNS" K8S_MNTNS="$NODE2_MNTNS" start_proc dockerd-node2 dockerd \
    --config-file "$NODE2_STATE/docker/daemon.json" --host "$NODE2_DOCKER_HOST" \
    --data-root "$NODE2_STATE/docker/data" --exec-root "$NODE2_RUN/exec" --pidfile "$NODE2_RUN/dockerd.pid" \
    --bip "$NODE2_BIP" --ip-masq=false --ip 127.0.0.1 \
    --add-runtime "oncology-runc=$REPO_ROOT/infra/runc-oom-wrapper" --default-runtime oncology-runc \
    --exec-opt native.cgroupdriver=cgroupfs
}
# start_kubelet NAME STATE KUBECONFIG DOCKER_ENDPOINT SOCK_DIR NODE_IP NODE_NAME: one node's kubelet
# (dockershim on that node's dockerd; its config, root and dockershim folders under STATE).
start_kubelet() {
  local name=$1 state=$2 kubeconfig=$3 docker=$4 socks=$5 ip=$6 node=$7
  mkdir -p "$state/kubelet" "$state/dockershim" "$socks"
  start_proc "$name" "$K8S_BIN/kubelet" \
    --config="$state/kubelet-config.yaml" --kubeconfig="$kubeconfig" \
    --root-dir="$state/kubelet" --cert-dir="$state/kubelet/pki" \
    --container-runtime=docker --docker-endpoint="$docker" \
    --container-runtime-endpoint="unix://$socks/dockershim.sock" \
    --image-service-endpoint="unix://$socks/dockershim.sock" \
    --experimental-dockershim-root-directory="$state/dockershim" \
    --pod-infra-container-image="$PAUSE_IMAGE" \
    --node-ip="$ip" --hostname-override="$node" --v=1
}
node2_start_kubelet() {
  K8S_NETNS="/run/netns/$NODE2_NETNS" K8S_MNTNS="$NODE2_MNTNS" start_kubelet kubelet-node2 "$NODE2_STATE" \
    "$K8S_STATE/kubelet-node2.kubeconfig" "$NODE2_DOCKER_HOST" "$NODE2_RUN" "$NODE2_IP" "$NODE2_NAME"
}
node2_start_proxy() {
  K8S_NETNS="/run/netns/$NODE2_NETNS" K8S_MNTNS="$NODE2_MNTNS" start_proc kube-proxy-node2 "$K8S_BIN/kube-proxy" \
    --config="$NODE2_STATE/kube-proxy-config.yaml" --v=1
}

kubectl_k8s() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }

# The Debian docker client (the other client on PATH lacks BuildKit secrets).
docker_cli() {
  if [ -x /usr/bin/docker ]; then /usr/bin/docker "$@"; else docker "$@"; fi
}

# DOCKER_HOST / DOCKER_SOCK of the project's dockerd (infra/docker.sh).
# With $1 = up, start it when it is not running.
docker_env() {
  local ds="$REPO_ROOT/infra/docker.sh"
  if [ -z "${ONCOLOGY_K8S_DOCKER_HOST:-}" ] && [ -x "$ds" ]; then
    if [ "${1:-}" = up ]; then "$ds" up >&2 8>&-; fi
    eval "$("$ds" env)"
  elif [ -n "${ONCOLOGY_K8S_DOCKER_HOST:-}" ]; then
    DOCKER_HOST="$ONCOLOGY_K8S_DOCKER_HOST"
  fi
  [ -n "${DOCKER_HOST:-}" ] || return 1
  export DOCKER_HOST
  DOCKER_SOCK="${DOCKER_HOST#unix://}"
}

# --- processes ----------------------------------------------------------------
# start_proc NAME CMD...: run CMD detached (own session), log to logs/NAME.log,
# record "PID EXE" in run/NAME.pid.
start_proc() {
  local name="$1"; shift
  mkdir -p "$RUN" "$LOGS"
  # 8>&-: the daemon must not inherit the state lock (lock_state).
  # AWS_EC2_METADATA_DISABLED: the kubelet 1.20's built-in ECR credential
  # provider otherwise asks the EC2 metadata address (169.254.169.254) for
  # credentials when it starts; nothing may leave the machine.
  # K8S_NETNS=PATH: start it inside that network namespace (nsenter execs the
  # command: the PID and /proc/PID/exe are the command's own).
  local ns=()
  [ -n "${K8S_NETNS:-}" ] && ns=(nsenter "--net=$K8S_NETNS")
  [ -n "${K8S_MNTNS:-}" ] && ns+=("--mount=$K8S_MNTNS")
  AWS_EC2_METADATA_DISABLED=true setsid "${ns[@]}" "$@" >"$LOGS/$name.log" 2>&1 </dev/null 8>&- &
  local pid=$!
  echo "$pid $(command -v "$1")" >"$RUN/$name.pid"
}

# proc_pid NAME: the PID if that process is still the one we started.
proc_pid() {
  local f="$RUN/$1.pid" pid exe
  [ -f "$f" ] || return 1
  read -r pid exe <"$f"
  [ -n "$pid" ] && [ -e "/proc/$pid" ] || return 1
  [ "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" = "$(readlink -f "$exe")" ] || return 1
  echo "$pid"
}

# stop_proc NAME [GRACE]: SIGTERM by PID, SIGKILL after GRACE seconds.
stop_proc() {
  local name="$1" grace="${2:-15}" pid i
  if pid=$(proc_pid "$name"); then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    # its process group too (socat's forked children; each start_proc is a session leader)
    { [ "${K8S_STOP_GROUP:-0}" = 1 ] && kill -TERM -- "-$pid" 2>/dev/null; } || true
    for ((i = 0; i < grace * 5; i++)); do
      [ -e "/proc/$pid" ] || break
      grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null && break
      sleep 0.2
    done
    if [ -e "/proc/$pid" ] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; then
      log "$name did not stop in ${grace}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      { [ "${K8S_STOP_GROUP:-0}" = 1 ] && kill -KILL -- "-$pid" 2>/dev/null; } || true
      sleep 0.5
    fi
  fi
  rm -f "$RUN/$name.pid"
}

# port_busy ADDR PORT
# (No `cmd | grep -q` anywhere: with pipefail, grep -q quitting early can
# SIGPIPE the writer and turn a match into a failure.)
port_busy() { ss -Hltn "sport = :$2" 2>/dev/null | awk '{print $4}' | grep -E "^(\[?::\]?|0\.0\.0\.0|\*|${1//./\\.}):$2$" >/dev/null; }

# lo_has_ip ADDR: ADDR is on lo
lo_has_ip() { local a; a=$(ip -o addr show dev lo); [[ "$a" == *" $1/"* ]]; }

# wait_for SECONDS DESCRIPTION CMD...: poll CMD until it succeeds.
wait_for() {
  local secs="$1" what="$2" end; shift 2
  end=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || return 1
    sleep 0.5
  done
}

# --- teardown of what the kubelet and kube-proxy leave in iptables ------------
# Remove every jump into a KUBE-* chain, then flush and delete those chains,
# in all tables, for IPv4 and IPv6.  Rules of others (DOCKER-*, ...) stay.
cleanup_kube_chains() {
  local ipt t rules line c chains
  for ipt in iptables ip6tables; do
    command -v "$ipt-save" >/dev/null || continue
    for t in filter nat mangle raw; do
      rules=$("$ipt-save" -t "$t" 2>/dev/null) || continue
      while read -r line; do
        [ -n "$line" ] || continue
        eval "$ipt -w -t $t -D ${line#-A }" 2>/dev/null || true
      done < <(printf '%s\n' "$rules" | grep -E '^-A ' | grep -vE '^-A KUBE-' | grep -E -- '-[jg] KUBE-' || true)
      chains=$(printf '%s\n' "$rules" | sed -n 's/^:\(KUBE-[^ ]*\) .*/\1/p')
      for c in $chains; do "$ipt" -w -t "$t" -F "$c" 2>/dev/null || true; done
      for c in $chains; do "$ipt" -w -t "$t" -X "$c" 2>/dev/null || true; done
    done
  done
}

# Unmount everything mounted at or below DIR, deepest first.
unmount_under() {
  local dir m
  dir="$(readlink -f "$1" 2>/dev/null || echo "$1")"
  awk -v d="$dir" '{ gsub(/\\040/, " ", $5); if ($5 == d || index($5, d "/") == 1) print $5 }' /proc/self/mountinfo \
    | sort -r | while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
      done
}
