# shellcheck shell=bash
# Helpers shared by the infra/*.sh scripts (sourced, not run).
#
#   INFRA_DIR     state of every service: $ONCOLOGY_INFRA_DIR, default <repo>/.infra
#   REPO_ROOT     the checkout this file belongs to
#   log MSG       to stderr, prefixed with the script's name
#   die MSG       log and exit 1
#   need_root
#   ensure_apt PKG...   install the Debian packages that are missing
#                       (apt-get update at most once per run)
#   pid_alive PID / pid_is PID WORD   (WORD must appear in its command line)
#   stop_pid PID [GRACE]  SIGTERM, then SIGKILL after GRACE seconds (default 10)
#   wait_http URL [SECONDS]   until URL answers (any HTTP status)
#   await_started NAME PID LOG CHECK   until the command CHECK succeeds (30 s); if PID dies or
#                       time runs out: the log's tail, PID stopped, die
#   apt_mirror    the Debian mirror URI the machine's apt sources use
#   elapsed T0    seconds since T0 (from `date +%s.%N`)

INFRA_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$INFRA_LIB_DIR/.." && pwd)
INFRA_DIR=${ONCOLOGY_INFRA_DIR:-$REPO_ROOT/.infra}
mkdir -p "$INFRA_DIR"
INFRA_DIR=$(cd "$INFRA_DIR" && pwd)
export ONCOLOGY_INFRA_DIR=$INFRA_DIR
SCRIPT_NAME=$(basename "$0" .sh)

log() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() { log "error: $*"; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || die "must run as root"; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

_APT_UPDATED=0
ensure_apt() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  need_root
  log "installing Debian packages: ${missing[*]}"
  # Do not let package scripts start system services (a system dockerd, a
  # system registry on :5000): these scripts start their own instances.
  local policy_created=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && policy_created=1
  fi
  local apt=(apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3) out rc=0
  out=$(mktemp)
  if [ "$_APT_UPDATED" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" update -qq >"$out" 2>&1 || { cat "$out" >&2; log "apt-get update failed; trying the install anyway"; }
    _APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq --no-install-recommends "${missing[@]}" >"$out" 2>&1 || rc=$?
  [ "$rc" = 0 ] || tail -n 30 "$out" >&2
  rm -f "$out"
  [ "$policy_created" = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ "$rc" = 0 ] || die "apt-get install ${missing[*]} failed"
}

pid_alive() {
  [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null || return 1
  # a zombie is not alive
  ! grep -q '^[^)]*) Z' "/proc/$1/stat" 2>/dev/null
}

pid_is() {
  pid_alive "$1" && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2"
}

stop_pid() {
  local pid=$1 grace=${2:-10} i
  pid_alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    pid_alive "$pid" || return 0
    sleep 0.1
  done
  log "pid $pid ignored SIGTERM for ${grace}s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    pid_alive "$pid" || return 0
    sleep 0.1
  done
  die "pid $pid survived SIGKILL"
}

wait_http() {
  local url=$1 secs=${2:-30} i
  for ((i = 0; i < secs * 10; i++)); do
    curl -s -o /dev/null --max-time 2 "$url" && return 0
    sleep 0.1
  done
  return 1
}

await_started() {
  local name=$1 pid=$2 logfile=$3 check=$4 i
  for ((i = 0; i < 300; i++)); do
    "$check" && return 0
    pid_alive "$pid" || { tail -n 20 "$logfile" >&2; die "$name exited; log: $logfile"; }
    sleep 0.1
  done
  "$check" || { tail -n 20 "$logfile" >&2; stop_pid "$pid" 5; die "$name did not answer within 30 s"; }
}

port_listening() { # PORT: something listens on 127.0.0.1:PORT
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# The Debian archive URI the machine's apt sources use for bookworm "main"
# (deb822 *.sources first, then one-line *.list). Never hard-coded here.
apt_mirror() {
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk '
      function flush() { if (types ~ /(^| )deb( |$)/ && suites ~ /(^| )bookworm( |$)/ && uri != "") { print uri; found = 1; exit } }
      /^[[:space:]]*$/ { flush(); types = ""; uris = ""; suites = ""; uri = ""; next }
      /^Types:/  { types = $0; sub(/^Types:[[:space:]]*/, "", types) }
      /^URIs:/   { uri = $2 }
      /^Suites:/ { suites = $0; sub(/^Suites:[[:space:]]*/, "", suites) }
      END { if (!found) flush() }' "$f")
    [ -n "$uri" ] && { echo "$uri"; return 0; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    uri=$(awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } if ($(i+1) == "bookworm") { print $i; exit } }' "$f")
    [ -n "$uri" ] && { echo "$uri"; return 0; }
  done
  return 1
}
