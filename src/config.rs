//! Typed settings: command-line flags, `HUDDLE_*` environment variables, a TOML file, defaults.
//!
//! Precedence (PROTOCOL.md §1), highest first: flag, environment, TOML file, built-in default.
//! clap already ranks flag > env > default, so the TOML file is applied by turning each of its keys
//! into the *default* of the matching argument before parsing. One parser, one source of truth.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgAction, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

/// Why the settings could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error(transparent)]
    Cli(#[from] clap::Error),
}

/// `huddle`: a thread-per-core WebSocket pub/sub server.
#[derive(Debug, Parser)]
#[command(name = "huddle", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    // A repeated flag takes its last value, so wrappers can append overrides.
    #[command(args_override_self = true)]
    Serve(Box<ServeConfig>),
    /// Print an HS256 token for development and tests (signed with the same secret as
    /// `serve --jwt-secret`).
    Token(TokenArgs),
}

/// `huddle token`: the claims of a development token.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The HMAC secret (the server's `--jwt-secret`).
    #[arg(long, env = "HUDDLE_JWT_SECRET", hide_env_values = true)]
    pub secret: String,
    /// The user id (`sub`).
    #[arg(long)]
    pub sub: String,
    /// Lifetime from now (`exp`).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
    /// Channels the user may subscribe to beyond the public ones (`channels` claim;
    /// comma-separated glob patterns).
    #[arg(long, value_delimiter = ',')]
    pub channels: Vec<String>,
    /// Channels the user may publish to over the WebSocket (`publish` claim; glob patterns).
    #[arg(long, value_delimiter = ',')]
    pub publish: Vec<String>,
    /// `aud` claim.
    #[arg(long)]
    pub aud: Option<String>,
    /// `iss` claim.
    #[arg(long)]
    pub iss: Option<String>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Upgrade rate per client IP: `N/PERIOD` (`10/min`, `100/s`, `5/30s`), or `0`/`off`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

/// The `--conn-rate` setting: `None` when disabled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnRate(pub Option<Rate>);

/// Settings of `huddle serve`. Every field is a flag, an env var `HUDDLE_<FLAG>` and a TOML key.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// TOML file with settings; keys are flag names without dashes (`heartbeat-timeout = "60s"`).
    #[arg(long, env = "HUDDLE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address for WebSocket upgrades and the HTTP API: IP:PORT, [IPv6]:PORT, localhost:PORT
    /// (127.0.0.1), or :PORT (all interfaces, 0.0.0.0). Port 0 picks a free port.
    #[arg(long, env = "HUDDLE_LISTEN", default_value = "127.0.0.1:8080", value_parser = parse_listen)]
    pub listen: SocketAddr,

    /// Worker threads, each with its own event loop and connections [default: CPU cores].
    #[arg(long, env = "HUDDLE_SHARDS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub shards: Option<u16>,

    /// Key for the publish API; repeat the flag or separate keys with commas to accept several
    /// (key rotation). Random and printed once at start when none is given.
    #[arg(
        long = "api-key",
        value_name = "KEY",
        env = "HUDDLE_API_KEY",
        hide_env_values = true,
        value_delimiter = ',',
        action = ArgAction::Append
    )]
    pub api_keys: Vec<String>,

    /// Heartbeat interval announced in connection_ack; also the silence before a server ping
    /// (at most 24h).
    #[arg(long, env = "HUDDLE_HEARTBEAT_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// A connection silent this long is closed with 4001 (at most 24h).
    #[arg(long, env = "HUDDLE_HEARTBEAT_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub heartbeat_timeout: Duration,

    /// WebSocket upgrades per client IP, `N/PERIOD` (s, min, h or a duration); `0` or `off` disables.
    #[arg(long, env = "HUDDLE_CONN_RATE", default_value = "10/min", value_parser = parse_rate)]
    pub conn_rate: ConnRate,

    /// Messages one WebSocket connection may send, `N/PERIOD` (`50/s`); excess ones get a
    /// `rate_limited` error and are not processed; `0` or `off` disables.
    #[arg(long, env = "HUDDLE_MESSAGE_RATE", default_value = "50/s", value_parser = parse_rate)]
    pub message_rate: ConnRate,

    /// Messages a connection may send at once above `--message-rate` (token bucket size).
    #[arg(long, env = "HUDDLE_MESSAGE_BURST", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub message_burst: u32,

    /// Largest client message in bytes, after reassembly of fragments.
    #[arg(long, env = "HUDDLE_MAX_MESSAGE_SIZE", default_value_t = 65536)]
    pub max_message_size: usize,

    /// Channels one connection may be subscribed to.
    #[arg(long, env = "HUDDLE_MAX_SUBSCRIPTIONS", default_value_t = 256)]
    pub max_subscriptions: usize,

    /// Unsent bytes a connection may hold before it is closed as a slow consumer (4008).
    #[arg(long, env = "HUDDLE_SEND_QUEUE_BYTES", default_value_t = 1_048_576)]
    pub send_queue_bytes: usize,

    /// Comma-separated allowed `Origin` values (each trimmed); empty allows any. Others get HTTP 403.
    #[arg(long, env = "HUDDLE_ALLOWED_ORIGINS", value_delimiter = ',', num_args = 0..)]
    pub allowed_origins: Vec<String>,

    /// Time to drain connections on SIGTERM/SIGINT before exiting (at most 1h).
    #[arg(long, env = "HUDDLE_SHUTDOWN_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// A client that has not sent its whole HTTP request head by then is disconnected (at most 1h).
    #[arg(long, env = "HUDDLE_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// WebSocket publishes one connection may have in flight; past it the server stops reading
    /// that connection until replies go out (1 to 65536).
    #[arg(
        long,
        env = "HUDDLE_MAX_INFLIGHT_PUBLISHES",
        value_name = "N",
        default_value_t = 64
    )]
    pub max_inflight_publishes: usize,

    /// Channel messages a shard may have accepted for sequencing and fan-out but not yet
    /// delivered everywhere; past it publishes are refused as `overloaded` (HTTP 503)
    /// (1 to 16777216).
    #[arg(
        long,
        env = "HUDDLE_PUBLISH_QUEUE",
        value_name = "N",
        default_value_t = 4096
    )]
    pub publish_queue: usize,

    /// A channel with no subscriber and no message for this long has its state freed; it comes
    /// back under a new epoch (more than 0, at most 30d).
    #[arg(long, env = "HUDDLE_HISTORY_TTL", value_name = "D", default_value = "5m", value_parser = parse_duration)]
    pub history_ttl: Duration,

    /// HMAC secret for tokens (HS256, HS384, HS512); turns tokens on (PROTOCOL.md §9).
    #[arg(
        long,
        env = "HUDDLE_JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,

    /// PEM public key for tokens: RSA (RS256/384/512, PS256/384/512), EC (ES256, ES384) or
    /// Ed25519 (EdDSA); turns tokens on. Reread on SIGHUP.
    #[arg(long, env = "HUDDLE_JWT_PUBLIC_KEY", value_name = "FILE")]
    pub jwt_public_key: Option<PathBuf>,

    /// JWKS document (`{"keys":[…]}`) of token keys chosen by the token's `kid`; turns tokens on.
    /// Reread on SIGHUP, so keys rotate without a restart or a dropped connection.
    #[arg(long, env = "HUDDLE_JWT_JWKS_FILE", value_name = "FILE")]
    pub jwt_jwks_file: Option<PathBuf>,

    /// Accepted `aud` values (comma-separated); when set, tokens must carry one of them.
    #[arg(
        long,
        env = "HUDDLE_JWT_AUDIENCE",
        value_name = "AUD",
        value_delimiter = ','
    )]
    pub jwt_audience: Vec<String>,

    /// Accepted `iss` values (comma-separated); when set, tokens must carry one of them.
    #[arg(
        long,
        env = "HUDDLE_JWT_ISSUER",
        value_name = "ISS",
        value_delimiter = ','
    )]
    pub jwt_issuer: Vec<String>,

    /// Clock skew allowed on `exp` and `nbf` (at most 5m). 0 by default: a token is refused, and
    /// its connection closed with 4401, from the second of its `exp` on.
    #[arg(long, env = "HUDDLE_JWT_LEEWAY", value_name = "D", default_value = "0s", value_parser = parse_duration)]
    pub jwt_leeway: Duration,

    /// Refuse upgrades without a valid token (or API key) with 401; needs a token key.
    #[arg(long, env = "HUDDLE_REQUIRE_AUTH")]
    pub require_auth: bool,

    /// Channels anyone may subscribe to, comma-separated glob patterns (`*` = any run). With
    /// tokens off every channel is open.
    #[arg(
        long,
        env = "HUDDLE_PUBLIC_CHANNELS",
        value_name = "LIST",
        value_delimiter = ',',
        num_args = 0..,
        default_value = "games,odds,predictions,game_*,odds_*,predictions_*,lines,eliminations"
    )]
    pub public_channels: Vec<String>,

    /// Messages each channel keeps for recovery and `/api/history` (0 keeps none; at most
    /// 100000). Each is kept for `--history-ttl`.
    #[arg(
        long,
        env = "HUDDLE_HISTORY_SIZE",
        value_name = "N",
        default_value_t = 100
    )]
    pub history_size: usize,

    /// Most messages one recovery replays; a bigger gap answers `"recovered":false` (1 to
    /// 100000).
    #[arg(
        long,
        env = "HUDDLE_RECOVERY_MAX",
        value_name = "N",
        default_value_t = 1000
    )]
    pub recovery_max: usize,

    /// Channels with presence (`/api/presence`, `join`/`leave` events), comma-separated glob
    /// patterns.
    #[arg(
        long,
        env = "HUDDLE_PRESENCE_CHANNELS",
        value_name = "LIST",
        value_delimiter = ',',
        num_args = 0..,
        default_value = "*"
    )]
    pub presence_channels: Vec<String>,

    /// Redis URL (`redis://[user:pass@]host:port[/db]`): run as one node of a cluster over
    /// Redis (PROTOCOL.md §12). Repeatable or comma-separated: channels are spread over the
    /// instances by a hash of their name.
    #[arg(
        long,
        env = "HUDDLE_REDIS",
        value_name = "URL",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub redis: Vec<String>,

    /// Cluster mode: a node renews its connections' presence entries in Redis every quarter of
    /// this; the entries of a node that stopped (killed, or cut off) are dropped after it
    /// (1s to 60s).
    #[arg(
        long,
        env = "HUDDLE_PRESENCE_TTL",
        value_name = "D",
        default_value = "40s",
        value_parser = parse_duration
    )]
    pub presence_ttl: Duration,

    /// The cluster's name: the prefix of every Redis key, so several clusters can share one
    /// Redis (1 to 64 of `[A-Za-z0-9_.-]`).
    #[arg(
        long,
        env = "HUDDLE_CLUSTER_NAME",
        value_name = "NAME",
        default_value = "huddle"
    )]
    pub cluster_name: String,

    /// Run the built-in demo feed (PROTOCOL.md §14): simulated NFL games, odds and
    /// predictions published through the ordinary publish path.
    #[arg(long, env = "HUDDLE_DEMO")]
    pub demo: bool,

    /// Seed of the demo feed: the same seed gives the same games and messages (default: a
    /// random one, printed at start).
    #[arg(long, env = "HUDDLE_DEMO_SEED", value_name = "N")]
    pub demo_seed: Option<u64>,

    /// Time between two steps of the demo feed (each step is 30 s of game time and a few
    /// dozen messages; 10ms to 1m).
    #[arg(
        long,
        env = "HUDDLE_DEMO_INTERVAL",
        value_name = "D",
        default_value = "500ms",
        value_parser = parse_duration
    )]
    pub demo_interval: Duration,

    /// Serve `GET /ws/echo`, which echoes every message through the same codec and limits
    /// (for conformance runs such as Autobahn; off by default).
    #[arg(long, env = "HUDDLE_ECHO_ENDPOINT")]
    pub echo_endpoint: bool,

    /// Log line format on stderr (filter with RUST_LOG, default `info`).
    #[arg(long, env = "HUDDLE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl ServeConfig {
    /// Shard count: the flag, or one per available core.
    pub fn shard_count(&self) -> usize {
        match self.shards {
            Some(n) => usize::from(n),
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    /// The token settings (`--jwt-*`).
    pub fn auth_settings(&self) -> crate::auth::Settings {
        crate::auth::Settings {
            secret: self.jwt_secret.clone().filter(|s| !s.is_empty()),
            public_key: self.jwt_public_key.clone(),
            jwks_file: self.jwt_jwks_file.clone(),
            audience: self.jwt_audience.clone(),
            issuer: self.jwt_issuer.clone(),
            leeway: self.jwt_leeway,
        }
    }

    /// Checks ranges and relations that single-flag parsing cannot see. The message names the
    /// flag; `main` prints it and exits with status 2.
    pub fn validate(&self) -> Result<(), String> {
        let durations = [
            (
                "--heartbeat-interval",
                self.heartbeat_interval,
                false,
                MAX_HEARTBEAT,
            ),
            (
                "--heartbeat-timeout",
                self.heartbeat_timeout,
                false,
                MAX_HEARTBEAT,
            ),
            (
                "--shutdown-grace",
                self.shutdown_grace,
                true,
                MAX_SHUTDOWN_GRACE,
            ),
            (
                "--handshake-timeout",
                self.handshake_timeout,
                false,
                MAX_HANDSHAKE_TIMEOUT,
            ),
            ("--history-ttl", self.history_ttl, false, MAX_HISTORY_TTL),
            ("--jwt-leeway", self.jwt_leeway, true, MAX_JWT_LEEWAY),
        ];
        for (flag, value, zero_ok, max) in durations {
            if value.is_zero() && !zero_ok {
                return Err(format!("{flag} must be > 0"));
            }
            if value > max {
                return Err(format!(
                    "{flag} must be at most {} (got {})",
                    humantime::format_duration(max),
                    show_duration(value)
                ));
            }
        }
        if let Some(rate) = self.conn_rate.0 {
            if rate.per > MAX_RATE_PERIOD {
                return Err(format!(
                    "--conn-rate period must be at most {}",
                    humantime::format_duration(MAX_RATE_PERIOD)
                ));
            }
        }
        if self.require_auth && !self.auth_settings().enabled() {
            return Err(
                "--require-auth needs a token key: --jwt-secret, --jwt-public-key or --jwt-jwks-file"
                    .into(),
            );
        }
        if self.jwt_secret.as_deref().is_some_and(|s| s.len() < 16) {
            return Err("--jwt-secret must be at least 16 bytes".into());
        }
        if self.max_message_size < 125 {
            return Err("--max-message-size must be at least 125".into());
        }
        if !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&self.demo_interval) {
            return Err("--demo-interval must be between 10ms and 1m".into());
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&self.presence_ttl) {
            return Err("--presence-ttl must be between 1s and 60s".into());
        }
        let name_ok = |c: char| c.is_ascii_alphanumeric() || "_.-".contains(c);
        if self.cluster_name.is_empty()
            || self.cluster_name.len() > 64
            || !self.cluster_name.chars().all(name_ok)
        {
            return Err("--cluster-name must be 1 to 64 of [A-Za-z0-9_.-]".into());
        }
        if let Some(bad) = self
            .redis
            .iter()
            .find(|u| !(u.starts_with("redis://") || u.starts_with("unix://")))
        {
            return Err(format!(
                "--redis takes redis://[user:pass@]host:port[/db] URLs (got {})",
                crate::cluster::redact(bad)
            ));
        }
        let counts = [
            (
                "--max-inflight-publishes",
                self.max_inflight_publishes,
                MAX_INFLIGHT_PUBLISHES,
            ),
            ("--publish-queue", self.publish_queue, MAX_PUBLISH_QUEUE),
            ("--recovery-max", self.recovery_max, MAX_HISTORY_SIZE),
        ];
        if self.history_size > MAX_HISTORY_SIZE {
            return Err(format!(
                "--history-size must be at most {MAX_HISTORY_SIZE} (got {})",
                self.history_size
            ));
        }
        for (flag, value, max) in counts {
            if !(1..=max).contains(&value) {
                return Err(format!("{flag} must be between 1 and {max} (got {value})"));
            }
        }
        Ok(())
    }

    /// Trims list entries and drops empty ones, so `--allowed-origins ""` or `"a, b,"` and an
    /// empty `HUDDLE_API_KEY=` mean what they look like (no entry), never an empty key or origin.
    fn normalize(&mut self) {
        for list in [
            &mut self.allowed_origins,
            &mut self.api_keys,
            &mut self.jwt_audience,
            &mut self.jwt_issuer,
            &mut self.public_channels,
            &mut self.presence_channels,
            &mut self.redis,
        ] {
            for item in list.iter_mut() {
                let trimmed = item.trim();
                if trimmed.len() != item.len() {
                    *item = trimmed.to_owned();
                }
            }
            list.retain(|s| !s.is_empty());
        }
    }
}

/// Upper bounds of the duration settings: far beyond any sane value, and far below what would
/// overflow `Instant + Duration` in a shard.
pub const MAX_HEARTBEAT: Duration = Duration::from_secs(24 * 3600);
pub const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(3600);
pub const MAX_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3600);
pub const MAX_HISTORY_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
pub const MAX_JWT_LEEWAY: Duration = Duration::from_secs(300);
pub const MAX_RATE_PERIOD: Duration = Duration::from_secs(24 * 3600);
pub const MAX_INFLIGHT_PUBLISHES: usize = 65536;
pub const MAX_PUBLISH_QUEUE: usize = 1 << 24;
pub const MAX_HISTORY_SIZE: usize = 100_000;

/// A duration for an error message: humantime for sane values, seconds for absurd ones.
fn show_duration(d: Duration) -> String {
    if d.as_secs() < 100 * 365 * 24 * 3600 {
        humantime::format_duration(d).to_string()
    } else {
        format!("{}s", d.as_secs())
    }
}

/// Parses `args` (including the program name) with the TOML file (from `--config` or
/// `HUDDLE_CONFIG`) applied as defaults. Env is read from the process.
pub fn parse_from<I, T>(args: I) -> Result<Cli, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    let mut cmd = Cli::command();
    if let Some(path) = config_path(&args) {
        let defaults = file_defaults(&path)?;
        cmd = cmd.mut_subcommand("serve", |mut serve| {
            for (id, value) in defaults {
                serve = serve.mut_arg(id, |a| a.default_value(value));
            }
            serve
        });
    }
    let matches = cmd.try_get_matches_from(args)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    if let Command::Serve(serve) = &mut cli.command {
        serve.normalize();
    }
    Ok(cli)
}

/// The last of `--config FILE` / `--config=FILE` (a repeated flag takes its last value, like
/// every other flag), else `HUDDLE_CONFIG`. Stops at `--`.
fn config_path(args: &[std::ffi::OsString]) -> Option<PathBuf> {
    let mut found = None;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--" {
            break;
        }
        if s == "--config" {
            found = it.next().map(PathBuf::from);
        } else if let Some(v) = s.strip_prefix("--config=") {
            found = Some(PathBuf::from(v));
        }
    }
    found.or_else(|| std::env::var_os("HUDDLE_CONFIG").map(PathBuf::from))
}

/// Reads the TOML file into (argument id, default value) pairs, refusing unknown keys.
fn file_defaults(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml_defaults(&text).map_err(|message| ConfigError::File {
        path: path.to_owned(),
        message,
    })
}

/// The TOML → default-value mapping, separate from file IO so it is unit-tested.
fn toml_defaults(text: &str) -> Result<Vec<(String, String)>, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    let serve = Cli::command()
        .find_subcommand("serve")
        .cloned()
        .ok_or("no serve command")?;
    let mut out = Vec::new();
    for (key, value) in table {
        // Keys are flag names without dashes; the argument id may differ (`api-key` → `api_keys`).
        let id = match serve
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()))
        {
            Some(a) if key != "config" => a.get_id().to_string(),
            _ => return Err(format!("unknown key `{key}`")),
        };
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
            other => return Err(format!("key `{key}`: unsupported value {other}")),
        };
        out.push((id, value));
    }
    Ok(out)
}

/// `250ms`, `30s`, `5m`, `1h`, or a bare number of seconds (fractions allowed: `0.5`).
/// NaN, infinities, negatives and values no `Duration` can hold are refused; upper bounds of each
/// setting are checked by [`ServeConfig::validate`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            if let Ok(d) = Duration::try_from_secs_f64(secs) {
                return Ok(d);
            }
        }
        return Err(format!("invalid duration `{s}`"));
    }
    humantime::parse_duration(s).map_err(|e| format!("invalid duration `{s}`: {e}"))
}

/// `IP:PORT`, `[IPv6]:PORT`, `localhost:PORT` (→ 127.0.0.1) or `:PORT` (→ 0.0.0.0, all
/// interfaces). Host names other than `localhost` are refused rather than resolved.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    use std::net::{IpAddr, Ipv4Addr};
    let s = s.trim();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bad = || {
        format!(
            "invalid address `{s}`: expected IP:PORT, [IPv6]:PORT, localhost:PORT or :PORT \
             (e.g. 127.0.0.1:8080, [::1]:8080, :8080)"
        )
    };
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let ip = match host {
        "" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        h if h.eq_ignore_ascii_case("localhost") => IpAddr::V4(Ipv4Addr::LOCALHOST),
        _ => return Err(bad()),
    };
    Ok(SocketAddr::new(ip, port))
}

/// `N/PERIOD` where PERIOD is `s`, `sec`, `min`, `h`, `hour` or a duration (`30s`); `0`/`off` → None.
pub fn parse_rate(s: &str) -> Result<ConnRate, String> {
    parse_rate_inner(s).map(ConnRate)
}

fn parse_rate_inner(s: &str) -> Result<Option<Rate>, String> {
    let s = s.trim();
    if s == "0" || s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let (n, period) = s
        .split_once('/')
        .ok_or_else(|| format!("invalid rate `{s}`: expected N/PERIOD, e.g. 10/min"))?;
    let count: u32 = n
        .trim()
        .parse()
        .map_err(|_| format!("invalid rate `{s}`: `{n}` is not a whole number"))?;
    if count == 0 {
        return Ok(None);
    }
    let per = match period.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        other => parse_duration(other)?,
    };
    if per.is_zero() {
        return Err(format!("invalid rate `{s}`: period must be > 0"));
    }
    if per > MAX_RATE_PERIOD {
        return Err(format!("invalid rate `{s}`: period must be at most 24h"));
    }
    Ok(Some(Rate { count, per }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> ServeConfig {
        let mut argv = vec!["huddle", "serve"];
        argv.extend_from_slice(args);
        match parse_from(argv).expect("parse").command {
            Command::Serve(c) => *c,
            Command::Token(_) => unreachable!("serve was asked for"),
        }
    }

    #[test]
    fn defaults_match_protocol() {
        let c = serve(&[]);
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.heartbeat_interval, Duration::from_secs(30));
        assert_eq!(c.heartbeat_timeout, Duration::from_secs(60));
        assert_eq!(
            c.conn_rate.0,
            Some(Rate {
                count: 10,
                per: Duration::from_secs(60)
            })
        );
        assert_eq!(c.max_message_size, 65536);
        assert_eq!(c.max_subscriptions, 256);
        assert_eq!(c.send_queue_bytes, 1_048_576);
        assert!(c.allowed_origins.is_empty());
        assert_eq!(c.shutdown_grace, Duration::from_secs(5));
        assert!(c.api_keys.is_empty());
        assert_eq!(c.handshake_timeout, Duration::from_secs(10));
        assert_eq!(c.max_inflight_publishes, 64);
        assert_eq!(c.publish_queue, 4096);
        assert_eq!(c.history_ttl, Duration::from_secs(300));
        assert_eq!(c.jwt_leeway, Duration::ZERO);
        assert_eq!((c.history_size, c.recovery_max), (100, 1000));
        assert_eq!(c.presence_channels, ["*"]);
        assert!(!c.require_auth && !c.auth_settings().enabled());
        assert_eq!(
            c.public_channels.join(","),
            "games,odds,predictions,game_*,odds_*,predictions_*,lines,eliminations"
        );
        assert_eq!(c.validate(), Ok(()));
        let on = serve(&["--jwt-secret", "0123456789abcdef", "--require-auth"]);
        assert!(on.auth_settings().enabled());
        assert_eq!(on.validate(), Ok(()));
    }

    fn serve_err(args: &[&str]) -> String {
        let mut argv = vec!["huddle", "serve"];
        argv.extend_from_slice(args);
        match parse_from(argv) {
            Ok(Cli {
                command: Command::Serve(c),
            }) => c.validate().expect_err("should be refused"),
            Ok(_) => unreachable!("serve was asked for"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn listen_forms() {
        let a = |s: &str| parse_listen(s).unwrap();
        assert_eq!(a(":0"), "0.0.0.0:0".parse().unwrap());
        assert_eq!(a(":8080"), "0.0.0.0:8080".parse().unwrap());
        assert_eq!(a("127.0.0.1:9000"), "127.0.0.1:9000".parse().unwrap());
        assert_eq!(a("[::1]:9000"), "[::1]:9000".parse().unwrap());
        assert_eq!(a("[::]:0"), "[::]:0".parse().unwrap());
        assert_eq!(a("localhost:80"), "127.0.0.1:80".parse().unwrap());
        assert_eq!(a("LocalHost:80"), "127.0.0.1:80".parse().unwrap());
        for bad in [
            "",
            ":",
            "8080",
            "example.com:80",
            "localhost",
            ":99999",
            ":-1",
            "::1:80",
            "1.2.3.4",
        ] {
            let e = parse_listen(bad).expect_err(bad);
            assert!(e.contains("invalid address"), "{bad}: {e}");
        }
        assert_eq!(serve(&["--listen", ":0"]).listen, a("0.0.0.0:0"));
        assert!(serve_err(&["--listen", "nowhere:1"]).contains("invalid address"));
    }

    #[test]
    fn duration_bounds() {
        assert!(parse_duration("NaN").is_err());
        assert!(parse_duration("inf").is_err());
        assert!(parse_duration("-inf").is_err());
        assert!(
            parse_duration("1e30").is_err(),
            "beyond Duration: refused, no panic"
        );
        for (flag, ok, too_big) in [
            ("--heartbeat-interval", "24h", "25h"),
            ("--heartbeat-timeout", "86400", "1e19"),
            ("--shutdown-grace", "1h", "3601"),
            ("--handshake-timeout", "1h", "2h"),
            ("--history-ttl", "30days", "31days"),
        ] {
            assert_eq!(serve(&[flag, ok]).validate(), Ok(()), "{flag} {ok}");
            let e = serve_err(&[flag, too_big]);
            assert!(e.contains(flag) && e.contains("at most"), "{flag}: {e}");
        }
        assert!(serve_err(&["--heartbeat-timeout", "0"]).contains("--heartbeat-timeout"));
        assert!(serve_err(&["--history-ttl", "0s"]).contains("--history-ttl"));
        assert_eq!(serve(&["--shutdown-grace", "0"]).validate(), Ok(()));
        assert!(parse_rate("1/25h").is_err());
    }

    #[test]
    fn new_limits_ranges() {
        let c = serve(&["--max-inflight-publishes", "1", "--publish-queue", "1"]);
        assert_eq!((c.max_inflight_publishes, c.publish_queue), (1, 1));
        assert_eq!(c.validate(), Ok(()));
        assert!(serve_err(&["--max-inflight-publishes", "0"]).contains("--max-inflight-publishes"));
        assert!(serve_err(&["--publish-queue", "0"]).contains("--publish-queue"));
        assert!(serve_err(&["--publish-queue", "99999999"]).contains("--publish-queue"));
        assert!(serve_err(&["--require-auth"]).contains("--jwt-secret"));
        assert!(serve_err(&["--history-size", "100001"]).contains("--history-size"));
        assert!(serve_err(&["--recovery-max", "0"]).contains("--recovery-max"));
        assert!(serve_err(&["--jwt-secret", "short"]).contains("16 bytes"));
        assert!(serve_err(&["--jwt-leeway", "10m"]).contains("--jwt-leeway"));
        let d = toml_defaults("history-ttl = \"1m\"\npublish-queue = 10\n").unwrap();
        assert!(d.contains(&("history_ttl".into(), "1m".into())));
        assert!(d.contains(&("publish_queue".into(), "10".into())));
    }

    #[test]
    fn api_keys_accumulate() {
        assert_eq!(serve(&["--api-key", "a"]).api_keys, ["a"]);
        assert_eq!(
            serve(&["--api-key", "a", "--api-key", "b"]).api_keys,
            ["a", "b"],
            "repeated --api-key accumulates despite args_override_self"
        );
        assert_eq!(serve(&["--api-key", "a,b"]).api_keys, ["a", "b"]);
        assert_eq!(
            serve(&["--api-key=a, b", "--api-key", "c,"]).api_keys,
            ["a", "b", "c"]
        );
        assert!(
            serve(&["--api-key", ""]).api_keys.is_empty(),
            "no empty key"
        );
        let d = toml_defaults("api-key = [\"a\", \"b\"]").unwrap();
        assert_eq!(d, [("api_keys".to_string(), "a,b".to_string())]);
        assert!(
            toml_defaults("api_keys = \"x\"").is_err(),
            "key is the flag name"
        );
    }

    #[test]
    fn api_keys_from_file() {
        let dir = std::env::temp_dir().join(format!("huddle-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let list = dir.join("list.toml");
        std::fs::write(&list, "api-key = [\"a\", \"b\"]\n").unwrap();
        let joined = dir.join("joined.toml");
        std::fs::write(&joined, "api-key = \"c,d\"\n").unwrap();
        let c = serve(&["--config", list.to_str().unwrap()]);
        assert_eq!(c.api_keys, ["a", "b"]);
        let c = serve(&["--config", joined.to_str().unwrap()]);
        assert_eq!(c.api_keys, ["c", "d"]);
        let c = serve(&["--config", list.to_str().unwrap(), "--api-key", "z"]);
        assert_eq!(c.api_keys, ["z"], "flag replaces the file's keys");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn origins_are_trimmed() {
        let c = serve(&[
            "--allowed-origins",
            " https://a.example , https://b.example,",
        ]);
        assert_eq!(
            c.allowed_origins,
            ["https://a.example", "https://b.example"]
        );
        assert!(serve(&["--allowed-origins", ""]).allowed_origins.is_empty());
        assert!(serve(&["--allowed-origins", " , "])
            .allowed_origins
            .is_empty());
        assert!(serve(&["--allowed-origins"]).allowed_origins.is_empty());
    }

    #[test]
    fn last_config_file_wins() {
        let dir = std::env::temp_dir().join(format!("huddle-cfg2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let one = dir.join("one.toml");
        std::fs::write(&one, "heartbeat-timeout = \"11s\"\n").unwrap();
        let two = dir.join("two.toml");
        std::fs::write(&two, "heartbeat-timeout = \"22s\"\n").unwrap();
        let (one, two) = (one.to_str().unwrap(), two.to_str().unwrap());
        let t = |args: &[&str]| serve(args).heartbeat_timeout.as_secs();
        assert_eq!(t(&["--config", one, "--config", two]), 22);
        assert_eq!(t(&["--config", two, "--config", one]), 11);
        assert_eq!(t(&[&format!("--config={one}"), "--config", two]), 22);
        assert_eq!(t(&["--config", two, &format!("--config={one}")]), 11);
        let c = serve(&["--config", one, "--config", two]);
        assert_eq!(c.config.as_deref(), Some(Path::new(two)));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("12"), Ok(Duration::from_secs(12)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("off"), Ok(ConnRate(None)));
        assert_eq!(parse_rate("0"), Ok(ConnRate(None)));
        assert_eq!(
            parse_rate("100/s"),
            Ok(ConnRate(Some(Rate {
                count: 100,
                per: Duration::from_secs(1)
            })))
        );
        assert_eq!(
            parse_rate("5/30s"),
            Ok(ConnRate(Some(Rate {
                count: 5,
                per: Duration::from_secs(30)
            })))
        );
        assert!(parse_rate("ten/min").is_err());
        assert!(parse_rate("10").is_err());
    }

    #[test]
    fn flags_parse() {
        let c = serve(&[
            "--heartbeat-timeout",
            "1s",
            "--allowed-origins",
            "https://a.example,https://b.example",
            "--shards",
            "3",
            "--conn-rate",
            "off",
        ]);
        assert_eq!(c.heartbeat_timeout, Duration::from_secs(1));
        assert_eq!(
            c.allowed_origins,
            vec!["https://a.example", "https://b.example"]
        );
        assert_eq!(c.shard_count(), 3);
        assert_eq!(c.conn_rate.0, None);
        let c = serve(&["--shards", "2", "--shards", "5"]);
        assert_eq!(c.shard_count(), 5, "the last of a repeated flag wins");
    }

    #[test]
    fn toml_keys_become_defaults() {
        let d = toml_defaults(
            "heartbeat-timeout = \"45s\"\nmax-subscriptions = 12\nallowed-origins = [\"a\", \"b\"]\n",
        )
        .unwrap();
        assert!(d.contains(&("heartbeat_timeout".into(), "45s".into())));
        assert!(d.contains(&("max_subscriptions".into(), "12".into())));
        assert!(d.contains(&("allowed_origins".into(), "a,b".into())));
        assert!(toml_defaults("no-such-flag = 1").is_err());
        assert!(toml_defaults("this is not toml").is_err());
    }

    #[test]
    fn file_is_below_flags() {
        let dir = std::env::temp_dir().join(format!("huddle-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("huddle.toml");
        std::fs::write(
            &path,
            "heartbeat-timeout = \"45s\"\nmax-subscriptions = 12\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = serve(&["--config", p, "--max-subscriptions", "7"]);
        assert_eq!(c.heartbeat_timeout, Duration::from_secs(45));
        assert_eq!(c.max_subscriptions, 7, "flag wins over file");
        std::fs::remove_dir_all(&dir).ok();
    }
}
