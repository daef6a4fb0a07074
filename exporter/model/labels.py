"""Every label name, once: its OpenTelemetry attribute, and which labels configuration may
switch on for each concern."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Label:
    name: str  # the Prometheus label
    attribute: str  # the OpenTelemetry attribute (semantic conventions where they exist)
    numeric: bool = False  # OTLP carries it as an integer when the value is one

    def otlp_value(self, value: str) -> str | int:
        return int(value) if self.numeric and value.isdigit() else value


LABELS = {label.name: label for label in (
    Label("direction", "direction"),
    Label("server_port", "server.port", numeric=True),
    Label("peer_address", "network.peer.address"),
    Label("process", "process.executable.name"),
    Label("interface", "network.interface.name"),
    Label("network_io_direction", "network.io.direction"),
    Label("protocol", "network.transport"),
    Label("reason", "error.type"),
    Label("type", "type"),
    Label("role", "role"),
    Label("http_request_method", "http.request.method"),
    Label("http_response_status_code", "http.response.status_code", numeric=True),
    Label("http_route", "http.route"),
    Label("dns_question_type", "dns.question.type"),
    Label("dns_response_code", "dns.response.code"),
    Label("dns_question_name", "dns.question.name"),
    # Who: the local workload (exporter/workloads/).
    Label("systemd_unit", "systemd.unit"),
    Label("container_id", "container.id"),
    Label("k8s_namespace_name", "k8s.namespace.name"),
    Label("k8s_pod_name", "k8s.pod.name"),
    Label("k8s_container_name", "k8s.container.name"),
    # The exporter's own metrics.
    Label("map", "map"),
    Label("program", "program"),
    Label("ring", "ring"),
    Label("metric_group", "metric_group"),
    Label("source", "source"),
    Label("result", "result"),
    Label("version", "version"),
)}

# The local workload's labels, opt-in (exporter/workloads/resolver.py fills them).
WORKLOAD_LABELS = ("systemd_unit", "container_id", "k8s_namespace_name", "k8s_pod_name",
                   "k8s_container_name")

# What the configuration's `labels` lists may hold, per concern.
CONNECTION_LABELS = ("direction", "server_port", "peer_address", "process", *WORKLOAD_LABELS)
DEFAULT_CONNECTION_LABELS = ("direction", "server_port")
FLOW_LABELS = ("interface", "network_io_direction", "protocol", "server_port", "peer_address",
               *WORKLOAD_LABELS)
DEFAULT_FLOW_LABELS = ("interface", "network_io_direction", "protocol", "server_port")
HTTP_LABELS = ("http_request_method", "http_response_status_code", "server_port")
# http.labels: those three, always, and workload labels if asked for.
HTTP_CONFIG_LABELS = (*HTTP_LABELS, *WORKLOAD_LABELS)
HTTP_ROUTE_LABEL = "http_route"
DNS_LABELS = ("dns_question_type", "dns_response_code", "server_port")
# dns.labels: those three, always, and workload labels if asked for.
DNS_CONFIG_LABELS = (*DNS_LABELS, *WORKLOAD_LABELS)
DNS_NAME_LABEL = "dns_question_name"
