//! Typed settings: command-line flags, `HUDDLE_*` environment variables, a TOML file, defaults.
//!
//! Precedence (PROTOCOL.md §1), highest first: flag, environment, TOML file, built-in default.
//! clap already ranks flag > env > default, so the TOML file is applied by turning each of its keys
//! into the *default* of the matching argument before parsing. One parser, one source of truth.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

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

    /// Address for WebSocket upgrades and the HTTP API (port 0 picks a free port).
    #[arg(long, env = "HUDDLE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Worker threads, each with its own event loop and connections [default: CPU cores].
    #[arg(long, env = "HUDDLE_SHARDS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub shards: Option<u16>,

    /// Key for the publish API; random and printed once at start when not given.
    #[arg(long, env = "HUDDLE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Heartbeat interval announced in connection_ack; also the silence before a server ping.
    #[arg(long, env = "HUDDLE_HEARTBEAT_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// A connection silent this long is closed with 4001.
    #[arg(long, env = "HUDDLE_HEARTBEAT_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub heartbeat_timeout: Duration,

    /// WebSocket upgrades per client IP, `N/PERIOD` (s, min, h or a duration); `0` or `off` disables.
    #[arg(long, env = "HUDDLE_CONN_RATE", default_value = "10/min", value_parser = parse_rate)]
    pub conn_rate: ConnRate,

    /// Largest client message in bytes, after reassembly of fragments.
    #[arg(long, env = "HUDDLE_MAX_MESSAGE_SIZE", default_value_t = 65536)]
    pub max_message_size: usize,

    /// Channels one connection may be subscribed to.
    #[arg(long, env = "HUDDLE_MAX_SUBSCRIPTIONS", default_value_t = 256)]
    pub max_subscriptions: usize,

    /// Unsent bytes a connection may hold before it is closed as a slow consumer (4008).
    #[arg(long, env = "HUDDLE_SEND_QUEUE_BYTES", default_value_t = 1_048_576)]
    pub send_queue_bytes: usize,

    /// Comma-separated allowed `Origin` values; empty allows any. Others get HTTP 403.
    #[arg(long, env = "HUDDLE_ALLOWED_ORIGINS", value_delimiter = ',', num_args = 0..)]
    pub allowed_origins: Vec<String>,

    /// Time to drain connections on SIGTERM/SIGINT before exiting.
    #[arg(long, env = "HUDDLE_SHUTDOWN_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// A client that has not sent its whole HTTP request head by then is disconnected.
    #[arg(long, env = "HUDDLE_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// WebSocket publishes one connection may have in flight; past it the server stops reading
    /// that connection until replies go out.
    #[arg(long, env = "HUDDLE_MAX_INFLIGHT_PUBLISHES", default_value_t = 64)]
    pub max_inflight_publishes: usize,

    /// Channel messages a shard may have accepted and not yet delivered everywhere; past it
    /// publishes are refused with 503 `overloaded`.
    #[arg(long, env = "HUDDLE_PUBLISH_QUEUE", default_value_t = 4096)]
    pub publish_queue: usize,

    /// A channel with no subscriber and no message for this long has its state freed; it comes
    /// back at offset 0 with a new epoch.
    #[arg(long, env = "HUDDLE_HISTORY_TTL", default_value = "5m", value_parser = parse_duration)]
    pub history_ttl: Duration,

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

    /// Checks relations between settings that single-flag parsing cannot see.
    pub fn validate(&self) -> Result<(), String> {
        if self.heartbeat_timeout.is_zero() {
            return Err("--heartbeat-timeout must be > 0".into());
        }
        if self.heartbeat_interval.is_zero() {
            return Err("--heartbeat-interval must be > 0".into());
        }
        if self.max_message_size < 125 {
            return Err("--max-message-size must be at least 125".into());
        }
        Ok(())
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
    Ok(Cli::from_arg_matches(&matches)?)
}

/// `--config FILE`, `--config=FILE`, else `HUDDLE_CONFIG`.
fn config_path(args: &[std::ffi::OsString]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = s.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    std::env::var_os("HUDDLE_CONFIG").map(PathBuf::from)
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
        let id = key.replace('-', "_");
        if id == "config" || !serve.get_arguments().any(|a| a.get_id() == id.as_str()) {
            return Err(format!("unknown key `{key}`"));
        }
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
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
        return Err(format!("invalid duration `{s}`"));
    }
    humantime::parse_duration(s).map_err(|e| format!("invalid duration `{s}`: {e}"))
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
        assert!(c.api_key.is_none());
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
