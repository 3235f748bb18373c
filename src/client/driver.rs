//! The driver: the one task that owns the socket. It connects, reads every frame, writes every
//! message, runs the heartbeat, liveness, reconnect and token-refresh timers, and applies the
//! pure parts ([`Backoff`], [`Subscriptions`], the outbox). It waits on the network, the
//! timers and the handles' commands, never on the application (events go out on unbounded
//! channels).
//!
//! One connection, in order:
//!
//! ```text
//! Connecting ── upgrade ── connection_ack ──▶ Connected
//!                           │ refresh {api_key}        (if configured; queued messages wait for its answer)
//!                           │ user_subscription × n    (with since once a position is known)
//!                           │ queued messages, in call order
//!                           ▼
//!               heartbeats every interval; no frame for heartbeat_timeout = dead
//! end of connection ──▶ Disconnected (retry_in from the backoff) ──▶ Connecting …
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{
    Backoff, BoxError, ChannelResult, Command, Error, Event, Message, Options, Outgoing,
    PublishReply, Shared, State, Subscriptions,
};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Used when `connection_ack` gives no (usable) interval.
const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `close()` waits for each step of the close handshake.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// Share of `expires_in` after which the token is refreshed.
const REFRESH_AT: f64 = 0.8;

/// Why a connection (or an attempt) ended.
struct Ended {
    code: Option<u16>,
    reason: String,
}

impl Ended {
    fn new(reason: impl Into<String>) -> Ended {
        Ended {
            code: None,
            reason: reason.into(),
        }
    }
}

enum End {
    /// Reconnect after the backoff.
    Lost(Ended),
    /// The application closed the client.
    Close,
}

/// One connection's state.
struct Conn {
    acked: bool,
    /// Queued messages may go (acked, API key answered).
    ready: bool,
    /// The `message_id` of the API-key refresh, until answered.
    key_id: Option<String>,
    /// Publishes written and not yet answered, by `message_id`.
    inflight: HashMap<String, PublishReply>,
    /// Subscribe requests not yet answered: `message_id` → channel.
    sub_ids: HashMap<String, String>,
    last_frame: Instant,
    ack_deadline: Instant,
    heartbeat_interval: Duration,
    heartbeat_timeout: Duration,
    next_heartbeat: Instant,
    refresh_at: Option<Instant>,
    refreshing: Option<BoxFuture<'static, Result<String, BoxError>>>,
}

/// What woke the session loop.
enum Wake {
    Frame(Option<Result<WsMessage, tungstenite::Error>>),
    Command(Option<Command>),
    Queued,
    Heartbeat,
    Dead,
    RefreshDue,
    Token(Result<String, BoxError>),
}

struct Driver {
    url: String,
    options: Options,
    shared: Arc<Shared>,
    commands: mpsc::UnboundedReceiver<Command>,
    state: watch::Sender<State>,
    subs: Subscriptions,
    backoff: Backoff,
    rng: StdRng,
    /// The token for the next URL (the initial one is used once, then `get_token` if set).
    token: Option<String>,
    initial_token_used: bool,
    /// Who to tell when the close is done.
    close_done: Option<oneshot::Sender<()>>,
}

pub(super) async fn run(
    url: String,
    options: Options,
    shared: Arc<Shared>,
    commands: mpsc::UnboundedReceiver<Command>,
    state: watch::Sender<State>,
) {
    let mut d = Driver {
        url,
        backoff: Backoff::new(options.min_delay, options.max_delay),
        token: options.token.clone(),
        options,
        shared,
        commands,
        state,
        subs: Subscriptions::default(),
        rng: StdRng::from_entropy(),
        initial_token_used: false,
        close_done: None,
    };
    d.main().await;
}

impl Driver {
    async fn main(&mut self) {
        loop {
            self.set_state(State::Connecting);
            let ended = match self.attempt().await {
                End::Close => break,
                End::Lost(e) => e,
            };
            let retry_in = self.backoff.next_delay(&mut self.rng);
            tracing::debug!(code = ?ended.code, reason = %ended.reason, ?retry_in, "huddle client disconnected");
            self.set_state(State::Disconnected);
            self.emit(Event::Disconnected {
                code: ended.code,
                reason: ended.reason,
                retry_in,
            });
            if self
                .offline(sleep_until(Instant::now() + retry_in))
                .await
                .is_none()
            {
                break;
            }
        }
        self.finish();
    }

    /// Runs `fut` while handling commands that need no connection; `None` if the client was
    /// closed meanwhile.
    async fn offline<F: Future>(&mut self, fut: F) -> Option<F::Output> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                out = &mut fut => return Some(out),
                cmd = self.commands.recv() => match cmd {
                    None => return None,
                    Some(Command::Close(done)) => {
                        self.close_done = Some(done);
                        return None;
                    }
                    Some(Command::Subscribe(channel, options)) => self.subs.add(&channel, options),
                    Some(Command::Unsubscribe(channel)) => {
                        self.subs.remove(&channel);
                    }
                },
            }
        }
    }

    /// One connection attempt and, if it succeeds, the connection.
    async fn attempt(&mut self) -> End {
        let started = Instant::now();
        let use_initial = !self.initial_token_used && self.token.is_some();
        self.initial_token_used = true;
        if let (false, Some(get)) = (use_initial, self.options.get_token.clone()) {
            match self.offline(get()).await {
                None => return End::Close,
                Some(Ok(t)) => self.token = Some(t),
                Some(Err(e)) => return End::Lost(Ended::new(format!("get_token failed: {e}"))),
            }
        }
        let url = build_url(
            &self.url,
            self.token.as_deref(),
            self.options.user_id.as_deref(),
        );
        let limit = self.options.connect_timeout;
        let ws = match self
            .offline(timeout(limit, tokio_tungstenite::connect_async(url)))
            .await
        {
            None => return End::Close,
            Some(Err(_)) => return End::Lost(Ended::new(format!("connect timed out ({limit:?})"))),
            Some(Ok(Err(e))) => return End::Lost(Ended::new(describe(&e))),
            Some(Ok(Ok((ws, _response)))) => ws,
        };
        self.session(ws, started + limit).await
    }

    /// Runs one upgraded connection until it ends.
    async fn session(&mut self, mut ws: Ws, ack_deadline: Instant) -> End {
        let now = Instant::now();
        let mut conn = Conn {
            acked: false,
            ready: false,
            key_id: None,
            inflight: HashMap::new(),
            sub_ids: HashMap::new(),
            last_frame: now,
            ack_deadline,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            next_heartbeat: now,
            refresh_at: None,
            refreshing: None,
        };
        let end = loop {
            match self.step(&mut ws, &mut conn).await {
                Ok(None) => {}
                Ok(Some(end)) => break end,
                Err(ended) => break End::Lost(ended),
            }
        };
        // Written but unanswered: the server may or may not have published them.
        for (_, reply) in conn.inflight.drain() {
            let _ = reply.send(Err(Error::OutcomeUnknown));
        }
        end
    }

    /// Waits for the next thing to do and does it.
    async fn step(&mut self, ws: &mut Ws, conn: &mut Conn) -> Result<Option<End>, Ended> {
        let dead_at = if conn.acked {
            conn.last_frame + conn.heartbeat_timeout
        } else {
            conn.ack_deadline
        };
        let far = Instant::now() + Duration::from_secs(86_400);
        let can_refresh = self.options.get_token.is_some() && conn.refreshing.is_none();
        let wake = tokio::select! {
            f = ws.next() => Wake::Frame(f),
            c = self.commands.recv() => Wake::Command(c),
            _ = self.shared.queued.notified(), if conn.ready => Wake::Queued,
            _ = sleep_until(conn.next_heartbeat), if conn.acked => Wake::Heartbeat,
            _ = sleep_until(dead_at) => Wake::Dead,
            _ = sleep_until(conn.refresh_at.unwrap_or(far)), if can_refresh && conn.refresh_at.is_some() => Wake::RefreshDue,
            t = poll_opt(&mut conn.refreshing) => Wake::Token(t),
        };
        match wake {
            Wake::Frame(None) => return Err(Ended::new("connection ended")),
            Wake::Frame(Some(Err(e))) => return Err(Ended::new(describe(&e))),
            Wake::Frame(Some(Ok(frame))) => {
                conn.last_frame = Instant::now();
                match frame {
                    WsMessage::Text(text) => self.on_text(ws, conn, &text).await?,
                    WsMessage::Close(frame) => {
                        // tungstenite has queued the close reply; flush it, briefly.
                        let _ = timeout(CLOSE_WAIT, ws.close(None)).await;
                        return Err(match frame {
                            Some(f) => Ended {
                                code: Some(u16::from(f.code)),
                                reason: f.reason.into_owned(),
                            },
                            None => Ended::new("closed without a code"),
                        });
                    }
                    // Pings are answered by tungstenite; binary frames are not part of the protocol.
                    _ => {}
                }
            }
            Wake::Command(None) => {
                close_handshake(ws).await;
                return Ok(Some(End::Close));
            }
            Wake::Command(Some(cmd)) => match cmd {
                Command::Close(done) => {
                    self.close_done = Some(done);
                    close_handshake(ws).await;
                    return Ok(Some(End::Close));
                }
                Command::Subscribe(channel, options) => {
                    self.subs.add(&channel, options);
                    if conn.acked {
                        self.send_subscribe(ws, conn, &channel, false).await?;
                    }
                }
                Command::Unsubscribe(channel) => {
                    if self.subs.remove(&channel) && conn.acked {
                        let id = self.shared.next_id("u");
                        let m = json!({"event_type":"user_unsubscription","message_id":id,
                            "data":{"channel":channel}});
                        send(ws, conn, m.to_string()).await?;
                    }
                }
            },
            Wake::Queued => self.flush(ws, conn).await?,
            Wake::Heartbeat => {
                conn.next_heartbeat = Instant::now() + conn.heartbeat_interval;
                send(ws, conn, r#"{"event_type":"heartbeat"}"#.to_owned()).await?;
            }
            Wake::Dead => {
                return Err(Ended::new(if conn.acked {
                    format!("no frame for {:?}", conn.heartbeat_timeout)
                } else {
                    "no connection_ack in time".to_owned()
                }))
            }
            Wake::RefreshDue => {
                conn.refresh_at = None;
                if let Some(get) = &self.options.get_token {
                    conn.refreshing = Some(get());
                }
            }
            Wake::Token(result) => {
                conn.refreshing = None;
                match result {
                    Ok(token) => {
                        let id = self.shared.next_id("t");
                        let m =
                            json!({"event_type":"refresh","message_id":id,"data":{"token":token}});
                        self.token = Some(token);
                        send(ws, conn, m.to_string()).await?;
                    }
                    // The server closes with 4401 at expiry; the reconnect asks again.
                    Err(e) => tracing::warn!("huddle client: get_token failed for a refresh: {e}"),
                }
            }
        }
        Ok(None)
    }

    /// One text message from the server.
    async fn on_text(&mut self, ws: &mut Ws, conn: &mut Conn, text: &str) -> Result<(), Ended> {
        let Ok(value) = serde_json::from_str::<Value>(text) else {
            tracing::debug!("huddle client: ignored a frame that is not JSON");
            return Ok(());
        };
        let Some(msg) = Message::from_value(&value) else {
            tracing::debug!("huddle client: ignored a message without event_type");
            return Ok(());
        };
        let is_error = msg.event_type == "error";
        if let Some(r) = msg.reply_to.as_deref() {
            if let Some(reply) = conn.inflight.remove(r) {
                let _ = reply.send(publish_outcome(&msg));
                return Ok(());
            }
            if conn.key_id.as_deref() == Some(r) {
                conn.key_id = None;
                if is_error {
                    self.emit(server_error(&msg, None));
                }
                conn.ready = true;
                return self.flush(ws, conn).await;
            }
            if let Some(channel) = conn.sub_ids.remove(r) {
                if is_error {
                    // Refused (forbidden, invalid, too many): not resubscribed after a reconnect.
                    self.subs.remove(&channel);
                    self.emit(server_error(&msg, Some(channel)));
                    return Ok(());
                }
            }
        }
        match msg.event_type.as_str() {
            "connection_ack" => {
                if !conn.acked {
                    self.on_ack(ws, conn, &msg).await?;
                }
            }
            "heartbeat" | "user_unsubscription" => {}
            "refresh" => {
                if let Some(secs) = msg.data.get("expires_in").and_then(Value::as_f64) {
                    conn.refresh_at = refresh_deadline(secs);
                }
            }
            "user_subscription" => self.on_subscribed(&msg),
            "error" => self.emit(server_error(&msg, None)),
            _ => {
                if let (Some(channel), Some(offset)) = (&msg.channel, msg.offset) {
                    if !self.subs.on_message(channel, offset) {
                        tracing::debug!(channel, offset, "huddle client: dropped a duplicate");
                        return Ok(());
                    }
                }
                self.emit(Event::Message(msg));
            }
        }
        Ok(())
    }

    async fn on_ack(&mut self, ws: &mut Ws, conn: &mut Conn, msg: &Message) -> Result<(), Ended> {
        let now = Instant::now();
        let secs = |k: &str| {
            msg.data
                .get(k)
                .and_then(Value::as_f64)
                .and_then(positive_secs)
        };
        conn.acked = true;
        conn.heartbeat_interval = self
            .options
            .heartbeat_interval
            .or_else(|| secs("heartbeat_interval"))
            .unwrap_or(DEFAULT_HEARTBEAT_INTERVAL);
        conn.heartbeat_timeout = self
            .options
            .heartbeat_timeout
            .or_else(|| secs("heartbeat_timeout"))
            .unwrap_or(DEFAULT_HEARTBEAT_TIMEOUT);
        conn.next_heartbeat = now + conn.heartbeat_interval;
        conn.refresh_at = msg
            .data
            .get("expires_in")
            .and_then(Value::as_f64)
            .and_then(refresh_deadline);
        self.backoff.reset();
        self.set_state(State::Connected);
        let connection_id = msg
            .data
            .get("connection_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        self.emit(Event::Connected {
            connection_id,
            ack: msg.data.clone(),
        });
        if let Some(key) = &self.options.api_key {
            let id = self.shared.next_id("k");
            let m = json!({"event_type":"refresh","message_id":id,"data":{"api_key":key}});
            conn.key_id = Some(id);
            send(ws, conn, m.to_string()).await?;
        }
        let channels: Vec<String> = self.subs.channels().map(str::to_owned).collect();
        for channel in channels {
            self.send_subscribe(ws, conn, &channel, true).await?;
        }
        if conn.key_id.is_none() {
            conn.ready = true;
            self.flush(ws, conn).await?;
        }
        Ok(())
    }

    fn on_subscribed(&mut self, msg: &Message) {
        let d = &msg.data;
        let Some(channel) = d.get("channel").and_then(Value::as_str) else {
            return;
        };
        if d.get("status").and_then(Value::as_str) != Some("subscribed") {
            return;
        }
        let offset = d.get("offset").and_then(Value::as_u64);
        let epoch = d.get("epoch").and_then(Value::as_str);
        let recovered = d.get("recovered").and_then(Value::as_bool);
        let Some(outcome) = self.subs.on_reply(channel, offset, epoch, recovered) else {
            return;
        };
        self.emit(Event::Subscribed {
            channel: channel.to_owned(),
            offset,
            epoch: epoch.map(str::to_owned),
            recovered,
        });
        if outcome.lost {
            self.emit(Event::Lost {
                channel: channel.to_owned(),
                offset: outcome.position.as_ref().map(|p| p.offset),
                epoch: outcome.position.map(|p| p.epoch),
            });
        }
    }

    async fn send_subscribe(
        &mut self,
        ws: &mut Ws,
        conn: &mut Conn,
        channel: &str,
        resume: bool,
    ) -> Result<(), Ended> {
        let id = self.shared.next_id("s");
        let Some(request) = self.subs.request(channel, &id, resume) else {
            return Ok(());
        };
        conn.sub_ids.insert(id, channel.to_owned());
        send(ws, conn, request.to_string()).await
    }

    /// Writes everything queued, oldest first.
    async fn flush(&mut self, ws: &mut Ws, conn: &mut Conn) -> Result<(), Ended> {
        loop {
            let item = self.shared.outbox.lock().pop();
            let Some(Outgoing { text, publish }) = item else {
                return Ok(());
            };
            if let Some((id, reply)) = publish {
                // In flight from here: if the write fails, its outcome is unknown.
                conn.inflight.insert(id, reply);
            }
            send(ws, conn, text).await?;
        }
    }

    fn set_state(&mut self, state: State) {
        let previous = self.state.send_replace(state);
        if previous != state {
            self.emit(Event::State { state, previous });
        }
    }

    fn emit(&self, event: Event) {
        self.shared.listeners.emit(&event);
    }

    /// The end: nothing more is sent; queued messages fail; receivers see the end.
    fn finish(&mut self) {
        let queued: Vec<Outgoing> = {
            let mut q = self.shared.outbox.lock();
            self.shared.closed.store(true, Ordering::Release);
            q.drain().collect()
        };
        for item in queued {
            if let Some((_, reply)) = item.publish {
                let _ = reply.send(Err(Error::Closed));
            }
        }
        self.set_state(State::Closed);
        self.shared.listeners.list.lock().clear();
        if let Some(done) = self.close_done.take() {
            let _ = done.send(());
        }
    }
}

/// Writes one text message, bounded by the liveness timeout (a stalled write is a dead link).
async fn send(ws: &mut Ws, conn: &mut Conn, text: String) -> Result<(), Ended> {
    match timeout(conn.heartbeat_timeout, ws.send(WsMessage::Text(text))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Ended::new(format!("send failed: {}", describe(&e)))),
        Err(_) => Err(Ended::new("send stalled")),
    }
}

/// Sends a 1000 close and waits briefly for the server's.
async fn close_handshake(ws: &mut Ws) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    if timeout(CLOSE_WAIT, ws.close(Some(frame))).await.is_err() {
        return;
    }
    let _ = timeout(CLOSE_WAIT, async {
        while let Some(Ok(m)) = ws.next().await {
            if m.is_close() {
                break;
            }
        }
    })
    .await;
}

/// Awaits the future in `f`, or never if there is none.
async fn poll_opt<T>(f: &mut Option<BoxFuture<'static, T>>) -> T {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// The outcome of a publish from its reply.
fn publish_outcome(msg: &Message) -> Result<Vec<ChannelResult>, Error> {
    match msg.event_type.as_str() {
        "publish" => msg
            .data
            .get("results")
            .cloned()
            .ok_or_else(|| Error::BadReply("publish reply without results".into()))
            .and_then(|r| serde_json::from_value(r).map_err(|e| Error::BadReply(e.to_string()))),
        "error" => Err(Error::Server {
            code: data_str(msg, "code"),
            message: data_str(msg, "message"),
        }),
        other => Err(Error::BadReply(format!("{other} in reply to a publish"))),
    }
}

fn server_error(msg: &Message, channel: Option<String>) -> Event {
    Event::ServerError {
        code: data_str(msg, "code"),
        message: data_str(msg, "message"),
        reply_to: msg.reply_to.clone(),
        channel,
    }
}

/// A string field of `data` (empty when absent or not a string).
fn data_str(msg: &Message, key: &str) -> String {
    msg.data
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// `secs` as a duration if it is positive and finite.
fn positive_secs(secs: f64) -> Option<Duration> {
    (secs > 0.0)
        .then(|| Duration::try_from_secs_f64(secs).ok())
        .flatten()
}

/// When to refresh a token valid for `expires_in` seconds from now.
fn refresh_deadline(expires_in: f64) -> Option<Instant> {
    let d = positive_secs(expires_in * REFRESH_AT).unwrap_or(Duration::ZERO);
    // Far-future expiries would overflow `Instant`; a year is as good as never.
    Some(Instant::now() + d.min(Duration::from_secs(365 * 86_400)))
}

/// A short reason for a connection error (an HTTP refusal of the upgrade names its status).
fn describe(e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Http(resp) => format!("upgrade refused: HTTP {}", resp.status()),
        other => other.to_string(),
    }
}

/// `base` with `token` and `user_id` added to its query.
fn build_url(base: &str, token: Option<&str>, user_id: Option<&str>) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    if let Some(t) = token {
        q.append_pair("token", t);
    }
    if let Some(u) = user_id {
        q.append_pair("user_id", u);
    }
    let q = q.finish();
    if q.is_empty() {
        return base.to_owned();
    }
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{q}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_carry_token_and_user_id_but_nothing_else() {
        assert_eq!(build_url("ws://h/ws", None, None), "ws://h/ws");
        assert_eq!(
            build_url("ws://h/ws", Some("a.b+c"), Some("u 1")),
            "ws://h/ws?token=a.b%2Bc&user_id=u+1"
        );
        assert_eq!(
            build_url("ws://h/ws?x=1", None, Some("u")),
            "ws://h/ws?x=1&user_id=u"
        );
    }

    #[test]
    fn publish_replies() {
        let reply = |v: Value| publish_outcome(&Message::from_value(&v).unwrap());
        let ok = reply(
            json!({"event_type":"publish","reply_to":"p1","data":{"results":[
            {"channel":"c","offset":3,"epoch":"E","recipients":2}]}}),
        );
        assert_eq!(
            ok,
            Ok(vec![ChannelResult {
                channel: "c".into(),
                offset: 3,
                epoch: "E".into(),
                recipients: 2
            }])
        );
        let refused = reply(json!({"event_type":"error","reply_to":"p1",
            "data":{"code":"forbidden","message":"no"}}));
        assert_eq!(
            refused,
            Err(Error::Server {
                code: "forbidden".into(),
                message: "no".into()
            })
        );
        assert!(matches!(
            reply(json!({"event_type":"publish","data":{"results":"x"}})),
            Err(Error::BadReply(_))
        ));
        assert!(matches!(
            reply(json!({"event_type":"heartbeat"})),
            Err(Error::BadReply(_))
        ));
    }

    #[test]
    fn durations_from_the_ack_are_checked() {
        assert_eq!(positive_secs(0.25), Some(Duration::from_millis(250)));
        assert_eq!(positive_secs(0.0), None);
        assert_eq!(positive_secs(-1.0), None);
        assert_eq!(positive_secs(f64::NAN), None);
        assert_eq!(positive_secs(f64::INFINITY), None);
        assert!(refresh_deadline(1e300).is_some());
        let at = refresh_deadline(10.0).unwrap();
        let d = at - Instant::now();
        assert!(
            d <= Duration::from_secs(8) && d > Duration::from_secs(7),
            "{d:?}"
        );
    }
}
