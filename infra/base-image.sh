#!/usr/bin/env bash
# Build the offline base image oncology-base:bookworm (Debian 12 minbase with
# python3, python3-venv) with debootstrap from the Debian mirror that the
# machine's apt sources already use, and import it into the project's dockerd
# (infra/docker.sh, started if needed). No registry is involved.
#
#   infra/base-image.sh            build/import unless the image exists
#   infra/base-image.sh --force    rebuild the rootfs and re-import
#
# The rootfs tarball is cached in $ONCOLOGY_INFRA_DIR/base-image/, keyed by
# suite and package list, so importing it again (a new dockerd, a wiped
# data-root) takes seconds. Env: ONCOLOGY_BASE_IMAGE (default oncology-base:bookworm).
set -euo pipefail
# shellcheck source=infra/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMAGE=${ONCOLOGY_BASE_IMAGE:-oncology-base:bookworm}
SUITE=bookworm
PACKAGES=python3-minimal,python3,python3-venv
DIR=$INFRA_DIR/base-image
KEY=$(printf '%s %s minbase' "$SUITE" "$PACKAGES" | sha256sum | cut -c1-12)
TARBALL=$DIR/rootfs-$SUITE-$KEY.tar
FORCE=0
[ "${1:-}" = --force ] && FORCE=1

need_root
mkdir -p "$DIR"
exec 9>"$DIR/.lock"
flock 9 # one build at a time

"$INFRA_LIB_DIR/docker.sh" up
eval "$("$INFRA_LIB_DIR/docker.sh" env)"
docker() { /usr/bin/docker "$@"; }

if [ "$FORCE" = 0 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  log "$IMAGE already present ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
  exit 0
fi

T0=$(date +%s.%N)
if [ "$FORCE" = 1 ] || [ ! -s "$TARBALL" ]; then
  ensure_apt debootstrap debian-archive-keyring
  MIRROR=$(apt_mirror) || die "no Debian $SUITE mirror found in the apt sources (/etc/apt/sources.list*)"
  ROOTFS=$DIR/rootfs.tmp
  cleanup() {
    # debootstrap mounts /proc and /sys inside; never leave them mounted
    { grep -oE " $ROOTFS/[^ ]*" /proc/mounts 2>/dev/null || true; } | sort -r | while read -r m; do umount -l "$m" || true; done
    rm -rf "$ROOTFS" "$TARBALL.tmp"
  }
  trap cleanup EXIT
  cleanup
  log "debootstrap $SUITE (minbase + $PACKAGES) from the apt sources' mirror"
  if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" >"$DIR/debootstrap.log" 2>&1; then
    tail -n 20 "$DIR/debootstrap.log" >&2
    [ -f "$ROOTFS/debootstrap/debootstrap.log" ] && tail -n 20 "$ROOTFS/debootstrap/debootstrap.log" >&2
    die "debootstrap failed; log: $DIR/debootstrap.log"
  fi
  log "debootstrap done in $(elapsed "$T0")s"
  rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/cache/apt/*.bin \
    "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/log/*.log "$ROOTFS"/var/log/apt/* \
    "$ROOTFS"/debootstrap "$ROOTFS"/tmp/* "$ROOTFS"/root/.cache
  mkdir -p "$ROOTFS/var/lib/apt/lists/partial"
  tar --numeric-owner --xattrs -C "$ROOTFS" -cf "$TARBALL.tmp" .
  mv "$TARBALL.tmp" "$TARBALL"
  cleanup
  trap - EXIT
  # older tarballs (other package lists) are of no further use
  find "$DIR" -maxdepth 1 -name "rootfs-*.tar" ! -name "$(basename "$TARBALL")" -delete
else
  log "using the cached rootfs $TARBALL"
fi

docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' \
  --change "LABEL org.opencontainers.image.description=\"Debian $SUITE minbase with $PACKAGES (debootstrap, offline)\"" \
  --message "infra/base-image.sh: debootstrap $SUITE minbase $PACKAGES" \
  "$TARBALL" "$IMAGE" >/dev/null
SIZE=$(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')
log "$IMAGE imported in $(elapsed "$T0")s total ($SIZE; python: $(docker run --rm "$IMAGE" python3 -c 'import sys; print(sys.version.split()[0])'))"
