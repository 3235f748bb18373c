//! Client → server messages (PROTOCOL.md §4, §5, §7): [`parse_client_message`], the requests it
//! yields and the [`ClientError`] refusals the server answers with an `error` event.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::filter::{opt_filter_at, Filter};
use super::json::parse_json;
use super::names::{bad_channel, is_valid_channel, quoted, MAX_EVENT_TYPE_LEN};
use super::publish::PublishRequest;
use crate::error::{ErrorCode, PublishError};

/// A client message refused with an error reply; the connection stays open.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ClientError {
    /// What kind of refusal this is (the `data.code` of the error event).
    pub code: ErrorCode,
    /// Human-readable reason (the `data.message` of the error event).
    pub message: String,
    /// The client's `message_id`, when it could be read, to send back as `reply_to`.
    pub reply_to: Option<String>,
}

impl ClientError {
    /// Builds an error, e.g. for `forbidden` or `rate_limited` decided by the server.
    pub fn new(code: ErrorCode, message: impl Into<String>, reply_to: Option<String>) -> Self {
        ClientError {
            code,
            message: message.into(),
            reply_to,
        }
    }

    /// The `data` object of the `error` event: `{"code":"…","message":"…"}`.
    pub fn data(&self) -> Value {
        let mut m = Map::with_capacity(2);
        m.insert("code".into(), Value::String(self.code.as_str().into()));
        m.insert("message".into(), Value::String(self.message.clone()));
        Value::Object(m)
    }
}

impl PublishError {
    /// Turns a refusal of a WebSocket publish into the client error to send back.
    fn into_client_error(self, reply_to: Option<String>) -> ClientError {
        let code = self.client_code();
        let message = match self {
            PublishError::Invalid(m) => m,
            other => other.to_string(),
        };
        ClientError::new(code, message, reply_to)
    }
}

/// One channel in a subscribe/unsubscribe request.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscribeSpec {
    /// The validated channel name.
    pub channel: String,
    /// The filter for this channel (per-channel, else the request's), `None` = every message.
    pub filter: Option<Filter>,
    /// Recover from this position (PROTOCOL.md §10): replay what came after it.
    pub since: Option<Since>,
    /// Also receive `join` / `leave` events of this channel (§10).
    pub join_leave: bool,
}

/// A position a client saw last: `{"offset":17,"epoch":"…"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since {
    pub offset: u64,
    pub epoch: String,
}

/// Longest epoch a client may send back (server epochs are 26-character ULIDs).
const MAX_EPOCH_LEN: usize = 64;

/// `since` at `path`: absent, or an object with a u64 `offset` and a string `epoch`.
fn opt_since_at(v: Option<&Value>, path: &str) -> Result<Option<Since>, String> {
    let obj = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(format!("{path}: expected {{\"offset\":n,\"epoch\":\"…\"}}")),
    };
    let offset = match obj.get("offset") {
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| format!("{path}.offset: must be an integer >= 0"))?,
        None => return Err(format!("{path}.offset: required")),
        Some(_) => return Err(format!("{path}.offset: must be an integer >= 0")),
    };
    let epoch = match obj.get("epoch") {
        Some(Value::String(e)) if e.len() <= MAX_EPOCH_LEN => e.clone(),
        Some(Value::String(_)) => return Err(format!("{path}.epoch: too long")),
        None => return Err(format!("{path}.epoch: required")),
        Some(_) => return Err(format!("{path}.epoch: must be a string")),
    };
    Ok(Some(Since { offset, epoch }))
}

/// `join_leave` at `path`: absent (false) or a boolean.
fn opt_bool_at(v: Option<&Value>, path: &str) -> Result<Option<bool>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(format!("{path}: must be true or false")),
    }
}

/// A parsed client → server message (PROTOCOL.md §4, §5, §7).
#[derive(Debug, Clone, PartialEq)]
pub enum ClientRequest {
    /// `heartbeat`: answer with a heartbeat carrying `server_time`.
    Heartbeat,
    /// `user_subscription`: validated, de-duplicated channels with their filters.
    Subscribe(Vec<SubscribeSpec>),
    /// `user_unsubscription`: validated, de-duplicated channel names.
    Unsubscribe(Vec<String>),
    /// `publish`: a validated publish request (the connection's right to publish is the server's check).
    Publish(PublishRequest),
    /// `refresh`: a new credential for the connection (PROTOCOL.md §9); verified by the server.
    Refresh(Credential),
}

/// What a `refresh` presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// `{"token":…}`: a new token for the same `sub`, moving the connection's expiry.
    Token(String),
    /// `{"api_key":…}`: an API key, giving the connection the rights of one opened with
    /// `?api_key=`, so that browsers, which cannot set headers on a WebSocket, need not put the
    /// key in a URL (an extension to PROTOCOL.md §9).
    ApiKey(String),
}

impl ClientRequest {
    /// The event type of this request, which is also the event type of its reply.
    pub fn event_type(&self) -> &'static str {
        match self {
            ClientRequest::Heartbeat => "heartbeat",
            ClientRequest::Subscribe(_) => "user_subscription",
            ClientRequest::Unsubscribe(_) => "user_unsubscription",
            ClientRequest::Publish(_) => "publish",
            ClientRequest::Refresh(_) => "refresh",
        }
    }
}

/// A parsed client message: the request plus the client's `message_id` for `reply_to`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientMessage {
    /// The client's `message_id`, echoed as `reply_to` on every reply.
    pub message_id: Option<String>,
    /// What the client asked for.
    pub request: ClientRequest,
}

/// A refusal before the `reply_to` is attached.
type Refusal = (ErrorCode, String);

/// Parses one text message from a client. `buf` is mutable because simd-json parses in place.
/// Malformed JSON / not an object / missing or non-string event_type / wrong field types → InvalidMessage;
/// an event_type that is not heartbeat|user_subscription|user_unsubscription|publish → UnknownEvent;
/// a bad channel name → InvalidChannel (message names the channel). `reply_to` in the error is the
/// client's message_id when it could be read. `max_subscriptions` caps the number of channels in one
/// request (more → TooManySubscriptions; the caller also checks the connection's total).
pub fn parse_client_message(
    buf: &mut [u8],
    max_subscriptions: usize,
) -> Result<ClientMessage, ClientError> {
    let value = parse_json(buf).map_err(|e| {
        ClientError::new(
            ErrorCode::InvalidMessage,
            format!("malformed JSON: {e}"),
            None,
        )
    })?;
    let Value::Object(mut obj) = value else {
        return Err(ClientError::new(
            ErrorCode::InvalidMessage,
            "message must be a JSON object",
            None,
        ));
    };
    let message_id = match obj.remove("message_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            return Err(ClientError::new(
                ErrorCode::InvalidMessage,
                "message_id: must be a string",
                None,
            ))
        }
    };
    match parse_request(&mut obj, max_subscriptions) {
        Ok(request) => Ok(ClientMessage {
            message_id,
            request,
        }),
        Err(Ok((code, message))) => Err(ClientError::new(code, message, message_id)),
        Err(Err(publish_error)) => Err(publish_error.into_client_error(message_id)),
    }
}

/// Dispatches on `event_type`; publish refusals are kept as [`PublishError`] for their mapping.
fn parse_request(
    obj: &mut Map<String, Value>,
    max_subscriptions: usize,
) -> Result<ClientRequest, Result<Refusal, PublishError>> {
    let event_type = match obj.remove("event_type") {
        Some(Value::String(s)) => s,
        None | Some(Value::Null) => {
            return Err(Ok((
                ErrorCode::InvalidMessage,
                "event_type: required".into(),
            )))
        }
        Some(_) => {
            return Err(Ok((
                ErrorCode::InvalidMessage,
                "event_type: must be a string".into(),
            )))
        }
    };
    match event_type.as_str() {
        "heartbeat" => Ok(ClientRequest::Heartbeat),
        "user_subscription" => parse_channels(obj.get("data"), true)
            .and_then(|specs| {
                if specs.len() > max_subscriptions {
                    Err((
                        ErrorCode::TooManySubscriptions,
                        format!(
                            "{} channels in one request; at most {max_subscriptions} allowed",
                            specs.len()
                        ),
                    ))
                } else {
                    Ok(ClientRequest::Subscribe(specs))
                }
            })
            .map_err(Ok),
        "user_unsubscription" => parse_channels(obj.get("data"), false)
            .map(|specs| ClientRequest::Unsubscribe(specs.into_iter().map(|s| s.channel).collect()))
            .map_err(Ok),
        "publish" => match obj.remove("data") {
            Some(data @ Value::Object(_)) => PublishRequest::from_value(data)
                .map(ClientRequest::Publish)
                .map_err(Err),
            _ => Err(Ok((
                ErrorCode::InvalidMessage,
                "data: required; expected {\"channel\":…,\"event_type\":…,\"data\":{…}}".into(),
            ))),
        },
        "refresh" => {
            let field = |name: &str| obj.get("data").and_then(|d| d.get(name));
            match (field("token"), field("api_key")) {
                (Some(Value::String(t)), None) if !t.is_empty() => {
                    Ok(ClientRequest::Refresh(Credential::Token(t.clone())))
                }
                (None, Some(Value::String(k))) if !k.is_empty() => {
                    Ok(ClientRequest::Refresh(Credential::ApiKey(k.clone())))
                }
                _ => Err(Ok((
                    ErrorCode::InvalidMessage,
                    "data: expected {\"token\":\"<JWT>\"} or {\"api_key\":\"<key>\"}".into(),
                ))),
            }
        }
        other => Err(Ok((
            ErrorCode::UnknownEvent,
            format!(
                "unknown event_type {}; clients may send heartbeat, user_subscription, user_unsubscription, publish, refresh",
                quoted(other, MAX_EVENT_TYPE_LEN)
            ),
        ))),
    }
}

/// One channel of a request as parsed: name, own filter, own `since`, own `join_leave`.
type Entry<'a> = (&'a str, Option<Filter>, Option<Since>, Option<bool>);

/// Parses the `data` of a (un)subscription: `channel` and/or `channels`, with filters when asked.
fn parse_channels(data: Option<&Value>, with_filters: bool) -> Result<Vec<SubscribeSpec>, Refusal> {
    let invalid = |m: String| (ErrorCode::InvalidMessage, m);
    let Some(Value::Object(data)) = data else {
        return Err(invalid(
            "data: required; expected {\"channel\":\"…\"} or {\"channels\":[…]}".into(),
        ));
    };
    let (common, since, common_join) = if with_filters {
        (
            opt_filter_at(data.get("filter"), "data.filter").map_err(invalid)?,
            opt_since_at(data.get("since"), "data.since").map_err(invalid)?,
            opt_bool_at(data.get("join_leave"), "data.join_leave").map_err(invalid)?,
        )
    } else {
        (None, None, None)
    };
    // (name, own filter, own since, own join_leave); `None` filter / join_leave inherit the
    // request's.
    let mut entries: Vec<Entry<'_>> = Vec::new();
    match data.get("channel") {
        None | Some(Value::Null) => {
            if since.is_some() {
                return Err(invalid(
                    "data.since: goes with data.channel (or inside each data.channels entry)"
                        .into(),
                ));
            }
        }
        Some(Value::String(s)) => entries.push((s, None, since, None)),
        Some(_) => return Err(invalid("data.channel: must be a string".into())),
    }
    match data.get("channels") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            if list.is_empty() {
                return Err(invalid("data.channels: must not be empty".into()));
            }
            entries.reserve(list.len());
            for (i, item) in list.iter().enumerate() {
                match item {
                    Value::String(s) => entries.push((s, None, None, None)),
                    Value::Object(o) => {
                        let name = match o.get("channel") {
                            Some(Value::String(s)) => s.as_str(),
                            None | Some(Value::Null) => {
                                return Err(invalid(format!(
                                    "data.channels[{i}].channel: required"
                                )))
                            }
                            Some(_) => {
                                return Err(invalid(format!(
                                    "data.channels[{i}].channel: must be a string"
                                )))
                            }
                        };
                        if !with_filters {
                            entries.push((name, None, None, None));
                            continue;
                        }
                        let at = |k: &str| format!("data.channels[{i}].{k}");
                        entries.push((
                            name,
                            opt_filter_at(o.get("filter"), &at("filter")).map_err(invalid)?,
                            opt_since_at(o.get("since"), &at("since")).map_err(invalid)?,
                            opt_bool_at(o.get("join_leave"), &at("join_leave")).map_err(invalid)?,
                        ));
                    }
                    _ => {
                        return Err(invalid(format!(
                            "data.channels[{i}]: must be a channel name or {{\"channel\":…}}"
                        )))
                    }
                }
            }
        }
        Some(_) => return Err(invalid("data.channels: must be an array".into())),
    }
    if entries.is_empty() {
        return Err(invalid(
            "data: expected {\"channel\":\"…\"} or {\"channels\":[…]}".into(),
        ));
    }
    let mut seen: HashSet<&str> = HashSet::with_capacity(entries.len());
    let mut specs = Vec::with_capacity(entries.len());
    for (name, own, since, join) in entries {
        if !is_valid_channel(name) {
            return Err((
                ErrorCode::InvalidChannel,
                format!("invalid channel: {}", bad_channel(name)),
            ));
        }
        if seen.insert(name) {
            specs.push(SubscribeSpec {
                channel: name.to_owned(),
                filter: own.or_else(|| common.clone()),
                since,
                join_leave: join.or(common_join).unwrap_or(false),
            });
        }
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::tests::{obj, odds};
    use serde_json::json;

    fn client(s: &str) -> Result<ClientMessage, ClientError> {
        parse_client_message(&mut s.as_bytes().to_vec(), 4)
    }

    #[test]
    fn client_error_data() {
        let e = ClientError::new(ErrorCode::Forbidden, "no", Some("c1".into()));
        assert_eq!(e.data(), json!({"code":"forbidden","message":"no"}));
        assert_eq!(e.to_string(), "forbidden: no");
    }

    #[test]
    fn heartbeat() {
        assert_eq!(
            client(r#"{"event_type":"heartbeat"}"#),
            Ok(ClientMessage {
                message_id: None,
                request: ClientRequest::Heartbeat
            })
        );
        let m =
            client(r#"{"event_type":"heartbeat","message_id":"h1","data":{"x":1},"extra":true}"#)
                .unwrap();
        assert_eq!(m.message_id.as_deref(), Some("h1"));
        assert_eq!(m.request.event_type(), "heartbeat");
        assert_eq!(
            client(r#"{"event_type":"heartbeat","message_id":null}"#)
                .unwrap()
                .message_id,
            None
        );
    }

    fn spec(channel: &str, filter: Option<Value>) -> SubscribeSpec {
        SubscribeSpec {
            since: None,
            join_leave: false,
            channel: channel.into(),
            filter: filter.map(|f| Filter::from_value(&f).unwrap()),
        }
    }

    #[test]
    fn subscribe_shapes() {
        let m = client(
            r#"{"event_type":"user_subscription","message_id":"c1","data":{"channel":"odds"}}"#,
        )
        .unwrap();
        assert_eq!(m.message_id.as_deref(), Some("c1"));
        assert_eq!(
            m.request,
            ClientRequest::Subscribe(vec![spec("odds", None)])
        );

        let m = client(
            r#"{"event_type":"user_subscription","data":{"channels":["odds","games","odds"]}}"#,
        )
        .unwrap();
        assert_eq!(
            m.request,
            ClientRequest::Subscribe(vec![spec("odds", None), spec("games", None)])
        );

        let f = json!({"sportsbook":["fanduel","draftkings"],"game_id":["7"]});
        let m = client(
            r#"{"event_type":"user_subscription","data":{"channels":["odds","odds_7"],
                "filter":{"sportsbook":["fanduel","draftkings"],"game_id":["7"]}}}"#,
        )
        .unwrap();
        assert_eq!(
            m.request,
            ClientRequest::Subscribe(vec![
                spec("odds", Some(f.clone())),
                spec("odds_7", Some(f.clone()))
            ])
        );

        // `since` and `join_leave`: at the data level for `channel`, or per entry.
        let m = client(
            r#"{"event_type":"user_subscription","data":{"channel":"odds","since":{"offset":17,"epoch":"e1"},"join_leave":true}}"#,
        )
        .unwrap();
        let ClientRequest::Subscribe(specs) = m.request else {
            panic!("subscribe")
        };
        assert_eq!(
            (specs[0].since.clone(), specs[0].join_leave),
            (
                Some(Since {
                    offset: 17,
                    epoch: "e1".into()
                }),
                true
            )
        );
        let m = client(
            r#"{"event_type":"user_subscription","data":{"join_leave":true,"channels":["a",{"channel":"b","since":{"offset":0,"epoch":""},"join_leave":false}]}}"#,
        )
        .unwrap();
        let ClientRequest::Subscribe(specs) = m.request else {
            panic!("subscribe")
        };
        assert_eq!(
            (specs[0].since.is_none(), specs[0].join_leave),
            (true, true)
        );
        assert_eq!(
            (
                specs[1].since.as_ref().map(|s| s.offset),
                specs[1].join_leave
            ),
            (Some(0), false)
        );
        for (body, want) in [
            (
                r#"{"channel":"odds","since":{"offset":1}}"#,
                "data.since.epoch: required",
            ),
            (
                r#"{"channel":"odds","since":{"offset":-1,"epoch":"e"}}"#,
                "data.since.offset: must be",
            ),
            (r#"{"channel":"odds","since":7}"#, "data.since: expected"),
            (
                r#"{"channels":["odds"],"since":{"offset":1,"epoch":"e"}}"#,
                "data.since: goes with",
            ),
            (
                r#"{"channels":[{"channel":"odds","since":{"epoch":"e"}}]}"#,
                "data.channels[0].since.offset: required",
            ),
            (
                r#"{"channel":"odds","join_leave":"yes"}"#,
                "data.join_leave: must be",
            ),
        ] {
            let e = client(&format!(
                r#"{{"event_type":"user_subscription","data":{body}}}"#
            ))
            .unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidMessage);
            assert!(e.message.starts_with(want), "{}", e.message);
        }
        // Per-channel objects, mixed with names; own filter wins, else the request's.
        let m = client(
            r#"{"event_type":"user_subscription","data":{"channel":"games","filter":{"game_id":"7"},
                "channels":[{"channel":"odds","filter":{"sportsbook":"fanduel"}},
                            "lines",{"channel":"games","filter":{"x":1}}]}}"#,
        )
        .unwrap();
        assert_eq!(
            m.request,
            ClientRequest::Subscribe(vec![
                spec("games", Some(json!({"game_id":"7"}))),
                spec("odds", Some(json!({"sportsbook":"fanduel"}))),
                spec("lines", Some(json!({"game_id":"7"}))),
            ])
        );
        // An empty filter is no filter.
        let m =
            client(r#"{"event_type":"user_subscription","data":{"channel":"odds","filter":{}}}"#)
                .unwrap();
        assert_eq!(
            m.request,
            ClientRequest::Subscribe(vec![spec("odds", None)])
        );
    }

    #[test]
    fn unsubscribe_shapes() {
        let m = client(
            r#"{"event_type":"user_unsubscription","message_id":"u1","data":{"channel":"odds"}}"#,
        )
        .unwrap();
        assert_eq!(m.request, ClientRequest::Unsubscribe(vec!["odds".into()]));
        assert_eq!(m.request.event_type(), "user_unsubscription");
        let m = client(
            r#"{"event_type":"user_unsubscription","data":{"channels":["a",{"channel":"b"},"a"],"filter":"ignored"}}"#,
        )
        .unwrap();
        assert_eq!(
            m.request,
            ClientRequest::Unsubscribe(vec!["a".into(), "b".into()])
        );
        // The per-request cap applies to subscriptions only.
        let m = client(
            r#"{"event_type":"user_unsubscription","data":{"channels":["a","b","c","d","e","f"]}}"#,
        );
        assert!(m.is_ok());
    }

    #[test]
    fn publish_over_websocket() {
        let text = json!({"event_type":"publish","message_id":"p1",
                          "data":{"channel":"odds_7","event_type":"odds_update","data":odds(),"message_id":"m9"}})
        .to_string();
        let m = client(&text).unwrap();
        assert_eq!(m.message_id.as_deref(), Some("p1"));
        match m.request {
            ClientRequest::Publish(p) => {
                assert_eq!(p.channels, ["odds_7"]);
                assert_eq!(p.message_id.as_deref(), Some("m9"));
                assert_eq!(p.event_type, "odds_update");
            }
            other => panic!("{other:?}"),
        }
        let text =
            json!({"event_type":"publish","data":{"event_type":"odds_update","data":odds()}})
                .to_string();
        match client(&text).unwrap().request {
            ClientRequest::Publish(p) => assert_eq!(p.channels, ["odds", "odds_7"]),
            other => panic!("{other:?}"),
        }
        let mut bad = obj(odds());
        bad.insert("moneyline_home".into(), json!(50));
        let text = json!({"event_type":"publish","message_id":"p2","data":{"channel":"odds","event_type":"odds_update","data":bad}}).to_string();
        assert_eq!(
            client(&text),
            Err(ClientError::new(
                ErrorCode::InvalidMessage,
                "data.moneyline_home: must be an integer with |v| >= 100",
                Some("p2".into())
            ))
        );
        let text = r#"{"event_type":"publish","message_id":"p3","data":{"channel":"a b","event_type":"x"}}"#;
        let e = client(text).unwrap_err();
        assert_eq!(
            (e.code, e.reply_to.as_deref()),
            (ErrorCode::InvalidChannel, Some("p3"))
        );
        assert!(
            e.message.starts_with("invalid channel: \"a b\""),
            "{}",
            e.message
        );
        for text in [
            r#"{"event_type":"publish","message_id":"p4"}"#,
            r#"{"event_type":"publish","message_id":"p4","data":[1]}"#,
        ] {
            let e = client(text).unwrap_err();
            assert_eq!(
                (e.code, e.reply_to.as_deref()),
                (ErrorCode::InvalidMessage, Some("p4"))
            );
        }
    }

    #[test]
    fn refresh_carries_a_token_or_an_api_key_never_both() {
        let req = |s: &str| client(s).map(|m| m.request);
        assert_eq!(
            req(r#"{"event_type":"refresh","data":{"token":"t.k.n"}}"#).unwrap(),
            ClientRequest::Refresh(Credential::Token("t.k.n".into()))
        );
        assert_eq!(
            req(r#"{"event_type":"refresh","data":{"api_key":"k1"}}"#).unwrap(),
            ClientRequest::Refresh(Credential::ApiKey("k1".into()))
        );
        for bad in [
            r#"{"event_type":"refresh","data":{"token":"t","api_key":"k"}}"#,
            r#"{"event_type":"refresh","data":{"api_key":""}}"#,
            r#"{"event_type":"refresh","data":{"api_key":7}}"#,
            r#"{"event_type":"refresh","data":{}}"#,
            r#"{"event_type":"refresh"}"#,
        ] {
            let e = req(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidMessage, "{bad}");
            assert!(e.message.contains("api_key"), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn client_error_codes() {
        let code = |s: &str| client(s).map(|_| ()).unwrap_err();

        for s in [
            "{",
            "",
            "not json",
            "{\"event_type\":\"heartbeat\",}",
            "{\"a\":1}{}",
        ] {
            let e = code(s);
            assert_eq!(
                (e.code, e.reply_to.clone()),
                (ErrorCode::InvalidMessage, None),
                "{s:?}"
            );
            assert!(
                e.message.starts_with("malformed JSON"),
                "{s:?}: {}",
                e.message
            );
        }
        for s in [
            r#"[{"event_type":"heartbeat"}]"#,
            "42",
            "\"heartbeat\"",
            "null",
        ] {
            let e = code(s);
            assert_eq!(
                e,
                ClientError::new(
                    ErrorCode::InvalidMessage,
                    "message must be a JSON object",
                    None
                )
            );
        }
        let e = code(r#"{"message_id":"c9"}"#);
        assert_eq!(
            e,
            ClientError::new(
                ErrorCode::InvalidMessage,
                "event_type: required",
                Some("c9".into())
            )
        );
        let e = code(r#"{"message_id":"c9","event_type":["heartbeat"]}"#);
        assert_eq!(
            e,
            ClientError::new(
                ErrorCode::InvalidMessage,
                "event_type: must be a string",
                Some("c9".into())
            )
        );
        let e = code(r#"{"message_id":5,"event_type":"heartbeat"}"#);
        assert_eq!((e.code, e.reply_to), (ErrorCode::InvalidMessage, None));

        for s in ["game_update", "HEARTBEAT", "Refresh", "subscribe"] {
            let e = code(&format!(r#"{{"event_type":"{s}","message_id":"x1"}}"#));
            assert_eq!(
                (e.code, e.reply_to.as_deref()),
                (ErrorCode::UnknownEvent, Some("x1")),
                "{s}"
            );
            assert!(e.message.contains(s), "{}", e.message);
        }

        for bad in ["", "odds 7", "odds/7", "ödds", &"x".repeat(129)] {
            let s = json!({"event_type":"user_subscription","message_id":"c2","data":{"channels":["odds", bad]}});
            let e = code(&s.to_string());
            assert_eq!(
                (e.code, e.reply_to.as_deref()),
                (ErrorCode::InvalidChannel, Some("c2")),
                "{bad:?}"
            );
            assert!(e.message.starts_with("invalid channel: "), "{}", e.message);
            assert!(
                e.message.contains(&bad[..bad.len().min(20)]),
                "{}",
                e.message
            );
        }

        let e = code(
            r#"{"event_type":"user_subscription","message_id":"c3","data":{"channels":["a","b","c","d","e"]}}"#,
        );
        assert_eq!(
            (e.code, e.reply_to.as_deref()),
            (ErrorCode::TooManySubscriptions, Some("c3"))
        );
        // Duplicates do not count against the cap.
        assert!(client(
            r#"{"event_type":"user_subscription","data":{"channels":["a","b","c","d","a","b"]}}"#
        )
        .is_ok());
        assert_eq!(
            parse_client_message(
                &mut br#"{"event_type":"user_subscription","data":{"channel":"a"}}"#.to_vec(),
                0
            )
            .unwrap_err()
            .code,
            ErrorCode::TooManySubscriptions
        );

        for (data, prefix) in [
            ("", "data: required"),
            (r#","data":null"#, "data: required"),
            (r#","data":"odds""#, "data: required"),
            (r#","data":{}"#, "data: expected"),
            (
                r#","data":{"since":{"offset":1,"epoch":"e"}}"#,
                "data.since: goes with",
            ),
            (r#","data":{"channel":5}"#, "data.channel: must be a string"),
            (
                r#","data":{"channels":"odds"}"#,
                "data.channels: must be an array",
            ),
            (
                r#","data":{"channels":[]}"#,
                "data.channels: must not be empty",
            ),
            (r#","data":{"channels":[5]}"#, "data.channels[0]: must be"),
            (
                r#","data":{"channels":["a",{"filter":{}}]}"#,
                "data.channels[1].channel: required",
            ),
            (
                r#","data":{"channels":[{"channel":1}]}"#,
                "data.channels[0].channel: must be a string",
            ),
            (
                r#","data":{"channel":"a","filter":[1]}"#,
                "data.filter: must be an object",
            ),
            (
                r#","data":{"channel":"a","filter":{"k":[]}}"#,
                "data.filter.k: must not be empty",
            ),
            (
                r#","data":{"channels":[{"channel":"a","filter":{"k":{}}}]}"#,
                "data.channels[0].filter.k: must be",
            ),
        ] {
            let e = code(&format!(
                r#"{{"event_type":"user_subscription","message_id":"c4"{data}}}"#
            ));
            assert_eq!(
                (e.code, e.reply_to.as_deref()),
                (ErrorCode::InvalidMessage, Some("c4")),
                "{data}"
            );
            assert!(e.message.starts_with(prefix), "{data}: {}", e.message);
        }
    }
}
