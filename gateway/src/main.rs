//! The `gateway` command: `serve`, `check`, `demo`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use gateway::Gateway;

// The request path allocates per request (headers, JSON, Avro values); glibc
// malloc was a fifth of the async path's CPU in a profile (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    about = "Strangler-fig migration gateway: REST → Kafka, one route at a time"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as text or JSON (one object per line), on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "GATEWAY_LOG_FORMAT"
    )]
    log_format: gateway::telemetry::LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Serve public traffic and the admin API from a routes file.
    Serve {
        /// The routes file.
        #[arg(long, short, default_value = "routes.toml", env = "GATEWAY_CONFIG")]
        config: PathBuf,
        /// Seconds in-flight requests get to finish on shutdown.
        #[arg(long, default_value_t = 10, env = "GATEWAY_GRACE_SECS")]
        grace_secs: u64,
        /// Seconds between SIGTERM (when /readyz turns false) and the
        /// listener closing, so load balancers stop sending first.
        #[arg(long, default_value_t = 0, env = "GATEWAY_SHUTDOWN_DELAY_SECS")]
        shutdown_delay_secs: u64,
    },
    /// Validate a routes file and its schemas; exit 1 listing every problem.
    Check {
        /// The routes file.
        #[arg(long, short, default_value = "routes.toml", env = "GATEWAY_CONFIG")]
        config: PathBuf,
    },
    /// Event→HTTP adapters: deliver a topic's events to a legacy service.
    Adapter {
        #[command(subcommand)]
        command: AdapterCommand,
        /// The routes file (its [[adapters]]).
        #[arg(
            long,
            short,
            global = true,
            default_value = "routes.toml",
            env = "GATEWAY_CONFIG"
        )]
        config: PathBuf,
        /// Kafka bootstrap (default: kafka.bootstrap).
        #[arg(long, global = true)]
        kafka: Option<String>,
    },
    /// Deliver a time window of a topic again: backfill a new service.
    Replay {
        /// The routes file (Kafka settings, schemas).
        #[arg(long, short, default_value = "routes.toml", env = "GATEWAY_CONFIG")]
        config: PathBuf,
        /// Kafka bootstrap (default: kafka.bootstrap).
        #[arg(long)]
        kafka: Option<String>,
        /// Source topic.
        #[arg(long)]
        topic: String,
        /// Start: an RFC 3339 time or a duration back from now (7d, 36h).
        #[arg(long)]
        from: String,
        /// End, same forms (default: now).
        #[arg(long)]
        to: Option<String>,
        /// Only events with this key.
        #[arg(long)]
        key: Option<String>,
        /// Deliver each decoded event to this URL.
        #[arg(
            long,
            conflicts_with = "target_topic",
            required_unless_present = "target_topic"
        )]
        target: Option<String>,
        /// Copy each record to this topic.
        #[arg(long)]
        target_topic: Option<String>,
        /// Most events per second.
        #[arg(long)]
        rate: Option<u32>,
        /// Count, deliver nothing.
        #[arg(long)]
        dry_run: bool,
        /// Progress file: resume from it and keep it current.
        #[arg(long)]
        resume: Option<PathBuf>,
    },
    /// The migration plan: phase status, diffs, apply and rollback.
    Plan {
        #[command(subcommand)]
        command: PlanCommand,
        /// The routes file.
        #[arg(
            long,
            short,
            global = true,
            default_value = "routes.toml",
            env = "GATEWAY_CONFIG"
        )]
        config: PathBuf,
        /// The plan directory (default: migration-plan/ beside the routes file).
        #[arg(long, global = true)]
        plan_dir: Option<PathBuf>,
        /// Act on a running gateway through its admin API (token in
        /// GATEWAY_ADMIN_TOKEN) instead of editing the routes file.
        #[arg(long, global = true)]
        admin: Option<String>,
        /// Kafka bootstrap for precondition checks (default: kafka.bootstrap).
        #[arg(long, global = true)]
        kafka: Option<String>,
        /// Do not check preconditions of this kind (topic, schema,
        /// consumer-group); each is reported as SKIPPED.
        #[arg(long = "skip-check", global = true, value_parser = ["topic", "schema", "consumer-group"])]
        skip_checks: Vec<String>,
    },
    /// Canary releases on a running gateway: status, pause, resume, abort,
    /// promote (writes need GATEWAY_ADMIN_TOKEN).
    Canary {
        #[command(subcommand)]
        command: CanaryCommand,
        /// The gateway's admin URL.
        #[arg(
            long,
            global = true,
            default_value = "http://127.0.0.1:9080",
            env = "GATEWAY_ADMIN_URL"
        )]
        admin: String,
        /// Print the admin API's JSON answer.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Schema governance: compatibility, history checks, diffs, registration.
    Schemas {
        #[command(subcommand)]
        command: SchemasCommand,
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

#[derive(Subcommand)]
enum AdapterCommand {
    /// Run an adapter until Ctrl-C or SIGTERM.
    Run {
        /// Adapter name in [[adapters]].
        #[arg(long)]
        name: String,
        /// Serve Prometheus metrics (deliveries, retries, dead letters,
        /// lag) at http://ADDR/metrics.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
    },
    /// Send the adapter's dead letters back to its topic.
    Redrive {
        /// Adapter name in [[adapters]].
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum CanaryCommand {
    /// Step, figures and decisions of one canary (or every canary).
    Status {
        /// Route name.
        route: Option<String>,
    },
    /// Hold the current step (automatic rollback stays armed).
    Pause {
        /// Route name.
        route: String,
        /// Why, for the audit trail.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Go on: a paused canary continues; a rolled-back or aborted one starts
    /// again at its first step.
    Resume {
        /// Route name.
        route: String,
        /// Why, for the audit trail.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Back to 0% now, and stay there until resumed.
    Abort {
        /// Route name.
        route: String,
        /// Why, for the audit trail.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Next step now, without waiting for the interval.
    Promote {
        /// Route name.
        route: String,
        /// Why, for the audit trail.
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
enum PlanCommand {
    /// Which phase each route is in, and drift between file and gateway.
    Status,
    /// What applying a phase would change.
    Diff {
        /// Phase id (e.g. 02-user-registration) or name.
        phase: String,
    },
    /// Check a phase's preconditions, then carry out its route changes.
    Apply {
        /// Phase id or name.
        phase: String,
        /// Check and show, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Return a phase's routes to their previous modes (the last applied
    /// phase only).
    Rollback {
        /// Phase id or name.
        phase: String,
        /// Show, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum SchemasCommand {
    /// Can data written with WRITER be read with READER? Exit 0 yes, 1 no
    /// (each reason printed), 2 when a file is unreadable or not valid Avro.
    Compat {
        /// The reader's schema file.
        #[arg(long)]
        reader: PathBuf,
        /// The writer's schema file.
        #[arg(long)]
        writer: PathBuf,
    },
    /// Check every record's newest version against its history at its
    /// level (schemas/compatibility.toml); exit 1 on any incompatibility.
    Check {
        /// The routes file (for the schema directory and the registry).
        #[arg(long, short, default_value = "routes.toml", env = "GATEWAY_CONFIG")]
        config: PathBuf,
        /// Check every version added since this git revision, and that
        /// versions released by then are unchanged.
        #[arg(long)]
        against: Option<String>,
        /// Also check each route's schema against the registry's latest
        /// version under its subject.
        #[arg(long)]
        registry: bool,
    },
    /// Show what changed between two versions of a record.
    Diff {
        /// Record full name, e.g. com.shop.OrderCreated.
        subject: String,
        /// The routes file (for the schema directory).
        #[arg(long, short, default_value = "routes.toml", env = "GATEWAY_CONFIG")]
        config: PathBuf,
        /// Older version (default: the one before `--to`).
        #[arg(long)]
        from: Option<u32>,
        /// Newer version (default: the newest).
        #[arg(long)]
        to: Option<u32>,
    },
    /// Register each publishing route's schema with the registry; without
    /// --apply only say what would be done.
    Register {
        /// The routes file.
        #[arg(long, short, default_value = "routes.toml", env = "GATEWAY_CONFIG")]
        config: PathBuf,
        /// Really register (and set each subject's compatibility level).
        #[arg(long)]
        apply: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Flushes the trace exporter when main returns.
    let _telemetry = gateway::telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve {
                config,
                grace_secs,
                shutdown_delay_secs,
            } => serve(config, grace_secs, shutdown_delay_secs).await,
            Command::Check { config } => check(config).await,
            Command::Schemas { command } => schemas(command).await,
            Command::Replay {
                config,
                kafka,
                topic,
                from,
                to,
                key,
                target,
                target_topic,
                rate,
                dry_run,
                resume,
            } => {
                use gateway::adapter::replay;
                let loaded = gateway::config::LoadedConfig::read(&config)?;
                let bootstrap = kafka.unwrap_or_else(|| loaded.config.kafka.bootstrap.clone());
                let target = match (target, target_topic) {
                    (Some(url), _) => replay::Target::Http(url),
                    (None, Some(t)) => replay::Target::Topic(t),
                    (None, None) => anyhow::bail!("--target or --target-topic is required"),
                };
                let request = replay::ReplayRequest {
                    topic,
                    from,
                    to,
                    key,
                    target,
                    rate,
                    dry_run,
                    resume,
                };
                let s = replay::run(&loaded, &bootstrap, request).await?;
                println!(
                    "{} {} of {} events in the window ({} skipped by --key)",
                    if dry_run {
                        "would deliver"
                    } else {
                        "delivered"
                    },
                    s.delivered,
                    s.total,
                    s.skipped
                );
                Ok(ExitCode::SUCCESS)
            }
            Command::Adapter {
                command,
                config,
                kafka,
            } => adapter(command, config, kafka).await,
            Command::Plan {
                command,
                config,
                plan_dir,
                admin,
                kafka,
                skip_checks,
            } => {
                use gateway::plan::cli;
                let target = cli::Target {
                    config,
                    plan_dir,
                    admin,
                    kafka,
                    skip_checks,
                };
                let outcome = match command {
                    PlanCommand::Status => cli::status(&target).await,
                    PlanCommand::Diff { phase } => cli::diff(&target, &phase).await,
                    PlanCommand::Apply { phase, dry_run } => {
                        cli::apply(&target, &phase, dry_run, false).await
                    }
                    PlanCommand::Rollback { phase, dry_run } => {
                        cli::apply(&target, &phase, dry_run, true).await
                    }
                };
                print_outcome(outcome)
            }
            Command::Demo {
                config,
                kafka,
                quiet,
            } => gateway::demo::run(&config, &kafka, !quiet).await,
            Command::Canary {
                command,
                admin,
                json,
            } => {
                let (action, route, reason) = match command {
                    CanaryCommand::Status { route } => ("status", route, None),
                    CanaryCommand::Pause { route, reason } => ("pause", Some(route), reason),
                    CanaryCommand::Resume { route, reason } => ("resume", Some(route), reason),
                    CanaryCommand::Abort { route, reason } => ("abort", Some(route), reason),
                    CanaryCommand::Promote { route, reason } => ("promote", Some(route), reason),
                };
                print_outcome(
                    gateway::canary::cli::run(
                        &admin,
                        action,
                        route.as_deref(),
                        reason.as_deref(),
                        json,
                    )
                    .await,
                )
            }
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

async fn adapter(
    command: AdapterCommand,
    config: PathBuf,
    kafka: Option<String>,
) -> anyhow::Result<ExitCode> {
    let loaded = gateway::config::LoadedConfig::read(&config)?;
    let bootstrap = kafka.unwrap_or_else(|| loaded.config.kafka.bootstrap.clone());
    if bootstrap == "embedded" {
        anyhow::bail!("an adapter needs a real Kafka: pass --kafka HOST:PORT (gateway demo runs its adapters itself)");
    }
    match command {
        AdapterCommand::Run { name, metrics } => {
            let registry = gateway::metrics::Metrics::new();
            if let Some(addr) = metrics {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr}: {e}"))?;
                let served = registry.clone();
                let app = axum::Router::new().route(
                    "/metrics",
                    axum::routing::get(move || {
                        let served = served.clone();
                        async move {
                            (
                                [(
                                    axum::http::header::CONTENT_TYPE,
                                    "text/plain; version=0.0.4; charset=utf-8",
                                )],
                                served.render(),
                            )
                        }
                    }),
                );
                tokio::spawn(async move { axum::serve(listener, app).await });
            }
            let (stop, rx) = tokio::sync::watch::channel(false);
            let run = gateway::adapter::run_with_metrics(&loaded, &name, &bootstrap, rx, registry);
            tokio::pin!(run);
            tokio::select! {
                r = &mut run => r?,
                _ = shutdown_signal() => {
                    let _ = stop.send(true);
                    run.await?;
                }
            }
        }
        AdapterCommand::Redrive { name } => {
            let n = gateway::adapter::redrive(&loaded, &name, &bootstrap).await?;
            println!("re-drove {n} dead letter(s) of adapter {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn schemas(command: SchemasCommand) -> anyhow::Result<ExitCode> {
    use gateway::schema::commands;
    let outcome = match command {
        SchemasCommand::Compat { reader, writer } => commands::compat(&reader, &writer),
        SchemasCommand::Check {
            config,
            against,
            registry,
        } => {
            let loaded = gateway::config::LoadedConfig::read(&config)?;
            let mut outcome = commands::check(&loaded.schemas_dir(), against.as_deref());
            if registry && outcome.code != 2 {
                let client = registry_client(&loaded)?;
                let remote = commands::check_registry(&loaded, &client).await;
                outcome.code = outcome.code.max(remote.code);
                outcome.lines.extend(remote.lines);
            }
            outcome
        }
        SchemasCommand::Diff {
            subject,
            config,
            from,
            to,
        } => {
            let loaded = gateway::config::LoadedConfig::read(&config)?;
            commands::diff(&loaded.schemas_dir(), &subject, from, to)
        }
        SchemasCommand::Register { config, apply } => {
            let loaded = gateway::config::LoadedConfig::read(&config)?;
            let client = registry_client(&loaded)?;
            commands::register(&loaded, &client, apply).await
        }
    };
    print_outcome(outcome)
}

fn print_outcome(outcome: gateway::schema::commands::Outcome) -> anyhow::Result<ExitCode> {
    for line in &outcome.lines {
        println!("{line}");
    }
    Ok(ExitCode::from(outcome.code))
}

fn registry_client(
    loaded: &gateway::config::LoadedConfig,
) -> anyhow::Result<gateway::schema::registry::RegistryClient> {
    let url = loaded
        .config
        .schemas
        .registry
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("schemas.registry is not set in the routes file"))?;
    Ok(gateway::schema::registry::RegistryClient::new(
        url,
        gateway::upstream::client_for_or_default(&loaded.config.upstream_tls),
        Duration::from_millis(loaded.config.schemas.registry_timeout_ms),
    ))
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

async fn serve(config: PathBuf, grace_secs: u64, delay_secs: u64) -> anyhow::Result<ExitCode> {
    let gateway = Gateway::start(&config).await?;
    wait_for_stop(&gateway).await?;
    tracing::info!("shutting down");
    let drained = gateway
        .shutdown_after(
            Duration::from_secs(delay_secs),
            Duration::from_secs(grace_secs),
        )
        .await;
    if drained {
        tracing::info!("drained: every request answered, every event published or spooled");
        Ok(ExitCode::SUCCESS)
    } else {
        // Exit code 3: stopped, but something was cut off (see the log).
        Ok(ExitCode::from(3))
    }
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
