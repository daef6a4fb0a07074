"""What each histogram form costs the kernel, the collector and the scrape, side by side in
one run.

Fills the real HTTP series map (the traffic classifier loaded, not attached) with N series,
each with latencies spread over a few buckets, once per form (explicit, both, exponential),
and times in turns what a collector cycle and a scrape do with them: the map's read and
decoding into the snapshot, the text exposition, the protobuf one, an OTLP build; and the
classifier's ns per packet on matched request/response pairs (BPF_PROG_TEST_RUN, as
bench/program_cost.py runs them), each form's latency counted its way. Prints the medians,
the ratio to explicit, the kernel value's size per series and the scrape's size.

    sudo .venv/bin/python bench/histogram_forms.py [--series 2048] [--rounds 7]
"""

from __future__ import annotations

import argparse
import ctypes
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client.core import CollectorRegistry
from prometheus_client.exposition import generate_latest

from bench.program_cost import HttpRounds
from exporter.config.schema import FlowsConfig, HttpConfig, OtlpConfig
from exporter.flows.loader import FlowAccounting
from exporter.http import loader as http_loader
from exporter.http.codes import METHODS
from exporter.model import exponential
from exporter.model.snapshot import Snapshot
from exporter.sinks.otlp.metrics import SnapshotMetricReader
from exporter.sinks.otlp.setup import resource
from exporter.sinks.prometheus import SnapshotCollector
from exporter.sinks.protobuf import exposition

FORMS = ("explicit", "both", "exponential")
STEPS = ("kernel", "read", "text", "protobuf", "otlp")


@dataclass
class Form:
    name: str
    accounting: FlowAccounting
    inspection: http_loader.HttpInspection
    value_bytes: int
    pairs: HttpRounds
    text_bytes: int = 0
    protobuf_bytes: int = 0


def fill(form: Form, series: int) -> None:
    table = form.inspection.bpf["http_stats"]
    bounds = exponential.explicit_bounds(form.inspection.config.buckets, form.name)
    rng = random.Random(1)
    for n in range(series):
        key = table.Key()
        key.role, key.method, key.status, key.server_port = 1 + n % 2, 1 + n % 4, 200 + n % 7, n
        value = table.Leaf()
        # A latency spread over a few buckets around 1-100 ms, as a busy endpoint's.
        for _ in range(20):
            ns = int(10 ** rng.uniform(6, 8))
            value.count += 1
            value.sum_ns += ns
            value.buckets[len([b for b in bounds if ns > b * 1e9])] += 1
            if form.name != "explicit":
                value.exp[exponential.slot(ns)] += 1
        table[key] = value


class Recorder:
    def export(self, data: object, timeout_millis: float = 0) -> object:
        return None

    def shutdown(self) -> None:
        pass


def cycle(form: Form) -> dict[str, Callable[[], object]]:
    """A collector cycle's and a scrape's steps, in order: each after the read sees its
    snapshot."""
    snap: list[Snapshot] = []

    def read() -> None:
        http, _ = form.inspection.read()
        snap.append(Snapshot(timestamp=0.0, connections=None, http=http))
    def kernel() -> float:
        return form.pairs.pair_ns()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: snap[-1]))
    reader = SnapshotMetricReader(lambda: snap[-1], Recorder(), resource(OtlpConfig()), 1, 1,
                                  delta=False)
    return {"kernel": kernel, "read": read, "text": lambda: generate_latest(registry),
            "protobuf": lambda: exposition(registry.collect()),
            "otlp": lambda: reader.build(snap[-1], time.time_ns())}


def timed(step: Callable[[], object]) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--series", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    forms: list[Form] = []
    try:
        for name in FORMS:
            config = HttpConfig(histogram=name, max_series=args.series)
            accounting = FlowAccounting(FlowsConfig(), http=http_loader.cflags(config, False,
                                                                                 False))
            inspection = http_loader.HttpInspection(config, accounting.bpf)
            leaf = inspection.bpf["http_stats"].Leaf
            forms.append(Form(name, accounting, inspection, ctypes.sizeof(leaf),
                              HttpRounds(accounting.bpf, accounting.bpf)))
            fill(forms[-1], args.series)
        times: dict[tuple[str, str], list[float]] = {}
        for round_ in range(args.rounds):
            for form in forms[round_ % 3:] + forms[:round_ % 3]:  # turning order
                steps = cycle(form)
                for step in STEPS:
                    # The kernel's ns per packet; the other steps' ms.
                    times.setdefault((form.name, step), []).append(
                        float(steps[step]()) if step == "kernel"  # type: ignore[arg-type]
                        else timed(steps[step]) * 1000)
                form.text_bytes = len(steps["text"]())  # type: ignore[arg-type]
                form.protobuf_bytes = len(steps["protobuf"]())  # type: ignore[arg-type]
        print(f"{args.series} HTTP series, {args.rounds} rounds in turning order; medians "
              "(ratio to explicit): kernel in ns per packet, the rest in ms")
        print(f"{'form':<12}{'value B':>8}" + "".join(f"{s:>16}" for s in STEPS)
              + f"{'text KiB':>10}{'proto KiB':>10}")
        for form in forms:
            cells = []
            for step in STEPS:
                ms = statistics.median(times[(form.name, step)])
                base = statistics.median(times[("explicit", step)])
                cells.append(f"{ms:9.1f} ({ms / base:4.2f})")
            print(f"{form.name:<12}{form.value_bytes:>8}" + "".join(f"{c:>16}" for c in cells)
                  + f"{form.text_bytes / 1024:>10.0f}{form.protobuf_bytes / 1024:>10.0f}")
        print(f"(methods {len(METHODS)}; kernel map memory per form = value bytes x "
              f"{args.series} series, preallocated)")
    finally:
        for form in forms:
            form.accounting.close()


if __name__ == "__main__":
    main()
