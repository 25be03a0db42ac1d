//! The CloudWatch exporters' encoding, on one core: OTLP metrics → samples → EMF events
//! (`cloudwatch_emf`), and → PutMetricData requests (`cloudwatch`), in metrics (points)
//! per second, for narrow points (a Freqtrade-like poll: 2 attributes) and wide ones
//! (12 attributes), and cumulative counters (the delta state's cost).
//!
//! `cargo bench --bench cloudwatch`. Run without `--bench` it does nothing.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use std::time::Instant;
use tradewatch::exporters::cloudwatch::{convert, emf, DeltaState, Shape};
use tradewatch::otlp::{attr, MetricsBuilder, Temporality, Timestamp};

/// `metrics` metrics × `series` points each, with `attrs` attributes per point.
fn request(
    metrics: usize,
    series: usize,
    attrs: usize,
    cumulative: bool,
    round: u64,
) -> ExportMetricsServiceRequest {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut b = MetricsBuilder::new();
    b.resource([
        attr("service.name", "bench"),
        attr("service.instance.id", "i-1"),
    ])
    .scope("bench", "1")
    .start_time(Timestamp(now - 3_600_000_000_000));
    for m in 0..metrics {
        if cumulative {
            b.sum(
                &format!("bench.count.{m}"),
                "{order}",
                "",
                Temporality::Cumulative,
                true,
            );
        } else {
            b.gauge(&format!("bench.gauge.{m}"), "ms", "");
        }
        for s in 0..series {
            let mut a = vec![attr("bot", format!("bot-{s}")), attr("pair", "BTC/USDT")];
            for i in 2..attrs {
                a.push(attr(format!("attr.{i}"), format!("value-{i}")));
            }
            b.point(
                (round * 10 + s as u64) as f64 * 0.5,
                a,
                Timestamp(now + round),
            );
        }
    }
    b.build()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let shape = Shape::default();
    for (label, attrs, cumulative) in [
        ("gauges, 2 attributes", 2, false),
        ("gauges, 12 attributes", 12, false),
        ("cumulative counters, 2 attributes", 2, true),
    ] {
        // 100 metrics × 100 series = 10,000 points per request, 20 rounds.
        let reqs: Vec<_> = (1..=20)
            .map(|r| request(100, 100, attrs, cumulative, r))
            .collect();
        let points = 20 * 100 * 100;
        let mut state = DeltaState::default();
        let mut samples = Vec::new();
        let t = Instant::now();
        let mut events = 0;
        let mut bytes = 0;
        for r in &reqs {
            samples.clear();
            convert(r, &shape, &mut state, &mut samples);
            let laid = emf::layout(&samples, emf::DEFAULT_MAX_EVENT_BYTES);
            events += laid.events.len();
            bytes += laid.events.iter().map(|e| e.json.len()).sum::<usize>();
        }
        let emf_rate = points as f64 / t.elapsed().as_secs_f64();
        let mut state = DeltaState::default();
        let t = Instant::now();
        let mut requests = 0;
        for r in &reqs {
            samples.clear();
            convert(r, &shape, &mut state, &mut samples);
            requests += pmd(&samples);
        }
        let pmd_rate = points as f64 / t.elapsed().as_secs_f64();
        println!(
            "{label:>34}: EMF {:.2} M metrics/s ({events} events, {:.0} bytes/metric); PutMetricData {:.2} M metrics/s ({requests} requests)",
            emf_rate / 1e6,
            bytes as f64 / points as f64,
            pmd_rate / 1e6,
        );
    }
}

#[cfg(feature = "aws")]
fn pmd(samples: &[tradewatch::exporters::cloudwatch::Sample]) -> usize {
    tradewatch::exporters::cloudwatch::metric_data::requests(samples).len()
}

#[cfg(not(feature = "aws"))]
fn pmd(_: &[tradewatch::exporters::cloudwatch::Sample]) -> usize {
    0
}
