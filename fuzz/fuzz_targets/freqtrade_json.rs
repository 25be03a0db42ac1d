//! The Freqtrade receiver's response decoding and metric building: whatever a bot (or
//! something pretending to be one) answers, parsing never panics, and a body that parses
//! becomes metrics without a panic and without a NaN or infinite point (Freqtrade's own
//! nulls give no point; ratios computed here must not divide by zero into one).
//!
//! The first byte picks the endpoint (show_config, profit, status, balance, count); the
//! rest is its body. The other parts of the poll are the defaults (empty answers).
#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value};
use tradewatch::otlp::Timestamp;
use tradewatch::receivers::freqtrade::metrics::{build, PollOutcome};
use tradewatch::receivers::freqtrade::models::{
    Balance, Count, Profit, ShowConfig, Snapshot, Trade,
};

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let mut snap = Snapshot::default();
    let parsed = match which % 5 {
        0 => serde_json::from_slice::<ShowConfig>(body).map(|v| snap.config = v),
        1 => serde_json::from_slice::<Profit>(body).map(|v| snap.profit = v),
        2 => serde_json::from_slice::<Vec<Trade>>(body).map(|v| snap.trades = v),
        3 => serde_json::from_slice::<Balance>(body).map(|v| snap.balance = v),
        _ => serde_json::from_slice::<Count>(body).map(|v| snap.count = Some(v)),
    };
    if parsed.is_err() {
        return;
    }
    let req = build(
        &PollOutcome {
            bot: "fuzz",
            snapshot: Some(&snap),
            strategy: None,
            exchange: None,
            version: None,
            consecutive_failures: 0,
            latency_seconds: 0.01,
        },
        Timestamp::from(1u64),
    );
    for m in req
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
    {
        let points = match &m.data {
            Some(Data::Gauge(g)) => &g.data_points,
            Some(Data::Sum(s)) => &s.data_points,
            _ => continue,
        };
        for p in points {
            if let Some(Value::AsDouble(v)) = p.value {
                assert!(v.is_finite(), "{} has a non-finite point {v}", m.name);
            }
        }
    }
});
