#!/usr/bin/env python3
"""Real OpenTelemetry SDK client used by tradewatch's end-to-end tests.

It sends traces, logs and (optionally) metrics through the official Python
SDK + OTLP exporters to a receiver, then writes a JSON manifest describing
exactly what the SDK handed to its exporters, so a Rust test can compare it
with tradewatch's file-exporter output.

Usage
-----
    otel_client.py --protocol grpc|http --endpoint URL --out manifest.json
                   [--spans N] [--logs N] [--metrics]
                   [--service-name S] [--run-id R] [--timeout SECONDS]

* ``--protocol grpc``: ``--endpoint 127.0.0.1:PORT`` (plaintext / insecure;
  ``http://127.0.0.1:PORT`` is accepted too); ``https://HOST:PORT`` uses TLS with the
  SDK's ``OTEL_EXPORTER_OTLP_CERTIFICATE`` (and ``_CLIENT_CERTIFICATE`` /
  ``_CLIENT_KEY``). OTLP/HTTP reads the same variables for an ``https://`` endpoint.
* ``--protocol http``: ``--endpoint http://127.0.0.1:PORT``; the script
  appends ``/v1/traces``, ``/v1/metrics`` and ``/v1/logs`` (OTLP/HTTP protobuf).
* ``--spans`` defaults to 20, ``--logs`` to 10; metrics are only sent with
  ``--metrics``. ``--timeout`` (default 5 s) bounds every export *including
  the SDK's retries*, so a dead endpoint fails within a few seconds.
* Fail-fast: once one export has failed, later exports are not attempted
  (they are recorded as ``"skipped"``), so a dead endpoint costs one timeout.

Exit status
-----------
0  every export succeeded and everything created was exported;
1  at least one export failed or was skipped (the manifest is still written);
2  bad command line;
3  exports succeeded but some items never reached an exporter (dropped).

What is sent (deterministic apart from ids and timestamps)
----------------------------------------------------------
* Resource: ``service.name`` (``--service-name``, default
  ``tradewatch-peer``), ``service.version`` = ``1.2.3``,
  ``deployment.environment`` = ``e2e-test``, ``tradewatch.test.run_id``
  (``--run-id``, default a random hex string) plus what the SDK adds itself
  (``telemetry.sdk.language/name/version``, a random ``service.instance.id``,
  and anything in ``OTEL_RESOURCE_ATTRIBUTES``). One resource for all three
  signals; the manifest's ``resource`` is the resource actually exported.
* Spans: one trace; span 0 is the root, span i>0 is the child of span
  (i-1)//2 (a binary tree). Kinds cycle INTERNAL, SERVER, CLIENT, PRODUCER,
  CONSUMER. Attributes of every span: ``tradewatch.test.index`` (int),
  ``trade.symbol`` (string), ``trade.price`` (double with fraction),
  ``trade.is_buy`` (bool), ``trade.tags`` (string array); every 4th span
  (i%4==1) also ``trade.fills`` (int array) and ``trade.levels`` (double
  array). Spans with i%3==0 carry an event ``order.placed`` with attributes.
  The root has status OK, span N//2 (N>1) has status ERROR with message
  ``simulated failure``, all others UNSET.
* Logs: severities cycle INFO(9), WARN(13), ERROR(17), DEBUG(5); string
  bodies; attributes ``log.index`` (int), ``trade.symbol`` (string),
  ``trade.amount`` (double), ``log.in_span`` (bool). Even-indexed logs are
  emitted while span (i % N) is the active span, so they carry its
  trace_id/span_id (when --spans > 0); odd ones have no trace context.
* Metrics (scope ``tradewatch.peer``), cumulative temporality, collected and
  exported exactly ONCE (PeriodicExportingMetricReader with an infinite
  interval + explicit ``force_flush()``; shutdown does not export again):
    - ``tradewatch.test.orders``          counter         int   unit ``{order}``
    - ``tradewatch.test.open_positions``  up_down_counter int   unit ``{position}``
    - ``tradewatch.test.order_latency``   histogram       double unit ``ms``
    - ``tradewatch.test.balance``         observable_gauge double unit ``USD``

Manifest shape (``--out``), all keys always present
---------------------------------------------------
::

    {
      "schema": "tradewatch-peer-manifest/1",
      "protocol": "grpc" | "http",
      "endpoint": "<as given>",
      "run_id": "<run id>",
      "service_name": "<service.name>",
      "ok": true | false,                 # same condition as exit status 0
      "resource": {"service.name": "...", "service.version": "1.2.3", ...},
      "exports": [                        # one entry per exporter.export() call
        {"signal": "traces"|"logs"|"metrics", "items": 20,
         "result": "success"|"failure"|"skipped", "seconds": 0.01,
         "error": null | "text"}
      ],
      "counts": {"spans": 20, "logs": 10, "metrics": 4, "metric_datapoints": 9},
      "spans": [{
        "trace_id": "<32 lowercase hex>",
        "span_id": "<16 lowercase hex>",
        "parent_span_id": "<16 lowercase hex>" | null,   # null for the root
        "name": "...",
        "kind": 1..5,                      # OTLP numbering: 1 INTERNAL, 2 SERVER,
                                           # 3 CLIENT, 4 PRODUCER, 5 CONSUMER
        "kind_name": "SPAN_KIND_SERVER",
        "start_time_unix_nano": int, "end_time_unix_nano": int,
        "attributes": {"key": <json value>, ...},
        "events": [{"name": "...", "time_unix_nano": int,
                    "attributes": {...}}],
        "status_code": 0 | 1 | 2,          # OTLP numbering: UNSET, OK, ERROR
        "status_message": "..." | "",
        "scope": {"name": "tradewatch.peer", "version": "1.0.0"}
      }],
      "logs": [{
        "body": "...",
        "severity_number": 9,              # OTLP SeverityNumber
        "severity_text": "INFO",
        "attributes": {...},
        "trace_id": "<32 hex>" | null,      # null = no trace context
        "span_id": "<16 hex>" | null,
        "time_unix_nano": int, "observed_time_unix_nano": int,
        "scope": {"name": "tradewatch.peer", "version": "1.0.0"}
      }],
      "metrics": [{
        "name": "tradewatch.test.orders",
        "kind": "counter" | "up_down_counter" | "histogram" | "observable_gauge",
        "data_type": "sum" | "gauge" | "histogram",   # OTLP Metric.data oneof
        "unit": "{order}", "description": "...",
        "is_monotonic": true | false | null,          # sums only
        "aggregation_temporality": 2 | null,          # OTLP: 1 DELTA, 2 CUMULATIVE
        "scope": {"name": "tradewatch.peer", "version": "1.0.0"},
        "datapoints": [
          # sum / gauge:
          {"attributes": {...}, "value": 3}           # int for int instruments,
                                                      # float for double ones
          # histogram:
          {"attributes": {...}, "count": 5, "sum": 274.75, "min": 1.5,
           "max": 250.5, "bucket_counts": [..], "explicit_bounds": [..]}
        ]
      }]
    }

Attribute values are flattened to plain JSON. Mapping to OTLP/JSON
``AnyValue`` (``[{key, value:{...}}]``):
    string -> JSON string   (stringValue)
    int    -> JSON integer  (intValue, which OTLP/JSON writes as a *string*)
    double -> JSON number written with a fraction, e.g. 100.25 (doubleValue)
    bool   -> JSON bool     (boolValue)
    array  -> JSON array of the above (arrayValue.values[])
Lists in the manifest are in the order the SDK exported them; compare
spans by span_id, logs by body, metrics by name and datapoints by attributes.
Ints in sums are JSON integers; OTLP/JSON ``asInt`` is a string.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import secrets
import sys
import threading
import time
from typing import Any, Sequence

SCHEMA = "tradewatch-peer-manifest/1"
SCOPE_NAME = "tradewatch.peer"
SCOPE_VERSION = "1.0.0"

# OTLP numbering of span kinds (the Python enum is 0-based, OTLP is 1-based).
_OTLP_KIND_NAMES = {
    1: "SPAN_KIND_INTERNAL",
    2: "SPAN_KIND_SERVER",
    3: "SPAN_KIND_CLIENT",
    4: "SPAN_KIND_PRODUCER",
    5: "SPAN_KIND_CONSUMER",
}

METRIC_KINDS = {
    "tradewatch.test.orders": "counter",
    "tradewatch.test.open_positions": "up_down_counter",
    "tradewatch.test.order_latency": "histogram",
    "tradewatch.test.balance": "observable_gauge",
}


def _die(msg: str, code: int = 2) -> None:
    print(f"otel_client: error: {msg}", file=sys.stderr)
    sys.exit(code)


try:
    from opentelemetry import trace
    from opentelemetry._logs import SeverityNumber
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import (
        BatchLogRecordProcessor,
        LogRecordExporter,
        LogRecordExportResult,
    )
    from opentelemetry.sdk.metrics import (
        Counter,
        Histogram,
        MeterProvider,
        ObservableCounter,
        ObservableGauge,
        ObservableUpDownCounter,
        UpDownCounter,
    )
    from opentelemetry.sdk.metrics.export import (
        AggregationTemporality,
        Gauge,
        MetricExporter,
        MetricExportResult,
        PeriodicExportingMetricReader,
        Sum,
    )
    from opentelemetry.sdk.metrics.export import Histogram as HistogramData
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - environment problem
    _die(
        f"cannot import the OpenTelemetry SDK ({exc}); run this with the test "
        "venv's interpreter ($TRADEWATCH_PYTHON, created by scripts/test)",
        code=2,
    )


# --------------------------------------------------------------------------
# Export bookkeeping
# --------------------------------------------------------------------------


class Recorder:
    """Collects every batch handed to an exporter and the export outcome."""

    def __init__(self, fail_fast: bool = True) -> None:
        self.lock = threading.Lock()
        self.fail_fast = fail_fast
        self.failed = False
        self.exports: list[dict[str, Any]] = []
        self.spans: list[Any] = []
        self.logs: list[Any] = []
        self.metrics_data: list[Any] = []

    def should_skip(self) -> bool:
        with self.lock:
            return self.fail_fast and self.failed

    def record(self, signal: str, items: int, result: str, seconds: float, error: str | None) -> None:
        with self.lock:
            if result != "success":
                self.failed = True
            self.exports.append(
                {
                    "signal": signal,
                    "items": items,
                    "result": result,
                    "seconds": round(seconds, 4),
                    "error": error,
                }
            )


def _run_export(recorder: Recorder, signal: str, items: int, call, success) -> tuple[bool, str]:
    if recorder.should_skip():
        recorder.record(signal, items, "skipped", 0.0, "an earlier export failed (fail-fast)")
        return False, "skipped"
    t0 = time.monotonic()
    error = None
    try:
        res = call()
        ok = res == success
        if not ok:
            error = f"exporter returned {res!r}"
    except Exception as exc:  # noqa: BLE001 - report any exporter crash
        ok = False
        error = f"{type(exc).__name__}: {exc}"
    recorder.record(signal, items, "success" if ok else "failure", time.monotonic() - t0, error)
    return ok, "success" if ok else "failure"


class RecordingSpanExporter(SpanExporter):
    def __init__(self, inner: SpanExporter, recorder: Recorder) -> None:
        self._inner = inner
        self._rec = recorder

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        spans = list(spans)
        with self._rec.lock:
            self._rec.spans.extend(spans)
        ok, _ = _run_export(
            self._rec, "traces", len(spans), lambda: self._inner.export(spans), SpanExportResult.SUCCESS
        )
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class RecordingLogExporter(LogRecordExporter):
    def __init__(self, inner: LogRecordExporter, recorder: Recorder) -> None:
        self._inner = inner
        self._rec = recorder

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        batch = list(batch)
        with self._rec.lock:
            self._rec.logs.extend(batch)
        ok, _ = _run_export(
            self._rec, "logs", len(batch), lambda: self._inner.export(batch), LogRecordExportResult.SUCCESS
        )
        return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class RecordingMetricExporter(MetricExporter):
    def __init__(self, inner: MetricExporter, recorder: Recorder) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,  # pylint: disable=protected-access
            preferred_aggregation=inner._preferred_aggregation,  # pylint: disable=protected-access
        )
        self._inner = inner
        self._rec = recorder

    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        with self._rec.lock:
            self._rec.metrics_data.append(metrics_data)
        n = sum(
            len(sm.metrics)
            for rm in metrics_data.resource_metrics
            for sm in rm.scope_metrics
        )
        ok, _ = _run_export(
            self._rec,
            "metrics",
            n,
            lambda: self._inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs),
            MetricExportResult.SUCCESS,
        )
        return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._inner.shutdown()


# --------------------------------------------------------------------------
# Exporter construction
# --------------------------------------------------------------------------


def build_exporters(protocol: str, endpoint: str, timeout: float):
    cumulative = {
        Counter: AggregationTemporality.CUMULATIVE,
        UpDownCounter: AggregationTemporality.CUMULATIVE,
        Histogram: AggregationTemporality.CUMULATIVE,
        ObservableCounter: AggregationTemporality.CUMULATIVE,
        ObservableUpDownCounter: AggregationTemporality.CUMULATIVE,
        ObservableGauge: AggregationTemporality.CUMULATIVE,
    }
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        target = endpoint
        for prefix in ("http://", "grpc://"):
            if target.startswith(prefix):
                target = target[len(prefix):]
        target = target.rstrip("/")
        # https://HOST:PORT: TLS, with the CA (and client certificate and key for mutual
        # TLS) the SDK reads from OTEL_EXPORTER_OTLP_CERTIFICATE / _CLIENT_CERTIFICATE /
        # _CLIENT_KEY.
        insecure = None if target.startswith("https://") else True
        return (
            OTLPSpanExporter(endpoint=target, insecure=insecure, timeout=timeout),
            OTLPLogExporter(endpoint=target, insecure=insecure, timeout=timeout),
            OTLPMetricExporter(
                endpoint=target, insecure=insecure, timeout=timeout, preferred_temporality=cumulative
            ),
        )
    if protocol == "http":
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        base = endpoint.rstrip("/")
        if "://" not in base:
            base = "http://" + base
        return (
            OTLPSpanExporter(endpoint=base + "/v1/traces", timeout=timeout),
            OTLPLogExporter(endpoint=base + "/v1/logs", timeout=timeout),
            OTLPMetricExporter(
                endpoint=base + "/v1/metrics", timeout=timeout, preferred_temporality=cumulative
            ),
        )
    raise ValueError(f"unknown protocol {protocol!r}")


# --------------------------------------------------------------------------
# Telemetry generation
# --------------------------------------------------------------------------

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
PY_KINDS = [SpanKind.INTERNAL, SpanKind.SERVER, SpanKind.CLIENT, SpanKind.PRODUCER, SpanKind.CONSUMER]
SEVERITIES = [
    (SeverityNumber.INFO, "INFO"),
    (SeverityNumber.WARN, "WARN"),
    (SeverityNumber.ERROR, "ERROR"),
    (SeverityNumber.DEBUG, "DEBUG"),
]
SPAN_NAMES = ["strategy.tick", "exchange.fetch_ticker", "order.submit", "order.fill", "risk.check"]


def _span_attributes(i: int, depth: int) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "tradewatch.test.index": i,
        "trade.symbol": SYMBOLS[i % len(SYMBOLS)],
        "trade.price": 100.25 + i,
        "trade.is_buy": i % 2 == 0,
        "trade.tags": ["peer", f"depth-{depth}"],
    }
    if i % 4 == 1:
        attrs["trade.fills"] = [i, i + 1, i + 2]
        attrs["trade.levels"] = [0.5 + i, 1.75 + i]
    return attrs


def emit_traces_and_logs(tracer, otel_logger, n_spans: int, n_logs: int) -> None:
    spans: list[Any] = []
    depths: list[int] = []
    for i in range(n_spans):
        if i == 0:
            parent_ctx = None
            depth = 0
        else:
            parent = (i - 1) // 2
            parent_ctx = trace.set_span_in_context(spans[parent])
            depth = depths[parent] + 1
        name = "peer.root" if i == 0 else f"{SPAN_NAMES[i % len(SPAN_NAMES)]}.{i}"
        span = tracer.start_span(
            name,
            context=parent_ctx,
            kind=PY_KINDS[i % len(PY_KINDS)],
            attributes=_span_attributes(i, depth),
        )
        if i % 3 == 0:
            span.add_event(
                "order.placed",
                attributes={
                    "order.id": f"o-{i}",
                    "order.qty": i + 1,
                    "order.limit": 0.25 + i,
                    "order.post_only": i % 2 == 1,
                },
            )
        spans.append(span)
        depths.append(depth)

    for i in range(n_logs):
        sev_num, sev_text = SEVERITIES[i % len(SEVERITIES)]
        in_span = n_spans > 0 and i % 2 == 0
        kwargs = dict(
            timestamp=time.time_ns(),
            severity_number=sev_num,
            severity_text=sev_text,
            body=f"tradewatch peer log {i}: {sev_text.lower()} on {SYMBOLS[i % len(SYMBOLS)]}",
            attributes={
                "log.index": i,
                "trade.symbol": SYMBOLS[i % len(SYMBOLS)],
                "trade.amount": 0.125 + i,
                "log.in_span": in_span,
            },
        )
        if in_span:
            with trace.use_span(spans[i % n_spans], end_on_exit=False):
                otel_logger.emit(**kwargs)
        else:
            otel_logger.emit(**kwargs)

    for i, span in enumerate(spans):
        if i == 0:
            span.set_status(Status(StatusCode.OK))
        elif n_spans > 1 and i == n_spans // 2:
            span.set_status(Status(StatusCode.ERROR, "simulated failure"))
    # Children end before their parents.
    for span in reversed(spans):
        span.end()


def emit_metrics(meter) -> None:
    orders = meter.create_counter("tradewatch.test.orders", unit="{order}", description="Orders placed by the peer")
    positions = meter.create_up_down_counter(
        "tradewatch.test.open_positions", unit="{position}", description="Open positions per symbol"
    )
    latency = meter.create_histogram(
        "tradewatch.test.order_latency", unit="ms", description="Order round-trip latency"
    )

    def balance_cb(_options: CallbackOptions):
        yield Observation(1234.5, {"currency": "USDT", "account": "spot"})
        yield Observation(0.75, {"currency": "BTC", "account": "spot"})

    meter.create_observable_gauge(
        "tradewatch.test.balance", callbacks=[balance_cb], unit="USD", description="Account balance"
    )

    for _ in range(3):
        orders.add(1, {"side": "buy", "symbol": "BTC/USDT"})
    orders.add(2, {"side": "sell", "symbol": "ETH/USDT"})
    positions.add(3, {"symbol": "BTC/USDT"})
    positions.add(-1, {"symbol": "BTC/USDT"})
    positions.add(1, {"symbol": "SOL/USDT"})
    for v in (1.5, 3.25, 12.0, 250.5, 7.75):
        latency.record(v, {"venue": "binance", "order.type": "limit"})
    for v in (0.5, 42.25):
        latency.record(v, {"venue": "kraken", "order.type": "market"})


# --------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, bool, int)) or v is None:
        return v
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return v
    if isinstance(v, (bytes, bytearray)):
        return v.hex()
    if isinstance(v, dict) or hasattr(v, "items"):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return str(v)


def _attrs(a: Any) -> dict[str, Any]:
    return {str(k): _jsonable(v) for k, v in (a or {}).items()}


def _scope(s: Any) -> dict[str, Any]:
    if s is None:
        return {"name": "", "version": ""}
    return {"name": s.name, "version": s.version or ""}


def _hex_or_none(v: int | None, width: int) -> str | None:
    if not v:
        return None
    return format(v, f"0{width}x")


def span_entry(s: Any) -> dict[str, Any]:
    ctx = s.context
    kind = s.kind.value + 1  # Python SpanKind is 0-based, OTLP is 1-based
    return {
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "parent_span_id": _hex_or_none(s.parent.span_id if s.parent else None, 16),
        "name": s.name,
        "kind": kind,
        "kind_name": _OTLP_KIND_NAMES[kind],
        "start_time_unix_nano": s.start_time,
        "end_time_unix_nano": s.end_time,
        "attributes": _attrs(s.attributes),
        "events": [
            {"name": e.name, "time_unix_nano": e.timestamp, "attributes": _attrs(e.attributes)}
            for e in s.events
        ],
        "status_code": s.status.status_code.value,
        "status_message": s.status.description or "",
        "scope": _scope(s.instrumentation_scope),
    }


def log_entry(r: Any) -> dict[str, Any]:
    lr = r.log_record
    return {
        "body": _jsonable(lr.body),
        "severity_number": lr.severity_number.value if lr.severity_number is not None else 0,
        "severity_text": lr.severity_text or "",
        "attributes": _attrs(lr.attributes),
        "trace_id": _hex_or_none(lr.trace_id, 32),
        "span_id": _hex_or_none(lr.span_id, 16),
        "time_unix_nano": lr.timestamp or 0,
        "observed_time_unix_nano": lr.observed_timestamp or 0,
        "scope": _scope(r.instrumentation_scope),
    }


def metric_entries(metrics_data_list: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for md in metrics_data_list:
        for rm in md.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    data = m.data
                    entry: dict[str, Any] = {
                        "name": m.name,
                        "kind": METRIC_KINDS.get(m.name, "unknown"),
                        "unit": m.unit or "",
                        "description": m.description or "",
                        "is_monotonic": None,
                        "aggregation_temporality": None,
                        "scope": _scope(sm.scope),
                        "datapoints": [],
                    }
                    if isinstance(data, HistogramData):
                        entry["data_type"] = "histogram"
                        entry["aggregation_temporality"] = int(data.aggregation_temporality.value)
                        for dp in data.data_points:
                            entry["datapoints"].append(
                                {
                                    "attributes": _attrs(dp.attributes),
                                    "count": dp.count,
                                    "sum": _jsonable(dp.sum),
                                    "min": _jsonable(dp.min),
                                    "max": _jsonable(dp.max),
                                    "bucket_counts": list(dp.bucket_counts),
                                    "explicit_bounds": [float(b) for b in dp.explicit_bounds],
                                }
                            )
                    else:
                        if isinstance(data, Sum):
                            entry["data_type"] = "sum"
                            entry["is_monotonic"] = bool(data.is_monotonic)
                            entry["aggregation_temporality"] = int(data.aggregation_temporality.value)
                        elif isinstance(data, Gauge):
                            entry["data_type"] = "gauge"
                        else:
                            entry["data_type"] = type(data).__name__.lower()
                        for dp in data.data_points:
                            entry["datapoints"].append(
                                {"attributes": _attrs(dp.attributes), "value": _jsonable(dp.value)}
                            )
                    out.append(entry)
    return out


def write_manifest(path: str, manifest: dict[str, Any]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Send OTLP traces/logs/metrics with the OpenTelemetry Python SDK and write a manifest."
    )
    p.add_argument("--protocol", required=True, choices=["grpc", "http"])
    p.add_argument("--endpoint", required=True, help="grpc: 127.0.0.1:PORT; http: http://127.0.0.1:PORT")
    p.add_argument("--out", required=True, help="path of the manifest JSON to write")
    p.add_argument("--spans", type=int, default=20, help="number of spans (default 20)")
    p.add_argument("--logs", type=int, default=10, help="number of log records (default 10)")
    p.add_argument("--metrics", action="store_true", help="also send metrics")
    p.add_argument("--service-name", default="tradewatch-peer")
    p.add_argument("--run-id", default=None, help="value of resource attribute tradewatch.test.run_id")
    p.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        help="seconds allowed per export, retries included (default 5)",
    )
    args = p.parse_args(argv)
    if args.spans < 0 or args.logs < 0:
        p.error("--spans and --logs must be >= 0")
    if args.timeout <= 0:
        p.error("--timeout must be > 0")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="otel_client: %(levelname)s %(name)s: %(message)s",
    )
    run_id = args.run_id or secrets.token_hex(8)
    t_start = time.monotonic()

    resource = Resource.create(
        {
            "service.name": args.service_name,
            "service.version": "1.2.3",
            "deployment.environment": "e2e-test",
            "tradewatch.test.run_id": run_id,
        }
    )
    recorder = Recorder(fail_fast=True)
    span_exp, log_exp, metric_exp = build_exporters(args.protocol, args.endpoint, args.timeout)
    timeout_ms = int(args.timeout * 1000)

    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        BatchSpanProcessor(RecordingSpanExporter(span_exp, recorder), export_timeout_millis=timeout_ms)
    )
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(
        BatchLogRecordProcessor(RecordingLogExporter(log_exp, recorder), export_timeout_millis=timeout_ms)
    )
    meter_provider = None
    if args.metrics:
        reader = PeriodicExportingMetricReader(
            RecordingMetricExporter(metric_exp, recorder),
            # Infinite interval: no background collection, so metrics are
            # collected and exported exactly once, by force_flush() below.
            export_interval_millis=math.inf,
            export_timeout_millis=timeout_ms,
        )
        meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    else:
        metric_exp.shutdown()

    tracer = tracer_provider.get_tracer(SCOPE_NAME, SCOPE_VERSION)
    otel_logger = logger_provider.get_logger(SCOPE_NAME, SCOPE_VERSION)
    emit_traces_and_logs(tracer, otel_logger, args.spans, args.logs)
    if meter_provider is not None:
        emit_metrics(meter_provider.get_meter(SCOPE_NAME, SCOPE_VERSION))

    flush_ok = True
    providers = [("traces", tracer_provider), ("logs", logger_provider)]
    if meter_provider is not None:
        providers.append(("metrics", meter_provider))
    for signal, provider in providers:
        try:
            if provider.force_flush(timeout_ms * 2) is False:
                flush_ok = False
                print(f"otel_client: force_flush of {signal} returned False", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001
            flush_ok = False
            print(f"otel_client: force_flush of {signal} failed: {exc}", file=sys.stderr)
    for signal, provider in providers:
        try:
            provider.shutdown()
        except Exception as exc:  # noqa: BLE001
            flush_ok = False
            print(f"otel_client: shutdown of {signal} failed: {exc}", file=sys.stderr)

    spans = [span_entry(s) for s in recorder.spans]
    logs = [log_entry(r) for r in recorder.logs]
    metrics = metric_entries(recorder.metrics_data)
    export_failed = any(e["result"] != "success" for e in recorder.exports)
    expected_metrics = len(METRIC_KINDS) if args.metrics else 0
    complete = len(spans) == args.spans and len(logs) == args.logs and len(metrics) == expected_metrics
    ok = flush_ok and not export_failed and complete

    manifest = {
        "schema": SCHEMA,
        "protocol": args.protocol,
        "endpoint": args.endpoint,
        "run_id": run_id,
        "service_name": args.service_name,
        "ok": ok,
        "resource": _attrs(resource.attributes),
        "exports": recorder.exports,
        "counts": {
            "spans": len(spans),
            "logs": len(logs),
            "metrics": len(metrics),
            "metric_datapoints": sum(len(m["datapoints"]) for m in metrics),
        },
        "spans": spans,
        "logs": logs,
        "metrics": metrics,
    }
    write_manifest(args.out, manifest)

    def summary(signal: str) -> str:
        rs = [e["result"] for e in recorder.exports if e["signal"] == signal]
        if not rs:
            return "none"
        bad = [r for r in rs if r != "success"]
        return f"{len(rs)} export(s) " + ("ok" if not bad else "FAILED(" + ",".join(bad) + ")")

    print(
        f"otel_client: {args.protocol} {args.endpoint}: spans {len(spans)}/{args.spans} [{summary('traces')}], "
        f"logs {len(logs)}/{args.logs} [{summary('logs')}], "
        f"metrics {len(metrics)}/{expected_metrics} [{summary('metrics')}] "
        f"in {time.monotonic() - t_start:.2f}s -> {args.out}",
        file=sys.stderr,
    )
    if export_failed or not flush_ok:
        print("otel_client: FAILED: at least one export did not succeed", file=sys.stderr)
        return 1
    if not complete:
        print("otel_client: FAILED: not everything created reached an exporter", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
