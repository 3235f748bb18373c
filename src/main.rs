//! `huddle serve`: config → logging → shards → wait for SIGTERM/SIGINT → drain → exit 0.

use std::process::ExitCode;

use huddle::config::{self, Command, LogFormat};

fn main() -> ExitCode {
    let cli = match config::parse_from(std::env::args_os()) {
        Ok(c) => c,
        Err(config::ConfigError::Cli(e)) => e.exit(),
        Err(e) => {
            eprintln!("huddle: {e}");
            return ExitCode::from(2);
        }
    };
    let Command::Serve(cfg) = cli.command;
    let cfg = *cfg;
    init_logging(cfg.log_format);
    if let Err(e) = cfg.validate() {
        eprintln!("huddle: {e}");
        return ExitCode::from(2);
    }
    let api_keys = if cfg.api_keys.is_empty() {
        let k = huddle::server::random_key();
        tracing::warn!("no --api-key given; generated API key for this run: {k}");
        vec![k]
    } else {
        cfg.api_keys.clone()
    };
    let grace = cfg.shutdown_grace;
    let shards = cfg.shard_count();
    let server = match huddle::server::start(cfg, api_keys) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(shards, "huddle listening on {}", server.addr);
    wait_for_signal();
    tracing::info!(?grace, "signal received: closing connections with 1001");
    server.shutdown();
    if !server.join_within(grace) {
        tracing::warn!(
            ?grace,
            "shutdown grace over; exiting with connections still open"
        );
    }
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Blocks until SIGTERM or SIGINT.
fn wait_for_signal() {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start signal runtime: {e}");
            return;
        }
    };
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    });
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
