"""Who: the local workload (systemd unit, container, Kubernetes pod) behind a cgroup id."""
