//! A tokio WebSocket client for huddle (PROTOCOL.md §14): connection states, reconnect with
//! backoff and full jitter, resubscribe with `since` so nothing is missed across a reconnect,
//! a bounded outbound queue while disconnected, heartbeats, token refresh, and delivery by
//! channel and by `event_type`. It speaks only the wire protocol: nothing here depends on the
//! server's modules.
//!
//! ```no_run
//! # async fn demo() -> Result<(), huddle::client::Error> {
//! use huddle::client::{Client, Event, Options, SubOptions};
//! let client = Client::connect("ws://127.0.0.1:8080/ws", Options::default());
//! let mut events = client.events();              // every event, from now on
//! let mut odds = client.subscribe("odds", SubOptions::default());
//! let results = client.publish("odds", "tick", serde_json::json!({"n": 1})).await?;
//! while let Some(ev) = odds.recv().await {
//!     match ev {
//!         Event::Message(m) => println!("{:?} {}", m.offset, m.data),
//!         Event::Lost { .. } => { /* reload this channel's state, e.g. /api/history */ }
//!         _ => {}
//!     }
//! }
//! client.close().await;
//! # let _ = (results, events.try_recv()); Ok(()) }
//! ```
//!
//! # Design and invariants
//!
//! - **One task owns the socket.** [`Client::connect`] returns at once and spawns one tokio task
//!   (the *driver*) that owns the connection, the subscription positions, the in-flight
//!   publishes and every timer. It connects, and reconnects forever, until [`Client::close`]
//!   (or until every [`Client`] handle is dropped). The [`Client`] talks to it through an
//!   unbounded command channel and the bounded outbound queue; it never touches the socket.
//! - **States** go `Connecting → Connected → Disconnected → Connecting → …`, and finally
//!   `Closed`. `Connected` means the server's `connection_ack` arrived (not merely that TCP
//!   connected). Watch them with [`Client::state_watch`] or as [`Event::State`].
//! - **Ordering and duplicates.** For a channel subscribed through [`Client::subscribe`], the
//!   application sees its messages in offset order, and never the same offset twice within an
//!   epoch: the driver remembers each channel's `(offset, epoch)` (from the subscribe reply and
//!   every message) and drops any message at or below it. After a reconnect each channel is
//!   resubscribed with `"since"` (§10), so a recovered channel continues exactly where it was:
//!   no gap, no duplicate, even across many reconnects.
//! - **Across [`Event::Lost`] nothing is guaranteed.** When the server cannot replay (restart
//!   without a shared store, history trimmed or expired, a gap above `--recovery-max`) it
//!   answers `recovered:false`; the client then adopts the new `(offset, epoch)` and emits
//!   `Lost`. Messages between the last one delivered and the new position are gone: reload the
//!   channel's state from its source. Offsets of the new epoch start over (a smaller offset is
//!   not a duplicate).
//! - **Publishing is at most once.** A publish is sent when the connection is ready (acked,
//!   the API key accepted if one is configured, and the channels resubscribed), in call order.
//!   While disconnected it waits in the outbound queue (at most [`Options::queue_limit`]
//!   entries; past it [`Error::QueueFull`] at once). A publish that was written to a
//!   connection which then dropped before the reply fails with [`Error::OutcomeUnknown`] and is
//!   **not** resent: the server may or may not have published it, and the memory engine does
//!   not deduplicate. Resend it yourself with the same data if a duplicate is acceptable.
//! - **Events are unbounded.** Every receiver ([`Events`], [`Subscription`]) is an unbounded
//!   mpsc channel. The driver never waits for the application: if it did, it would stop
//!   reading the socket and answering heartbeats, and the server would close it as a slow
//!   consumer. A bounded channel that drops would break the no-gap rule. The cost is that an
//!   event receiver nobody reads grows: read it, or drop it (dropped receivers are pruned).
//! - **Listeners see events from the moment they are made.** Make them right after
//!   `connect`, before the first `.await`, to see the first connection.
//! - **Server input never panics the client.** A frame that is not JSON is ignored; an unknown
//!   `event_type` is delivered as an [`Event::Message`].
//!
//! Channels auto-subscribed by the URL path (`/ws/odds`, `/ws/game/{id}`) are delivered but not
//! tracked: connect to `/ws` and [`Client::subscribe`] for resumption across reconnects.

mod backoff;
mod driver;
mod queue;
mod state;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot, watch, Notify};

pub use backoff::Backoff;
pub use queue::Outbox;
pub use state::{Position, ReplyOutcome, SubOptions, Subscriptions};

/// The error a token callback may return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An async callback producing a fresh token (PROTOCOL.md §9).
pub type GetToken = Arc<dyn Fn() -> BoxFuture<'static, Result<String, BoxError>> + Send + Sync>;

/// How to connect. `Options::default()` is a development client: no token, no API key.
#[derive(Clone)]
pub struct Options {
    /// Sent as `?token=` on the first connection (and on later ones if there is no `get_token`).
    pub token: Option<String>,
    /// Called before each reconnect (and the first connect when `token` is `None`) for a token
    /// to put in the URL, and when 80 % of the token's `expires_in` has passed, to send a
    /// `refresh` on the open connection. A failure counts as a failed connection attempt (or,
    /// for a refresh, lets the token expire: the server closes with 4401 and the client
    /// reconnects).
    pub get_token: Option<GetToken>,
    /// Never put in the URL: sent as `{"event_type":"refresh","data":{"api_key":…}}` right after
    /// each `connection_ack`, before resubscribing; queued messages wait for its answer.
    pub api_key: Option<String>,
    /// Sent as `?user_id=` (development servers with tokens off).
    pub user_id: Option<String>,
    /// Reconnect delay: uniformly random in `[0, min(max_delay, min_delay · 2^attempt)]`.
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Messages queued while disconnected; past it `publish` / `send_raw` fail at once.
    pub queue_limit: usize,
    /// Heartbeat period; `None` = the `heartbeat_interval` of `connection_ack`.
    pub heartbeat_interval: Option<Duration>,
    /// A connection with no frame at all for this long is dead (closed and reconnected);
    /// `None` = the `heartbeat_timeout` of `connection_ack`.
    pub heartbeat_timeout: Option<Duration>,
    /// Longest wait from the start of an attempt to its `connection_ack`.
    pub connect_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            token: None,
            get_token: None,
            api_key: None,
            user_id: None,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(15),
            queue_limit: 1000,
            heartbeat_interval: None,
            heartbeat_timeout: None,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for Options {
    // Secrets are not printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |b: bool| if b { "<set>" } else { "<none>" };
        f.debug_struct("Options")
            .field("token", &set(self.token.is_some()))
            .field("get_token", &set(self.get_token.is_some()))
            .field("api_key", &set(self.api_key.is_some()))
            .field("user_id", &self.user_id)
            .field("min_delay", &self.min_delay)
            .field("max_delay", &self.max_delay)
            .field("queue_limit", &self.queue_limit)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("heartbeat_timeout", &self.heartbeat_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// Connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// An attempt is under way (TCP, upgrade, waiting for `connection_ack`).
    Connecting,
    /// `connection_ack` received.
    Connected,
    /// The connection ended; waiting `retry_in` before the next attempt.
    Disconnected,
    /// Closed by the application; final.
    Closed,
}

/// A message from the server (PROTOCOL.md §3), as received; absent fields are `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub event_type: String,
    pub channel: Option<String>,
    pub offset: Option<u64>,
    pub message_id: Option<String>,
    pub timestamp: Option<String>,
    pub user_id: Option<String>,
    /// The payload (`{}` when absent).
    pub data: Value,
    pub reply_to: Option<String>,
}

impl Message {
    /// Reads the §3 fields leniently: a field of the wrong type counts as absent.
    pub fn from_value(v: &Value) -> Option<Message> {
        let o = v.as_object()?;
        let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_owned);
        Some(Message {
            event_type: s("event_type")?,
            channel: s("channel"),
            offset: o.get("offset").and_then(Value::as_u64),
            message_id: s("message_id"),
            timestamp: s("timestamp"),
            user_id: s("user_id"),
            data: o
                .get("data")
                .cloned()
                .unwrap_or_else(|| Value::Object(Map::new())),
            reply_to: s("reply_to"),
        })
    }
}

/// What the client reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The state changed.
    State { state: State, previous: State },
    /// `connection_ack` arrived; `ack` is its `data`.
    Connected { connection_id: String, ack: Value },
    /// The connection (or an attempt) ended: the close code if the server sent one, why, and
    /// how long until the next attempt.
    Disconnected {
        code: Option<u16>,
        reason: String,
        retry_in: Duration,
    },
    /// A server message: channel messages (deduplicated), broadcasts, direct messages,
    /// `join`/`leave`, unknown event types, replies to [`Client::send_raw`].
    Message(Message),
    /// A subscribe reply. `recovered` is `Some` for a resume with `since`; `offset`/`epoch`
    /// are the reply's (the channel's top), absent if the server could not say.
    Subscribed {
        channel: String,
        offset: Option<u64>,
        epoch: Option<String>,
        recovered: Option<bool>,
    },
    /// A resume was answered `recovered:false` (follows that [`Event::Subscribed`]): messages
    /// were missed; reload the channel. `offset`/`epoch` are the position adopted.
    Lost {
        channel: String,
        offset: Option<u64>,
        epoch: Option<String>,
    },
    /// An `error` from the server that no publish future took: `channel` is set when it
    /// refused a subscribe of that channel (which is then no longer tracked).
    ServerError {
        code: String,
        message: String,
        reply_to: Option<String>,
        channel: Option<String>,
    },
}

impl Event {
    /// The channel this event is about, if any.
    pub fn channel(&self) -> Option<&str> {
        match self {
            Event::Message(m) => m.channel.as_deref(),
            Event::Subscribed { channel, .. } | Event::Lost { channel, .. } => Some(channel),
            Event::ServerError { channel, .. } => channel.as_deref(),
            _ => None,
        }
    }
}

/// One channel's outcome of a publish (the `results` of PROTOCOL.md §7).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ChannelResult {
    pub channel: String,
    pub offset: u64,
    pub epoch: String,
    #[serde(default)]
    pub recipients: u64,
}

/// Why a send or publish failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("outbound queue full ({limit} messages waiting for the connection)")]
    QueueFull { limit: usize },
    #[error("client closed")]
    Closed,
    #[error("outcome unknown: the connection dropped after the publish was sent and before its reply; it was not resent")]
    OutcomeUnknown,
    #[error("server refused: {code}: {message}")]
    Server { code: String, message: String },
    #[error("unreadable reply: {0}")]
    BadReply(String),
}

/// Receives [`Event`]s (unbounded; see the module docs).
#[derive(Debug)]
pub struct Events {
    rx: mpsc::UnboundedReceiver<Event>,
}

impl Events {
    /// The next event; `None` once the client is closed and everything was read.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }
}

/// One channel's events: its messages, its [`Event::Subscribed`] / [`Event::Lost`] notices and
/// an [`Event::ServerError`] refusing it. Dropping it stops the delivery to it but does not
/// unsubscribe: call [`Client::unsubscribe`].
#[derive(Debug)]
pub struct Subscription {
    channel: String,
    events: Events,
}

impl Subscription {
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The next event of this channel.
    pub async fn recv(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    pub fn try_recv(&mut self) -> Option<Event> {
        self.events.try_recv()
    }
}

/// Which events a listener gets.
#[derive(Debug, Clone)]
enum Scope {
    All,
    Channel(String),
    EventType(String),
}

impl Scope {
    fn wants(&self, ev: &Event) -> bool {
        match self {
            Scope::All => true,
            Scope::Channel(c) => ev.channel() == Some(c.as_str()),
            Scope::EventType(t) => matches!(ev, Event::Message(m) if m.event_type == *t),
        }
    }
}

/// The listeners, shared by the handles (which add) and the driver (which delivers and prunes).
#[derive(Default)]
struct Listeners {
    list: Mutex<Vec<(Scope, mpsc::UnboundedSender<Event>)>>,
}

impl Listeners {
    fn add(&self, scope: Scope) -> Events {
        let (tx, rx) = mpsc::unbounded_channel();
        self.list.lock().push((scope, tx));
        Events { rx }
    }

    /// Delivers `ev` to every listener that wants it; drops the ones whose receiver is gone.
    fn emit(&self, ev: &Event) {
        self.list
            .lock()
            .retain(|(scope, tx)| !scope.wants(ev) || tx.send(ev.clone()).is_ok());
    }
}

/// Where the outcome of one publish goes.
type PublishReply = oneshot::Sender<Result<Vec<ChannelResult>, Error>>;

/// A message waiting to be written: its text, and for a publish its id and its caller.
struct Outgoing {
    text: String,
    publish: Option<(String, PublishReply)>,
}

/// State shared by the handles and the driver.
struct Shared {
    listeners: Listeners,
    outbox: Mutex<Outbox<Outgoing>>,
    /// Wakes the driver when the outbox gets an item.
    queued: Notify,
    next_id: AtomicU64,
    /// Set by the driver (holding `outbox`) when it stops; sends then fail with `Closed`.
    closed: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn next_id(&self, prefix: &str) -> String {
        format!(
            "{prefix}{}",
            self.next_id.fetch_add(1, Ordering::Relaxed) + 1
        )
    }
}

enum Command {
    Subscribe(String, SubOptions),
    Unsubscribe(String),
    Close(oneshot::Sender<()>),
}

/// A handle on the connection. Methods take `&self`; share it with an `Arc`. Dropping the
/// last handle closes the connection like [`Client::close`].
pub struct Client {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    state: watch::Receiver<State>,
}

impl Client {
    /// Starts the driver task (inside a tokio runtime) and returns at once, in `Connecting`.
    pub fn connect(url: &str, options: Options) -> Client {
        let shared = Arc::new(Shared {
            listeners: Listeners::default(),
            outbox: Mutex::new(Outbox::new(options.queue_limit)),
            queued: Notify::new(),
            next_id: AtomicU64::new(0),
            closed: false.into(),
        });
        let (commands, rx) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(State::Connecting);
        tokio::spawn(driver::run(
            url.to_owned(),
            options,
            shared.clone(),
            rx,
            state_tx,
        ));
        Client {
            shared,
            commands,
            state,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        *self.state.borrow()
    }

    /// A receiver of state changes (`changed().await`, `wait_for(..)`).
    pub fn state_watch(&self) -> watch::Receiver<State> {
        self.state.clone()
    }

    /// Every event from now on.
    pub fn events(&self) -> Events {
        self.shared.listeners.add(Scope::All)
    }

    /// Messages of one `event_type` (any channel) from now on, as [`Event::Message`].
    pub fn on_event(&self, event_type: &str) -> Events {
        self.shared
            .listeners
            .add(Scope::EventType(event_type.to_owned()))
    }

    /// Events of one channel from now on, without subscribing (e.g. a channel the URL path
    /// subscribed to, or a second reader of a subscribed one).
    pub fn on_channel(&self, channel: &str) -> Events {
        self.shared
            .listeners
            .add(Scope::Channel(channel.to_owned()))
    }

    /// Subscribes to `channel` (now if connected, else on connect) and keeps it subscribed
    /// across reconnects, resuming from the last position. Calling it again for the same
    /// channel changes its options and returns another reader.
    pub fn subscribe(&self, channel: &str, options: SubOptions) -> Subscription {
        let events = self.on_channel(channel);
        let _ = self
            .commands
            .send(Command::Subscribe(channel.to_owned(), options));
        Subscription {
            channel: channel.to_owned(),
            events,
        }
    }

    /// Stops tracking `channel` and unsubscribes from it if connected.
    pub fn unsubscribe(&self, channel: &str) {
        let _ = self.commands.send(Command::Unsubscribe(channel.to_owned()));
    }

    /// Publishes `data` as `event_type` to `channel` over the WebSocket (needs the API key or a
    /// token with a `publish` claim). Queued **when called**, not when awaited; the future
    /// resolves with the reply's `results`, or the reason it failed. Dropping the future does
    /// not cancel the publish.
    pub fn publish(
        &self,
        channel: &str,
        event_type: &str,
        data: Value,
    ) -> impl Future<Output = Result<Vec<ChannelResult>, Error>> + Send + 'static {
        let id = self.shared.next_id("p");
        let text = serde_json::json!({
            "event_type": "publish",
            "message_id": id,
            "data": {"channel": channel, "event_type": event_type, "data": data},
        })
        .to_string();
        let (tx, rx) = oneshot::channel();
        let queued = self.enqueue(Outgoing {
            text,
            publish: Some((id, tx)),
        });
        async move {
            queued?;
            rx.await.unwrap_or(Err(Error::Closed))
        }
    }

    /// Sends any JSON message, through the same ordered, bounded queue as `publish`. Replies
    /// to it arrive as [`Event::Message`].
    pub fn send_raw(&self, message: Value) -> Result<(), Error> {
        self.enqueue(Outgoing {
            text: message.to_string(),
            publish: None,
        })
    }

    fn enqueue(&self, item: Outgoing) -> Result<(), Error> {
        let mut q = self.shared.outbox.lock();
        // Read under the lock: the driver sets it and drains the queue under the same lock, so
        // nothing can be queued after the final drain (its caller would wait forever).
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let limit = q.limit();
        q.push(item).map_err(|_| Error::QueueFull { limit })?;
        drop(q);
        self.shared.queued.notify_one();
        Ok(())
    }

    /// Sends a 1000 close, waits (briefly) for the server's, and ends the driver. Queued
    /// messages fail with [`Error::Closed`], unanswered publishes with [`Error::OutcomeUnknown`].
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_are_read_leniently() {
        let m = Message::from_value(&json!({"event_type":"score","channel":"c","offset":3,
            "message_id":"m","timestamp":"t","user_id":"u","reply_to":"r","data":{"n":1}}))
        .unwrap();
        assert_eq!(
            (m.channel.as_deref(), m.offset, m.reply_to.as_deref()),
            (Some("c"), Some(3), Some("r"))
        );
        let m = Message::from_value(&json!({"event_type":"x","offset":-1,"channel":5})).unwrap();
        assert_eq!((m.offset, m.channel, m.data), (None, None, json!({})));
        assert!(Message::from_value(&json!({"data":{}})).is_none());
        assert!(Message::from_value(&json!([1])).is_none());
    }

    #[test]
    fn scopes_route_by_channel_and_event_type() {
        let msg = |ch: &str, et: &str| {
            Event::Message(Message::from_value(&json!({"event_type":et,"channel":ch})).unwrap())
        };
        let ch = Scope::Channel("odds".into());
        let et = Scope::EventType("score".into());
        assert!(ch.wants(&msg("odds", "x")) && !ch.wants(&msg("games", "x")));
        assert!(et.wants(&msg("games", "score")) && !et.wants(&msg("games", "x")));
        let lost = Event::Lost {
            channel: "odds".into(),
            offset: None,
            epoch: None,
        };
        assert!(ch.wants(&lost) && !et.wants(&lost) && Scope::All.wants(&lost));
        let state = Event::State {
            state: State::Connected,
            previous: State::Connecting,
        };
        assert!(!ch.wants(&state) && Scope::All.wants(&state));
    }

    #[test]
    fn listeners_are_pruned_when_dropped() {
        let l = Listeners::default();
        let mut a = l.add(Scope::All);
        let b = l.add(Scope::All);
        drop(b);
        let ev = Event::State {
            state: State::Closed,
            previous: State::Connected,
        };
        l.emit(&ev);
        assert_eq!(l.list.lock().len(), 1);
        assert_eq!(a.try_recv(), Some(ev));
    }

    #[test]
    fn options_debug_hides_secrets() {
        let o = Options {
            token: Some("secret-token".into()),
            api_key: Some("secret-key".into()),
            ..Options::default()
        };
        let s = format!("{o:?}");
        assert!(!s.contains("secret"), "{s}");
    }
}
