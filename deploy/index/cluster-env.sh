#!/usr/bin/env bash
# The in-cluster package index's settings for deploy/publish.py, as exports (like `infra/pypi.sh env`):
# ONCOLOGY_PYPI_USER, ONCOLOGY_PYPI_PASSWORD (from the Secret oncology-index), ONCOLOGY_PYPI_URL (upload)
# and ONCOLOGY_PYPI_INDEX_URL (pip, credentials inside). The address is the Service's ClusterIP, which the
# host (and `docker build --network=host`) reaches through kube-proxy; INDEX_URL=http://HOST:PORT/ overrides
# it (e.g. a `kubectl port-forward service/oncology-index 18082:80`).
#
#   eval "$(KUBECTL='kubectl --context=X' deploy/index/cluster-env.sh)"
set -euo pipefail
KUBECTL=${KUBECTL:-kubectl}
die() { echo "index: $*" >&2; exit 2; }
secret() {
  local v
  v=$($KUBECTL get secret oncology-index -o "jsonpath={.data.$1}") || die "no Secret oncology-index on the cluster: run make index-deploy"
  [ -n "$v" ] || die "the Secret oncology-index has no key $1"
  printf '%s' "$v" | base64 -d
}
user=$(secret username)
password=$(secret password)
case "$user$password" in *[!A-Za-z0-9._~-]*) die "user and password may hold only A-Z a-z 0-9 . _ ~ - (they go into URLs unquoted)" ;; esac
url=${INDEX_URL:-}
if [ -z "$url" ]; then
  ip=$($KUBECTL get service oncology-index -o 'jsonpath={.spec.clusterIP}') || die "no Service oncology-index on the cluster: run make index-deploy"
  port=$($KUBECTL get service oncology-index -o 'jsonpath={.spec.ports[0].port}')
  url=http://$ip:$port/
fi
url=${url%/}/
echo "export ONCOLOGY_PYPI_USER=$user"
echo "export ONCOLOGY_PYPI_PASSWORD=$password"
echo "export ONCOLOGY_PYPI_URL=$url"
echo "export ONCOLOGY_PYPI_INDEX_URL=${url%%://*}://$user:$password@${url#*://}simple/"
