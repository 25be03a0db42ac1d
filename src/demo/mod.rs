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
    pub sim: sim::SimConfig,
}

/// The demo's pipelines: freqtrade receiver → risk → ratio_to_percent → batch → debug
/// (+ file), and the risk processor's alerts → log (+ file). `data_dir` holds the risk
/// state (one per demo run, so a run never starts inside the last run's breach).
pub fn config_text(bot_url: &str, opts: &DemoOptions, data_dir: &std::path::Path) -> String {
    let file = opts.out.as_ref().map(|p| {
        format!(
            "[exporters.file]\npath = {}\n",
            toml_string(&p.display().to_string())
        )
    });
    let (exporters, alert_exporters) = if file.is_some() {
        (r#"["debug", "file"]"#, r#"["log", "file"]"#)
    } else {
        (r#"["debug"]"#, r#"["log"]"#)
    };
    format!(
        r#"# tradewatch demo: a simulated Freqtrade bot polled every {interval}.
[receivers."freqtrade/demo"]
url = {url}
username = {user}
password = {pass}
interval = "{interval}"
timeout = "5s"
bot = "demo"

[receivers.alerts]

# The seeds' limits: a breach pauses the bot (once per breach run) and raises an alert.
[processors.risk]
max_drawdown_pct = 20
action_on_breach = "pause"
control = "freqtrade/demo"

[processors.ratio_to_percent]
metrics = ["freqtrade.*.ratio"]

[processors.batch]
timeout = "200ms"

[exporters.debug]
verbosity = "basic"

[exporters.log]
{file}
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
        service = opts.service,
        data_dir = toml_string(&data_dir.display().to_string()),
    )
}

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
         \x20 pipeline: freqtrade receiver (every {interval}) -> risk -> ratio_to_percent -> batch -> debug{file}\n\
         \x20 the bot's drawdown passes 20% after about {ramp}: the risk processor pauses it and logs an alert\n\
         \x20 metrics: one line per batch below (debug exporter){out}\n\
         \x20 collector health and per-component status: http://{svc}/status\n\
         \x20 tradewatch's own metrics: http://{svc}/metrics\n\
         \x20 Ctrl-C stops.",
        user = opts.sim.username,
        interval = humantime::format_duration(opts.interval),
        file = if opts.out.is_some() { ", file" } else { "" },
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
