"""HTTP status-line and DNS answer events as OpenTelemetry log records."""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from exporter import __version__
from exporter.config.schema import OtlpConfig
from exporter.model.events import DnsEvent, HttpEvent
from exporter.sinks.otlp.setup import bounded, log_exporter


class EventLogs:
    """HTTP status-line and DNS answer events as OpenTelemetry log records (bounded batch
    queue)."""

    def __init__(self, config: OtlpConfig, res: Resource,
                 interface_name: Callable[[int], str]) -> None:
        self.provider = LoggerProvider(resource=res)
        self.provider.add_log_record_processor(
            BatchLogRecordProcessor(log_exporter(config), max_queue_size=2048,
                                    schedule_delay_millis=1000))
        self.logger = self.provider.get_logger("ebpf-net-exporter", __version__)
        self.interface_name = interface_name

    def __call__(self, ev: HttpEvent | DnsEvent) -> None:
        if isinstance(ev, DnsEvent):
            self._dns(ev)
            return
        self.logger.emit(LogRecord(
            timestamp=int(ev.time * 1e9),
            severity_number=SeverityNumber.INFO,
            event_name="http.response",
            body=f"{ev.method} {ev.path.split('?', 1)[0]} {ev.status} {ev.reason}",
            attributes={
                "http.request.method": ev.method,
                "url.path": ev.path.split("?", 1)[0],
                "http.response.status_code": ev.status,
                "http.response.reason": ev.reason,
                "http.request.duration": ev.latency_ns / 1e9,
                **self._flow(ev),
            }))

    def _dns(self, ev: DnsEvent) -> None:
        self.logger.emit(LogRecord(
            timestamp=int(ev.time * 1e9),
            severity_number=SeverityNumber.INFO,
            event_name="dns.answer",
            body=f"{ev.name} {ev.qtype} {ev.rcode} {ev.answers}",
            attributes={
                "dns.question.name": ev.name,
                "dns.question.type": ev.qtype,
                "dns.response.code": ev.rcode,
                "dns.answers": ev.answers,
                "dns.id": ev.id,
                "dns.lookup.duration": ev.latency_ns / 1e9,
                "network.transport": ev.protocol,
                **self._flow(ev),
            }))

    def _flow(self, ev: HttpEvent | DnsEvent) -> dict[str, str | int]:
        """Every record's attributes of where it passed and between whom."""
        return {
            "network.interface.name": self.interface_name(ev.ifindex),
            "client.address": str(ev.client),
            "client.port": ev.client_port,
            "server.address": str(ev.server),
            "server.port": ev.server_port,
            "role": ev.role,
        }

    def close(self) -> None:
        # Shutting the provider down flushes the queue, for as long as an endpoint that never
        # answers makes it wait: bounded like the metrics' stop.
        bounded(self.provider.shutdown)
