use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tradewatch::config::Config;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An OpenTelemetry-collector-style pipeline for automated trading systems.
#[derive(Parser)]
#[command(name = "tradewatch", version, about)]
struct Cli {
    /// Log format of tradewatch's own logs.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Log filter (tracing's EnvFilter syntax); RUST_LOG also works.
    #[arg(long, env = "TRADEWATCH_LOG", default_value = "info", global = true)]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector until SIGINT or SIGTERM (SIGHUP reloads the configuration file).
    Run {
        /// Configuration file.
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Check a configuration file and exit: 0 if it is valid, 1 with every error (file:line:column: key: message) if not.
    Validate {
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Probe a running collector's `/health` (for container HEALTHCHECKs, which have no
    /// curl): exit 0 if it answers 200 within the timeout, 1 otherwise.
    Healthcheck {
        /// The service endpoint's /health (http:// or https://).
        #[arg(long, default_value = "http://127.0.0.1:13133/health")]
        url: String,
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Simulate a Freqtrade bot on loopback and poll it: trading metrics move, and the
    /// drawdown passes 20% after about a minute. Nothing else needs to run.
    Demo {
        /// Poll interval.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        interval: Duration,
        /// Stop after this long (default: run until Ctrl-C).
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        run_for: Option<Duration>,
        /// Address of /health, /status and /metrics.
        #[arg(long, default_value = "127.0.0.1:13133")]
        service: SocketAddr,
        /// Also write every batch as OTLP/JSON lines to this file.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Seed of the simulated prices.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// About when the simulated drawdown passes 20%.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        drawdown_ramp: Duration,
        /// Where a prometheus exporter serves the bot's metrics for scraping ("off": none).
        #[arg(long, default_value = "127.0.0.1:9464", value_parser = parse_addr_or_off)]
        prometheus: AddrOrOff,
    },
}

/// An address, or `off`.
#[derive(Clone, Copy)]
struct AddrOrOff(Option<SocketAddr>);

fn parse_addr_or_off(s: &str) -> Result<AddrOrOff, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(AddrOrOff(None));
    }
    s.parse()
        .map(|a| AddrOrOff(Some(a)))
        .map_err(|e| format!("{e} (expected HOST:PORT or \"off\")"))
}

fn init_logs(format: LogFormat, level: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Text => logs.with_filter(filter).boxed(),
        LogFormat::Json => logs.json().flatten_event(true).with_filter(filter).boxed(),
    };
    // tradewatch's own spans, sent once `[service.telemetry] traces_endpoint` is read.
    tracing_subscriber::registry()
        .with(logs)
        .with(tradewatch::service::self_trace::layer())
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format, &cli.log_level);
    match cli.command {
        Command::Validate { config } => {
            match Config::load(&config, &tradewatch::registry::builtin()) {
                Ok(cfg) => {
                    println!(
                        "{}: valid ({} receivers, {} processors, {} exporters, {} pipelines)",
                        config.display(),
                        cfg.receivers.len(),
                        cfg.processors.len(),
                        cfg.exporters.len(),
                        cfg.pipelines.len()
                    );
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    eprintln!("{errors}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run { config } => exit(run(config)),
        Command::Healthcheck { url, timeout } => match healthcheck(&url, timeout) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("unhealthy: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Demo {
            interval,
            run_for,
            service,
            out,
            seed,
            drawdown_ramp,
            prometheus,
        } => {
            let opts = tradewatch::demo::DemoOptions {
                interval,
                run_for,
                service,
                out,
                prometheus: prometheus.0,
                sim: tradewatch::demo::sim::SimConfig {
                    seed,
                    drawdown_ramp,
                    ..Default::default()
                },
            };
            exit(
                runtime().and_then(|rt| {
                    rt.block_on(tradewatch::demo::run(opts, CancellationToken::new()))
                }),
            )
        }
    }
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One GET of `url` within `timeout`: Ok on 200 (`http://` or `https://`, the system's roots).
fn healthcheck(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let status = rt.block_on(async {
        reqwest::Client::builder()
            .timeout(timeout)
            .build()?
            .get(url)
            .send()
            .await
            .map(|r| r.status())
    })?;
    anyhow::ensure!(status == reqwest::StatusCode::OK, "{url} answered {status}");
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tradewatch")
        .build()
        .context("starting the async runtime")
}

fn run(path: PathBuf) -> anyhow::Result<()> {
    let cfg = Config::load(&path, &tradewatch::registry::builtin())
        .map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?;
    runtime()?.block_on(tradewatch::service::run::run(cfg, CancellationToken::new()))?;
    Ok(())
}
