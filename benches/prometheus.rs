//! The `prometheus` exporter's store: render time and size for 10k and 100k series, and
//! ingestion speed alone and while scrapes run back to back.
//!
//! `cargo bench --bench prometheus`. Target (issue 9): 100k series rendered in under
//! 100 ms, and ingestion at full speed during scrapes. Run without `--bench` it does nothing.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tradewatch::exporters::prometheus::store::{Shape, Store};
use tradewatch::otlp::{attr, MetricsBuilder, Timestamp};

/// `metrics` gauges × `per` series each, in requests of one metric.
fn requests(metrics: usize, per: usize, round: u64) -> Vec<ExportMetricsServiceRequest> {
    (0..metrics)
        .map(|m| {
            let mut b = MetricsBuilder::new();
            b.resource([
                attr("service.name", "bench"),
                attr("service.instance.id", "i-1"),
            ])
            .scope("bench", "1");
            b.gauge(&format!("bench.metric.{m}"), "s", "A bench gauge");
            for s in 0..per {
                b.point(
                    (round + s as u64) as f64 * 0.5,
                    [attr("bot", format!("bot-{s}")), attr("pair", "BTC/USDT")],
                    Timestamp(round),
                );
            }
            b.build()
        })
        .collect()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let shape = Shape {
        max_series_per_metric: 100_000,
        ..Default::default()
    };
    for (metrics, per) in [(100, 100), (1000, 100)] {
        let store = Store::default();
        for r in requests(metrics, per, 1) {
            store.ingest(&r, &shape);
        }
        let series = store.series_count();
        let mut best = f64::MAX;
        let mut bytes = 0;
        for _ in 0..5 {
            let t = Instant::now();
            let text = store.render(false);
            best = best.min(t.elapsed().as_secs_f64());
            bytes = text.len();
        }
        let t = Instant::now();
        let om = store.render(true);
        let om_time = t.elapsed().as_secs_f64();
        println!(
            "{series:>7} series: text render {:.1} ms ({:.1} MB), OpenMetrics {:.1} ms ({:.1} MB)",
            best * 1e3,
            bytes as f64 / 1e6,
            om_time * 1e3,
            om.len() as f64 / 1e6
        );
    }
    // Ingestion alone, then with scrapes back to back on another thread.
    let store = Arc::new(Store::default());
    let reqs = requests(1000, 100, 2);
    for r in &reqs {
        store.ingest(r, &shape);
    }
    let rate = |store: &Store| {
        let t = Instant::now();
        let mut points = 0u64;
        for r in &reqs {
            points += store.ingest(r, &shape).points;
        }
        points as f64 / t.elapsed().as_secs_f64()
    };
    let alone = rate(&store);
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut scrapes = 0;
            while !stop.load(Ordering::Relaxed) {
                let _ = store.render(false);
                scrapes += 1;
            }
            scrapes
        })
    };
    let during = rate(&store);
    stop.store(true, Ordering::Relaxed);
    let scrapes = scraper.join().unwrap();
    println!(
        "ingestion of 100k points: {:.2} M points/s alone, {:.2} M points/s while {scrapes} scrapes of 100k series ran",
        alone / 1e6,
        during / 1e6
    );
}
