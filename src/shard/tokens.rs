//! A connection's token on its shard (PROTOCOL.md §9): the expiry deadline in `ConnState` (on
//! the same timer wheel as heartbeats), the claims interned per shard, and `refresh`.
//!
//! Claims are interned: every local connection that presented the same `channels`/`publish`
//! claims holds the same `Arc<Grants>`, so an idle token connection costs a pointer, not a copy of
//! its patterns. The shard drops its copy when the last such connection goes.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::{Shard, TokenGrant};
use crate::auth::Grants;
use crate::protocol::ErrorCode;

impl Shard {
    /// Gives connection `key` a verified token's deadline and claims.
    pub(super) fn grant(&mut self, key: usize, token: TokenGrant, now: Instant) {
        let grants = self.intern_grants(token.grants);
        let Some(conn) = self.conns.get_mut(key) else {
            self.release_grants(grants);
            return;
        };
        conn.state.set_expiry(Some(deadline(now, token.valid_for)));
        let old = std::mem::replace(&mut conn.grants, grants);
        self.release_grants(old);
        self.rearm(key);
    }

    /// Moves an armed connection timer to its state's next deadline (a refresh may bring the
    /// token's end before the heartbeat deadline the timer was armed for).
    fn rearm(&mut self, key: usize) {
        let cfg = self.liveness;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let (Some(id), Some(at)) = (conn.timer, conn.state.poll_timeout(&cfg)) else {
            return;
        };
        if !self.wheel.reset(id, at) {
            let t = super::TimerRef {
                key,
                conn_id: conn.id,
            };
            conn.timer = Some(self.wheel.arm(at, t));
        }
    }

    /// The shard's shared copy of `grants` (None when they grant nothing).
    fn intern_grants(&mut self, grants: Grants) -> Option<Arc<Grants>> {
        if grants.is_empty() {
            return None;
        }
        if let Some(g) = self.grants.get(&grants) {
            return Some(g.clone());
        }
        let g = Arc::new(grants);
        self.grants.insert(g.clone());
        Some(g)
    }

    /// A connection let go of its claims: forget them once no connection holds them.
    pub(super) fn release_grants(&mut self, grants: Option<Arc<Grants>>) {
        if let Some(g) = grants {
            // Ours and the caller's.
            if Arc::strong_count(&g) == 2 {
                self.grants.remove(&*g);
            }
        }
    }

    /// `refresh`: a new token for the same `sub` moves the deadline and replaces the claims
    /// (subscriptions already made stay). Anything else is refused with `forbidden` and changes
    /// nothing, so the connection still closes with 4401 at the old deadline.
    pub(super) fn refresh(&mut self, key: usize, token: &str, reply_to: Option<&str>) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        let shared = self.shared.clone();
        let refusal = match &shared.auth {
            None => Err("token authentication is off on this server".to_string()),
            Some(_) if !conn.has_token() => {
                Err("this connection has no token; reconnect with one".to_string())
            }
            Some(auth) => match auth.verify(token, unix_now()) {
                Err(e) => Err(format!("refresh refused: {e}")),
                Ok(id) if conn.user_id.as_deref() != Some(id.user.as_str()) => {
                    Err("refresh refused: the token is for another sub".to_string())
                }
                Ok(id) => Ok(id),
            },
        };
        match refusal {
            Err(message) => {
                tracing::info!(shard = self.id, "refresh refused: {message}");
                self.reply_error(key, ErrorCode::Forbidden, message, reply_to);
            }
            Ok(id) => {
                let (_, grant) = TokenGrant::from_identity(id);
                let expires_in = grant.expires_in;
                self.grant(key, grant, Instant::now());
                self.reply(
                    key,
                    "refresh",
                    reply_to,
                    &json!({ "expires_in": expires_in }),
                );
            }
        }
    }
}

/// Longest a token deadline is held: far beyond any token, far below `Instant` overflow.
const MAX_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// `now + valid_for`, capped at [`MAX_VALIDITY`].
fn deadline(now: Instant, valid_for: Duration) -> Instant {
    now + valid_for.min(MAX_VALIDITY)
}

/// Wall-clock time since the Unix epoch, as token claims count it.
pub fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}
