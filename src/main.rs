use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
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
    /// Run the collector until SIGINT or SIGTERM (SIGHUP is logged and ignored: no reload yet).
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
}

fn init_logs(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
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
        Command::Run { config } => match run(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run(path: PathBuf) -> anyhow::Result<()> {
    let cfg = Config::load(&path, &tradewatch::registry::builtin())
        .map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tradewatch")
        .build()
        .context("starting the async runtime")?;
    rt.block_on(tradewatch::service::run::run(cfg, CancellationToken::new()))?;
    Ok(())
}
