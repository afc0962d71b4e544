#!/usr/bin/env bash
# End-to-end check of the local cluster: starts it (up.sh, idempotent), runs
# smoke/smoke.yaml (Deployment x2 + ClusterIP Service + Job) and checks:
# curl to the ClusterIP from the host, kubectl port-forward, Job completion,
# kubectl logs, kubectl exec, kubectl apply --dry-run=server.
# Leaves the cluster up; the namespace is deleted at the end.
# Image: $ONCOLOGY_K8S_SMOKE_IMAGE (default oncology-base:bookworm, built by
# infra/base-image.sh when missing).  kubectl: $KUBECTL, else the one on PATH,
# else the 1.20 one built by build.sh.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
need_root
IMAGE="${ONCOLOGY_K8S_SMOKE_IMAGE:-oncology-base:bookworm}"
NS=oncology-smoke
eval "$("$K8S_LIB_DIR/up.sh")"
docker_env ""
KUBECTL="${KUBECTL:-$(command -v kubectl || echo "$K8S_BIN/kubectl")}"
k() { "$KUBECTL" "$@"; }
log "kubectl: $KUBECTL ($(k version --client -o json 2>/dev/null | jq -r .clientVersion.gitVersion))"

if ! docker_cli image inspect "$IMAGE" >/dev/null 2>&1; then
  [ -x "$REPO_ROOT/infra/base-image.sh" ] || die "image $IMAGE missing and infra/base-image.sh not found"
  "$REPO_ROOT/infra/base-image.sh" >&2
fi

manifest=$(mktemp); pf_pid=""
cleanup() {
  if [ -n "$pf_pid" ]; then kill "$pf_pid" 2>/dev/null || true; fi
  rm -f "$manifest" "${pf_log:-}"
}
trap cleanup EXIT
sed "s|@IMAGE@|$IMAGE|g" "$K8S_LIB_DIR/smoke/smoke.yaml" >"$manifest"

t=$(date +%s)
k get ns "$NS" >/dev/null 2>&1 && { k delete ns "$NS" --wait=true --timeout=120s >&2; }
k create ns "$NS" --save-config >&2
log "server-side dry run"
k apply --dry-run=server -f "$manifest" >&2
k -n "$NS" get deployment web >/dev/null 2>&1 && die "the dry run created the deployment"
k apply -f "$manifest" >&2
k -n "$NS" rollout status deployment/web --timeout=180s >&2
log "deployment 2/2 ready after $(( $(date +%s) - t ))s"

ip=$(k -n "$NS" get svc web -o jsonpath='{.spec.clusterIP}')
two_endpoints() { [ "$(k -n "$NS" get endpoints web -o jsonpath='{.subsets[*].addresses[*].ip}' | wc -w)" = 2 ]; }
wait_for 30 endpoints two_endpoints || die "service web has not got 2 endpoints"
# kube-proxy applies endpoint changes within about a second: curl until both
# replicas have answered (each curl is a new connection, balanced at random).
declare -A seen=()
for i in $(seq 1 60); do
  r=$(curl -fsS --max-time 5 "http://$ip/") || die "curl http://$ip/ failed"
  seen[$r]=1
  [ "${#seen[@]}" -ge 2 ] && break
  sleep 0.2
done
[ "${#seen[@]}" -ge 2 ] || die "only ${!seen[*]} answered on $ip"
log "curl ClusterIP $ip from the host: ok, both replicas answered (${!seen[*]}) in $i requests"

pf_log=$(mktemp)
port=$(awk 'BEGIN { srand(); print 20000 + int(rand() * 20000) }')
while port_busy 127.0.0.1 "$port"; do port=$((port + 1)); done
"$KUBECTL" -n "$NS" port-forward --address 127.0.0.1 svc/web "$port:80" >"$pf_log" 2>&1 &
pf_pid=$!
wait_for 20 port-forward curl -fsS --max-time 2 "http://127.0.0.1:$port/" || { cat "$pf_log" >&2; die "port-forward failed"; }
log "port-forward 127.0.0.1:$port -> svc/web: ok ($(curl -fsS "http://127.0.0.1:$port/"))"
kill "$pf_pid"; wait "$pf_pid" 2>/dev/null || true; pf_pid=""

k -n "$NS" wait --for=condition=complete job/hello --timeout=120s >&2
out=$(k -n "$NS" logs job/hello)
[[ "$out" == "job ok on python"* ]] || die "unexpected job log: $out"
log "job completed; kubectl logs: $out"

pod=$(k -n "$NS" get pod -l app=web -o jsonpath='{.items[0].metadata.name}')
ex=$(k -n "$NS" exec "$pod" -- python3 -c 'import socket; print(socket.gethostname())')
[ "$ex" = "$pod" ] || die "kubectl exec gave '$ex'"
log "kubectl exec: ok"
k -n "$NS" logs "$pod" --tail=2 >&2

k delete ns "$NS" --wait=true --timeout=120s >&2
log "smoke test passed in $(( $(date +%s) - t ))s"
