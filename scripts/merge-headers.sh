#!/bin/sh
# Merges Debian's split kernel headers, unpacked with dpkg -x under TREE (the
# linux-headers-*-common and linux-headers-*-amd64 packages), into one tree at DEST
# for BCC_KERNEL_SOURCE. bcc finds the -common half through /lib/modules/*/source,
# a link a container cannot make when the host's /lib/modules is mounted read-only;
# given BCC_KERNEL_SOURCE alone it would see the arch half only and fail to compile.
set -eu
tree=$1
dest=$2
common=$(echo "$tree"/usr/src/linux-headers-*-common)
arch=$(echo "$tree"/usr/src/linux-headers-*-amd64)
[ -d "$common/include" ] && [ -d "$arch/include" ] || {
    echo "merge-headers: no linux-headers-*-common and -amd64 trees under $tree" >&2
    exit 1
}
mkdir -p "$dest"
cp -a "$common/." "$dest/"
# The arch half's Makefile only includes the common one by its installed path.
(cd "$arch" && tar cf - --exclude=./Makefile .) | tar xf - -C "$dest"
touch "$dest/.ebpf-net-exporter-fallback-headers"
