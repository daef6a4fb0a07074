#!/usr/bin/env bash
# Builds deploy/docker/Dockerfile as localhost/ebpf-net-exporter with podman, from no registry:
# the Debian base (debian:bookworm-slim) is made with mmdebstrap from Debian's archive and
# imported under that name, so the build finds it locally. Steps inside the build reach the
# package archives as this host does: its pip configuration, local package indexes and CA
# certificates are mounted for them (at paths the image's own packages do not write).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=docker.io/library/debian:bookworm-slim
IMAGE=${IMAGE:-localhost/ebpf-net-exporter:latest}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if ! podman image exists "$BASE"; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    mmdebstrap --variant=minbase --quiet bookworm "$work/base.tar" "deb $MIRROR bookworm main"
    podman import --quiet "$work/base.tar" "$BASE" >/dev/null
fi

build_dir=$(mktemp -d)
trap 'rm -rf "$build_dir"' EXIT
# pip's settings inside the build: this host's indexes and CA, at the mounted paths.
{
    echo "[global]"
    echo "cert = /run/host-ca.crt"
    [ -d /opt/wheels ] && echo "find-links = /opt/wheels"
    indexes=""
    for dir in /opt/pypi /opt/pypi-more; do
        [ -d "$dir/simple" ] && indexes="$indexes file://$dir/simple"
    done
    [ -n "$indexes" ] && echo "extra-index-url =$indexes"
} > "$build_dir/pip.conf"
volumes=(--volume "$build_dir/pip.conf:/etc/pip.conf:ro"
         --volume /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro)
for dir in /opt/wheels /opt/pypi /opt/pypi-more; do
    [ -d "$dir" ] && volumes+=(--volume "$dir:$dir:ro")
done

podman build --isolation=chroot --pull=never "${volumes[@]}" \
    -f deploy/docker/Dockerfile -t "$IMAGE" .
echo "built $IMAGE"
