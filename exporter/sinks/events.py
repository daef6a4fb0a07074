"""Where the classifier's events go: each concern's JSON-lines log (http.events.output,
dns.events.output) and OpenTelemetry log records, fed from the classifier's ring buffers by
one polling thread."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from exporter.collector.periodic import Periodic
from exporter.config.schema import Config, OtlpConfig
from exporter.errors import SetupError
from exporter.sinks.jsonlines import EventLog

Handler = Callable[[Any], None]


class EventSinks:
    """The event logs, opened while the exporter may still open any file (`open_logs`), and
    the dispatch of each concern's events to its log and to OTLP (`start`)."""

    def __init__(self, config: Config, otlp: OtlpConfig | None,
                 interface_name: Callable[[int], str], stack: ExitStack) -> None:
        self.config, self.otlp = config, otlp
        self.interface_name = interface_name
        self.stack = stack
        self.logs: dict[str, EventLog] = {}  # by concern; one file may serve both
        self._records: Handler | None = None

    def wanted(self, concern: str) -> bool:
        """Whether the concern's program must publish events: a log or OTLP takes them."""
        return bool(self._output(concern)) or self.otlp is not None

    def _output(self, concern: str) -> str:
        return self.config.http.events.output if concern == "http" else \
            self.config.dns.events.output

    def open_logs(self, concerns: tuple[str, ...]) -> None:
        by_path: dict[str, EventLog] = {}
        http = self.config.http.events
        for concern in concerns:
            output = self._output(concern)
            if not output:
                continue
            if output not in by_path:
                key = f"{concern}.events.output"
                try:
                    by_path[output] = EventLog(output, http.include_query, self.interface_name,
                                               http.redact_query_params, key=key)
                except OSError as exc:
                    raise SetupError(f"{key}: cannot open {output} for appending "
                                     f"({exc.strerror}). Name a writable file, or \"-\" for "
                                     "standard output.") from None
                self.stack.callback(by_path[output].close)
            self.logs[concern] = by_path[output]

    def reopen(self) -> None:
        """SIGHUP: each log is opened again at its path (after logrotate moved it)."""
        for log in set(self.logs.values()):
            log.reopen()

    def handler(self, concern: str) -> Handler:
        handlers: list[Handler] = []
        if concern in self.logs:
            handlers.append(self.logs[concern])
        if self.otlp is not None:
            if self._records is None:
                from exporter.sinks.otlp import logs as otlp_logs
                from exporter.sinks.otlp import setup as otlp_setup

                records = otlp_logs.EventLogs(self.otlp, otlp_setup.resource(self.otlp),
                                              self.interface_name)
                self.stack.callback(records.close)
                self._records = records
            handlers.append(self._records)

        def dispatch(ev: Any) -> None:
            for handle in handlers:
                handle(ev)
        return dispatch

    def start(self, poll: Callable[[int], object]) -> None:
        """Poll the program's ring buffers (each opened with its handler: `poll` waits up to
        so many milliseconds for them) until the stop."""
        pump = Periodic("events", 0, lambda: poll(200))
        pump.start()
        self.stack.callback(pump.stop)
