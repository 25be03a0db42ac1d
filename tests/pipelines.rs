//! `pipelines/agent.toml` runs against a (simulated) Freqtrade bot, its ratios converted
//! to percent exactly once (`tests/default_config.rs` checks that every shipped file validates).

mod common;

use common::{free_port, Collector};
use std::time::Duration;

#[test]
fn the_agent_pipeline_polls_a_bot_and_converts_ratios_once() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_, sim) = rt
        .block_on(tradewatch::demo::sim::spawn(
            tradewatch::demo::sim::SimConfig::default(),
        ))
        .expect("the simulated bot starts");
    let text = std::fs::read_to_string(common::repo_root().join("pipelines/agent.toml")).unwrap();
    let (grpc, http, service, upstream, prom) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let env = [
        ("FT_URL", sim.url(0)),
        ("FT_USER", "freqtrader".to_owned()),
        ("FT_PASS", "demo".to_owned()),
        ("FT_INTERVAL", "1s".to_owned()),
        ("TRADEWATCH_OTLP_GRPC", format!("127.0.0.1:{grpc}")),
        ("TRADEWATCH_OTLP_HTTP", format!("127.0.0.1:{http}")),
        ("TRADEWATCH_SERVICE_HTTP", format!("127.0.0.1:{service}")),
        ("TRADEWATCH_PROMETHEUS", format!("127.0.0.1:{prom}")),
        // Nobody listens upstream: the local copy must not depend on it.
        ("UPSTREAM_OTLP", format!("http://127.0.0.1:{upstream}")),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let c = Collector::start_with_env(&text, service, &env);
    let out = c.path("out/agent.jsonl");
    let mut seen = String::new();
    common::eventually(
        Duration::from_secs(30),
        "freqtrade metrics in percent in the agent's file",
        || {
            seen = std::fs::read_to_string(&out).unwrap_or_default();
            seen.contains("\"freqtrade.drawdown.current.pct\"")
                && seen.contains("\"freqtrade.profit.all.pct\"")
        },
    );
    assert!(
        !seen.contains("\"freqtrade.profit.all.ratio\""),
        "every ratio is converted"
    );
    assert!(seen.contains("\"unit\":\"%\""), "percent units");
    assert!(
        seen.contains("\"deployment.environment\""),
        "the resource processor stamped it"
    );
    // The bot's metrics, in percent, on the agent's Prometheus endpoint; the risk state too.
    let prom_addr = std::net::SocketAddr::from(([127, 0, 0, 1], prom));
    common::eventually(
        Duration::from_secs(30),
        "freqtrade and risk metrics on /metrics",
        || {
            common::http_get(prom_addr, "/metrics").is_ok_and(|(code, body)| {
                code == 200
                    && body.contains("freqtrade_drawdown_current_pct{")
                    && body.contains("tradewatch_risk_limit{")
            })
        },
    );
    assert!(!c.logs().contains("\"demo\""), "no password in the logs");
    rt.block_on(sim.shutdown());
}
