#!/usr/bin/env bash
# Makes sure bcc finds kernel headers at /lib/modules/$(uname -r)/build.
# Order: they are already there; the distribution has this kernel's package;
# else Debian's 6.1 headers, unpacked (not installed) and linked. The fallback
# works for this exporter only because its BPF programs read tracepoint
# arguments, __sk_buff fields and packet bytes, never kernel struct layouts.
set -euo pipefail

release=$(uname -r)
modules=/lib/modules/$release
store=${HEADERS_STORE:-/var/cache/ebpf-net-exporter/headers}
marker=.ebpf-net-exporter-fallback-headers

if [ -d "$modules/build/include" ]; then
    exit 0
fi

if apt-get install -y -q "linux-headers-$release" >/dev/null 2>&1 && [ -d "$modules/build/include" ]; then
    echo "kernel-headers: installed linux-headers-$release"
    exit 0
fi

# The newest Debian 6.1 ABI whose headers and kbuild packages are available.
abi=$(apt-cache search --names-only '^linux-headers-6\.1\.0-[0-9]+-amd64$' \
      | awk '{print $1}' | sed -E 's/^linux-headers-6\.1\.0-([0-9]+)-amd64$/\1/' | sort -n | tail -n 1)
if [ -z "$abi" ]; then
    apt-get update -q >/dev/null
    abi=$(apt-cache search --names-only '^linux-headers-6\.1\.0-[0-9]+-amd64$' \
          | awk '{print $1}' | sed -E 's/^linux-headers-6\.1\.0-([0-9]+)-amd64$/\1/' | sort -n | tail -n 1)
fi
if [ -z "$abi" ]; then
    echo "kernel-headers: no headers for $release and no Debian linux-headers-6.1.0-*-amd64 package found" >&2
    exit 1
fi

tree=$store/6.1.0-$abi
build=$tree/usr/src/linux-headers-6.1.0-$abi-amd64
if [ ! -f "$build/$marker" ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && apt-get download -q "linux-headers-6.1.0-$abi-amd64" \
        "linux-headers-6.1.0-$abi-common" linux-kbuild-6.1 >/dev/null 2>&1)
    rm -rf "$tree"
    mkdir -p "$tree"
    for deb in "$work"/*.deb; do
        dpkg -x "$deb" "$tree"
    done
    touch "$build/$marker"
fi

mkdir -p "$modules"
ln -sfn "$build" "$modules/build"
ln -sfn "$tree/usr/src/linux-headers-6.1.0-$abi-common" "$modules/source"
echo "kernel-headers: linked Debian 6.1.0-$abi headers as $modules/build (fallback)"
