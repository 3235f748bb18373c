//! Invariant: the JSON entry points of `protocol` never panic and only return values that satisfy
//! the protocol's rules:
//!
//! - `parse_client_message` (max_subscriptions from byte 0): on Ok every channel is valid and
//!   unique, subscription lists are non-empty and within max_subscriptions, a filter is never
//!   empty, publishes satisfy the publish rules, and `message_id` is the document's string
//!   `message_id` (read independently with serde_json). On Err the message is non-empty, the code
//!   is one the parser may produce (never forbidden / rate_limited), `reply_to` is the string
//!   `message_id` whenever the input was a JSON object (and None for malformed JSON or a
//!   non-string id), too_many_subscriptions only answers a user_subscription and unknown_event
//!   only an event type outside the five a client may send. A `refresh` carries the document's
//!   non-empty string `data.token`.
//! - `PublishRequest::parse`, `DirectMessage::parse_send` / `parse_broadcast`: on Ok channels are
//!   valid, unique and non-empty, the event type is valid and publishable, the payload passes
//!   `validate_payload`, message_id is 1-128 bytes; send has a non-empty user_id; whatever
//!   publish or send accepts, broadcast accepts with the same fields. On Err the message is
//!   non-empty.
//! - The WebSocket publish path agrees with the HTTP one: `{"event_type":"publish","data":X}`
//!   gives the same request, or the same refusal mapped to its client error code, as X posted to
//!   /api/publish.
//! - `Filter::from_value` accepts exactly the documented shapes, and an accepted filter matches
//!   data holding the first listed value of each key.

#![no_main]

use huddle::protocol::{
    is_valid_channel, is_valid_event_type, parse_client_message, validate_payload, ClientRequest,
    Credential, DirectMessage, ErrorCode, Filter, PublishError, PublishRequest, MAX_FILTER_KEYS,
    MAX_FILTER_VALUES, MAX_MESSAGE_ID_LEN, SERVER_ONLY_EVENTS,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const CLIENT_EVENTS: [&str; 5] = [
    "heartbeat",
    "user_subscription",
    "user_unsubscription",
    "publish",
    "refresh",
];

fn assert_unique_valid<'a>(names: impl IntoIterator<Item = &'a str>) {
    let mut seen = std::collections::HashSet::new();
    let mut n = 0;
    for name in names {
        assert!(is_valid_channel(name), "invalid channel {name:?} accepted");
        assert!(seen.insert(name), "duplicate channel {name:?}");
        n += 1;
    }
    assert!(n > 0, "empty channel list accepted");
}

fn assert_publishable(event_type: &str, data: &Map<String, Value>, message_id: &Option<String>) {
    assert!(is_valid_event_type(event_type), "event type {event_type:?}");
    assert!(
        !SERVER_ONLY_EVENTS.contains(&event_type),
        "server-only {event_type:?}"
    );
    assert_eq!(validate_payload(event_type, data), Ok(()));
    if let Some(id) = message_id {
        assert!(
            (1..=MAX_MESSAGE_ID_LEN).contains(&id.len()),
            "message_id length"
        );
    }
}

fn assert_publish(p: &PublishRequest) {
    assert_unique_valid(p.channels.iter().map(String::as_str));
    assert_publishable(&p.event_type, &p.data, &p.message_id);
}

fn assert_error_text(e: &PublishError) {
    let (PublishError::Malformed(m) | PublishError::Invalid(m) | PublishError::InvalidChannel(m)) =
        e;
    assert!(!m.is_empty(), "empty error message: {e:?}");
}

/// Whether serde_json sees a document nested deeper than the protocol's limit would allow when
/// wrapped once more (simd-json input is refused above 128 levels before parsing).
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn is_scalar(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

fn check_filter(v: &Value) {
    let got = Filter::from_value(v);
    let shape_ok = match v {
        Value::Object(m) => {
            m.len() <= MAX_FILTER_KEYS
                && m.values().all(|x| match x {
                    Value::Array(list) => {
                        !list.is_empty()
                            && list.len() <= MAX_FILTER_VALUES
                            && list.iter().all(is_scalar)
                    }
                    x => is_scalar(x),
                })
        }
        _ => false,
    };
    assert_eq!(got.is_ok(), shape_ok, "Filter::from_value({v}) = {got:?}");
    if let (Ok(f), Value::Object(m)) = (&got, v) {
        let first: Map<String, Value> = m
            .iter()
            .map(|(k, x)| match x {
                Value::Array(list) => (k.clone(), list[0].clone()),
                x => (k.clone(), x.clone()),
            })
            .collect();
        assert!(
            f.matches(&first),
            "filter {v} does not match its own first values"
        );
        assert_eq!(f.matches(&Map::new()), f.is_empty());
        assert_eq!(f.is_empty(), m.is_empty());
    }
}

fuzz_target!(|data: &[u8]| {
    let [max_byte, json @ ..] = data else { return };
    let max_subscriptions = usize::from(*max_byte);
    // An independent reading of the document (serde_json), when it is well-formed JSON.
    let doc: Option<Value> = serde_json::from_slice(json).ok();
    let obj = doc.as_ref().and_then(Value::as_object);
    let doc_id = obj.and_then(|o| o.get("message_id"));
    let doc_event = obj
        .and_then(|o| o.get("event_type"))
        .and_then(Value::as_str);

    // --- WebSocket client messages ---
    match parse_client_message(&mut json.to_vec(), max_subscriptions) {
        Ok(m) => {
            if obj.is_some() {
                assert_eq!(m.message_id.as_deref(), doc_id.and_then(Value::as_str));
                assert_eq!(doc_event, Some(m.request.event_type()));
            }
            match &m.request {
                ClientRequest::Heartbeat => {}
                ClientRequest::Subscribe(specs) => {
                    assert!(specs.len() <= max_subscriptions, "over max_subscriptions");
                    assert_unique_valid(specs.iter().map(|s| s.channel.as_str()));
                    for s in specs {
                        if let Some(f) = &s.filter {
                            assert!(!f.is_empty(), "empty filter kept");
                            // Must not panic on any data, e.g. the document itself.
                            if let Some(o) = obj {
                                f.matches(o);
                            }
                        }
                    }
                }
                ClientRequest::Unsubscribe(names) => {
                    assert_unique_valid(names.iter().map(String::as_str))
                }
                ClientRequest::Publish(p) => assert_publish(p),
                ClientRequest::Refresh(credential) => {
                    let (field, value) = match credential {
                        Credential::Token(t) => ("token", t),
                        Credential::ApiKey(k) => ("api_key", k),
                    };
                    assert!(!value.is_empty(), "empty refresh {field}");
                    if let Some(o) = obj {
                        let data = o.get("data");
                        let doc = data.and_then(|d| d.get(field));
                        assert_eq!(doc.and_then(Value::as_str), Some(value.as_str()));
                        let other = if field == "token" { "api_key" } else { "token" };
                        assert!(
                            data.and_then(|d| d.get(other)).is_none(),
                            "both credentials"
                        );
                    }
                }
            }
        }
        Err(e) => {
            assert!(!e.message.is_empty(), "empty error message");
            assert!(
                !matches!(e.code, ErrorCode::Forbidden | ErrorCode::RateLimited),
                "parser returned a server-decided code: {e:?}"
            );
            let malformed = e.message.starts_with("malformed JSON");
            if malformed {
                assert_eq!(e.code, ErrorCode::InvalidMessage);
                assert_eq!(e.reply_to, None);
            } else if let Some(o) = obj {
                match o.get("message_id") {
                    Some(Value::String(id)) => {
                        assert_eq!(e.reply_to.as_deref(), Some(id.as_str()), "{e:?}")
                    }
                    _ => assert_eq!(e.reply_to, None, "{e:?}"),
                }
                match e.code {
                    ErrorCode::TooManySubscriptions => {
                        assert_eq!(doc_event, Some("user_subscription"))
                    }
                    ErrorCode::UnknownEvent => {
                        let et = doc_event.expect("unknown_event needs a string event_type");
                        assert!(!CLIENT_EVENTS.contains(&et), "{et:?} refused as unknown");
                    }
                    _ => {}
                }
            } else if doc.is_some() {
                // Well-formed JSON that is not an object.
                assert_eq!(
                    (e.code, e.reply_to.as_deref()),
                    (ErrorCode::InvalidMessage, None)
                );
            }
        }
    }

    // --- HTTP bodies ---
    let publish = PublishRequest::parse(&mut json.to_vec());
    let send = DirectMessage::parse_send(&mut json.to_vec());
    let broadcast = DirectMessage::parse_broadcast(&mut json.to_vec());
    for e in [
        publish.as_ref().err(),
        send.as_ref().err(),
        broadcast.as_ref().err(),
    ]
    .into_iter()
    .flatten()
    {
        assert_error_text(e);
    }
    if let Ok(p) = &publish {
        assert_publish(p);
        let b = broadcast
            .as_ref()
            .expect("publish accepted but broadcast refused");
        assert_eq!(
            (&b.event_type, &b.data, &b.message_id),
            (&p.event_type, &p.data, &p.message_id)
        );
    }
    if let Ok(d) = &broadcast {
        assert_publishable(&d.event_type, &d.data, &d.message_id);
        assert_eq!((&d.user_id, &d.channel), (&None, &None));
    }
    if let Ok(d) = &send {
        assert_publishable(&d.event_type, &d.data, &d.message_id);
        assert!(d.user_id.as_ref().is_some_and(|u| !u.is_empty()), "user_id");
        if let Some(c) = &d.channel {
            assert!(is_valid_channel(c), "invalid send channel {c:?}");
        }
        let b = broadcast
            .as_ref()
            .expect("send accepted but broadcast refused");
        assert_eq!(
            (&b.event_type, &b.data, &b.message_id),
            (&d.event_type, &d.data, &d.message_id)
        );
    }

    // --- WebSocket publish == HTTP publish ---
    if let Some(Value::Object(_)) = &doc {
        if !matches!(publish, Err(PublishError::Malformed(_))) && depth(doc.as_ref().unwrap()) < 128
        {
            let mut wrapped = br#"{"event_type":"publish","data":"#.to_vec();
            wrapped.extend_from_slice(json);
            wrapped.push(b'}');
            let ws = parse_client_message(&mut wrapped, max_subscriptions);
            match (&publish, ws) {
                (Ok(p), Ok(m)) => assert_eq!(m.request, ClientRequest::Publish(p.clone())),
                (Err(PublishError::Invalid(msg)), Err(e)) => {
                    assert_eq!((e.code, &e.message), (ErrorCode::InvalidMessage, msg))
                }
                (Err(PublishError::InvalidChannel(msg)), Err(e)) => {
                    assert_eq!(e.code, ErrorCode::InvalidChannel);
                    assert_eq!(e.message, format!("invalid channel: {msg}"));
                }
                (p, w) => panic!("HTTP publish {p:?} but WebSocket publish {w:?}"),
            }
        }
    }

    // --- Filters ---
    if let Some(v) = &doc {
        check_filter(v);
        if let Some(f) = obj.and_then(|o| o.get("filter")) {
            check_filter(f);
        }
    }
});
