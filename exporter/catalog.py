"""Every metric the exporter has, in the order the sinks render them: each concern's,
then the exporter's own. Sinks render from this list and nothing else."""

from __future__ import annotations

from exporter.collector import metrics as own
from exporter.connections import metrics as connections
from exporter.dns import metrics as dns
from exporter.drops import metrics as drops
from exporter.flows import metrics as flows
from exporter.http import metrics as http
from exporter.model.metric import Metric

CATALOG: tuple[Metric, ...] = (*connections.METRICS, *flows.METRICS, *http.METRICS,
                               *dns.METRICS, *drops.METRICS, *own.METRICS)
