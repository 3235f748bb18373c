//! The publish path, in one place: validate (done by `protocol` before this) → admit (a permit
//! of every owner's budget, or refuse the whole publish) → assign offset (the channel's owner
//! shard) → encode once → fan out to interested shards → gather recipients.
//!
//! Answers are truthful (PROTOCOL.md §7): a publish is refused only before anything of it is
//! sequenced, and once admitted it is always answered with its offsets; nothing waits on a
//! timeout that could turn a delivered message into an error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use tokio::sync::oneshot;

use super::mesh::{
    owner_of, ChannelResult, DirectMessage, Gather, HistoryPage, Permit, Present, PublishBody,
    PublishGather, SequenceJob, ShardMsg, ShardSnapshot,
};
use super::{encode, new_message_id, Shared};
use crate::protocol::{OutMessage, PublishRequest};

/// How long a stats request waits for every shard to answer.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a publish was refused; nothing of it was delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("server overloaded: too many messages in flight, retry shortly")]
    Overloaded,
    #[error("server is shutting down")]
    ShuttingDown,
    #[error("the Redis engine is unavailable; retry with the same message_id")]
    Unavailable,
}

/// An admitted publish, split into one job per channel for the shard that owns it.
pub struct Prepared {
    /// (owner shard, job).
    pub jobs: Vec<(usize, SequenceJob)>,
    pub results: Arc<PublishGather>,
    pub done: tokio::sync::oneshot::Receiver<()>,
}

/// Takes a permit from every channel's owner, or none at all.
pub fn admit(shared: &Shared, req: PublishRequest) -> Result<Prepared, Refused> {
    if shared.shutdown.is_triggered() {
        return Err(Refused::ShuttingDown);
    }
    let n = shared.inboxes.len();
    let channels: Vec<Arc<str>> = req.channels.iter().map(|c| Arc::from(c.as_str())).collect();
    let mut permits: Vec<(usize, Permit)> = Vec::with_capacity(channels.len());
    for c in &channels {
        let owner = owner_of(c, n);
        match shared.admission[owner].try_acquire() {
            Some(p) => permits.push((owner, p)),
            None => return Err(Refused::Overloaded),
        }
    }
    let (results, done) = PublishGather::new(channels.clone());
    let body = Arc::new(PublishBody {
        event_type: req.event_type,
        named: req.message_id.is_some(),
        message_id: req.message_id.unwrap_or_else(new_message_id),
        data: Arc::new(Value::Object(req.data)),
    });
    let jobs = channels
        .into_iter()
        .zip(permits)
        .enumerate()
        .map(|(index, (channel, (owner, permit)))| {
            let job = SequenceJob {
                channel,
                body: body.clone(),
                results: results.clone(),
                index,
                permit,
            };
            (owner, job)
        })
        .collect();
    Ok(Prepared {
        jobs,
        results,
        done,
    })
}

/// Hands an admitted job to its owner's inbox. A shard whose thread is gone (the process is
/// exiting) drops it, and the publish is never answered.
pub fn send_job(shared: &Shared, owner: usize, job: SequenceJob) {
    let _ = shared.inboxes[owner].send(ShardMsg::Sequence(job));
}

/// Publishes to every channel of `req` from outside a shard (the HTTP API); resolves once every
/// interested shard has queued it.
pub async fn publish(
    shared: &Arc<Shared>,
    req: PublishRequest,
) -> Result<Vec<ChannelResult>, Refused> {
    let p = admit(shared, req)?;
    for (owner, job) in p.jobs {
        send_job(shared, owner, job);
    }
    // Admitted: the answer is the offsets, however long the owners take (in cluster mode
    // Redis answers or fails within `cluster::TIMEOUT`).
    let _ = p.done.await;
    if p.results.failed() {
        return Err(Refused::Unavailable);
    }
    Ok(p.results.results())
}

/// Sends a non-channel message to every connection (`user_id` None) or to every connection
/// of one user; returns the number of connections it was queued to. Holds a permit of
/// `origin`'s budget (the shard that accepted the request).
pub async fn direct(
    shared: &Arc<Shared>,
    origin: usize,
    user_id: Option<String>,
    event_type: &str,
    data: &Value,
    message_id: Option<&str>,
) -> Result<u64, Refused> {
    if shared.shutdown.is_triggered() {
        return Err(Refused::ShuttingDown);
    }
    let permit = shared.admission[origin]
        .try_acquire()
        .ok_or(Refused::Overloaded)?;
    let generated;
    let message_id = match message_id {
        Some(m) => m,
        None => {
            generated = new_message_id();
            &generated
        }
    };
    let timestamp = crate::protocol::timestamp_now();
    let frame = encode(&OutMessage {
        event_type,
        channel: None,
        offset: None,
        message_id: Some(message_id),
        reply_to: None,
        user_id: user_id.as_deref(),
        timestamp: Some(&timestamp),
        data,
    });
    if let Some(cluster) = &shared.cluster {
        // Redis first: if it does not take the message, it is delivered nowhere (503). The
        // other nodes deliver it from the topic; `recipients` counts this node.
        let json = crate::codec::frame_payload(&frame)
            .map(bytes::Bytes::copy_from_slice)
            .unwrap_or_default();
        let (tx, rx) = oneshot::channel();
        cluster.send(crate::cluster::Request::Direct {
            user: user_id.clone(),
            json,
            reply: Box::new(move |r| {
                let _ = tx.send(r);
            }),
        });
        if !matches!(rx.await, Ok(Ok(()))) {
            return Err(Refused::Unavailable);
        }
    }
    let n = shared.inboxes.len();
    let (recipients, done) = Gather::new(n);
    let msg = Arc::new(DirectMessage {
        user_id,
        frame,
        published_at: Instant::now(),
        recipients: recipients.clone(),
        _permit: Some(permit),
    });
    for inbox in &shared.inboxes {
        if inbox.send(ShardMsg::Direct(msg.clone())).is_err() {
            recipients.report(0);
        }
    }
    drop(msg);
    let _ = done.await;
    Ok(recipients.take().iter().sum())
}

/// Every shard's snapshot (connections, channels).
pub async fn snapshots(shared: &Arc<Shared>) -> Result<Vec<ShardSnapshot>, Refused> {
    let (g, done) = Gather::new(shared.inboxes.len());
    for inbox in &shared.inboxes {
        if inbox.send(ShardMsg::Snapshot(g.clone())).is_err() {
            return Err(Refused::ShuttingDown);
        }
    }
    match tokio::time::timeout(SNAPSHOT_TIMEOUT, done).await {
        Ok(Ok(())) => Ok(g.take()),
        _ => Err(Refused::ShuttingDown),
    }
}

/// The owner's stored messages of `stream` after `since` (`/api/history`).
pub async fn history(
    shared: &Arc<Shared>,
    stream: Arc<str>,
    since: u64,
    limit: usize,
) -> Result<HistoryPage, Refused> {
    if let Some(cluster) = &shared.cluster {
        return cluster_history(cluster, stream, since, limit).await;
    }
    let owner = owner_of(&stream, shared.inboxes.len());
    let (reply, answer) = oneshot::channel();
    let msg = ShardMsg::History {
        channel: stream,
        since,
        limit,
        reply,
    };
    if shared.inboxes[owner].send(msg).is_err() {
        return Err(Refused::ShuttingDown);
    }
    match tokio::time::timeout(SNAPSHOT_TIMEOUT, answer).await {
        Ok(Ok(page)) => Ok(page),
        _ => Err(Refused::ShuttingDown),
    }
}

/// `/api/history` from Redis: any node answers for every channel.
async fn cluster_history(
    cluster: &crate::cluster::Cluster,
    stream: Arc<str>,
    since: u64,
    limit: usize,
) -> Result<HistoryPage, Refused> {
    let (tx, rx) = oneshot::channel();
    cluster.send(crate::cluster::Request::Range {
        channel: stream,
        since,
        limit,
        reply: Box::new(move |r| {
            let _ = tx.send(r);
        }),
    });
    match rx.await {
        Ok(Ok(r)) => Ok(HistoryPage {
            offset: r.position.offset,
            epoch: r.position.epoch,
            frames: r.frames.into_iter().map(|(_, f)| f).collect(),
        }),
        _ => Err(Refused::Unavailable),
    }
}

/// Every shard's subscribers of `stream` (`/api/presence`).
pub async fn presence(shared: &Arc<Shared>, stream: Arc<str>) -> Result<Vec<Present>, Refused> {
    if let Some(cluster) = &shared.cluster {
        // Every node's entries, from Redis.
        let (tx, rx) = oneshot::channel();
        cluster.send(crate::cluster::Request::PresenceGet {
            channel: stream,
            reply: Box::new(move |r| {
                let _ = tx.send(r);
            }),
        });
        return match rx.await {
            Ok(Ok(entries)) => Ok(entries
                .iter()
                .filter_map(|e| super::recovery::parse_presence_entry(e))
                .collect()),
            _ => Err(Refused::Unavailable),
        };
    }
    let (g, done) = Gather::new(shared.inboxes.len());
    for inbox in &shared.inboxes {
        let msg = ShardMsg::Presence {
            channel: stream.clone(),
            gather: g.clone(),
        };
        if inbox.send(msg).is_err() {
            return Err(Refused::ShuttingDown);
        }
    }
    match tokio::time::timeout(SNAPSHOT_TIMEOUT, done).await {
        Ok(Ok(())) => Ok(g.take().into_iter().flatten().collect()),
        _ => Err(Refused::ShuttingDown),
    }
}
