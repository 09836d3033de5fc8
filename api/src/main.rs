//! `orchestrator`: a thin shim that parses the command line and runs the library.

use clap::Parser;
use opentelemetry_otlp::ExporterBuildError;
use orchestrator::{
    app::App,
    auth::AuthMode,
    cli::{Cli, Command, MemoryCommand},
    config::{LogFormat, Settings},
    telemetry::Telemetry,
};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return orchestrator::cli::usage(&e),
    };
    let mut settings = match cli.command {
        // Client commands talk to a server over HTTP: no settings, no connections, no logs.
        Command::Client(command) => return orchestrator::cli::run(command).await,
        Command::Eval(command) => return eval::command::run(command).await,
        Command::Run(ref s)
        | Command::Serve(ref s)
        | Command::Worker(ref s)
        | Command::Migrate(ref s)
        | Command::Memory(MemoryCommand::Reembed(ref s)) => s.clone(),
        Command::Keys(ref keys) => keys.settings().clone(),
        Command::Users(ref users) => users.settings().clone(),
    };
    // `run` is the local, all-in-one command: without a key store to set up first. Everything
    // else guards its API unless told otherwise.
    if settings.auth.mode.is_none() {
        settings.auth.mode =
            Some(if matches!(cli.command, Command::Run(_)) { AuthMode::Disabled } else { AuthMode::Required });
    }
    let telemetry = match init_tracing(&settings) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("error: cannot export traces: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = run(cli.command, settings).await;
    // After the app stopped: the spans of its last requests and jobs are still buffered.
    if let Some(telemetry) = telemetry {
        telemetry.shutdown().await;
    }
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line naming what failed, not a backtrace.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    if let Command::Keys(keys) = command {
        return orchestrator::cli::keys::run(keys).await;
    }
    if let Command::Users(users) = command {
        println!("{}", orchestrator::cli::users::run(&users).await?);
        return Ok(());
    }
    if let Command::Memory(MemoryCommand::Reembed(_)) = &command {
        let n = orchestrator::app::reembed_memory(&settings).await?;
        println!("re-embedded {n} memories");
        return Ok(());
    }
    // Before connecting: a deployment facing tenants never starts with a guessable secret.
    if matches!(command, Command::Serve(_) | Command::Worker(_)) && settings.auth.mode() == AuthMode::Required {
        settings.check_production_secrets()?;
    }
    let app = App::connect(settings.clone()).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));
    let bind = || async {
        tokio::net::TcpListener::bind(settings.bind_addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.bind_addr))
    };
    match command {
        Command::Migrate(_) => {
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Run(_) => app.run(Some(bind().await?), 1, shutdown).await,
        Command::Serve(_) => app.run(Some(bind().await?), 0, shutdown).await,
        Command::Worker(_) => app.run(None, 1, shutdown).await,
        Command::Memory(_) | Command::Keys(_) | Command::Users(_) => Ok(()), // handled before connecting
        Command::Client(_) | Command::Eval(_) => Ok(()),                     // handled in main, without connecting
    }
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
async fn watch_signals(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
    shutdown.cancel();
}

/// Logs to stderr as text or JSON, and exports spans over OTLP when an endpoint is set.
fn init_tracing(settings: &Settings) -> Result<Option<Telemetry>, ExporterBuildError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let telemetry = Telemetry::init(settings)?;
    let registry = tracing_subscriber::registry().with(filter);
    // As `tracing_subscriber::fmt()` sets it up, so the log lines stay as they were.
    let logs = || fmt::layer().log_internal_errors(true).with_writer(std::io::stderr);
    match settings.log_format {
        LogFormat::Json => registry.with(logs().json()).with(telemetry.as_ref().map(Telemetry::layer)).init(),
        LogFormat::Text => registry.with(logs()).with(telemetry.as_ref().map(Telemetry::layer)).init(),
    }
    Ok(telemetry)
}
