#!/usr/bin/env python3
"""Rebuilds the seed corpora under fuzz/corpus/ (run from the repository root with the
project's venv: .venv/bin/python fuzz/seed_corpus.py).

Protobuf seeds are what the official Python SDK sends (tests/peers/otel_client.py
against a capturing HTTP server); JSON seeds are the same requests in OTLP/JSON
(hex ids, integer enums, lowerCamelCase) plus hand-written edge cases; compressed
seeds are those bodies gzipped and zstd-compressed; config seeds are the repository's
configuration files."""
import base64, glob, gzip, http.server, json, os, shutil, subprocess, sys, threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
captured = {}


class Capture(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        captured.setdefault(self.path.rsplit("/", 1)[-1], []).append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


def write(target, name, data):
    os.makedirs(os.path.join(CORPUS, target), exist_ok=True)
    with open(os.path.join(CORPUS, target, name), "wb") as f:
        f.write(data)


def zstd(data):
    return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout


def to_otlp_json(msg):
    from google.protobuf.json_format import MessageToDict

    def fix(v):
        if isinstance(v, dict):
            return {k: (base64.b64decode(x).hex() if k in ("traceId", "spanId", "parentSpanId")
                        else fix(x)) for k, x in v.items()}
        if isinstance(v, list):
            return [fix(x) for x in v]
        return v

    return json.dumps(fix(MessageToDict(msg, use_integers_for_enums=True))).encode()


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    subprocess.run([sys.executable, os.path.join(ROOT, "tests/peers/otel_client.py"),
                    "--protocol", "http", "--endpoint", f"http://127.0.0.1:{port}",
                    "--out", "/dev/null", "--spans", "6", "--logs", "4", "--metrics"],
                   check=True)
    server.shutdown()
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    kinds = {"traces": (0, ExportTraceServiceRequest), "metrics": (1, ExportMetricsServiceRequest),
             "logs": (2, ExportLogsServiceRequest)}
    for d in ("wire_diff", "otlp_json", "inflate", "resource_wire", "config"):
        shutil.rmtree(os.path.join(CORPUS, d), ignore_errors=True)
    for kind, bodies in captured.items():
        sel, cls = kinds[kind]
        for i, body in enumerate(bodies):
            write("wire_diff", f"sdk-{kind}-{i}", body)
            write("resource_wire", f"sdk-{kind}-{i}", bytes([sel, 0b0110_0101]) + body)
            write("otlp_json", f"sdk-{kind}-{i}", bytes([sel]) + to_otlp_json(cls.FromString(body)))
            write("inflate", f"gzip-{kind}-{i}", b"\x00\xff\x0f" + gzip.compress(body))
            write("inflate", f"zstd-{kind}-{i}", b"\x01\xff\x0f" + zstd(body))
    nonfinite = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "pf", "gauge": {
        "dataPoints": [{"asDouble": "Infinity"}, {"asDouble": "NaN"}, {"asDouble": "-Infinity"}]}}]}]}]}
    write("otlp_json", "nonfinite-gauge", b"\x01" + json.dumps(nonfinite).encode())
    for path in [os.path.join(ROOT, "config.toml")] + sorted(glob.glob(os.path.join(ROOT, "pipelines", "*.toml"))):
        with open(path, "rb") as f:
            write("config", os.path.basename(path), f.read())


if __name__ == "__main__":
    main()
