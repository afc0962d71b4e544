#!/usr/bin/env bash
# Start a single-node Kubernetes 1.20 cluster on this machine:
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
#   kubelet (dockershim on the project's dockerd), kube-proxy (iptables).
# Everything listens on 127.0.0.1, except the kubelet API, which listens on
# the node's own address (NODE_IP, added to lo; removed by down.sh).
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

node_ready() {
  [ "$(kubectl_k8s get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}
all_running() {
  local c
  for c in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
    proc_pid "$c" >/dev/null || return 1
  done
}

# --- already up? ---------------------------------------------------------------
if [ -x "$K8S_BIN/kubectl" ] && [ -f "$KUBECONFIG_ADMIN" ] && all_running && node_ready; then
  log "cluster already up (node $NODE_NAME Ready)"
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
if [ "$(docker_cli image inspect -f '{{index .Config.Labels "oncology.pause.source"}}' "$PAUSE_IMAGE" 2>/dev/null)" != "$pause_id" ]; then
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
fi

# --- ports ----------------------------------------------------------------------
for p in "127.0.0.1 $ETCD_PORT" "127.0.0.1 $((ETCD_PORT + 1))" "127.0.0.1 $((ETCD_PORT + 2))" \
         "127.0.0.1 $API_PORT" "127.0.0.1 $CM_PORT" "127.0.0.1 $SCHED_PORT" \
         "127.0.0.1 $KUBELET_HEALTHZ_PORT" "127.0.0.1 $PROXY_METRICS_PORT" \
         "127.0.0.1 $PROXY_HEALTHZ_PORT" "$NODE_IP $KUBELET_PORT"; do
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
umask 022

render() { # TEMPLATE OUT
  sed -e "s|@NODE_IP@|$NODE_IP|g" -e "s|@NODE_NAME@|$NODE_NAME|g" -e "s|@PKI@|$PKI|g" \
      -e "s|@STATE@|$K8S_STATE|g" -e "s|@CLUSTER_CIDR@|$CLUSTER_CIDR|g" \
      -e "s|@KUBELET_PORT@|$KUBELET_PORT|g" -e "s|@KUBELET_HEALTHZ_PORT@|$KUBELET_HEALTHZ_PORT|g" \
      -e "s|@PROXY_HEALTHZ_PORT@|$PROXY_HEALTHZ_PORT|g" -e "s|@PROXY_METRICS_PORT@|$PROXY_METRICS_PORT|g" \
      "$1" >"$2"
}
printf '# pods of the local cluster resolve no names (see kubelet-config.yaml.in)\nnameserver 127.0.0.1\n' >"$K8S_STATE/resolv.conf"
render "$K8S_LIB_DIR/kubelet-config.yaml.in" "$K8S_STATE/kubelet-config.yaml"
render "$K8S_LIB_DIR/kube-proxy-config.yaml.in" "$K8S_STATE/kube-proxy-config.yaml"

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
  --allow-privileged=true --profiling=false --cert-dir="$K8S_STATE/apiserver" --v=1
# The kubelet starts while the API server comes up: its own start (cAdvisor,
# dockershim) takes about as long, and it retries registering the node.
log "starting kubelet"
mkdir -p "$K8S_STATE/kubelet" "$K8S_STATE/dockershim" "$SOCK_DIR"
start_proc kubelet "$K8S_BIN/kubelet" \
  --config="$K8S_STATE/kubelet-config.yaml" --kubeconfig="$K8S_STATE/kubelet.kubeconfig" \
  --root-dir="$K8S_STATE/kubelet" --cert-dir="$K8S_STATE/kubelet/pki" \
  --container-runtime=docker --docker-endpoint="unix://$DOCKER_SOCK" \
  --container-runtime-endpoint="unix://$SOCK_DIR/dockershim.sock" \
  --image-service-endpoint="unix://$SOCK_DIR/dockershim.sock" \
  --experimental-dockershim-root-directory="$K8S_STATE/dockershim" \
  --pod-infra-container-image="$PAUSE_IMAGE" \
  --node-ip="$NODE_IP" --hostname-override="$NODE_NAME" --v=1
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
  --flex-volume-plugin-dir="$K8S_STATE/kubelet/volume-plugins"
start_proc kube-scheduler "$K8S_BIN/kube-scheduler" "${common[@]}" \
  --secure-port="$SCHED_PORT" --cert-dir="$K8S_STATE/scheduler" \
  --kubeconfig="$K8S_STATE/scheduler.kubeconfig" \
  --authentication-kubeconfig="$K8S_STATE/scheduler.kubeconfig" \
  --authorization-kubeconfig="$K8S_STATE/scheduler.kubeconfig"

# --- node ------------------------------------------------------------------------
log "starting kube-proxy"
start_proc kube-proxy "$K8S_BIN/kube-proxy" --config="$K8S_STATE/kube-proxy-config.yaml" --v=1

for c in kube-controller-manager kube-scheduler kubelet kube-proxy; do
  sleep 0.2
  proc_pid "$c" >/dev/null || die "$c exited at once (see $LOGS/$c.log)"
done

log "waiting for node $NODE_NAME to be Ready (up to ${READY_TIMEOUT}s)"
if ! wait_for "$READY_TIMEOUT" node node_ready; then
  for c in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
    proc_pid "$c" >/dev/null || log "$c is not running (see $LOGS/$c.log)"
  done
  die "node not Ready after ${READY_TIMEOUT}s (logs in $LOGS)"
fi
ready_total=$(elapsed "$T0"); ready_cluster=$(elapsed "$T1")
# Pods need the namespace's default service account (made by the controller manager).
wait_for 60 sa kubectl_k8s -n default get serviceaccount default || die "no default service account"
log "node $NODE_NAME Ready: ${ready_total}s after up.sh started (${ready_cluster}s after etcd was launched)"
echo "K8S_READY_SECONDS=$ready_total" >>"$STATE_ENV"
echo "# node Ready in ${ready_total}s (cluster processes: ${ready_cluster}s)"
echo "export KUBECONFIG=$KUBECONFIG_ADMIN"
