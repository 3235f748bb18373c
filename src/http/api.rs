//! `/api/*`: publish, broadcast, send, stats, channels (PROTOCOL.md §7, §8). Every request needs
//! the API key. Handlers parse and validate, then call `crate::publish`, the one publish path.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::{api_error, json_response, Resp};
use crate::error::ApiError;
use crate::protocol::{
    is_user_channel, is_valid_channel, user_channel_key, wire_name, DirectMessage, PublishRequest,
};
use crate::shard::publish::{self, Refused};
use crate::shard::Shared;

/// Largest accepted request body (PROTOCOL.md §7).
const MAX_BODY: usize = 1024 * 1024;

/// Routes an authenticated `/api/*` request.
pub async fn handle(shared: &Arc<Shared>, shard: usize, req: http::Request<Incoming>) -> Resp {
    match dispatch(shared, shard, req).await {
        Ok(r) => r,
        Err(e) => {
            let (status, code) = e.status_and_code();
            tracing::info!(status = status.as_u16(), code, "api request refused: {e}");
            if matches!(e, ApiError::Overloaded { .. }) {
                shared.metrics.shard(shard).publishes_refused.inc();
            }
            api_error(&e)
        }
    }
}

/// What a refused publish answers over HTTP.
fn refused(r: Refused) -> ApiError {
    match r {
        Refused::Overloaded => ApiError::Overloaded {
            retry_after_secs: 1,
        },
        Refused::ShuttingDown => ApiError::ShuttingDown,
        Refused::Unavailable => ApiError::Unavailable,
    }
}

async fn dispatch(
    shared: &Arc<Shared>,
    shard: usize,
    req: http::Request<Incoming>,
) -> Result<Resp, ApiError> {
    if !authorized(req.headers(), |k| shared.key_allowed(k)) {
        return Err(ApiError::Unauthorized);
    }
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match (method, path.as_str()) {
        (Method::POST, "/api/publish") => {
            let mut body = read_body(shared, req).await?;
            let request = PublishRequest::parse(&mut body)?;
            let results = publish::publish(shared, request).await.map_err(refused)?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "results": results }),
            ))
        }
        (Method::POST, "/api/broadcast") => {
            let mut body = read_body(shared, req).await?;
            let msg = DirectMessage::parse_broadcast(&mut body)?;
            direct(shared, shard, None, msg).await
        }
        (Method::POST, "/api/send") => {
            let mut body = read_body(shared, req).await?;
            let msg = DirectMessage::parse_send(&mut body)?;
            if msg.channel.is_some() {
                return user_channel(shared, msg).await;
            }
            let user = msg.user_id.clone();
            direct(shared, shard, user, msg).await
        }
        (Method::GET, "/api/stats") => stats(shared).await,
        (Method::GET, "/api/channels") => channels(shared).await,
        (Method::GET, p) if p.starts_with("/api/history/") => {
            let q = ChannelQuery::parse(&p["/api/history/".len()..], req.uri().query())?;
            history(shared, q).await
        }
        (Method::GET, p) if p.starts_with("/api/presence/") => {
            let q = ChannelQuery::parse(&p["/api/presence/".len()..], req.uri().query())?;
            presence(shared, q).await
        }
        (_, p) if p.starts_with("/api/history/") || p.starts_with("/api/presence/") => {
            Err(ApiError::MethodNotAllowed)
        }
        (_, "/api/publish" | "/api/broadcast" | "/api/send" | "/api/stats" | "/api/channels") => {
            Err(ApiError::MethodNotAllowed)
        }
        _ => Err(ApiError::NotFound),
    }
}

async fn direct(
    shared: &Arc<Shared>,
    shard: usize,
    user_id: Option<String>,
    msg: DirectMessage,
) -> Result<Resp, ApiError> {
    let data = Value::Object(msg.data);
    let n = publish::direct(
        shared,
        shard,
        user_id,
        &msg.event_type,
        &data,
        msg.message_id.as_deref(),
    )
    .await
    .map_err(refused)?;
    Ok(json_response(StatusCode::OK, &json!({ "recipients": n })))
}

/// `/api/send` with `"channel":"bankroll"` (or `bets`): a channel message on that user's own
/// stream, with an offset like any channel message, delivered only to that user's
/// subscriptions of the channel (PROTOCOL.md §9).
async fn user_channel(shared: &Arc<Shared>, msg: DirectMessage) -> Result<Resp, ApiError> {
    let (Some(user), Some(channel)) = (msg.user_id, msg.channel) else {
        return Err(ApiError::NotFound);
    };
    let request = PublishRequest {
        channels: vec![user_channel_key(&channel, &user)],
        event_type: msg.event_type,
        data: msg.data,
        message_id: msg.message_id,
    };
    let results = publish::publish(shared, request).await.map_err(refused)?;
    let r = results.first();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "recipients": r.map_or(0, |r| r.recipients),
            "results": results,
        }),
    ))
}

/// Most messages one `/api/history` answer lists.
pub const MAX_HISTORY_LIMIT: usize = 1000;

/// The channel and query of `/api/history/{channel}` and `/api/presence/{channel}`.
struct ChannelQuery {
    channel: String,
    /// The engine stream: the channel, or `?user_id=`'s own stream of `bets`/`bankroll`.
    stream: Arc<str>,
    since: u64,
    limit: usize,
    count: bool,
}

impl ChannelQuery {
    fn parse(channel: &str, query: Option<&str>) -> Result<Self, ApiError> {
        let invalid = |m: String| ApiError::Publish(crate::protocol::PublishError::Invalid(m));
        if !is_valid_channel(channel) {
            return Err(ApiError::Publish(
                crate::protocol::PublishError::InvalidChannel(format!("{channel:?}")),
            ));
        }
        let (mut since, mut limit, mut count, mut user) = (0, MAX_HISTORY_LIMIT, false, None);
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let number = |what: &str| {
                v.parse::<u64>()
                    .map_err(|_| invalid(format!("{what}: must be an integer >= 0")))
            };
            match &*k {
                "since" => since = number("since")?,
                "limit" => limit = (number("limit")? as usize).min(MAX_HISTORY_LIMIT),
                "count" => count = v == "1" || v == "true",
                "user_id" if !v.is_empty() => user = Some(v.into_owned()),
                _ => {}
            }
        }
        let stream: Arc<str> = match (is_user_channel(channel), user) {
            (true, Some(u)) => Arc::from(user_channel_key(channel, &u)),
            (true, None) => {
                return Err(invalid(format!(
                    "{channel} is per user: name the user with ?user_id="
                )))
            }
            (false, _) => Arc::from(channel),
        };
        Ok(ChannelQuery {
            channel: channel.to_owned(),
            stream,
            since,
            limit,
            count,
        })
    }
}

/// `GET /api/history/{channel}?since=N&limit=M`: `{"epoch","offset","messages":[…]}`, the
/// stored messages exactly as they were delivered, oldest first.
async fn history(shared: &Arc<Shared>, q: ChannelQuery) -> Result<Resp, ApiError> {
    let page = publish::history(shared, q.stream, q.since, q.limit)
        .await
        .map_err(refused)?;
    // The stored frames already hold each message's JSON: splice them in, no re-encoding.
    let mut body = Vec::with_capacity(64 + page.frames.iter().map(|f| f.len()).sum::<usize>());
    body.extend_from_slice(b"{\"epoch\":");
    serde_json::to_writer(&mut body, &*page.epoch).map_err(|e| ApiError::Body(e.to_string()))?;
    body.extend_from_slice(format!(",\"offset\":{},\"messages\":[", page.offset).as_bytes());
    for (i, frame) in page.frames.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(crate::codec::frame_payload(frame).unwrap_or(b"null"));
    }
    body.extend_from_slice(b"]}");
    Ok(super::json_bytes(StatusCode::OK, body))
}

/// `GET /api/presence/{channel}`: `{"channel","clients":[{"user_id","connection_id"}]}`, or with
/// `?count=1` `{"channel","clients":n,"users":n}`; for `--presence-channels` only.
async fn presence(shared: &Arc<Shared>, q: ChannelQuery) -> Result<Resp, ApiError> {
    if !shared.presence.iter().any(|p| p.matches(&q.channel)) {
        return Err(ApiError::Publish(crate::protocol::PublishError::Invalid(
            format!(
                "{}: presence is off for this channel (--presence-channels)",
                q.channel
            ),
        )));
    }
    let mut clients = publish::presence(shared, q.stream).await.map_err(refused)?;
    clients.sort_by(|a, b| a.connection_id.cmp(&b.connection_id));
    let body = if q.count {
        let users: HashSet<&str> = clients
            .iter()
            .filter_map(|c| c.user_id.as_deref())
            .collect();
        json!({ "channel": q.channel, "clients": clients.len(), "users": users.len() })
    } else {
        let list: Vec<Value> = clients
            .iter()
            .map(|c| match &c.user_id {
                Some(u) => json!({ "user_id": u, "connection_id": c.connection_id }),
                None => json!({ "connection_id": c.connection_id }),
            })
            .collect();
        json!({ "channel": q.channel, "clients": list })
    };
    Ok(json_response(StatusCode::OK, &body))
}

async fn stats(shared: &Arc<Shared>) -> Result<Resp, ApiError> {
    let mut snaps = publish::snapshots(shared).await.map_err(refused)?;
    snaps.sort_by_key(|s| s.shard);
    let channels: HashSet<&str> = snaps
        .iter()
        .flat_map(|s| s.channels.iter().map(|(c, _)| wire_name(c)))
        .collect();
    let t = shared.metrics.totals();
    let body = json!({
        "connections": snaps.iter().map(|s| s.connections).sum::<u64>(),
        "users": shared.users.count(),
        "channels": channels.len(),
        "shards": snaps.iter().map(|s| json!({"id": s.shard, "connections": s.connections})).collect::<Vec<_>>(),
        "messages_published": t.messages_published,
        "messages_delivered": t.messages_delivered,
        "slow_consumer_disconnects": t.slow_consumer_disconnects,
        "heartbeat_expiries": t.heartbeat_expiries,
        "rate_limited_upgrades": t.rate_limited_upgrades,
        "uptime_seconds": shared.metrics.uptime_seconds(),
    });
    Ok(json_response(StatusCode::OK, &body))
}

async fn channels(shared: &Arc<Shared>) -> Result<Resp, ApiError> {
    let snaps = publish::snapshots(shared).await.map_err(refused)?;
    let mut merged: BTreeMap<&str, u64> = BTreeMap::new();
    for s in &snaps {
        for (c, n) in &s.channels {
            *merged.entry(wire_name(c)).or_default() += n;
        }
    }
    let list: Vec<Value> = merged
        .into_iter()
        .map(|(c, n)| json!({ "channel": c, "subscribers": n }))
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "channels": list })))
}

/// `Authorization: Bearer KEY` (scheme in any case, RFC 9110 §11.1) or `X-API-Key: KEY`,
/// surrounding whitespace ignored; either header carrying an allowed key is enough.
fn authorized(headers: &http::HeaderMap, allowed: impl Fn(&str) -> bool) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer);
    let x_key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    // Both checked (no short cut), so the timing does not say which header was right.
    let by_bearer = bearer.is_some_and(&allowed);
    let by_header = x_key.is_some_and(&allowed);
    by_bearer | by_header
}

/// The whole body, refusing more than 1 MiB before reading it when Content-Length says so, and
/// cutting a body that has not arrived within `--handshake-timeout` (408).
async fn read_body(shared: &Shared, req: http::Request<Incoming>) -> Result<Vec<u8>, ApiError> {
    let limit = shared.config.handshake_timeout;
    tokio::time::timeout(limit, read_body_inner(req))
        .await
        .map_err(|_| ApiError::BodyTimeout)?
}

async fn read_body_inner(req: http::Request<Incoming>) -> Result<Vec<u8>, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(ApiError::TooLarge);
    }
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::TooLarge
            } else {
                ApiError::Body(e.to_string())
            }
        })?;
    let bytes: Bytes = body.to_bytes();
    Ok(bytes.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_trimmed() {
        let ok = |k: &str| k == "k1" || k == "k2";
        for v in [
            "Bearer k1",
            "bearer k1",
            "BEARER k2",
            "  Bearer   k1  ",
            "bEaReR\tk2",
        ] {
            assert!(authorized(&headers(&[("authorization", v)]), ok), "{v:?}");
        }
        for v in [
            "Bearer k3",
            "Basic k1",
            "Bearerk1",
            "k1",
            "Bearer",
            "Bearer  ",
        ] {
            assert!(!authorized(&headers(&[("authorization", v)]), ok), "{v:?}");
        }
        assert!(authorized(&headers(&[("x-api-key", " k2 ")]), ok));
        assert!(!authorized(&headers(&[("x-api-key", "")]), ok));
        assert!(authorized(
            &headers(&[("authorization", "Basic zzz"), ("x-api-key", "k1")]),
            ok
        ));
        assert!(!authorized(&headers(&[]), ok));
    }
}
