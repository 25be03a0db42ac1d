#!/usr/bin/env python3
"""Sends numbered span batches through the OpenTelemetry Python SDK's OTLP/gRPC exporter
and records which ones the receiver acknowledged.

Usage: acked_sender.py --endpoint 127.0.0.1:PORT --batches N --spans-per-batch K
                       --out acked.txt [--deadline SECONDS]

Batch i holds spans named ``b<i>-s<j>`` (one trace per batch). Each batch is exported
with ``OTLPSpanExporter.export`` (the SDK's own retries included, bounded by a 2 s
timeout); a batch the exporter reports as failed is exported again until it succeeds
or the deadline passes, as an application that must not lose data would. After every
success the line ``<i>`` is appended to ``--out`` and flushed, so a test reading it
knows exactly which batches the receiver acknowledged, whatever happens to the receiver
in between. Exit status 0 when every batch was acknowledged, 1 otherwise.
"""

import argparse
import sys
import time

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--batches", type=int, required=True)
    ap.add_argument("--spans-per-batch", type=int, default=10)
    ap.add_argument("--out", required=True)
    ap.add_argument("--deadline", type=float, default=120.0)
    a = ap.parse_args()

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "acked-sender"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tradewatch.test.acked")
    exporter = OTLPSpanExporter(endpoint=a.endpoint, insecure=True, timeout=2)

    end = time.monotonic() + a.deadline
    with open(a.out, "a", buffering=1) as out:
        for i in range(a.batches):
            memory.clear()
            with tracer.start_as_current_span(f"b{i}-s0"):
                for j in range(1, a.spans_per_batch):
                    with tracer.start_as_current_span(f"b{i}-s{j}"):
                        pass
            spans = memory.get_finished_spans()
            while True:
                if exporter.export(spans) == SpanExportResult.SUCCESS:
                    out.write(f"{i}\n")
                    out.flush()
                    break
                if time.monotonic() > end:
                    print(f"batch {i} never acknowledged before the deadline", file=sys.stderr)
                    return 1
                time.sleep(0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main())
