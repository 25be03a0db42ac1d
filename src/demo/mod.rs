//! `tradewatch demo`: a simulated Freqtrade bot on loopback ([`sim`]) and a pipeline
//! polling it, so a newcomer sees trading metrics move without installing Freqtrade.
//! Not part of the core: it only uses the public config and service API.

pub mod market;
pub mod sim;

use crate::config::{Config, Source};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Knobs of `tradewatch demo` (see `tradewatch demo --help`).
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Poll interval of the freqtrade receiver.
    pub interval: Duration,
    /// Stop after this long (None: until Ctrl-C).
    pub run_for: Option<Duration>,
    /// Where /health, /status and /metrics are served.
    pub service: SocketAddr,
    /// Also write every batch as OTLP/JSON lines to this file.
    pub out: Option<PathBuf>,
    /// Where the prometheus exporter serves the bot's metrics (None: no exporter).
    pub prometheus: Option<SocketAddr>,
    pub sim: sim::SimConfig,
}

/// The demo's pipelines: freqtrade receiver → risk → ratio_to_percent → batch → debug
/// (+ prometheus, + file), and the risk processor's alerts → log (+ file). `data_dir`
/// holds the risk state (one per demo run, so a run never starts inside the last run's
/// breach).
pub fn config_text(bot_url: &str, opts: &DemoOptions, data_dir: &std::path::Path) -> String {
    let file = opts.out.as_ref().map(|p| {
        format!(
            "[exporters.file]\npath = {}\n",
            toml_string(&p.display().to_string())
        )
    });
    let prometheus = opts.prometheus.map(|a| {
        format!(
            "# Scrape with honor_labels: true (deploy/prometheus/prometheus.yml).\n\
             [exporters.prometheus]\nendpoint = \"{a}\"\nmetric_expiration = \"1m\"\n"
        )
    });
    let mut exporters = vec!["debug"];
    let mut alert_exporters = vec!["log"];
    if prometheus.is_some() {
        exporters.push("prometheus");
    }
    if file.is_some() {
        exporters.push("file");
        alert_exporters.push("file");
    }
    let list = |l: &[&str]| {
        serde_json::Value::from(l.to_vec())
            .to_string()
            .replace(',', ", ")
    };
    let (exporters, alert_exporters) = (list(&exporters), list(&alert_exporters));
    format!(
        r#"# tradewatch demo: a simulated Freqtrade bot polled every {interval}.
[receivers."freqtrade/demo"]
url = {url}
username = {user}
password = {pass}
interval = "{interval}"
timeout = "5s"
bot = "demo"
# The simulated API has a hiccup now and then (one failed poll): DEGRADED, not UNHEALTHY.
critical = false

[receivers.alerts]

# The seeds' limits: a breach pauses the bot (once per breach run) and raises an alert.
# The simulated bot opens at most 3 trades at 1-5x, so only the drawdown breaches.
[processors.risk]
max_drawdown_pct = 20
max_open_trades = 5
max_leverage = 5
action_on_breach = "pause"
control = "freqtrade/demo"

# An early warning before the hard limit (the seeds' DrawdownHigh): warning at 10%,
# critical at 15% of realized drawdown.
[[processors.risk.rules]]
name = "DrawdownHigh"
metric = "freqtrade.drawdown.current.ratio"
op = ">"
warning = 0.10
critical = 0.15
group_by = ["bot"]
summary = "{{bot}}: drawdown {{value}} over {{threshold}}"

[processors.ratio_to_percent]
metrics = ["freqtrade.*.ratio"]

[processors.batch]
timeout = "200ms"

[exporters.debug]
verbosity = "basic"

[exporters.log]
{prometheus}{file}
[service]
http = "{service}"
data_dir = {data_dir}
# /ui's operator actions (acknowledge, resume): on when this variable is set.
ui_token = "${{TRADEWATCH_UI_TOKEN:-}}"
shutdown_timeout = "5s"

[service.pipelines.metrics]
receivers = ["freqtrade/demo"]
processors = ["risk", "ratio_to_percent", "batch"]
exporters = {exporters}

[service.pipelines."logs/alerts"]
receivers = ["alerts"]
exporters = {alert_exporters}
"#,
        interval = humantime::format_duration(opts.interval),
        url = toml_string(bot_url),
        user = toml_string(&opts.sim.username),
        pass = toml_string(&opts.sim.password),
        file = file.unwrap_or_default(),
        prometheus = prometheus.unwrap_or_default(),
        service = opts.service,
        data_dir = toml_string(&data_dir.display().to_string()),
    )
}

/// When the simulated API first fails a poll, and how often after that.
const HICCUP_FIRST: Duration = Duration::from_secs(15);
const HICCUP_EVERY: Duration = Duration::from_secs(45);

/// A TOML basic string: JSON's string escapes are all valid TOML escapes.
fn toml_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// Starts the simulator and the pipeline, prints where to look, runs until `stop`
/// (or `run_for`, or a signal).
pub async fn run(opts: DemoOptions, stop: CancellationToken) -> anyhow::Result<()> {
    let (addr, sim) = sim::spawn(opts.sim.clone()).await?;
    let url = format!("http://{addr}");
    let data = tempfile_dir()?;
    let text = config_text(&url, &opts, &data);
    let invalid = |e| anyhow::anyhow!("the demo configuration is invalid:\n{e}");
    let src =
        Source::from_text("<demo>".into(), &text, &|k| std::env::var(k).ok()).map_err(invalid)?;
    let cfg = Config::from_source(&src, &crate::registry::builtin()).map_err(invalid)?;
    eprintln!(
        "tradewatch demo\n\
         \x20 simulated Freqtrade bot: {url}/api/v1/ (user {user}; try {url}/api/v1/ping)\n\
         \x20 pipeline: freqtrade receiver (every {interval}) -> risk -> ratio_to_percent -> batch -> debug{prom}{file}\n\
         \x20 the bot's drawdown passes 20% after about {ramp}: the risk processor pauses it and logs an alert\n\
         \x20 metrics: one line per batch below (debug exporter){out}\n\
         \x20 collector health and per-component status: http://{svc}/status\n\
         \x20 tradewatch's own metrics: http://{svc}/metrics\n\
         {scrape}\
         \x20 Ctrl-C stops.",
        user = opts.sim.username,
        interval = humantime::format_duration(opts.interval),
        file = if opts.out.is_some() { ", file" } else { "" },
        prom = if opts.prometheus.is_some() { ", prometheus" } else { "" },
        scrape = opts
            .prometheus
            .map(|a| format!("\x20 the bot's metrics for Prometheus: http://{a}/metrics\n"))
            .unwrap_or_default(),
        ramp = humantime::format_duration(opts.sim.drawdown_ramp),
        out = opts
            .out
            .as_ref()
            .map(|p| format!("; every point as OTLP/JSON in {}", p.display()))
            .unwrap_or_default(),
        svc = opts.service,
    );
    if let Some(d) = opts.run_for {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            stop.cancel();
        });
    }
    // A real bot's API fails a poll now and then (a restart, a slow exchange call): so does
    // the simulated one, for one poll interval after 15 s and then every 45 s, so the
    // poll-failure counters and the fail-closed count move (never up to its limit of 5).
    let hiccups = {
        let (sim, stop, every) = (sim.clone(), stop.clone(), opts.interval);
        tokio::spawn(async move {
            let mut wait = HICCUP_FIRST;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                let fault = sim::Faults {
                    unavailable: true,
                    ..Default::default()
                };
                sim.set_faults(0, fault);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                sim.set_faults(0, sim::Faults::default());
                wait = HICCUP_EVERY.saturating_sub(every);
            }
        })
    };
    // What the bot itself says, for comparing with the pipeline's output.
    let ticker = {
        let (sim, stop, every) = (sim.clone(), stop.clone(), opts.interval);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if let Some(p) = sim.profit(0) {
                    eprintln!(
                        "demo bot says: total profit {:.2} USDT ({:.2}%), drawdown {:.1}% (default limit 20%), closed trades {}",
                        p["profit_all_coin"].as_f64().unwrap_or(f64::NAN),
                        p["profit_all_ratio"].as_f64().unwrap_or(f64::NAN) * 100.0,
                        p["current_drawdown"].as_f64().unwrap_or(f64::NAN) * 100.0,
                        p["closed_trade_count"],
                    );
                }
            }
        })
    };
    let result = crate::service::run::run(cfg, stop.clone()).await;
    stop.cancel();
    let _ = ticker.await;
    let _ = hiccups.await;
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&data);
    result.map_err(Into::into)
}

/// A fresh directory for one demo run's state.
fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("tradewatch-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
