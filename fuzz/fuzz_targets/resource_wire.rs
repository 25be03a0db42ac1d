//! The resource processor's wire editing against decode-edit-encode: for every request
//! prost decodes, `edit_resources` succeeds and its output decodes to exactly what
//! editing the decoded request gives. Never a panic on any input. The first byte picks
//! the signal, the second the edits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use tradewatch::otlp::resource_wire::edit_resources;
use tradewatch::otlp::set_attr;

/// The edit for the `i`th resource-level message: bits of `ops`, two per message.
fn edit(ops: u8, i: usize, r: &mut Option<Resource>) -> bool {
    match (ops >> ((i % 4) * 2)) & 3 {
        0 => false,
        1 => {
            let r = r.get_or_insert_with(Resource::default);
            set_attr(&mut r.attributes, "fuzz.edited", i as i64);
            true
        }
        2 => {
            *r = None;
            true
        }
        _ => {
            if let Some(r) = r {
                r.attributes.retain(|kv| kv.key != "service.name");
                r.dropped_attributes_count = r.dropped_attributes_count.wrapping_add(1);
            }
            true
        }
    }
}

fn check<M: Message + Default>(
    buf: &[u8],
    ops: u8,
    resources: fn(&mut M) -> Vec<&mut Option<Resource>>,
) {
    let mut i = 0;
    let edited = edit_resources(buf, |r| {
        i += 1;
        edit(ops, i - 1, r)
    });
    let Ok(mut expected) = M::decode(buf) else {
        return;
    };
    let edited = edited.expect("a request prost decodes must be editable");
    for (i, r) in resources(&mut expected).into_iter().enumerate() {
        edit(ops, i, r);
    }
    let out = edited.as_deref().unwrap_or(buf);
    let got = M::decode(out).expect("the edited request must decode");
    assert_eq!(
        got.encode_to_vec(),
        expected.encode_to_vec(),
        "edit differs"
    );
}

fuzz_target!(|data: &[u8]| {
    let [which, ops, buf @ ..] = data else { return };
    match which % 3 {
        0 => check(buf, *ops, |m: &mut ExportTraceServiceRequest| {
            m.resource_spans
                .iter_mut()
                .map(|r| &mut r.resource)
                .collect()
        }),
        1 => check(buf, *ops, |m: &mut ExportMetricsServiceRequest| {
            m.resource_metrics
                .iter_mut()
                .map(|r| &mut r.resource)
                .collect()
        }),
        _ => check(buf, *ops, |m: &mut ExportLogsServiceRequest| {
            m.resource_logs
                .iter_mut()
                .map(|r| &mut r.resource)
                .collect()
        }),
    }
});
