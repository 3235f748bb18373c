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
    let cfg = match cli.command {
        Command::Serve(cfg) => *cfg,
        Command::Token(args) => return print_token(&args),
    };
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
    if server.shared.auth.is_none() {
        tracing::warn!(
            "tokens are off (no --jwt-secret, --jwt-public-key or --jwt-jwks-file): every channel \
             is open and user_id is taken as given; for development only"
        );
    }
    let signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot listen for signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(shards, "huddle listening on {}", server.addr);
    tracing::info!(
        "dashboard: http://{}/ (enter the API key there for the server's numbers); JavaScript client: http://{}/huddle.js",
        server.addr,
        server.addr
    );
    signals.wait(&server);
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

/// SIGTERM, SIGINT and SIGHUP, listened for from before the ready line is logged (a SIGHUP
/// sent on seeing it must not find the default action, which ends the process).
struct Signals {
    rt: tokio::runtime::Runtime,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let _guard = rt.enter();
        let term = signal(SignalKind::terminate())?;
        let int = signal(SignalKind::interrupt())?;
        let hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!("cannot listen for SIGHUP (no key reload): {e}");
                None
            }
        };
        drop(_guard);
        Ok(Signals { rt, term, int, hup })
    }

    /// Blocks until SIGTERM or SIGINT; reloads the token keys on every SIGHUP meanwhile.
    fn wait(mut self, server: &huddle::server::ServerHandle) {
        let Signals { rt, term, int, hup } = &mut self;
        rt.block_on(async {
            loop {
                tokio::select! {
                    _ = term.recv() => return,
                    _ = int.recv() => return,
                    Some(()) = async {
                        match hup.as_mut() {
                            Some(h) => h.recv().await,
                            None => std::future::pending().await,
                        }
                    } => server.reload_keys(),
                }
            }
        });
    }
}

/// `huddle token`: prints a development token on stdout.
fn print_token(args: &config::TokenArgs) -> ExitCode {
    let now = huddle::shard::unix_now().as_secs();
    let claims = huddle::auth::DevClaims {
        sub: &args.sub,
        exp: now.saturating_add(args.ttl.as_secs()),
        channels: &args.channels,
        publish: &args.publish,
        aud: args.aud.as_deref(),
        iss: args.iss.as_deref(),
    };
    match huddle::auth::mint_hs256(args.secret.as_bytes(), &claims) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("huddle: cannot make the token: {e}");
            ExitCode::FAILURE
        }
    }
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
