#!/bin/sh
# Use the host's kernel headers when mounted; otherwise the image's 6.1 tree.
if [ ! -d "/lib/modules/$(uname -r)/build/include" ] && [ -z "${BCC_KERNEL_SOURCE:-}" ]; then
    export BCC_KERNEL_SOURCE=/opt/kernel-headers/build
fi
exec /opt/venv/bin/ebpf-net-exporter "$@"
