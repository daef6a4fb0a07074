"""OpenTelemetry's plumbing shared by the metric and log exports: where to send (the
configuration, else the OTEL_* environment, as the specification says), the SDK's exporter
for each protocol, the resource, and the bounded stop."""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from exporter import __version__
from exporter.config.schema import OtlpConfig
from exporter.errors import ConfigError

if TYPE_CHECKING:  # the SDK is imported only where OTLP is on: it costs memory
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

log = logging.getLogger(__name__)


def scope() -> InstrumentationScope:
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    return InstrumentationScope("ebpf-net-exporter", __version__)


def endpoint_configured(config: OtlpConfig | None, env: Mapping[str, str] = os.environ) -> bool:
    return bool((config and config.endpoint) or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))


def logs_endpoint_configured(config: OtlpConfig, env: Mapping[str, str] = os.environ) -> bool:
    """Whether log records have somewhere to go that the user named: the configured endpoint,
    OTEL_EXPORTER_OTLP_LOGS_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT. A metrics-only endpoint
    does not count: the SDK would send the records (client addresses, paths) to its default,
    localhost:4318, which on a hostNetwork pod is whatever listens there."""
    return bool(config.endpoint or env.get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")
                or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def resource(config: OtlpConfig) -> Resource:
    """Built-in attributes, then OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME over them, as
    the specification says, then the configuration's resource_attributes over those."""
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource

    attributes: dict[str, Any] = {"service.name": "ebpf-net-exporter",
                                  "service.version": __version__,
                                  "host.name": socket.gethostname()}
    attributes.update(OTELResourceDetector().detect().attributes)
    attributes.update(dict(config.resource_attributes))
    return Resource.create(attributes)


def _protocol(config: OtlpConfig) -> str:
    return config.protocol or os.environ.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL") \
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"


def _http_endpoint(config: OtlpConfig, signal: str) -> str | None:
    if not config.endpoint:
        return None  # the SDK reads OTEL_EXPORTER_OTLP_[SIGNAL_]ENDPOINT
    return config.endpoint.rstrip("/") + f"/v1/{signal}"


def metric_exporter(config: OtlpConfig) -> Any:
    return _exporter(config, "metrics")


def log_exporter(config: OtlpConfig) -> Any:
    return _exporter(config, "logs")


def _exporter(config: OtlpConfig, signal: str) -> Any:
    """The SDK's OTLP exporter for a signal ("metrics" or "logs") over the chosen protocol."""
    headers = dict(config.headers) or None
    cls: Any
    if _protocol(config) == "grpc":
        if signal == "metrics":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter as cls,
            )
        else:
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
                OTLPLogExporter as cls,
            )
        return cls(endpoint=config.endpoint or None, insecure=config.tls.insecure or None,
                   headers=headers, timeout=timeout(config),
                   credentials=_grpc_credentials(config))
    if signal == "metrics":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter as cls,
        )
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as cls
    return cls(endpoint=_http_endpoint(config, signal), headers=headers,
               timeout=timeout(config), certificate_file=config.tls.ca_file or None,
               client_certificate_file=config.tls.cert_file or None,
               client_key_file=config.tls.key_file or None)


def _grpc_credentials(config: OtlpConfig) -> Any:
    if config.tls.insecure or not (config.tls.ca_file or config.tls.cert_file):
        return None
    import grpc

    def read(path: str) -> bytes | None:
        if not path:
            return None
        with open(path, "rb") as f:
            return f.read()

    return grpc.ssl_channel_credentials(read(config.tls.ca_file), read(config.tls.key_file),
                                        read(config.tls.cert_file))


# How long a stop waits for OTLP exports in flight and the last flush of log records.
STOP_SECONDS = 2.0


def bounded(step: Callable[[], object]) -> None:
    """Run `step` in a daemon thread and wait for it STOP_SECONDS at most."""
    thread = threading.Thread(target=step, name="otlp-stop", daemon=True)
    thread.start()
    thread.join(STOP_SECONDS)
    if thread.is_alive():
        log.warning("OTLP: the endpoint did not answer within %g s at stop; what was "
                    "queued is dropped", STOP_SECONDS)


def timeout(config: OtlpConfig) -> float:
    """Seconds an export may take: the configuration's, else the environment's (in
    milliseconds, as the specification says), else 10."""
    if config.timeout is not None:
        return config.timeout
    return milliseconds("OTEL_EXPORTER_OTLP_TIMEOUT", 10000) / 1000


def milliseconds(variable: str, default: int) -> float:
    raw = os.environ.get(variable, "")
    if not raw.strip():
        return float(default)
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(variable, f"expected a positive number of milliseconds, got {raw!r}")
    return value
