#!/usr/bin/env bash
# Build the Kubernetes node and control-plane binaries (kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl) from
# Debian bookworm's `kubernetes` source package, once, into a cache outside
# the checkout:  ${ONCOLOGY_K8S_CACHE:-/var/cache/oncology/k8s}/<version>/bin
#
# Idempotent: when the cache is complete it only prints the path.
# Output (stdout): the bin directory.  Progress goes to stderr.
# Needs root (apt-get).  Nothing is downloaded except through apt-get.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

stamp="$K8S_CACHE/.complete"
cache_ok() {
  [ -f "$stamp" ] || return 1
  local c
  for c in $K8S_COMPONENTS; do [ -x "$K8S_BIN/$c" ] || return 1; done
}

if cache_ok; then
  log "cache hit: $K8S_BIN ($(cat "$stamp"))"
  echo "$K8S_BIN"
  exit 0
fi

need_root
mkdir -p "$K8S_CACHE"
# One build at a time per version (a second caller waits, then hits the cache).
exec 9>"$K8S_CACHE/.lock"
flock 9
if cache_ok; then echo "$K8S_BIN"; exit 0; fi

t0=$(date +%s)
# shellcheck disable=SC2086
ensure_apt_packages $K8S_APT_PACKAGES

work="$K8S_CACHE/work"
rm -rf "$work"
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/apt/sources.list.d" "$work/src"

# --- 1. a private deb-src entry, copied from the machine's own `deb` entry ---
# The mirror URI and Signed-By are read from the apt configuration at run
# time; nothing here names a host.  The entry lives in a private apt state
# directory, so the machine's apt configuration and lists are not touched.
srcs="$work/apt/sources.list.d/k8s-src.sources"
: >"$srcs"
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  awk -v RS= -v ORS='\n\n' '
    {
      n = split($0, L, "\n"); types = ""; suites = ""; comps = ""; enabled = "yes"; out = ""
      for (i = 1; i <= n; i++) {
        line = L[i]
        if (line ~ /^#/) continue
        if (tolower(line) ~ /^types:/)      { types = line; continue }
        if (tolower(line) ~ /^suites:/)     { suites = line; continue }
        if (tolower(line) ~ /^components:/) { comps = line; continue }
        if (tolower(line) ~ /^enabled:/)    { enabled = tolower(line); sub(/^enabled:[ \t]*/, "", enabled); continue }
        if (tolower(line) ~ /^architectures:/) continue
        out = out line "\n"
      }
      if (enabled == "no") next
      if (types !~ /[: \t]deb([ \t]|$)/) next
      if (suites !~ /[: \t]bookworm([ \t]|$)/) next
      if (comps !~ /[: \t]main([ \t]|$)/) next
      printf "Types: deb-src\nSuites: bookworm\nComponents: main\n%s", out
      exit
    }' "$f" >>"$srcs"
  [ -s "$srcs" ] && break
done
if [ ! -s "$srcs" ] && [ -f /etc/apt/sources.list ]; then
  # one-line format: deb [opts] URI bookworm main ...
  awk '$1 == "deb" {
         o = ""; i = 2
         if ($2 ~ /^\[/) { while ($i !~ /\]$/) { o = o $i " "; i++ } o = o $i " "; i++ }
         uri = $i; suite = $(i + 1)
         if (suite == "bookworm") { print "deb-src " o uri " bookworm main"; exit }
       }' /etc/apt/sources.list >"$work/apt/sources.list.d/k8s-src.list"
  rm -f "$srcs"
fi
[ -n "$(find "$work/apt/sources.list.d" -type f -size +0)" ] \
  || die "no 'deb ... bookworm main' entry in the machine's apt sources"

aptsrc=(-o Dir::Etc::SourceList=/dev/null
        -o Dir::Etc::SourceParts="$work/apt/sources.list.d"
        -o Dir::State::Lists="$work/apt/lists"
        -o Dir::Cache="$work/apt/cache"
        -o APT::Sandbox::User=root)
log "fetching the source index (private apt state in $work/apt)"
apt-get "${aptsrc[@]}" update -qq
log "apt-get source --download-only kubernetes"
(cd "$work/src" && apt-get "${aptsrc[@]}" source --download-only -qq kubernetes >&2)

orig=$(find "$work/src" -maxdepth 1 -name 'kubernetes_*.orig.tar.*' | head -1)
[ -n "$orig" ] || die "no orig tarball downloaded"
log "source: $(basename "$orig")"

# --- 2. build ---------------------------------------------------------------
tree="$work/k8s"
mkdir -p "$tree"
tar -C "$tree" --strip-components=1 -xf "$orig"
# Debian's own patches (kubectl printing fixes, CVE-2021-25743), in series order.
deb=$(find "$work/src" -maxdepth 1 -name 'kubernetes_*.debian.tar.*' | head -1)
if [ -n "$deb" ]; then
  tar -C "$tree" -xf "$deb" debian/patches
  if [ -f "$tree/debian/patches/series" ]; then
    grep -v '^[[:space:]]*\(#\|$\)' "$tree/debian/patches/series" | while read -r p _; do
      log "patch: $p"
      patch -d "$tree" -p1 -s -N <"$tree/debian/patches/$p" >&2
    done
  fi
fi
ver=$(sed -n 's/^gitVersion=\(v[0-9.]*\).*/\1/p' "$tree/.gitversion" 2>/dev/null || true)
[ "${ver#v}" = "$K8S_VERSION" ] || ver="v$K8S_VERSION"
# The tarball has no .git: give the build its version so that the binaries
# (and the node, and `kubectl version`) report v1.20.2 and not v0.0.0.
cat >"$work/version.env" <<V
KUBE_GIT_VERSION='$ver'
KUBE_GIT_MAJOR='${K8S_VERSION%%.*}'
KUBE_GIT_MINOR='$(echo "$K8S_VERSION" | cut -d. -f2)'
KUBE_GIT_TREE_STATE='archive'
KUBE_GIT_COMMIT=''
V
mkdir -p "$tree/.go/src/k8s.io"
ln -s ../../.. "$tree/.go/src/k8s.io/kubernetes"
whats=""
for c in $K8S_COMPONENTS; do whats="$whats cmd/$c"; done
log "make WHAT=\"${whats# }\" (about 8-10 minutes on 2 cores)"
(
  cd "$tree"
  export GOPATH="$tree/.go" GOCACHE="$K8S_CACHE/gocache" GOFLAGS='' GO111MODULE='' \
         CGO_ENABLED=0 GOPROXY=off GOSUMDB=off GOTOOLCHAIN=local \
         KUBE_GIT_VERSION_FILE="$work/version.env"
  nice -n 10 make WHAT="${whats# }" >"$work/build.log" 2>&1
) || { tail -40 "$work/build.log" >&2; die "build failed (log: $work/build.log)"; }

out="$tree/_output/local/bin/linux/$(go env GOARCH)"
rm -rf "$K8S_BIN.tmp"
mkdir -p "$K8S_BIN.tmp"
for c in $K8S_COMPONENTS; do install -m 0755 "$out/$c" "$K8S_BIN.tmp/$c"; done
rm -rf "$K8S_BIN"
mv "$K8S_BIN.tmp" "$K8S_BIN"
cp "$work/build.log" "$K8S_CACHE/build.log"
secs=$(( $(date +%s) - t0 ))
echo "$(basename "$orig") built in ${secs}s on $(date -u +%Y-%m-%dT%H:%M:%SZ), $("$K8S_BIN/kubelet" --version)" >"$stamp"
[ "${ONCOLOGY_K8S_KEEP_SRC:-0}" = 1 ] || rm -rf "$work" "$K8S_CACHE/gocache"
log "built in ${secs}s: $K8S_BIN"
echo "$K8S_BIN"
