"""An OTLP/HTTP receiver for the tests: decodes what the exporter pushes, or misbehaves."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)


def value_of(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in kvs}


class Receiver:
    """mode: "ok" answers 200; "reject" answers 503; "hang" never answers in time."""

    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.metrics: list[tuple[float, ExportMetricsServiceRequest]] = []
        self.logs: list[ExportLogsServiceRequest] = []
        self.requests = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests += 1
                if receiver.mode == "hang":
                    time.sleep(30)
                    return
                if receiver.mode == "reject":
                    self.send_response(503)
                    self.end_headers()
                    return
                if self.path == "/v1/metrics":
                    request = ExportMetricsServiceRequest()
                    request.ParseFromString(body)
                    receiver.metrics.append((time.time(), request))
                elif self.path == "/v1/logs":
                    logs = ExportLogsServiceRequest()
                    logs.ParseFromString(body)
                    receiver.logs.append(logs)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def latest_after(self, moment: float) -> ExportMetricsServiceRequest | None:
        after = [request for received, request in self.metrics if received > moment]
        return after[0] if after else None


def points(request: ExportMetricsServiceRequest) -> dict[str, list[Any]]:
    """Metric name -> its data points, over every resource and scope."""
    found: dict[str, list[Any]] = {}
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                assert kind is not None, f"{metric.name} carries no data"
                found.setdefault(metric.name, []).extend(getattr(metric, kind).data_points)
    return found


class GrpcReceiver:
    """An OTLP/gRPC receiver (plaintext) that records metric exports."""

    def __init__(self) -> None:
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
            ExportMetricsServiceResponse,
        )

        self.metrics: list[tuple[float, ExportMetricsServiceRequest]] = []
        receiver = self

        class Service(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                receiver.metrics.append((time.time(), request))
                return ExportMetricsServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(  # type: ignore[no-untyped-call]
            Service(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.endpoint = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop(0)
