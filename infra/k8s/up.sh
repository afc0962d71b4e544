#!/usr/bin/env bash
# Start a two-node Kubernetes 1.20 cluster on this machine:
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
#   node 1: kubelet (dockershim on the project's dockerd), kube-proxy (iptables);
#   node 2: its own dockerd, kubelet and kube-proxy inside a network namespace
#   (veth to the host, its own pod range, routed by the host; see lib.sh).
# Everything listens on 127.0.0.1, except the kubelet API, which listens on
# the node's own address (NODE_IP, added to lo; removed by down.sh), and the
# forwarders to node 2 (on the host end of its veth).  ONCOLOGY_K8S_NODES=1:
# the first node alone.
# State: ${ONCOLOGY_INFRA_DIR:-<repo>/.infra}/k8s.   Needs root.
#
# Idempotent: when the cluster is already up it only prints the line below.
# stdout: export KUBECONFIG=<state>/kubeconfig      (eval "$(infra/k8s/up.sh)")
set -euo pipefail
T0=$(date +%s.%N)
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
need_root
lock_state
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

NODE_NAMES="$NODE_NAME"
[ "$NODES" = 2 ] && NODE_NAMES="$NODE_NAME $NODE2_NAME"
[ "$NODES" = 1 ] || [ "$NODES" = 2 ] || die "ONCOLOGY_K8S_NODES=$NODES: 1 or 2"
COMPONENTS="etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy"
[ "$NODES" = 2 ] && COMPONENTS="$COMPONENTS dockerd-node2 kubelet-node2 kube-proxy-node2"
one_ready() {
  [ "$(kubectl_k8s get node "$1" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}
node_ready() {
  local n
  for n in $NODE_NAMES; do one_ready "$n" || return 1; done
}
all_running() {
  local c
  for c in $COMPONENTS; do
    proc_pid "$c" >/dev/null || return 1
  done
}

# --- already up? ---------------------------------------------------------------
if [ -x "$K8S_BIN/kubectl" ] && [ -f "$KUBECONFIG_ADMIN" ] && all_running && node_ready; then
  log "cluster already up (nodes $NODE_NAMES Ready)"
  echo "export KUBECONFIG=$KUBECONFIG_ADMIN"
  exit 0
fi
if [ -s "$STATE_ENV" ] || ls "$RUN"/*.pid >/dev/null 2>&1; then
  log "a partial cluster is left from an earlier run: tearing it down first"
  "$K8S_LIB_DIR/down.sh" >&2
fi

# --- binaries, packages, container engine -------------------------------------
"$K8S_LIB_DIR/build.sh" >/dev/null
# shellcheck disable=SC2086
ensure_apt_packages $K8S_APT_PACKAGES
for c in etcd openssl iptables ip6tables conntrack socat nsenter ss; do
  command -v "$c" >/dev/null || die "missing command: $c"
done
mkdir -p "$RUN" "$LOGS" "$PKI"
: >"$STATE_ENV"

docker_was_up=0
if docker_env && docker_cli info >/dev/null 2>&1; then docker_was_up=1; fi
docker_env up || die "no container engine: infra/docker.sh is missing (or set ONCOLOGY_K8S_DOCKER_HOST)"
docker_cli info >/dev/null 2>&1 || die "dockerd at $DOCKER_HOST does not answer"
[ "$docker_was_up" = 1 ] || echo "K8S_STARTED_DOCKER=1" >>"$STATE_ENV"
cgdriver=$(docker_cli info -f '{{.CgroupDriver}}')
[ "$cgdriver" = cgroupfs ] || die "dockerd cgroup driver is $cgdriver, the kubelet here is set up for cgroupfs"
CLUSTER_CIDR=$(docker_cli network inspect bridge -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}' 2>/dev/null | awk '{print $1}')
CLUSTER_CIDR="${ONCOLOGY_K8S_CLUSTER_CIDR:-${CLUSTER_CIDR:-172.17.0.0/16}}"

# Pause image: a static Go binary that sleeps until SIGTERM, imported as a
# one-file image (no registry involved).
pause_id=$(sha256sum "$K8S_LIB_DIR/pause/pause.go" | cut -c1-12)
import_pause() { # the pause image into the dockerd at $DOCKER_HOST
  if [ "$(docker_cli image inspect -f '{{index .Config.Labels "oncology.pause.source"}}' "$PAUSE_IMAGE" 2>/dev/null)" = "$pause_id" ]; then
    return 0
  fi
  pdir="$K8S_CACHE/pause-$pause_id"
  if [ ! -x "$pdir/rootfs/pause" ]; then
    rm -rf "$pdir"; mkdir -p "$pdir/rootfs"
    (cd "$K8S_LIB_DIR/pause" && CGO_ENABLED=0 GOPROXY=off GOCACHE="$pdir/gocache" GOFLAGS='' \
       go build -trimpath -ldflags='-s -w' -o "$pdir/rootfs/pause" pause.go)
    rm -rf "$pdir/gocache"
  fi
  tar -C "$pdir/rootfs" -c pause | docker_cli import \
    -c 'ENTRYPOINT ["/pause"]' -c "LABEL oncology.pause.source=$pause_id" - "$PAUSE_IMAGE" >/dev/null
  log "pause image $PAUSE_IMAGE imported"
}
import_pause

# --- ports ----------------------------------------------------------------------
for p in "127.0.0.1 $ETCD_PORT" "127.0.0.1 $((ETCD_PORT + 1))" "127.0.0.1 $((ETCD_PORT + 2))" \
         "127.0.0.1 $API_PORT" "127.0.0.1 $CM_PORT" "127.0.0.1 $SCHED_PORT" \
         "127.0.0.1 $KUBELET_HEALTHZ_PORT" "127.0.0.1 $PROXY_METRICS_PORT" \
         "127.0.0.1 $PROXY_HEALTHZ_PORT" "$NODE_IP $KUBELET_PORT" "$NODE2_GW $API_PORT"; do
  # shellcheck disable=SC2086
  ! port_busy $p || die "port ${p#* } on ${p% *} is in use (another cluster?)"
done

# --- node address, sysctls -----------------------------------------------------
if ! lo_has_ip "$NODE_IP"; then
  ip addr add "$NODE_IP/32" dev lo
  echo "K8S_ADDED_NODE_IP=$NODE_IP" >>"$STATE_ENV"
fi
for s in $K8S_SYSCTLS; do
  v=$(sysctl -n "$s" 2>/dev/null) && echo "K8S_SYSCTL_${s//./_}='$s=$v'" >>"$STATE_ENV"
done
# Host paths the kubelet 1.20 uses whatever its flags say (pod logs, the
# device-plugin socket); down.sh removes the ones that up.sh saw missing.
for d in /var/log/pods /var/log/containers /var/lib/kubelet /usr/libexec/kubernetes; do
  [ -e "$d" ] || echo "K8S_CREATED_${d//\//_}=$d" >>"$STATE_ENV"
done

# --- node 2: network namespace, veth, routes, its dockerd -----------------------
if [ "$NODES" = 2 ]; then
  T2=$(date +%s.%N)
  ! netns_exists "$NODE2_NETNS" || die "network namespace $NODE2_NETNS exists already (down.sh removes it)"
  for c in socat nsenter dockerd; do command -v "$c" >/dev/null || die "missing command: $c"; done
  mkdir -p "$NODE2_STATE" "$NODE2_RUN"
  echo "K8S_NODE2=1" >>"$STATE_ENV"
  ip netns add "$NODE2_NETNS"
  ip link add "$NODE2_VETH_HOST" type veth peer name "$NODE2_VETH_NODE"
  ip link set "$NODE2_VETH_NODE" netns "$NODE2_NETNS"
  ip addr add "$NODE2_GW/24" dev "$NODE2_VETH_HOST"
  ip link set "$NODE2_VETH_HOST" up
  in_ns() { nsenter --net="/run/netns/$NODE2_NETNS" "$@"; }
  in_ns ip link set lo up
  in_ns ip addr add "$NODE2_IP/24" dev "$NODE2_VETH_NODE"
  in_ns ip link set "$NODE2_VETH_NODE" up
  in_ns ip route add default via "$NODE2_GW"
  # forwarding in the node (before its dockerd, which then leaves FORWARD at ACCEPT);
  # the kubelet and kube-proxy set route_localnet etc. inside it, not on the host
  in_ns sysctl -qw net.ipv4.ip_forward=1
  # its mount namespace (lib.sh), with its own copies of the kubelet's host folders
  mkdir -p "$NODE2_RUN/ns"
  mount --bind "$NODE2_RUN/ns" "$NODE2_RUN/ns" && mount --make-private "$NODE2_RUN/ns"
  touch "$NODE2_MNTNS"
  unshare --mount="$NODE2_MNTNS" --propagation slave true
  for d in $NODE2_PRIVATE_DIRS; do
    mkdir -p "$d" "$NODE2_STATE/host$d"
    nsenter --mount="$NODE2_MNTNS" mount --bind "$NODE2_STATE/host$d" "$d"
  done
  ip route add "$NODE2_POD_CIDR" via "$NODE2_IP"
  # the host forwards between the node and its own pods (dockerd's FORWARD policy is DROP)
  iptables -w -I FORWARD -i "$NODE2_VETH_HOST" -j ACCEPT -m comment --comment oncology-k8s-node2
  iptables -w -I FORWARD -o "$NODE2_VETH_HOST" -j ACCEPT -m comment --comment oncology-k8s-node2
  # its own dockerd: own socket, data and exec roots, bridge docker0 in the
  # namespace on the node's pod range, no masquerading (pods keep their
  # addresses across nodes), the runc wrapper of infra/docker.sh
  node2_start_dockerd
  # the API server and the host's registry/S3 ports on the node's 127.0.0.1:
  # host end of the veth -> host 127.0.0.1, node 127.0.0.1 -> host end of the veth
  for p in $API_PORT $NODE2_PORTS; do
    start_proc "fwd-host-$p" socat "TCP-LISTEN:$p,bind=$NODE2_GW,reuseaddr,fork" "TCP:127.0.0.1:$p"
    K8S_NETNS="/run/netns/$NODE2_NETNS" start_proc "fwd-node2-$p" socat "TCP-LISTEN:$p,bind=127.0.0.1,reuseaddr,fork" "TCP:$NODE2_GW:$p"
  done
  wait_for 30 dockerd-node2 node2_docker info || die "the second node's dockerd did not answer (see $LOGS/dockerd-node2.log)"
  DOCKER_HOST="$NODE2_DOCKER_HOST" import_pause
  log "node 2: namespace $NODE2_NETNS, dockerd up in $(elapsed "$T2")s"
fi

# --- PKI and credentials (made once per state directory) ----------------------
sign() { # NAME CN ORG EXTKEYUSAGE [SANS [CA]]
  local n="$1" cn="$2" o="$3" eku="$4" san="${5:-}" ca="${6:-ca}" subj
  [ -f "$PKI/$n.crt" ] && return 0
  subj="/CN=$cn"; [ -n "$o" ] && subj="/O=$o$subj"
  openssl genrsa -out "$PKI/$n.key" 2048 2>/dev/null
  openssl req -new -key "$PKI/$n.key" -subj "$subj" -out "$PKI/$n.csr" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [ -n "$san" ] && echo "subjectAltName=$san"
  } >"$PKI/$n.ext"
  openssl x509 -req -in "$PKI/$n.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$PKI/$n.ext" -out "$PKI/$n.crt" 2>/dev/null
  rm -f "$PKI/$n.csr" "$PKI/$n.ext"
}
umask 077
if [ ! -f "$PKI/ca.crt" ]; then
  rm -f "$PKI"/*
  openssl genrsa -out "$PKI/ca.key" 2048 2>/dev/null
  openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=oncology-local-k8s-ca" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$PKI/ca.crt" 2>/dev/null
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
fi
if [ ! -f "$PKI/front-proxy-ca.crt" ]; then
  # CA of the aggregation layer's front proxy (requestheader authentication)
  openssl genrsa -out "$PKI/front-proxy-ca.key" 2048 2>/dev/null
  openssl req -x509 -new -key "$PKI/front-proxy-ca.key" -subj "/CN=oncology-local-front-proxy-ca" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$PKI/front-proxy-ca.crt" 2>/dev/null
fi
sign apiserver kube-apiserver "" serverAuth \
  "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:$SERVICE_IP,IP:$NODE_IP"
sign apiserver-kubelet-client kube-apiserver-kubelet-client system:masters clientAuth
sign kubelet "$NODE_NAME" "" serverAuth "DNS:$NODE_NAME,IP:$NODE_IP"
sign front-proxy-client front-proxy-client "" clientAuth "" front-proxy-ca
sign kubelet-node2 "$NODE2_NAME" "" serverAuth "DNS:$NODE2_NAME,IP:$NODE2_IP"
if [ ! -f "$K8S_STATE/tokens.csv" ]; then
  tok() { openssl rand -hex 24; }
  {
    echo "$(tok),admin,admin,system:masters"
    echo "$(tok),system:kube-controller-manager,system:kube-controller-manager"
    echo "$(tok),system:kube-scheduler,system:kube-scheduler"
    echo "$(tok),system:node:$NODE_NAME,system:node:$NODE_NAME,system:nodes"
    echo "$(tok),system:kube-proxy,system:kube-proxy"
  } >"$K8S_STATE/tokens.csv"
fi
if ! grep -q ",system:node:$NODE2_NAME," "$K8S_STATE/tokens.csv"; then
  echo "$(openssl rand -hex 24),system:node:$NODE2_NAME,system:node:$NODE2_NAME,system:nodes" >>"$K8S_STATE/tokens.csv"
fi
token_of() { awk -F, -v u="$1" '$2 == u { print $1 }' "$K8S_STATE/tokens.csv"; }
write_kubeconfig() { # FILE USER
  cat >"$1" <<K
apiVersion: v1
kind: Config
clusters:
- name: oncology-local
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
- name: $2
  user:
    token: $(token_of "$2")
contexts:
- name: oncology-local
  context: {cluster: oncology-local, user: $2, namespace: default}
current-context: oncology-local
K
}
write_kubeconfig "$KUBECONFIG_ADMIN" admin
write_kubeconfig "$K8S_STATE/controller-manager.kubeconfig" system:kube-controller-manager
write_kubeconfig "$K8S_STATE/scheduler.kubeconfig" system:kube-scheduler
write_kubeconfig "$K8S_STATE/kubelet.kubeconfig" "system:node:$NODE_NAME"
write_kubeconfig "$K8S_STATE/kube-proxy.kubeconfig" system:kube-proxy
write_kubeconfig "$K8S_STATE/kubelet-node2.kubeconfig" "system:node:$NODE2_NAME"
umask 022

render() { # TEMPLATE OUT [NODE_IP NODE_NAME CERT CLUSTER_CIDR]
  local ip="${3:-$NODE_IP}" name="${4:-$NODE_NAME}" cert="${5:-kubelet}" cidr="${6:-$CLUSTER_CIDR}"
  sed -e "s|@NODE_IP@|$ip|g" -e "s|@NODE_NAME@|$name|g" -e "s|@PKI@|$PKI|g" -e "s|@KUBELET_CERT@|$cert|g" \
      -e "s|@STATE@|$K8S_STATE|g" -e "s|@CLUSTER_CIDR@|$cidr|g" -e "s|@ROOT@|$([ "$name" = "$NODE_NAME" ] && echo "$K8S_STATE" || echo "$NODE2_STATE")|g" \
      -e "s|@KUBELET_PORT@|$KUBELET_PORT|g" -e "s|@KUBELET_HEALTHZ_PORT@|$KUBELET_HEALTHZ_PORT|g" \
      -e "s|@PROXY_HEALTHZ_PORT@|$PROXY_HEALTHZ_PORT|g" -e "s|@PROXY_METRICS_PORT@|$PROXY_METRICS_PORT|g" \
      "$1" >"$2"
}
printf '# pods of the local cluster resolve no names (see kubelet-config.yaml.in)\nnameserver 127.0.0.1\n' >"$K8S_STATE/resolv.conf"
render "$K8S_LIB_DIR/kubelet-config.yaml.in" "$K8S_STATE/kubelet-config.yaml"
render "$K8S_LIB_DIR/kube-proxy-config.yaml.in" "$K8S_STATE/kube-proxy-config.yaml"
if [ "$NODES" = 2 ]; then
  render "$K8S_LIB_DIR/kubelet-config.yaml.in" "$NODE2_STATE/kubelet-config.yaml" "$NODE2_IP" "$NODE2_NAME" kubelet-node2
  render "$K8S_LIB_DIR/kube-proxy-config.yaml.in" "$NODE2_STATE/kube-proxy-config.yaml" "$NODE2_IP" "$NODE2_NAME" kubelet-node2
fi

# --- control plane -------------------------------------------------------------
T1=$(date +%s.%N)
log "starting etcd"
E="http://127.0.0.1"
start_proc etcd etcd --name oncology --data-dir "$K8S_STATE/etcd" \
  --listen-client-urls "$E:$ETCD_PORT" --advertise-client-urls "$E:$ETCD_PORT" \
  --listen-peer-urls "$E:$((ETCD_PORT + 1))" --initial-advertise-peer-urls "$E:$((ETCD_PORT + 1))" \
  --initial-cluster "oncology=$E:$((ETCD_PORT + 1))" --initial-cluster-state new \
  --listen-metrics-urls "$E:$((ETCD_PORT + 2))" --logger zap --log-level warn
wait_for 30 etcd curl -fsS "$E:$ETCD_PORT/health" || die "etcd did not come up (see $LOGS/etcd.log)"

log "starting kube-apiserver"
start_proc kube-apiserver "$K8S_BIN/kube-apiserver" \
  --etcd-servers="$E:$ETCD_PORT" \
  --bind-address=127.0.0.1 --advertise-address="$NODE_IP" --secure-port="$API_PORT" --insecure-port=0 \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --client-ca-file="$PKI/ca.crt" --token-auth-file="$K8S_STATE/tokens.csv" \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --kubelet-preferred-address-types=InternalIP \
  --kubelet-certificate-authority="$PKI/ca.crt" \
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
  --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
  --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key" \
  --default-not-ready-toleration-seconds="$NODE_LOSS_TOLERATION" \
  --default-unreachable-toleration-seconds="$NODE_LOSS_TOLERATION" \
  --allow-privileged=true --profiling=false --cert-dir="$K8S_STATE/apiserver" --v=1
# The kubelet starts while the API server comes up: its own start (cAdvisor,
# dockershim) takes about as long, and it retries registering the node.
log "starting kubelet"
start_kubelet kubelet "$K8S_STATE" "$K8S_STATE/kubelet.kubeconfig" "unix://$DOCKER_SOCK" "$SOCK_DIR" "$NODE_IP" "$NODE_NAME"
if [ "$NODES" = 2 ]; then
  log "starting the second node's kubelet"
  node2_start_kubelet
fi
api_ok() { curl -fsS --cacert "$PKI/ca.crt" "https://127.0.0.1:$API_PORT/readyz" >/dev/null; }
wait_for 90 apiserver api_ok || die "kube-apiserver not ready (see $LOGS/kube-apiserver.log)"
log "kube-apiserver ready after $(elapsed "$T1")s"

common=(--bind-address=127.0.0.1 --port=0 --leader-elect=false --profiling=false --v=1)
log "starting kube-controller-manager and kube-scheduler"
start_proc kube-controller-manager "$K8S_BIN/kube-controller-manager" "${common[@]}" \
  --secure-port="$CM_PORT" --cert-dir="$K8S_STATE/controller-manager" \
  --kubeconfig="$K8S_STATE/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$K8S_STATE/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$K8S_STATE/controller-manager.kubeconfig" \
  --use-service-account-credentials=true \
  --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
  --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --node-monitor-period=2s --node-monitor-grace-period="$NODE_MONITOR_GRACE" \
  --flex-volume-plugin-dir="$K8S_STATE/kubelet/volume-plugins"
start_proc kube-scheduler "$K8S_BIN/kube-scheduler" "${common[@]}" \
  --secure-port="$SCHED_PORT" --cert-dir="$K8S_STATE/scheduler" \
  --kubeconfig="$K8S_STATE/scheduler.kubeconfig" \
  --authentication-kubeconfig="$K8S_STATE/scheduler.kubeconfig" \
  --authorization-kubeconfig="$K8S_STATE/scheduler.kubeconfig"

# --- node ------------------------------------------------------------------------
log "starting kube-proxy"
start_proc kube-proxy "$K8S_BIN/kube-proxy" --config="$K8S_STATE/kube-proxy-config.yaml" --v=1
if [ "$NODES" = 2 ]; then
  node2_start_proxy
fi

for c in ${COMPONENTS#etcd kube-apiserver }; do
  sleep 0.2
  proc_pid "$c" >/dev/null || die "$c exited at once (see $LOGS/$c.log)"
done

log "waiting for nodes $NODE_NAMES to be Ready (up to ${READY_TIMEOUT}s)"
if ! wait_for "$READY_TIMEOUT" node node_ready; then
  for c in $COMPONENTS; do
    proc_pid "$c" >/dev/null || log "$c is not running (see $LOGS/$c.log)"
  done
  die "node not Ready after ${READY_TIMEOUT}s (logs in $LOGS)"
fi
ready_total=$(elapsed "$T0"); ready_cluster=$(elapsed "$T1")
# Pods need the namespace's default service account (made by the controller manager).
wait_for 60 sa kubectl_k8s -n default get serviceaccount default || die "no default service account"
log "nodes $NODE_NAMES Ready: ${ready_total}s after up.sh started (${ready_cluster}s after etcd was launched)"
echo "K8S_READY_SECONDS=$ready_total" >>"$STATE_ENV"
echo "# node Ready in ${ready_total}s (cluster processes: ${ready_cluster}s; nodes: $NODE_NAMES)"
echo "export KUBECONFIG=$KUBECONFIG_ADMIN"
