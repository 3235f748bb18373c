//! `GET /ws…`: route → handshake checks → origin → rate limit → 101, then the upgraded socket
//! is registered on this shard and driven by `conn::driver`.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{error, Resp};
use crate::auth::{bearer, AuthError, Rights};
use crate::error::{upgrade_status, UpgradeError};
use crate::handshake::{self, HandshakeError};
use crate::protocol::is_valid_channel;
use crate::shard::{unix_now, ConnParams, Shard, Shared, TokenGrant};

/// Channels a WebSocket path subscribes to on connect (PROTOCOL.md §2); None: no such path.
pub fn path_channels(path: &str) -> Option<Vec<String>> {
    let general = |c: &str| Some(vec![c.to_owned()]);
    match path {
        "/ws" => Some(Vec::new()),
        "/ws/games" => general("games"),
        "/ws/odds" => general("odds"),
        "/ws/predictions" => general("predictions"),
        p => {
            let id = p.strip_prefix("/ws/game/")?;
            let channels = vec![
                format!("game_{id}"),
                format!("odds_{id}"),
                format!("predictions_{id}"),
            ];
            (!id.is_empty() && channels.iter().all(|c| is_valid_channel(c))).then_some(channels)
        }
    }
}

/// Query parameters of an upgrade request.
#[derive(Default)]
struct Query {
    user_id: Option<String>,
    api_key: Option<String>,
    token: Option<String>,
}

fn query(uri: &http::Uri) -> Query {
    let mut q = Query::default();
    for (k, v) in form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        match &*k {
            "user_id" if !v.is_empty() => q.user_id = Some(v.into_owned()),
            "api_key" => q.api_key = Some(v.into_owned()),
            "token" => q.token = Some(v.into_owned()),
            _ => {}
        }
    }
    q
}

/// Who is connecting, decided before the upgrade (PROTOCOL.md §9).
struct Credentials {
    user_id: Option<String>,
    api_key: bool,
    token: Option<TokenGrant>,
}

/// Checks the API key and the token of an upgrade request. A key or token that is given but
/// wrong is refused (401), never quietly ignored.
fn credentials(
    shared: &Shared,
    headers: &http::HeaderMap,
    q: Query,
) -> Result<Credentials, UpgradeError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let given_key = q
        .api_key
        .as_deref()
        .or_else(|| header("x-api-key"))
        .map(str::trim);
    let api_key = match given_key {
        Some(k) if shared.key_allowed(k) => true,
        Some(_) => return Err(UpgradeError::BadApiKey),
        None => false,
    };
    let Some(auth) = &shared.auth else {
        // Tokens off (development): user_id as given, every channel open; a token is not read.
        return Ok(Credentials {
            user_id: q.user_id,
            api_key,
            token: None,
        });
    };
    let token = q
        .token
        .or_else(|| header("authorization").and_then(bearer).map(str::to_owned));
    let Some(token) = token else {
        if shared.config.require_auth && !api_key {
            return Err(AuthError::Required.into());
        }
        // Anonymous: with tokens on, user_id comes from `sub` only.
        return Ok(Credentials {
            user_id: None,
            api_key,
            token: None,
        });
    };
    let id = auth
        .verify(&token, unix_now())
        .map_err(UpgradeError::Unauthorized)?;
    let (user, grant) = TokenGrant::from_identity(id);
    Ok(Credentials {
        user_id: Some(user),
        api_key,
        token: Some(grant),
    })
}

/// Answers an upgrade request and, on success, spawns the connection.
pub fn upgrade(
    cell: Rc<RefCell<Shard>>,
    peer: SocketAddr,
    mut req: http::Request<Incoming>,
) -> Resp {
    let (shared, shard_id, draining) = {
        let s = cell.borrow();
        (s.shared.clone(), s.id, s.is_draining())
    };
    let echo = shared.config.echo_endpoint && req.uri().path() == "/ws/echo";
    let channels = match path_channels(req.uri().path()) {
        Some(c) => c,
        None if echo => Vec::new(),
        None => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such WebSocket endpoint",
            )
        }
    };
    let accept = match handshake::check(
        req.method(),
        req.version(),
        req.headers(),
        &shared.config.allowed_origins,
    ) {
        Ok(a) => a,
        Err(e) => return refuse(peer, &e.into()),
    };
    if let Some(limiter) = &shared.conn_limiter {
        if let Err(wait) = limiter.check(peer.ip(), Instant::now()) {
            shared.metrics.shard(shard_id).rate_limited_upgrades.inc();
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let e = HandshakeError::RateLimited {
                retry_after_secs: secs.max(1),
            };
            return refuse(peer, &e.into());
        }
    }
    if draining {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "server is shutting down",
        );
    }
    let creds = match credentials(&shared, req.headers(), query(req.uri())) {
        Ok(c) => c,
        Err(e) => {
            shared.metrics.shard(shard_id).auth_refused.inc();
            return refuse(peer, &e);
        }
    };
    let rights = Rights {
        user: creds.user_id.as_deref(),
        grants: creds.token.as_ref().map(|t| &t.grants),
        api_key: creds.api_key,
    };
    if let Some(Err(why)) = channels
        .iter()
        .map(|c| shared.policy.subscribe_key(c, &rights).map(|_| ()))
        .find(Result::is_err)
    {
        return refuse(peer, &UpgradeError::Forbidden(why));
    }
    let params = ConnParams {
        echo,
        channels,
        user_id: creds.user_id,
        api_key: creds.api_key,
        token: creds.token,
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::task::spawn_local(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(%peer, "upgrade failed: {e}");
                return;
            }
        };
        let parts = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(p) => p,
            Err(_) => {
                tracing::error!("upgraded connection is not a TcpStream");
                return;
            }
        };
        let stream = parts.io.into_inner();
        let (key, io) = cell.borrow_mut().register(stream, params);
        // A task of its own, so this (larger) upgrade future is freed now.
        tokio::task::spawn_local(crate::shard::driver::drive(cell, key, io, parts.read_buf));
    });
    let mut resp = Response::new(Full::default());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

/// The HTTP answer to a refused upgrade, with the headers RFC 6455 / RFC 9110 ask for.
/// The log line names the peer and the reason, never the request's query or headers (which
/// carry tokens and keys).
fn refuse(peer: SocketAddr, e: &UpgradeError) -> Resp {
    tracing::info!(%peer, "upgrade refused: {e}");
    let (status, code) = upgrade_status(e);
    let mut resp = error(status, code, e);
    let h = resp.headers_mut();
    match e {
        UpgradeError::Handshake(
            HandshakeError::UnsupportedVersion | HandshakeError::NotUpgrade,
        ) => {
            h.insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        }
        UpgradeError::Handshake(HandshakeError::RateLimited { retry_after_secs }) => {
            h.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        }
        // RFC 6750 §3: the scheme, and that the token (not the request) is what failed.
        UpgradeError::Unauthorized(AuthError::Required) => {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        UpgradeError::Unauthorized(_) | UpgradeError::BadApiKey => {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        _ => {}
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_channels() {
        assert_eq!(path_channels("/ws"), Some(vec![]));
        assert_eq!(path_channels("/ws/odds"), Some(vec!["odds".to_string()]));
        assert_eq!(
            path_channels("/ws/game/7"),
            Some(vec![
                "game_7".into(),
                "odds_7".into(),
                "predictions_7".into()
            ])
        );
        assert_eq!(path_channels("/ws/game/"), None);
        assert_eq!(path_channels("/ws/game/a b"), None);
        assert_eq!(path_channels("/ws/nope"), None);
    }
}
