"""`serve`: every part of the exporter, started in order and stopped in reverse."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

from exporter.collector.collector import Collector
from exporter.config.schema import Config, OtlpConfig
from exporter.connections.loader import TcpLifecycle
from exporter.dns.loader import DnsInspection
from exporter.dns.loader import cflags as dns_cflags
from exporter.drops.loader import KernelDrops
from exporter.errors import SetupError
from exporter.flows.loader import FlowAccounting
from exporter.flows.series import FlowMetrics
from exporter.host import bpfstats, compiler, privileges
from exporter.host.links import InterfaceWatcher
from exporter.host.netns_helper import NetnsHelper
from exporter.http.loader import HttpInspection
from exporter.http.loader import cflags as http_cflags
from exporter.model.labels import WORKLOAD_LABELS
from exporter.sinks.events import EventSinks
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
        self._events: EventSinks | None = None
        self._otlp: OtlpConfig | None = (
            (config.otlp or OtlpConfig()) if otlp.endpoint_configured(config.otlp) else None)
        self._otlp_logs = bool(self._otlp and self._otlp.logs
                               and otlp.logs_endpoint_configured(self._otlp))
        if self._otlp and self._otlp.logs and not self._otlp_logs:
            log.warning("OTLP: metrics only; HTTP and DNS events are not sent as log records, as no "
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
                   ("http", config.http.labels if config.http.enabled else ()),
                   ("dns", config.dns.labels if config.dns.enabled else ()))}
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
                accounting, http, dns = self._classifier_programs(workloads, wanted, keep_gone)
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
        events = self._events
        if events is not None:
            events.open_logs(tuple(c for c, part in (("http", http), ("dns", dns)) if part))
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
                              push.results.copy if push else None, drops, dns)
        if events is not None and accounting is not None:
            self._publish_events(events, accounting, http, dns)
        if accounting is not None:
            self._follow_interfaces(accounting)
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
        if self._events is not None:
            self._events.reopen()

    def _classifier_programs(self, workloads: Workloads | None, wanted: dict[str, bool],
                             keep_gone: float
                             ) -> tuple[FlowAccounting | None, HttpInspection | None,
                                        DnsInspection | None]:
        config, stack = self.config, self._stack
        if config.interfaces == ():  # none asked for ([]); None follows the default routes
            return None, None, None
        # HTTP and DNS are matched inside the traffic classifier's run, on the flow entry it
        # holds; their series take each packet's owner from that entry.
        events = self._events = EventSinks(config, self._otlp if self._otlp_logs else None,
                                           lambda i: accounting.interface_name(i), stack)
        http_flags = (http_cflags(config.http, events.wanted("http"), False, wanted["http"])
                      if config.http.enabled else None)
        dns_flags = (dns_cflags(config.dns, events.wanted("dns"), False, wanted["dns"])
                     if config.dns.enabled else None)
        accounting = FlowAccounting(
            config.flows, http=http_flags, dns=dns_flags,
            cgroup_root=(workloads.root if workloads and (wanted["flows"] or wanted["http"]
                                                          or wanted["dns"]) else None))
        stack.callback(accounting.close)
        self._classifiers.append(accounting)
        http = dns = None
        if config.http.enabled:
            http = HttpInspection(config.http, accounting.bpf,
                                  workloads=workloads if wanted["http"] else None,
                                  keep_gone=keep_gone)
        if config.dns.enabled:
            dns = DnsInspection(config.dns, accounting.bpf,
                                workloads=workloads if wanted["dns"] else None,
                                keep_gone=keep_gone)
        return accounting, http, dns

    def _publish_events(self, events: EventSinks, accounting: FlowAccounting,
                        http: HttpInspection | None, dns: DnsInspection | None) -> None:
        opened = False
        if http is not None and events.wanted("http"):
            http.open_events(events.handler("http"))
            opened = True
        if dns is not None and events.wanted("dns"):
            dns.open_events(events.handler("dns"))
            opened = True
        if opened:
            events.start(accounting.bpf.ring_buffer_poll)

    def _follow_interfaces(self, accounting: FlowAccounting) -> None:
        watcher = InterfaceWatcher(self.config.interfaces, accounting.attach, accounting.forget,
                                   accounting.restore)
        watcher.start()
        self._watcher = watcher
        self._stack.callback(watcher.stop)
        if self.config.interfaces is None:
            log.info("counting traffic on the default routes' interfaces: %s",
                     ", ".join(sorted(watcher.present.values())) or "none yet")
        for name in self.config.interfaces or ():
            if not any(c in name for c in "*?[") and name not in watcher.present.values():
                log.warning("interface %s does not exist (yet); it is counted once it appears. "
                            "`ip link` lists the interfaces of this namespace.", name)
