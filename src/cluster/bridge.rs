//! The bridge thread: a current-thread tokio runtime with, per Redis instance, a command loop
//! (requests batched into one pipeline per round trip, answered in order), a pub/sub reader,
//! and a health check.
//!
//! Order: a batch's publishes run in the order the owners sent them, and the next batch starts
//! only after the previous one is answered, so one owner's publishes of a channel are assigned
//! offsets in the order it asked. A subscription is confirmed by Redis before the channel's
//! position is read, so every message above that position reaches the topic reader.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink};
use redis::Value;
use tokio::sync::mpsc;
use tokio::task::{spawn_local, LocalSet};

use super::wire::{self, Keys};
use super::{Callbacks, Position, Range, Remote, Reply, Request, Settings, TIMEOUT};

/// Requests taken into one pipeline at most.
const BATCH: usize = 256;
/// A channel's meta hash (offset, epoch) outlives its history by this much at least, so a quiet
/// channel keeps its epoch; past it the channel starts over at a new epoch.
const META_TTL: Duration = Duration::from_secs(24 * 3600);
const HEALTH_EVERY: Duration = Duration::from_secs(1);
const RETRY: Duration = Duration::from_millis(250);

/// What the bridge thread needs of one instance.
pub struct InstanceEnd {
    pub client: redis::Client,
    pub requests: mpsc::UnboundedReceiver<Request>,
    pub healthy: Arc<AtomicBool>,
    /// The URL without password, for logs.
    pub name: String,
}

pub fn spawn(
    settings: Settings,
    node_id: Arc<str>,
    ends: Vec<InstanceEnd>,
    callbacks: Callbacks,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("huddle-redis".into())
        .spawn(move || {
            let local = LocalSet::new();
            local.block_on(&rt, async move {
                for end in ends {
                    spawn_local(run_instance(
                        settings.clone(),
                        node_id.clone(),
                        end,
                        callbacks.clone(),
                    ));
                }
                std::future::pending::<()>().await
            })
        })?;
    Ok(())
}

/// The topics an instance should be subscribed to, the live sink, and subscribe replies
/// waiting for a pub/sub connection.
#[derive(Default)]
struct Topics {
    /// Channels followed (their topics).
    wanted: HashSet<Arc<str>>,
    /// Users with a connection on this node (their topics).
    users: HashSet<String>,
    sink: Option<PubSubSink>,
    waiting: HashMap<Arc<str>, Vec<Reply<Position>>>,
}

struct Ctx {
    settings: Settings,
    node_id: Arc<str>,
    conn: ConnectionManager,
    publish: redis::Script,
    range: redis::Script,
    presence_add: redis::Script,
    presence_remove: redis::Script,
    presence_get: redis::Script,
    topics: RefCell<Topics>,
    /// The scripts were loaded on the current connection and nothing failed since (a failure
    /// may mean a restarted Redis, which has none).
    scripts_loaded: Cell<bool>,
    healthy: Arc<AtomicBool>,
    name: String,
}

async fn run_instance(settings: Settings, node_id: Arc<str>, end: InstanceEnd, cb: Callbacks) {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    let conn = match ConnectionManager::new_lazy_with_config(end.client.clone(), config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(redis = %end.name, "cannot set up the Redis connection: {e}");
            return;
        }
    };
    let ctx = Rc::new(Ctx {
        settings,
        node_id,
        conn,
        publish: redis::Script::new(super::scripts::PUBLISH),
        range: redis::Script::new(super::scripts::RANGE),
        presence_add: redis::Script::new(super::scripts::PRESENCE_ADD),
        presence_remove: redis::Script::new(super::scripts::PRESENCE_REMOVE),
        presence_get: redis::Script::new(super::scripts::PRESENCE_GET),
        topics: RefCell::new(Topics::default()),
        scripts_loaded: Cell::new(false),
        healthy: end.healthy,
        name: end.name,
    });
    spawn_local(health_loop(ctx.clone()));
    spawn_local(topic_loop(ctx.clone(), end.client, cb));
    command_loop(ctx, end.requests).await;
}

/// `PING` every second; the instance is healthy while it answers within [`TIMEOUT`].
async fn health_loop(ctx: Rc<Ctx>) {
    loop {
        let mut conn = ctx.conn.clone();
        let ok = matches!(
            tokio::time::timeout(TIMEOUT, redis::cmd("PING").query_async::<String>(&mut conn))
                .await,
            Ok(Ok(_))
        );
        if !ok {
            ctx.scripts_loaded.set(false);
        }
        let was = ctx.healthy.swap(ok, Ordering::AcqRel);
        if was != ok {
            if ok {
                tracing::info!(redis = %ctx.name, "Redis is available");
            } else {
                tracing::warn!(redis = %ctx.name, "Redis is unavailable: publishes answer 503");
            }
        }
        tokio::time::sleep(HEALTH_EVERY).await;
    }
}

/// Keeps one pub/sub connection up, (re)subscribes every wanted topic on it (and the broadcast
/// topic), and hands each message to its callback. After a reconnect every resubscribed
/// channel is reported to `resumed`.
async fn topic_loop(ctx: Rc<Ctx>, client: redis::Client, cb: Callbacks) {
    let prefix = ctx.settings.prefix.clone();
    let mut reconnect = false;
    loop {
        let pubsub = match tokio::time::timeout(TIMEOUT, client.get_async_pubsub()).await {
            Ok(Ok(p)) => p,
            _ => {
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        let (wanted, names) = {
            let t = ctx.topics.borrow();
            let wanted: Vec<Arc<str>> = t.wanted.iter().cloned().collect();
            let mut names: Vec<String> = wanted.iter().map(|c| wire::topic(&prefix, c)).collect();
            names.extend(t.users.iter().map(|u| wire::user_topic(&prefix, u)));
            names.push(wire::broadcast_topic(&prefix));
            (wanted, names)
        };
        if !matches!(
            tokio::time::timeout(TIMEOUT, sink.subscribe(&names)).await,
            Ok(Ok(()))
        ) {
            tokio::time::sleep(RETRY).await;
            continue;
        }
        let waiting = {
            let mut t = ctx.topics.borrow_mut();
            t.sink = Some(sink.clone());
            std::mem::take(&mut t.waiting)
        };
        if reconnect {
            tracing::info!(redis = %ctx.name, topics = wanted.len(), "resubscribed");
            for c in &wanted {
                (cb.resumed)(c.clone());
            }
        }
        for (channel, replies) in waiting {
            spawn_local(subscribe(ctx.clone(), channel, replies));
        }
        reconnect = true;
        while let Some(msg) = stream.next().await {
            let raw = msg.get_payload_bytes();
            let read = match wire::parse_topic(&prefix, msg.get_channel_name()) {
                Some(wire::Topic::Channel(channel)) if raw.starts_with(b"jl ") => {
                    wire::parse_join_leave(raw).map(|(node, json)| {
                        if node != &*ctx.node_id {
                            (cb.join_leave)(Arc::from(channel), crate::codec::text_frame(json));
                        }
                    })
                }
                Some(wire::Topic::Channel(channel)) => wire::parse_payload(raw).map(|p| {
                    let remote = Remote {
                        offset: p.offset,
                        epoch: Arc::from(p.epoch),
                        frame: crate::codec::text_frame(p.json),
                    };
                    (cb.deliver)(Arc::from(channel), remote);
                }),
                Some(topic @ (wire::Topic::User(_) | wire::Topic::Broadcast)) => {
                    wire::parse_direct(raw).map(|(node, json)| {
                        if node != &*ctx.node_id {
                            let user = match topic {
                                wire::Topic::User(u) => Some(u.to_owned()),
                                _ => None,
                            };
                            (cb.direct)(user, crate::codec::text_frame(json));
                        }
                    })
                }
                None => Some(()),
            };
            if read.is_none() {
                tracing::warn!(redis = %ctx.name, "unreadable message on a huddle topic");
            }
        }
        ctx.topics.borrow_mut().sink = None;
        tracing::warn!(redis = %ctx.name, "pub/sub connection lost; reconnecting");
    }
}

/// Subscribes `channel`'s topic (confirmed by Redis), then reads its position, and answers;
/// tries again while the channel is wanted. Without a pub/sub connection the replies wait for
/// the next one (the topic loop subscribes every wanted topic on it and calls this again).
async fn subscribe(ctx: Rc<Ctx>, channel: Arc<str>, mut replies: Vec<Reply<Position>>) {
    let topic = wire::topic(&ctx.settings.prefix, &channel);
    loop {
        if !ctx.topics.borrow().wanted.contains(&channel) {
            return;
        }
        let Some(mut sink) = ctx.topics.borrow().sink.clone() else {
            ctx.topics
                .borrow_mut()
                .waiting
                .entry(channel)
                .or_default()
                .append(&mut replies);
            return;
        };
        let subscribed = matches!(
            tokio::time::timeout(TIMEOUT, sink.subscribe(topic.as_str())).await,
            Ok(Ok(()))
        );
        if subscribed {
            if let Ok(r) = range(&ctx, &channel, 0, 0).await {
                for reply in replies.drain(..) {
                    reply(Ok(r.position.clone()));
                }
                return;
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Runs one request at a time for subscriptions, and batches publishes and ranges into one
/// pipeline per round trip.
async fn command_loop(ctx: Rc<Ctx>, mut requests: mpsc::UnboundedReceiver<Request>) {
    let mut batch = Vec::with_capacity(BATCH);
    while requests.recv_many(&mut batch, BATCH).await > 0 {
        let mut work = Vec::with_capacity(batch.len());
        for req in batch.drain(..) {
            match req {
                Request::Subscribe { channel, reply } => {
                    ctx.topics.borrow_mut().wanted.insert(channel.clone());
                    spawn_local(subscribe(ctx.clone(), channel, vec![reply]));
                }
                Request::Unsubscribe { channel } => {
                    let sink = {
                        let mut t = ctx.topics.borrow_mut();
                        t.wanted.remove(&channel);
                        t.waiting.remove(&channel);
                        t.sink.clone()
                    };
                    if let Some(mut s) = sink {
                        let topic = wire::topic(&ctx.settings.prefix, &channel);
                        spawn_local(async move {
                            let _ = tokio::time::timeout(TIMEOUT, s.unsubscribe(topic)).await;
                        });
                    }
                }
                Request::FollowUser { user, on } => {
                    let sink = {
                        let mut t = ctx.topics.borrow_mut();
                        if on {
                            t.users.insert(user.clone());
                        } else {
                            t.users.remove(&user);
                        }
                        t.sink.clone()
                    };
                    // Without a connection, the next one subscribes every user in the set.
                    if let Some(mut s) = sink {
                        let topic = wire::user_topic(&ctx.settings.prefix, &user);
                        spawn_local(async move {
                            let _ = tokio::time::timeout(TIMEOUT, async {
                                if on {
                                    s.subscribe(topic).await
                                } else {
                                    s.unsubscribe(topic).await
                                }
                            })
                            .await;
                        });
                    }
                }
                other => work.push(other),
            }
        }
        if !work.is_empty() {
            run_batch(&ctx, work).await;
        }
    }
}

/// One pipeline of publishes and ranges; every request is answered, in order.
///
/// The scripts are loaded before a pipeline unless they are known to be. Redis may still lose
/// them (restarted, or `SCRIPT FLUSH`) and get them back from another node while a pipeline
/// runs, so some entries answer NOSCRIPT (they did not run) and others ran: see [`to_retry`].
async fn run_batch(ctx: &Ctx, work: Vec<Request>) {
    if !ctx.scripts_loaded.get() {
        load_scripts(ctx).await;
    }
    let all: Vec<&Request> = work.iter().collect();
    let mut answers = pipeline(ctx, &all).await;
    if let Ok(first) = &mut answers {
        if first.iter().any(is_noscript) {
            load_scripts(ctx).await;
            let again = to_retry(&work, first);
            let requests: Vec<&Request> = again.iter().map(|&i| &work[i]).collect();
            if let Ok(second) = pipeline(ctx, &requests).await {
                for (i, v) in again.into_iter().zip(second) {
                    first[i] = v;
                }
            }
        }
    }
    let answers = answers.unwrap_or_default();
    let mut answers = answers.into_iter();
    for req in work {
        let v = answers.next();
        match req {
            Request::Publish { reply, .. } => {
                reply(v.and_then(read_published).ok_or(super::Unavailable))
            }
            Request::Range { reply, .. } => reply(v.and_then(read_range).ok_or(super::Unavailable)),
            Request::Direct { reply, .. } => reply(match v {
                Some(Value::Int(_)) => Ok(()),
                _ => Err(super::Unavailable),
            }),
            Request::PresenceGet { reply, .. } => {
                reply(v.and_then(read_presence).ok_or(super::Unavailable))
            }
            Request::JoinLeave { .. } => {}
            Request::Presence { channel, .. } => {
                if !matches!(v, Some(Value::Int(_))) {
                    tracing::warn!(redis = %ctx.name, channel = %channel, "presence not written");
                }
            }
            other => other.fail(),
        }
    }
}

/// Which entries answered NOSCRIPT go again, in order, once the scripts are loaded: every range
/// read, and every publish unless a later publish of its channel in the same pipeline ran (it
/// would be stored after it: a channel's publishes are stored in the order they were asked).
/// The others keep their NOSCRIPT answer, so they are answered unavailable: nothing of them
/// was stored, and a publisher retries. An entry that ran is never sent again: that would store
/// and deliver the message twice, at two offsets.
fn to_retry(work: &[Request], answers: &[Value]) -> Vec<usize> {
    let mut ran_later: HashSet<&str> = HashSet::new();
    let mut again = Vec::new();
    for (i, (req, answer)) in work.iter().zip(answers).enumerate().rev() {
        let missed = is_noscript(answer);
        match req {
            Request::Publish { channel, .. } if !missed => {
                ran_later.insert(channel);
            }
            Request::Publish { channel, .. } if ran_later.contains(&**channel) => {}
            _ if missed => again.push(i),
            _ => {}
        }
    }
    again.reverse();
    again
}

/// Loads every script; remembers whether that worked.
async fn load_scripts(ctx: &Ctx) {
    let mut conn = ctx.conn.clone();
    let mut ok = true;
    let scripts = [
        &ctx.publish,
        &ctx.range,
        &ctx.presence_add,
        &ctx.presence_remove,
        &ctx.presence_get,
    ];
    for s in scripts {
        let loaded = tokio::time::timeout(TIMEOUT, s.prepare_invoke().load_async(&mut conn)).await;
        ok &= matches!(loaded, Ok(Ok(_)));
    }
    ctx.scripts_loaded.set(ok);
}

async fn pipeline(ctx: &Ctx, work: &[&Request]) -> Result<Vec<Value>, ()> {
    let s = &ctx.settings;
    let ttl_ms = s.history_ttl.as_millis().to_string();
    let meta_ms = META_TTL.max(s.history_ttl * 2).as_millis().to_string();
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for req in work {
        match req {
            Request::Publish {
                channel,
                prefix,
                suffix,
                message_id,
                ..
            } => {
                let keys = Keys::new(&s.prefix, channel);
                let idem = Keys::idem(&s.prefix, channel, message_id.as_deref().unwrap_or(""));
                pipe.cmd("EVALSHA")
                    .arg(ctx.publish.get_hash())
                    .arg(3)
                    .arg(&keys.meta)
                    .arg(&keys.stream)
                    .arg(&idem)
                    .arg(&keys.topic)
                    .arg(&prefix[..])
                    .arg(&suffix[..])
                    .arg(s.history_size)
                    .arg(&ttl_ms)
                    .arg(ulid::Ulid::new().to_string())
                    .arg(if message_id.is_some() { "1" } else { "0" })
                    .arg(&meta_ms);
            }
            Request::Range {
                channel,
                since,
                limit,
                ..
            } => {
                let keys = Keys::new(&s.prefix, channel);
                pipe.cmd("EVALSHA")
                    .arg(ctx.range.get_hash())
                    .arg(2)
                    .arg(&keys.meta)
                    .arg(&keys.stream)
                    .arg(*since)
                    .arg(*limit)
                    .arg(ulid::Ulid::new().to_string())
                    .arg(&meta_ms);
            }
            Request::Presence {
                channel,
                entries,
                on,
            } => {
                let (hash, exp) = wire::presence_keys(&s.prefix, channel);
                let script = if *on {
                    &ctx.presence_add
                } else {
                    &ctx.presence_remove
                };
                let c = pipe
                    .cmd("EVALSHA")
                    .arg(script.get_hash())
                    .arg(2)
                    .arg(&hash)
                    .arg(&exp);
                if *on {
                    c.arg(s.presence_ttl.as_millis().to_string());
                }
                for (id, json) in entries {
                    c.arg(id);
                    if *on {
                        c.arg(json);
                    }
                }
            }
            Request::PresenceGet { channel, .. } => {
                let (hash, exp) = wire::presence_keys(&s.prefix, channel);
                pipe.cmd("EVALSHA")
                    .arg(ctx.presence_get.get_hash())
                    .arg(2)
                    .arg(&hash)
                    .arg(&exp);
            }
            Request::JoinLeave { channel, json } => {
                let mut payload = b"jl ".to_vec();
                payload.extend_from_slice(ctx.node_id.as_bytes());
                payload.push(b' ');
                payload.extend_from_slice(json);
                pipe.cmd("PUBLISH")
                    .arg(wire::topic(&s.prefix, channel))
                    .arg(payload);
            }
            Request::Direct { user, json, .. } => {
                let topic = match user {
                    Some(u) => wire::user_topic(&s.prefix, u),
                    None => wire::broadcast_topic(&s.prefix),
                };
                let mut payload = Vec::with_capacity(ctx.node_id.len() + 1 + json.len());
                payload.extend_from_slice(ctx.node_id.as_bytes());
                payload.push(b' ');
                payload.extend_from_slice(json);
                pipe.cmd("PUBLISH").arg(topic).arg(payload);
            }
            _ => {}
        }
    }
    let mut conn = ctx.conn.clone();
    let answers = tokio::time::timeout(TIMEOUT, pipe.query_async::<Vec<Value>>(&mut conn)).await;
    if !matches!(answers, Ok(Ok(_))) {
        ctx.scripts_loaded.set(false);
    }
    match answers {
        Ok(Ok(v)) if v.len() == work.len() => Ok(v),
        Ok(Ok(_)) => Err(()),
        Ok(Err(e)) => {
            tracing::warn!(redis = %ctx.name, "Redis request failed: {e}");
            Err(())
        }
        Err(_) => {
            tracing::warn!(redis = %ctx.name, "Redis did not answer within {TIMEOUT:?}");
            Err(())
        }
    }
}

/// The position and nothing else (`limit` 0), or the range after `since`.
async fn range(ctx: &Ctx, channel: &Arc<str>, since: u64, limit: usize) -> Result<Range, ()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let req = Request::Range {
        channel: channel.clone(),
        since,
        limit,
        reply: Box::new(move |r| {
            let _ = tx.send(r);
        }),
    };
    run_batch(ctx, vec![req]).await;
    match rx.await {
        Ok(Ok(r)) => Ok(r),
        _ => Err(()),
    }
}

fn is_noscript(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if e.code() == "NOSCRIPT")
}

fn int(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

fn text(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// `{offset, epoch}` or `{"dup", "<offset> <epoch>"}`.
fn read_published(v: Value) -> Option<Position> {
    let Value::Array(items) = v else {
        return None;
    };
    let (a, b) = (items.first()?, items.get(1)?);
    if text(a) == Some(&b"dup"[..]) {
        let s = std::str::from_utf8(text(b)?).ok()?;
        let (o, e) = s.split_once(' ')?;
        return Some(Position {
            offset: o.parse().ok()?,
            epoch: Arc::from(e),
        });
    }
    Some(Position {
        offset: int(a)?,
        epoch: Arc::from(std::str::from_utf8(text(b)?).ok()?),
    })
}

/// `{id, JSON, …}` (RESP2) or a map (RESP3): the JSON values.
fn read_presence(v: Value) -> Option<Vec<bytes::Bytes>> {
    match v {
        Value::Array(items) => items
            .chunks(2)
            .map(|p| p.get(1).and_then(text).map(bytes::Bytes::copy_from_slice))
            .collect(),
        Value::Map(pairs) => pairs
            .iter()
            .map(|(_, j)| text(j).map(bytes::Bytes::copy_from_slice))
            .collect(),
        _ => None,
    }
}

/// `{offset, epoch, first, {id, json, …}}`.
fn read_range(v: Value) -> Option<Range> {
    let Value::Array(items) = v else {
        return None;
    };
    let position = Position {
        offset: int(items.first()?)?,
        epoch: Arc::from(std::str::from_utf8(text(items.get(1)?)?).ok()?),
    };
    let first = int(items.get(2)?)?;
    let mut frames = Vec::new();
    if let Some(Value::Array(entries)) = items.get(3) {
        for pair in entries.chunks(2) {
            let [id, json] = pair else {
                return None;
            };
            let offset = wire::offset_of_id(text(id)?)?;
            frames.push((offset, crate::codec::text_frame(text(json)?)));
        }
    }
    Some(Range {
        position,
        first,
        frames,
    })
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::Mutex;

    use bytes::Bytes;

    use super::*;
    use crate::cluster::{Position, Unavailable};

    /// One RESP command (an array of bulk strings).
    fn read_command(r: &mut impl BufRead) -> Option<Vec<Vec<u8>>> {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let n: usize = line.trim_end().strip_prefix('*')?.parse().ok()?;
        let mut args = Vec::with_capacity(n);
        for _ in 0..n {
            line.clear();
            r.read_line(&mut line).ok()?;
            let len: usize = line.trim_end().strip_prefix('$')?.parse().ok()?;
            let mut arg = vec![0; len + 2];
            r.read_exact(&mut arg).ok()?;
            arg.truncate(len);
            args.push(arg);
        }
        Some(args)
    }

    /// A fake Redis for one connection: each `EVALSHA` gets the next of `answers` (raw RESP)
    /// and its message prefix (ARGV 2) is recorded; `SCRIPT LOAD` gets the script's hash;
    /// anything else `+OK`.
    fn fake_redis(answers: Vec<&'static str>) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            let mut answers = answers.into_iter();
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let mut w = stream.try_clone().unwrap();
            let mut r = BufReader::new(stream);
            while let Some(cmd) = read_command(&mut r) {
                let reply = match cmd[0].to_ascii_uppercase().as_slice() {
                    b"EVALSHA" => {
                        log.lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&cmd[7]).into_owned());
                        answers
                            .next()
                            .unwrap_or("-ERR no more answers\r\n")
                            .to_owned()
                    }
                    b"SCRIPT" => {
                        let script = redis::Script::new(std::str::from_utf8(&cmd[2]).unwrap());
                        format!("$40\r\n{}\r\n", script.get_hash())
                    }
                    _ => "+OK\r\n".to_owned(),
                };
                if w.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            }
        });
        (url, seen)
    }

    fn ctx(url: &str) -> Ctx {
        let settings = Settings {
            urls: vec![url.to_owned()],
            prefix: "huddle".into(),
            history_size: 100,
            history_ttl: Duration::from_secs(300),
            presence_ttl: Duration::from_secs(40),
        };
        let client = redis::Client::open(url).unwrap();
        Ctx {
            settings,
            node_id: Arc::from("test"),
            conn: ConnectionManager::new_lazy_with_config(client, ConnectionManagerConfig::new())
                .unwrap(),
            publish: redis::Script::new(super::super::scripts::PUBLISH),
            range: redis::Script::new(super::super::scripts::RANGE),
            presence_add: redis::Script::new(super::super::scripts::PRESENCE_ADD),
            presence_remove: redis::Script::new(super::super::scripts::PRESENCE_REMOVE),
            presence_get: redis::Script::new(super::super::scripts::PRESENCE_GET),
            topics: RefCell::new(Topics::default()),
            scripts_loaded: Cell::new(false),
            healthy: Arc::new(AtomicBool::new(true)),
            name: url.to_owned(),
        }
    }

    type Answers = Arc<Mutex<Vec<(&'static str, Result<Position, Unavailable>)>>>;

    fn publish(name: &'static str, channel: &str, answers: &Answers) -> Request {
        let answers = answers.clone();
        Request::Publish {
            channel: Arc::from(channel),
            prefix: Bytes::from(name),
            suffix: Bytes::new(),
            message_id: None,
            reply: Box::new(move |r| answers.lock().unwrap().push((name, r))),
        }
    }

    const NOSCRIPT: &str = "-NOSCRIPT No matching script. Please use EVAL.\r\n";

    /// Runs `work` against a fake Redis giving `answers` to its `EVALSHA`s, in order; returns
    /// the entries Redis saw (by name) and each request's offset (None: unavailable).
    fn batch(
        answers: Vec<&'static str>,
        work: &[(&'static str, &str)],
    ) -> (Vec<String>, Vec<(&'static str, Option<u64>)>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (url, seen) = fake_redis(answers);
            let ctx = ctx(&url);
            let got = Answers::default();
            let requests = work.iter().map(|(n, c)| publish(n, c, &got)).collect();
            run_batch(&ctx, requests).await;
            assert!(ctx.scripts_loaded.get());
            let got = got
                .lock()
                .unwrap()
                .iter()
                .map(|(n, r)| (*n, r.as_ref().ok().map(|p| p.offset)))
                .collect();
            let seen = seen.lock().unwrap().clone();
            (seen, got)
        })
    }

    #[test]
    fn an_entry_that_ran_is_not_sent_again_when_others_of_its_pipeline_met_noscript() {
        // Another node loaded the scripts while this pipeline ran: `a` did not run, `b` did.
        let (seen, got) = batch(
            vec![
                NOSCRIPT,
                "*2\r\n:1\r\n$1\r\nE\r\n",
                "*2\r\n:5\r\n$1\r\nE\r\n",
            ],
            &[("a", "c1"), ("b", "c2")],
        );
        assert_eq!(seen, ["a", "b", "a"], "b stored once");
        assert_eq!(got, [("a", Some(5)), ("b", Some(1))]);
    }

    #[test]
    fn a_publish_is_not_stored_after_a_later_one_of_its_channel() {
        let (seen, got) = batch(
            vec![
                NOSCRIPT,
                "*2\r\n:1\r\n$1\r\nE\r\n",
                NOSCRIPT,
                "*2\r\n:2\r\n$1\r\nE\r\n",
            ],
            &[("a", "c"), ("b", "c"), ("d", "c")],
        );
        assert_eq!(seen, ["a", "b", "d", "d"], "only d goes again");
        assert_eq!(got, [("a", None), ("b", Some(1)), ("d", Some(2))]);
    }
}
