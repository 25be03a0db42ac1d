//! Acceptance 5 (issue 8): spans from the Python OpenTelemetry SDK carry `job_id`; log
//! lines tailed from a file that carry only `job_id` come out of the file exporter with
//! that job's trace id. The processor is one component in two pipelines (traces and
//! logs) sharing one correlation table. (The table's bound under a million keys is a
//! unit test: `processors::trace_enrich::tests`.)

mod common;

use common::{attrs, eventually, logs_in, read_jsonl, spans_in, Collector};
use std::fs;
use std::process::Command;
use std::time::Duration;

/// One SDK trace: a root span `job.run` with `job_id`, and a child. Prints the trace id.
const SDK_JOB: &str = r#"
import sys
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

endpoint, job = sys.argv[1], sys.argv[2]
provider = TracerProvider(resource=Resource.create({"service.name": "job-runner"}))
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=5)))
tracer = provider.get_tracer("tradewatch.test")
with tracer.start_as_current_span("job.run", attributes={"job_id": job}) as root:
    with tracer.start_as_current_span("job.step"):
        pass
    trace_id = format(root.get_span_context().trace_id, "032x")
provider.shutdown()
print(trace_id)
"#;

fn sdk_job(grpc: u16, job: &str) -> String {
    let out = Command::new(common::python())
        .arg("-c")
        .arg(SDK_JOB)
        .arg(format!("http://127.0.0.1:{grpc}"))
        .arg(job)
        .output()
        .expect("run the Python OpenTelemetry SDK");
    assert!(
        out.status.success(),
        "the SDK script failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(id.len(), 32, "a trace id from the SDK: {id:?}");
    id
}

#[test]
fn tailed_logs_with_only_a_job_id_get_the_sdk_spans_trace_id() {
    let (grpc, http, service) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let config = format!(
        r#"
[receivers.otlp]
grpc = "127.0.0.1:{grpc}"
http = "127.0.0.1:{http}"

[receivers."logtail/jobs"]
include = ["logs/*.jsonl"]
start_at = "beginning"
poll_interval = "50ms"

[processors.trace_enrich]
correlation_keys = ["job_id", "run_id"]
max_entries = 1000

[exporters.file]
path = "out.jsonl"

[service]
http = "127.0.0.1:{service}"

[service.pipelines.traces]
receivers = ["otlp"]
processors = ["trace_enrich"]
exporters = ["file"]

[service.pipelines.logs]
receivers = ["logtail/jobs"]
processors = ["trace_enrich"]
exporters = ["file"]
"#
    );
    let c = Collector::start(&config, service);
    let out = c.path("out.jsonl");
    let trace = sdk_job(grpc, "job-7");
    let other = sdk_job(grpc, "job-8");
    assert_ne!(trace, other);
    eventually(
        Duration::from_secs(30),
        "the SDK's spans pass the processor",
        || spans_in(&read_jsonl(&out)).len() >= 4,
    );
    for (_, span) in spans_in(&read_jsonl(&out)) {
        assert!(span["traceId"] == trace.as_str() || span["traceId"] == other.as_str());
    }
    let logs = c.path("logs");
    fs::create_dir_all(&logs).unwrap();
    let lines = [
        r#"{"event": "job started", "job_id": "job-7", "level": "info"}"#.to_owned(),
        r#"{"event": "other job", "job_id": "job-8"}"#.to_owned(),
        r#"{"event": "unknown job", "job_id": "job-9"}"#.to_owned(),
        r#"{"event": "no key"}"#.to_owned(),
        // Its own trace id wins (and teaches job-9 from here on).
        r#"{"event": "own id", "job_id": "job-9", "trace_id": "0af7651916cd43dd8448eb211c80319c"}"#
            .to_owned(),
        // A text line: the id is lifted from the body.
        format!("2024-03-15 14:32:20 step done trace_id={trace} job_id=job-7"),
        r#"{"event": "job finished", "job_id": "job-7"}"#.to_owned(),
    ];
    fs::write(logs.join("job.jsonl"), lines.join("\n") + "\n").unwrap();
    eventually(Duration::from_secs(30), "every log line", || {
        logs_in(&read_jsonl(&out)).len() >= lines.len()
    });
    let recs: Vec<serde_json::Value> = logs_in(&read_jsonl(&out))
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    assert_eq!(recs.len(), lines.len());
    let trace_of = |i: usize| recs[i]["traceId"].as_str().unwrap_or_default().to_owned();
    let body = |i: usize| recs[i]["body"]["stringValue"].as_str().unwrap().to_owned();
    assert_eq!(body(0), "job started");
    assert_eq!(trace_of(0), trace, "job-7's line has the SDK's trace id");
    assert_eq!(attrs(&recs[0]["attributes"])["job_id"], "job-7");
    assert_eq!(trace_of(1), other);
    assert_eq!(trace_of(2), "", "no span ever carried job-9");
    assert_eq!(trace_of(3), "");
    assert_eq!(trace_of(4), "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(trace_of(5), trace);
    assert_eq!(trace_of(6), trace);
    assert!(
        c.metric(r#"tradewatch_processor_trace_ids_stamped_total{processor="trace_enrich"}"#)
            >= 3.0
    );
}
