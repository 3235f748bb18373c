//! huddle: a thread-per-core WebSocket pub/sub server for live data feeds.
//!
//! Module map (sans-IO first: only `conn::driver`, `shard::runtime`, `shard::listener`, `http`
//! and `server` touch sockets, threads or the runtime):
//!
//! - [`config`]: flags, `HUDDLE_*` env, TOML file, defaults.
//! - [`codec`]: RFC 6455 frames, bytes in → events out, frames in → bytes out.
//! - [`handshake`]: upgrade checks and `Sec-WebSocket-Accept`.
//! - [`protocol`]: the JSON messages of PROTOCOL.md §3–§7 and their validation, one file per
//!   concern (`names`, `json`, `filter`, `client`, `publish`, `validate`, `out`).
//! - [`registry`]: channel → bitset of slab keys, per shard.
//! - [`timer`]: hashed timer wheel for heartbeat expiry.
//! - [`conn`]: a connection's slab record, outbox and driver task.
//! - [`shard`]: one thread, its slab, registry, wheel and inbox; `shard::mesh` is the only
//!   way shards talk.
//! - [`publish`]: the publish path (validate → offset → encode once → fan out → gather).
//! - [`http`]: hyper service: upgrades and the `/api` endpoints.
//! - [`error`]: the one table from errors to close codes, client error codes and HTTP statuses.
//! - [`metrics`], [`ratelimit`], [`server`].

#![forbid(unsafe_code)]

pub mod codec;
pub mod config;
pub mod conn;
pub mod engine;
pub mod error;
pub mod handshake;
pub mod http;
pub mod metrics;
pub mod protocol;
pub mod ratelimit;
pub mod registry;
pub mod server;
pub mod shard;
#[cfg(test)]
mod test_rng;
pub mod timer;
