# `make run` and `make test` do all set-up themselves; `make setup` is that step.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := python3-bpfcc python3-pyroute2 bpftool python3-venv python3-yaml \
	iproute2 util-linux libcap2-bin curl tshark iperf3 nginx-light hey wrk prometheus \
	iptables bpfcc-tools dnsmasq-base bind9-dnsutils python3-seccomp
# What `make image` needs besides: podman and buildah build, mmdebstrap makes the Debian base.
IMAGE_APT_PACKAGES := podman buildah mmdebstrap
CONFIG ?= config.yaml
PYTEST_ARGS ?=

.PHONY: setup apt run test test-unit test-kernel image test-image lint typecheck clean

setup: apt $(VENV)/.installed
	@scripts/kernel-headers.sh

apt:
	@scripts/apt-install.sh $(APT_PACKAGES)

# bcc's bindings live in Debian's Python; the venv reaches them through system site-packages.
$(VENV)/.installed: pyproject.toml | apt
	/usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

run: setup
	$(VENV)/bin/ebpf-net-exporter serve --config $(CONFIG)

lint: setup
	$(VENV)/bin/ruff check exporter tests bench

typecheck: setup
	$(VENV)/bin/mypy

# Every test: tests/unit, then tests/kernel (pyproject's testpaths). The kernel tests need
# root: without it they fail, naming the reason; they are never skipped.
test: setup lint typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

# The fast set: no root, no kernel headers, no lint.
test-unit: $(VENV)/.installed
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# Programs loaded into the running kernel, namespaces, the exporter process: as root.
test-kernel: setup
	$(PY) -m pytest tests/kernel $(PYTEST_ARGS)

# The image (deploy/docker/Dockerfile) as localhost/ebpf-net-exporter, from no registry.
image: setup
	@scripts/apt-install.sh $(IMAGE_APT_PACKAGES)
	scripts/build-image.sh

# The exporter run from the image's root file system against the running kernel. Minutes,
# for the build: not in `make test`, a step of its own in .ci/run.
test-image: image
	$(PY) -m pytest tests/image $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
