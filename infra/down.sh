#!/usr/bin/env bash
# Stop everything infra/up.sh started (idempotent; fine when nothing runs):
# the package index, the registry, the local Kubernetes cluster if
# infra/k8s/ has one up (it runs on the dockerd), dockerd, SeaweedFS.
# State stays in $ONCOLOGY_INFRA_DIR (default <repo>/.infra); delete that
# folder to start from scratch.
#
# Usage: infra/down.sh [COMPONENT...]   (default: all; s3 docker registry pypi)
set -euo pipefail
# shellcheck source=infra/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ALL=(pypi registry docker s3)
if [ $# -eq 0 ]; then set -- "${ALL[@]}"; fi
COMPONENTS=("$@")
want() { case " ${COMPONENTS[*]} " in *" $1 "*) return 0 ;; esac; return 1; }
for c in "${COMPONENTS[@]}"; do
  case " ${ALL[*]} base-image " in *" $c "*) ;; *) die "unknown component '$c' (known: ${ALL[*]})" ;; esac
done
rc=0

want pypi && { "$INFRA_LIB_DIR/pypi.sh" down || rc=1; }
want registry && { "$INFRA_LIB_DIR/registry.sh" down || rc=1; }
if want docker; then
  # a Kubernetes cluster (infra/k8s) runs its pods on this dockerd: stop it first
  if [ -x "$INFRA_LIB_DIR/k8s/down.sh" ] && [ -d "$INFRA_DIR/k8s" ]; then
    "$INFRA_LIB_DIR/k8s/down.sh" >&2 || rc=1
  fi
  "$INFRA_LIB_DIR/docker.sh" down || rc=1
fi
if want s3; then
  # stopping needs only the standard library
  py=python3
  [ -x /usr/bin/python3 ] && py=/usr/bin/python3
  "$py" "$INFRA_LIB_DIR/seaweedfs.py" stop --dir "$INFRA_DIR/seaweedfs" >&2 || rc=1
fi
if [ "$rc" = 0 ]; then log "stopped (state kept in $INFRA_DIR)"; else log "some parts failed to stop (see above)"; fi
exit "$rc"
