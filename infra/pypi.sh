#!/usr/bin/env bash
# A local Python package index: pypiserver on 127.0.0.1:$ONCOLOGY_PYPI_PORT
# (default 8081). Upload, download and listing all need the password
# (htpasswd file). pypiserver is pip-installed into its own venv under the
# state folder, not into the project's .venv.
#
# State: $ONCOLOGY_INFRA_DIR/pypi/ (venv/, packages/, htpasswd, credentials
# (mode 0600), pypi.pid, pypi.log).
# Credentials: $ONCOLOGY_PYPI_USER (default oncology) and $ONCOLOGY_PYPI_PASSWORD;
# when the password is unset, the one in the credentials file is kept, or a
# random one is made and written there.
#
# Usage: infra/pypi.sh up|down|status|env
#   env   prints exports: ONCOLOGY_PYPI_USER, ONCOLOGY_PYPI_PASSWORD,
#         ONCOLOGY_PYPI_URL (upload: twine --repository-url), ONCOLOGY_PYPI_INDEX_URL
#         (pip --index-url, credentials inside)
#
#   twine upload --repository-url http://127.0.0.1:8081/ -u USER -p PASS dist/*
#   pip download --index-url http://USER:PASS@127.0.0.1:8081/simple/ NAME
set -euo pipefail
# shellcheck source=infra/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PORT=${ONCOLOGY_PYPI_PORT:-8081}
D=$INFRA_DIR/pypi
VENV=$D/venv
PIDFILE=$D/pypi.pid
LOG=$D/pypi.log
CREDS=$D/credentials
HTPASSWD=$D/htpasswd
PKGS=$D/packages
URL=http://127.0.0.1:$PORT

pypi_pid() {
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
  pid_is "$pid" "$VENV/bin/pypi-server" && echo "$pid"
}

load_credentials() {
  PYPI_USER=${ONCOLOGY_PYPI_USER:-}
  PYPI_PASSWORD=${ONCOLOGY_PYPI_PASSWORD:-}
  if [ -f "$CREDS" ]; then
    local u p
    u=$(sed -n 's/^ONCOLOGY_PYPI_USER=//p' "$CREDS")
    p=$(sed -n 's/^ONCOLOGY_PYPI_PASSWORD=//p' "$CREDS")
    [ -n "$PYPI_USER" ] || PYPI_USER=$u
    [ -n "$PYPI_PASSWORD" ] || { [ "$PYPI_USER" = "$u" ] && PYPI_PASSWORD=$p; }
  fi
  PYPI_USER=${PYPI_USER:-oncology}
  [ -n "$PYPI_PASSWORD" ] || PYPI_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=' | cut -c1-20)
  case "$PYPI_USER$PYPI_PASSWORD" in
    *[!A-Za-z0-9._~-]*) die "user and password may hold only A-Z a-z 0-9 . _ ~ - (they go into URLs unquoted)" ;;
  esac
}

answers() { # the index answers, and asks for a password
  [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL/simple/")" = 401 ]
}

print_env() {
  load_credentials
  echo "export ONCOLOGY_PYPI_USER=$PYPI_USER"
  echo "export ONCOLOGY_PYPI_PASSWORD=$PYPI_PASSWORD"
  echo "export ONCOLOGY_PYPI_URL=$URL/"
  echo "export ONCOLOGY_PYPI_INDEX_URL=http://$PYPI_USER:$PYPI_PASSWORD@127.0.0.1:$PORT/simple/"
}

install_venv() {
  if [ -x "$VENV/bin/pypi-server" ] && "$VENV/bin/python" -c 'import passlib, pypiserver' 2>/dev/null; then
    return 0
  fi
  local py=/usr/bin/python3
  [ -x "$py" ] || { ensure_apt python3; }
  "$py" -c 'import ensurepip, venv' 2>/dev/null || ensure_apt python3-venv
  log "installing pypiserver into $VENV"
  rm -rf "$VENV"
  "$py" -m venv "$VENV"
  # waitress: the threaded server that pypiserver's "auto" picks when present
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "pypiserver[passlib]" waitress \
    >"$D/pip-install.log" 2>&1 || { tail -n 20 "$D/pip-install.log" >&2; die "pip install pypiserver failed"; }
}

up() {
  local t0 pid
  t0=$(date +%s.%N)
  load_credentials
  mkdir -p "$D" "$PKGS"
  chmod 700 "$D"
  (
    umask 077
    printf 'ONCOLOGY_PYPI_USER=%s\nONCOLOGY_PYPI_PASSWORD=%s\n' "$PYPI_USER" "$PYPI_PASSWORD" >"$CREDS.tmp"
  )
  if pid=$(pypi_pid) && answers && cmp -s "$CREDS" "$CREDS.tmp"; then
    rm -f "$CREDS.tmp"
    log "already running (pid $pid) at $URL/simple/ (user $PYPI_USER)"
    return 0
  fi
  mv "$CREDS.tmp" "$CREDS"
  ensure_apt curl
  install_venv
  if pid=$(pypi_pid); then
    log "restarting pid $pid (new credentials, or it does not answer)"
    stop_pid "$pid" 10
  fi
  port_listening "$PORT" && die "127.0.0.1:$PORT is already taken by another process (set ONCOLOGY_PYPI_PORT)"
  (
    umask 077
    PYPI_USER=$PYPI_USER PYPI_PASSWORD=$PYPI_PASSWORD "$VENV/bin/python" - "$HTPASSWD" <<'EOF'
import os, sys
from passlib.apache import HtpasswdFile
ht = HtpasswdFile(sys.argv[1], new=True, default_scheme="sha512_crypt")
ht.set_password(os.environ["PYPI_USER"], os.environ["PYPI_PASSWORD"])
ht.save()
EOF
  )
  setsid "$VENV/bin/pypi-server" run \
    --host 127.0.0.1 --port "$PORT" \
    --passwords "$HTPASSWD" \
    --authenticate update,download,list \
    --server auto \
    --disable-fallback \
    "$PKGS" </dev/null >>"$LOG" 2>&1 &
  pid=$!
  echo "$pid" >"$PIDFILE"
  await_started pypi-server "$pid" "$LOG" answers
  log "up in $(elapsed "$t0")s (pid $pid) at $URL/simple/ (user $PYPI_USER, password in $CREDS)"
}

down() {
  local pid
  if pid=$(pypi_pid); then
    stop_pid "$pid" 10
    log "stopped (pid $pid)"
  else
    log "not running"
  fi
  rm -f "$PIDFILE"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) print_env ;;
  status)
    if pypi_pid >/dev/null && answers; then
      log "running (pid $(pypi_pid)) at $URL/simple/"
    else
      log "not running"
      exit 3
    fi
    ;;
  *)
    echo "usage: $0 up|down|status|env" >&2
    exit 2
    ;;
esac
