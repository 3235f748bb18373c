//! The publish path, in one place: validate (done by `protocol` before this) → assign offset
//! (the channel's owner shard) → encode once → hand to every shard → gather recipients.
//!
//! HTTP handlers and WebSocket publishers both call these functions; later features (history,
//! a backplane, compression) attach to `Shard::sequence`, the one spot every message passes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::protocol::{OutMessage, PublishRequest};
use crate::server::Shared;
use crate::shard::mesh::{
    owner_of, ChannelResult, DirectMessage, Gather, PublishBody, PublishGather, SequenceJob,
    ShardMsg, ShardSnapshot,
};
use crate::shard::{encode, new_message_id};

/// How long a request waits for every shard to answer; only hit while shutting down.
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);

/// The shards did not all answer (the server is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("server is shutting down")]
pub struct Unavailable;

/// A publish split into one job per channel, each for the shard that owns the channel.
pub struct Prepared {
    /// (owner shard, job).
    pub jobs: Vec<(usize, SequenceJob)>,
    pub results: Arc<PublishGather>,
    pub done: tokio::sync::oneshot::Receiver<()>,
}

/// Splits a validated publish into per-channel jobs for their owners.
pub fn prepare(shared: &Shared, req: PublishRequest) -> Prepared {
    let n = shared.inboxes.len();
    let channels: Vec<Arc<str>> = req.channels.iter().map(|c| Arc::from(c.as_str())).collect();
    let (results, done) = PublishGather::new(channels.clone(), n);
    let body = Arc::new(PublishBody {
        event_type: req.event_type,
        message_id: req.message_id.unwrap_or_else(new_message_id),
        data: Arc::new(Value::Object(req.data)),
    });
    let jobs = channels
        .into_iter()
        .enumerate()
        .map(|(index, channel)| {
            let owner = owner_of(&channel, n);
            let job = SequenceJob {
                channel,
                body: body.clone(),
                results: results.clone(),
                index,
            };
            (owner, job)
        })
        .collect();
    Prepared {
        jobs,
        results,
        done,
    }
}

/// Hands a job to its owner's inbox.
pub fn send_job(shared: &Shared, owner: usize, job: SequenceJob) -> Result<(), Unavailable> {
    shared.inboxes[owner]
        .send(ShardMsg::Sequence(job))
        .map_err(|_| Unavailable)
}

/// Waits until every shard has queued every channel of the publish; the per-channel answer.
pub async fn finish(
    shared: &Shared,
    results: Arc<PublishGather>,
    done: tokio::sync::oneshot::Receiver<()>,
) -> Result<Vec<ChannelResult>, Unavailable> {
    wait(done).await?;
    Ok(results.results(&shared.epoch))
}

/// Publishes to every channel of `req` from outside a shard (the HTTP API); resolves once every
/// shard has queued it.
pub async fn publish(
    shared: &Arc<Shared>,
    req: PublishRequest,
) -> Result<Vec<ChannelResult>, Unavailable> {
    let p = prepare(shared, req);
    for (owner, job) in p.jobs {
        send_job(shared, owner, job)?;
    }
    finish(shared, p.results, p.done).await
}

/// Sends a non-channel message to every connection (`user_id` None) or to every connection
/// of one user; returns the number of connections it was queued to.
pub async fn direct(
    shared: &Arc<Shared>,
    user_id: Option<String>,
    event_type: &str,
    data: &Value,
    message_id: Option<&str>,
) -> Result<u64, Unavailable> {
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
    let n = shared.inboxes.len();
    let (recipients, done) = Gather::new(n);
    let msg = Arc::new(DirectMessage {
        user_id,
        frame,
        published_at: Instant::now(),
        recipients: recipients.clone(),
    });
    for inbox in &shared.inboxes {
        inbox
            .send(ShardMsg::Direct(msg.clone()))
            .map_err(|_| Unavailable)?;
    }
    wait(done).await?;
    Ok(recipients.take().iter().sum())
}

/// Every shard's snapshot (connections, users, channels).
pub async fn snapshots(shared: &Arc<Shared>) -> Result<Vec<ShardSnapshot>, Unavailable> {
    let (g, done) = Gather::new(shared.inboxes.len());
    for inbox in &shared.inboxes {
        inbox
            .send(ShardMsg::Snapshot(g.clone()))
            .map_err(|_| Unavailable)?;
    }
    wait(done).await?;
    Ok(g.take())
}

async fn wait(done: tokio::sync::oneshot::Receiver<()>) -> Result<(), Unavailable> {
    match tokio::time::timeout(GATHER_TIMEOUT, done).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(Unavailable),
    }
}
