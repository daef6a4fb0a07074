"""`serve`: every part of the exporter, started in order and stopped in reverse."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

from exporter.collector.collector import Collector
from exporter.config.schema import Config, OtlpConfig
from exporter.connections.loader import TcpLifecycle
from exporter.drops.loader import KernelDrops
from exporter.errors import SetupError
from exporter.flows.loader import FlowAccounting
from exporter.flows.series import FlowMetrics
from exporter.host import bpfstats, compiler, privileges
from exporter.host.links import InterfaceWatcher
from exporter.host.netns_helper import NetnsHelper
from exporter.http.loader import HttpInspection, event_pump
from exporter.http.loader import cflags as http_cflags
from exporter.model.events import HttpEvent
from exporter.model.labels import WORKLOAD_LABELS
from exporter.sinks.jsonlines import EventLog
from exporter.sinks.otlp import setup as otlp
from exporter.sinks.prometheus import serve
from exporter.sinks.web.config import WebConfig
from exporter.workloads.resolver import Workloads, open_workloads

log = logging.getLogger(__name__)


class Agent:
    def __init__(self, config: Config, web: WebConfig | None = None) -> None:
        self.config = config
        self.web = web
        self._stack = ExitStack()
        # What holds TC filters, and the watcher that would put them back: taken off first.
        self._watcher: InterfaceWatcher | None = None
        self._classifiers: list[FlowAccounting] = []
        self._event_log: EventLog | None = None
        self._otlp: OtlpConfig | None = (
            (config.otlp or OtlpConfig()) if otlp.endpoint_configured(config.otlp) else None)
        self._otlp_logs = bool(self._otlp and self._otlp.logs
                               and otlp.logs_endpoint_configured(self._otlp))
        if self._otlp and self._otlp.logs and not self._otlp_logs:
            log.warning("OTLP: metrics only; HTTP events are not sent as log records, as no "
                        "endpoint for them is named (set otlp.endpoint, "
                        "OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_LOGS_ENDPOINT, or "
                        "otlp.logs: false to say so)")

    def start(self) -> None:
        """Load, attach and serve; on failure, what was started is stopped again."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Filters off every interface first, so that nothing of ours stays on the node's
        interfaces should the rest outlast the grace period (a SIGKILL then loses nothing
        that matters); then the rest, last started first, each step bounded."""
        if self._watcher is not None:
            self._watcher.stop()
        for part in self._classifiers:
            part.detach_all()
        self._stack.close()

    def _start(self) -> None:
        config, stack = self.config, self._stack
        # Resolved only where a workload label is asked for: it walks the cgroup tree.
        wanted = {name: bool(set(labels) & set(WORKLOAD_LABELS)) for name, labels in
                  (("connections", config.connections.labels), ("flows", config.flows.labels),
                   ("http", config.http.labels if config.http.enabled else ()))}
        workloads = open_workloads(config.workloads) if any(wanted.values()) else None
        keep_gone = config.workloads.keep_gone
        # Listen queues of other namespaces are read by a helper that keeps what entering
        # them needs; it must start before the exporter gives that up.
        helper = NetnsHelper()
        helper.start()
        stack.callback(helper.close)

        def tracepoint_programs() -> tuple[TcpLifecycle, KernelDrops | None]:
            conns = TcpLifecycle(config.connections,
                                 workloads=workloads if wanted["connections"] else None,
                                 keep_gone=keep_gone, netns_helper=helper)
            try:
                return conns, KernelDrops() if config.drops.enabled else None
            except BaseException:
                conns.close()
                raise

        # The tracepoint programs compile beside the classifiers, a compiling process each:
        # on two CPUs the first scrape comes about a second sooner.
        with ThreadPoolExecutor(1, thread_name_prefix="compile") as pool:
            loading = pool.submit(tracepoint_programs)
            failed: BaseException | None = None
            try:
                accounting, http = self._classifier_programs(workloads, wanted, keep_gone)
            except BaseException as exc:
                failed = exc
            try:
                connections, drops = loading.result()
            except BaseException:
                if failed is None:
                    raise
            else:
                stack.callback(connections.close)
                if drops is not None:
                    stack.callback(drops.close)
            if failed is not None:
                raise failed
        if config.bpf_stats:
            try:
                stack.callback(os.close, bpfstats.enable_stats())
            except OSError as exc:
                raise SetupError(f"bpf_stats: true needs CAP_SYS_ADMIN to turn the kernel's BPF "
                                 f"statistics on ({exc.strerror}). Grant it, set "
                                 "kernel.bpf_stats_enabled=1 yourself, or set bpf_stats: "
                                 "false.") from None
        # Every program is loaded: the compiling process (and its LLVM) ends. Interfaces that
        # come later get the programs already loaded.
        compiler.done()
        # Files are opened while root can still read and write anyone's.
        event_log = self._open_event_log(accounting) if http is not None else None
        # Everything that needs more than CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN is done;
        # no thread has started yet, so all of them inherit the smaller set.
        privileges.keep_only()
        # Made before the collector, whose snapshots carry its results; started after it.
        push = None
        if self._otlp is not None:  # the OpenTelemetry SDK is imported only then
            from exporter.sinks.otlp import metrics as otlp_metrics

            push = otlp_metrics.reader(self._otlp, lambda: collector.snapshot)
        flows = (FlowMetrics(accounting, workloads=workloads if wanted["flows"] else None,
                             workload_keep=keep_gone)
                 if accounting else None)
        collector = Collector(config.interval, connections, flows, http,
                              push.results.copy if push else None, drops)
        if http is not None and accounting is not None and self._wants_events():
            self._publish_events(http, accounting, event_log)
        if accounting is not None:
            self._follow_interfaces(accounting, http)
        collector.start()
        stack.callback(collector.stop)
        if push is not None:
            push.start()
            stack.callback(push.stop)
        try:
            server, _thread = serve(config.listen, lambda: collector.snapshot, self.web)
        except OSError as exc:
            raise SetupError(f"cannot listen on {config.listen}: {exc.strerror}. Choose another "
                             "address with --web.listen-address or `listen` in the file.") from None
        stack.callback(server.server_close)  # after shutdown (callbacks run last first)
        stack.callback(server.shutdown)

    def reopen_logs(self) -> None:
        """SIGHUP: the event log is opened again at its path (after logrotate moved it)."""
        if self._event_log is not None:
            self._event_log.reopen()

    def _classifier_programs(self, workloads: Workloads | None, wanted: dict[str, bool],
                             keep_gone: float
                             ) -> tuple[FlowAccounting | None, HttpInspection | None]:
        config, stack = self.config, self._stack
        if not config.interfaces:
            return None, None
        # HTTP is matched inside the traffic classifier's run, on the flow entry it holds;
        # its series take each packet's owner from that entry.
        http_flags = (http_cflags(config.http, self._wants_events(), False, wanted["http"])
                      if config.http.enabled else None)
        accounting = FlowAccounting(
            config.flows, http=http_flags,
            cgroup_root=(workloads.root if workloads and (wanted["flows"] or wanted["http"])
                         else None))
        stack.callback(accounting.close)
        self._classifiers.append(accounting)
        if not config.http.enabled:
            return accounting, None
        http = HttpInspection(config.http, accounting.bpf,
                              workloads=workloads if wanted["http"] else None,
                              keep_gone=keep_gone)
        return accounting, http

    def _wants_events(self) -> bool:
        return bool(self.config.http.events.output) or self._otlp_logs

    def _open_event_log(self, accounting: FlowAccounting | None) -> EventLog | None:
        events = self.config.http.events
        if not events.output or accounting is None:
            return None
        try:
            event_log = EventLog(events.output, events.include_query,
                                 accounting.interface_name, events.redact_query_params)
        except OSError as exc:
            raise SetupError(f"http.events.output: cannot open {events.output} for appending "
                             f"({exc.strerror}). Name a writable file, or \"-\" for standard "
                             "output.") from None
        self._stack.callback(event_log.close)
        self._event_log = event_log
        return event_log

    def _publish_events(self, http: HttpInspection, accounting: FlowAccounting,
                        event_log: EventLog | None) -> None:
        handlers: list[Callable[[HttpEvent], None]] = []
        if event_log is not None:
            handlers.append(event_log)
        if self._otlp is not None and self._otlp_logs:
            from exporter.sinks.otlp import logs as otlp_logs

            records = otlp_logs.EventLogs(self._otlp, otlp.resource(self._otlp),
                                     accounting.interface_name)
            self._stack.callback(records.close)
            handlers.append(records)

        def dispatch(ev: HttpEvent) -> None:
            for handle in handlers:
                handle(ev)

        http.open_events(dispatch)
        pump = event_pump(http)
        pump.start()
        self._stack.callback(pump.stop)

    def _follow_interfaces(self, accounting: FlowAccounting,
                           http: HttpInspection | None) -> None:
        attach, forget = accounting.attach, accounting.forget
        if http is not None:  # HTTP runs inside the traffic classifier: it only needs to know
            def attach(ifindex: int, name: str) -> None:  # which links face workloads
                accounting.attach(ifindex, name)
                http.mark(ifindex, name)

            def forget(ifindex: int, name: str) -> None:
                accounting.forget(ifindex, name)
                http.unmark(ifindex)

        watcher = InterfaceWatcher(self.config.interfaces, attach, forget, accounting.restore)
        watcher.start()
        self._watcher = watcher
        self._stack.callback(watcher.stop)
        for name in self.config.interfaces:
            if not any(c in name for c in "*?[") and name not in watcher.present.values():
                log.warning("interface %s does not exist (yet); it is counted once it appears. "
                            "`ip link` lists the interfaces of this namespace.", name)
