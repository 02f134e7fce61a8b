//! The `gateway` command: `serve`, `check`, `demo`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use gateway::Gateway;

#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    about = "Strangler-fig migration gateway: REST → Kafka, one route at a time"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve public traffic and the admin API from a routes file.
    Serve {
        /// The routes file.
        #[arg(long, short, default_value = "routes.toml", env = "GATEWAY_CONFIG")]
        config: PathBuf,
        /// Seconds in-flight requests get to finish on shutdown.
        #[arg(long, default_value_t = 10)]
        grace_secs: u64,
    },
    /// Validate a routes file and its schemas; exit 1 listing every problem.
    Check {
        /// The routes file.
        #[arg(long, short, default_value = "routes.toml", env = "GATEWAY_CONFIG")]
        config: PathBuf,
    },
    /// Run sample legacy services, embedded Kafka and the gateway in one
    /// process, and print curl commands that show each mode.
    Demo {
        /// The routes file.
        #[arg(long, short, default_value = "routes.toml")]
        config: PathBuf,
        /// Use this Kafka instead of the embedded one (e.g. 127.0.0.1:19092).
        #[arg(long, default_value = "embedded")]
        kafka: String,
        /// Do not print the events that reach Kafka (for load runs).
        #[arg(long)]
        quiet: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rdkafka=warn".into()),
        )
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { config, grace_secs } => serve(config, grace_secs).await,
            Command::Check { config } => check(config).await,
            Command::Demo {
                config,
                kafka,
                quiet,
            } => gateway::demo::run(&config, &kafka, !quiet).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn check(config: PathBuf) -> anyhow::Result<ExitCode> {
    match gateway::server::check(&config).await {
        Ok(n) => {
            println!("{}: ok ({n} routes)", config.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(problems) => {
            eprintln!("{}: {} problem(s)", config.display(), problems.len());
            for p in problems {
                eprintln!("  - {p}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn serve(config: PathBuf, grace_secs: u64) -> anyhow::Result<ExitCode> {
    let gateway = Gateway::start(&config).await?;
    wait_for_stop(&gateway).await?;
    tracing::info!("shutting down");
    gateway.shutdown(Duration::from_secs(grace_secs)).await;
    Ok(ExitCode::SUCCESS)
}

/// Reloads on SIGHUP; returns on SIGINT or SIGTERM.
async fn wait_for_stop(gateway: &Gateway) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading");
                let _ = gateway.reload().await;
            }
            _ = term.recv() => return Ok(()),
            r = tokio::signal::ctrl_c() => return r.map_err(Into::into),
        }
    }
}
