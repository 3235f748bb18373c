//! huddle: a thread-per-core WebSocket pub/sub server for live data feeds.
//!
//! Module map. Dependencies point one way: pure modules ← `shard` ← `http` ← `server` ← main.
//! Only `shard::driver`, `shard::runtime`, `shard::listener`, `http` and `server` touch sockets,
//! threads or the runtime.
//!
//! Pure (data and time in, data and actions out):
//! - [`config`]: flags, `HUDDLE_*` env, TOML file, defaults, bounds.
//! - [`codec`]: RFC 6455 frames, bytes in → events out, frames in → bytes out.
//! - [`handshake`]: upgrade checks, origin, and `Sec-WebSocket-Accept`.
//! - [`protocol`]: the JSON messages of PROTOCOL.md §3–§7 and their validation, one file per
//!   concern (`names`, `json`, `filter`, `client`, `publish`, `validate`, `out`).
//! - [`conn`]: one connection's state machine (`conn::state`: phase, liveness, close handshake)
//!   and its outbox of shared frames.
//! - [`engine`]: the channel engine seam (offset, epoch, interest, idle eviction) and the
//!   embedded in-memory engine.
//! - [`registry`]: channel → members (sorted slab keys, a bitset once dense), per shard.
//! - [`timer`]: hashed timer wheel for every deadline.
//! - [`ratelimit`]: the striped per-IP upgrade limiter.
//! - [`glob`]: channel patterns (`*` = any run), linear-time matching.
//! - [`auth`]: JWT verification (keys, JWKS, claims, expiry) and channel rights.
//! - [`error`]: the one table from errors to close codes, client error codes and HTTP statuses.
//! - [`metrics`]: per-shard counters and the latency histogram.
//!
//! Runtime:
//! - [`shard`]: one thread, its slab, registry, engine, wheels and inbox; `shard::mesh` is the
//!   only way shards talk (its docs state the ordering rule), `shard::publish` the publish path,
//!   `shard::driver` the only code that waits on a connection's socket.
//! - [`http`]: hyper service: upgrades and the `/api` endpoints.
//! - [`server`]: binds, starts the shards with the HTTP handler, bounds the shutdown.
//!
//! Client (depends on no server module; pure parts in `client::{backoff, state, queue}`):
//! - [`client`]: the tokio WebSocket client (reconnect, resubscribe with `since`, outbound
//!   queue, heartbeats, token refresh); one task owns its socket.

#![forbid(unsafe_code)]

pub mod auth;
pub mod client;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod conn;
pub mod demo;
pub mod engine;
pub mod error;
pub mod glob;
pub mod handshake;
pub mod http;
pub mod metrics;
pub mod protocol;
pub mod ratelimit;
pub mod registry;
pub mod server;
pub mod shard;
pub mod stats;
#[cfg(test)]
mod test_rng;
pub mod timer;
