#!/usr/bin/env bash
# Make a Debian bookworm base image locally (debootstrap + `docker import`), for machines
# with no registry: CI here cannot `docker pull python:3.11-slim`, so the Dockerfile's
# BASE_IMAGE build argument points at this image instead. It has what the Dockerfile expects
# of a base: Debian bookworm, python3 (3.11) with the venv module, CA certificates.
#
#   scripts/docker/base_image.sh [TAG]        (default commit-base:bookworm; needs root)
#
# Reuses the image when the engine already has TAG. The Debian mirror is the first bookworm
# source of this machine's apt configuration ($DEBIAN_MIRROR overrides).
set -euo pipefail

tag="${1:-commit-base:bookworm}"
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "base image: $tag already present"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "base image: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }

mirror_from_apt() {
  local f
  # deb822 sources (Debian 12 default): the URIs of the first stanza listing bookworm.
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'BEGIN{RS=""; FS="\n"} /Suites:[^\n]*bookworm([ \n]|$)/ {
           for (i = 1; i <= NF; i++) if ($i ~ /^URIs:/) { split($i, a, " "); print a[2]; exit } }' "$f"
  done | head -n 1
  # one-line sources: `deb [opts] URL bookworm main`.
  # (a machine may have no sources.list at all: cat's failure must not end the script
  # under `set -e -o pipefail`, it only means "no mirror from there")
  { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true; } |
    awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { if ($(i+1) == "bookworm") print $i; break } }' |
    head -n 1
  return 0
}
mirror="${DEBIAN_MIRROR:-$(mirror_from_apt | head -n 1)}"
mirror="${mirror:-http://deb.debian.org/debian}"

work="$(mktemp -d /tmp/commit-base.XXXXXX)"
trap 'rm -rf "$work"' EXIT
echo "base image: debootstrap bookworm from $mirror"
if ! debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1; then
  echo "base image: debootstrap failed; last lines of its log:" >&2
  tail -n 30 "$work/debootstrap.log" >&2
  [ -f "$work/rootfs/debootstrap/debootstrap.log" ] && tail -n 30 "$work/rootfs/debootstrap/debootstrap.log" >&2
  exit 1
fi
# Downloaded packages and apt lists are not part of a base (the Dockerfile runs apt-get update).
rm -rf "$work/rootfs/var/cache/apt/"*.bin "$work/rootfs/var/cache/apt/archives/"*.deb \
       "$work/rootfs/var/lib/apt/lists/"*
tar --numeric-owner -C "$work/rootfs" -c . |
  docker import \
    -c 'ENV LANG=C.UTF-8' \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["/bin/bash"]' \
    -m "debootstrap --variant=minbase bookworm ($mirror) + python3, python3-venv, ca-certificates" \
    - "$tag" >/dev/null
echo "base image: $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
