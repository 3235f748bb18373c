//! `huddle::client` over real sockets: against the real server through the test proxy (cut,
//! hold, restart on another port), and against a scripted fake server for what the real one
//! cannot be made to do on cue (drop a connection after reading a publish, go silent, send junk).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use huddle::client::{Client, Error, Event, Events, Options, State, SubOptions, Subscription};
use serde_json::{json, Value};
use support::proxy::Proxy;
use support::tokens::{claims, hs256, SECRET};
use support::{Server, WAIT};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

/// Everything an [`Events`] receiver delivered, and a way to wait for the next one that matters.
struct Log {
    events: Events,
    seen: Vec<Event>,
}

impl Log {
    fn new(events: Events) -> Log {
        Log {
            events,
            seen: Vec::new(),
        }
    }

    /// Waits (at most WAIT) for an event matching `pred`, recording everything on the way.
    async fn until(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        loop {
            let ev = tokio::time::timeout(WAIT, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}; seen {:#?}", self.seen))
                .unwrap_or_else(|| panic!("events ended waiting for {what}"));
            self.seen.push(ev.clone());
            if pred(&ev) {
                return ev;
            }
        }
    }

    fn states(&self) -> Vec<(State, State)> {
        self.seen
            .iter()
            .filter_map(|e| match e {
                Event::State { state, previous } => Some((*previous, *state)),
                _ => None,
            })
            .collect()
    }
}

fn is_state(s: State) -> impl Fn(&Event) -> bool {
    move |e| matches!(e, Event::State { state, .. } if *state == s)
}

/// The next `n` channel messages of a subscription as (offset, data.n), skipping notices.
async fn messages(sub: &mut Subscription, n: usize) -> Vec<(u64, u64)> {
    let mut got = Vec::new();
    while got.len() < n {
        let ev = tokio::time::timeout(WAIT, sub.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out; got {got:?}"))
            .expect("subscription ended");
        if let Event::Message(m) = ev {
            got.push((
                m.offset.expect("channel message has an offset"),
                m.data["n"].as_u64().unwrap_or(0),
            ));
        }
    }
    got
}

/// The next notice (Subscribed / Lost / ServerError) of a subscription; fails on a message.
async fn notice(sub: &mut Subscription) -> Event {
    let ev = tokio::time::timeout(WAIT, sub.recv())
        .await
        .expect("timed out waiting for a notice")
        .expect("subscription ended");
    assert!(
        !matches!(ev, Event::Message(_)),
        "expected a notice, got {ev:?}"
    );
    ev
}

async fn http_publish(server: &Server, n: u64) -> Value {
    let r = server
        .post(
            "/api/publish",
            &json!({"channel": "scores", "event_type": "score", "data": {"n": n}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["results"][0].clone()
}

fn is_valid_transition(from: State, to: State) -> bool {
    use State::*;
    matches!(
        (from, to),
        (Connecting, Connected)
            | (Connecting, Disconnected)
            | (Connected, Disconnected)
            | (Disconnected, Connecting)
            | (_, Closed)
    )
}

/// The scenario the JavaScript client's tests run too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_recovers_queues_and_reports_lost_after_a_restart() {
    let args = ["--history-size", "1000", "--jwt-secret", SECRET];
    let mut server = Server::start(&args);
    let proxy = Proxy::start(server.addr).await;
    // A token that may subscribe to and publish on `scores` (not a public channel).
    let token = || {
        hs256(&claims(
            "alice",
            json!({"channels":["scores"],"publish":["scores"]}),
        ))
    };
    let token_calls = Arc::new(AtomicUsize::new(0));
    let calls = token_calls.clone();
    let options = Options {
        token: Some(token()),
        get_token: Some(Arc::new(move || {
            calls.fetch_add(1, Ordering::SeqCst);
            async move { Ok(token()) }.boxed()
        })),
        min_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
        ..Options::default()
    };
    let client = Client::connect(&proxy.ws_url("/ws"), options);
    let mut log = Log::new(client.events());
    let mut sub = client.subscribe("scores", SubOptions::default());
    let mut score_events = client.on_event("score");

    // 1. Connected and subscribed; 1..10 published over HTTP arrive as offsets 1..10.
    log.until("connected", |e| matches!(e, Event::Connected { .. }))
        .await;
    let Event::Subscribed {
        epoch: Some(epoch1),
        recovered: None,
        offset: Some(0),
        ..
    } = notice(&mut sub).await
    else {
        panic!("first subscribe reply: {:?}", log.seen)
    };
    for n in 1..=10 {
        assert_eq!(http_publish(&server, n).await["offset"], n);
    }
    let first: Vec<(u64, u64)> = (1..=10).map(|n| (n, n)).collect();
    assert_eq!(messages(&mut sub, 10).await, first);

    // 2. Cut with reconnects held: Disconnected, then Connecting (held at the proxy).
    proxy.hold(true);
    proxy.cut();
    log.until("disconnected", is_state(State::Disconnected))
        .await;
    log.until("connecting", is_state(State::Connecting)).await;
    assert_eq!(client.state(), State::Connecting);
    for n in 11..=20 {
        assert_eq!(http_publish(&server, n).await["offset"], n);
    }
    // Queued while away; sent after the reconnect and the resubscribe.
    let queued: Vec<_> = (21..=23)
        .map(|n| client.publish("scores", "score", json!({"n": n})))
        .collect();
    proxy.hold(false);
    log.until("reconnected", is_state(State::Connected)).await;
    let Event::Subscribed {
        recovered: Some(true),
        epoch: Some(e),
        ..
    } = notice(&mut sub).await
    else {
        panic!("resubscribe reply: {:?}", log.seen)
    };
    assert_eq!(e, epoch1);
    let second: Vec<(u64, u64)> = (11..=23).map(|n| (n, n)).collect();
    assert_eq!(
        messages(&mut sub, 13).await,
        second,
        "11..20 replayed once, in order, then the three queued publishes"
    );
    for (n, p) in (21..=23).zip(queued) {
        let results = tokio::time::timeout(WAIT, p)
            .await
            .expect("publish answered")
            .expect("publish ok");
        assert_eq!(results.len(), 1);
        assert_eq!(
            (results[0].channel.as_str(), results[0].offset),
            ("scores", n)
        );
        assert_eq!(results[0].epoch, epoch1);
    }

    // 3. Restart: close 1001, a new server on another port with an empty history and a new
    //    epoch; the resubscribe cannot recover, so the client reports Lost.
    proxy.hold(true);
    server.sigterm();
    let ev = log
        .until("the 1001 close", |e| {
            matches!(e, Event::Disconnected { .. })
        })
        .await;
    assert!(
        matches!(
            ev,
            Event::Disconnected {
                code: Some(1001),
                ..
            }
        ),
        "{ev:?}"
    );
    assert!(server.wait_exit(WAIT).success());
    let server2 = Server::start(&args);
    proxy.set_upstream(server2.addr);
    proxy.hold(false);
    log.until("connected to the new server", is_state(State::Connected))
        .await;
    let Event::Subscribed {
        recovered: Some(false),
        epoch: Some(epoch2),
        ..
    } = notice(&mut sub).await
    else {
        panic!("resubscribe reply after the restart: {:?}", log.seen)
    };
    assert_ne!(epoch2, epoch1);
    let lost = notice(&mut sub).await;
    assert_eq!(
        lost,
        Event::Lost {
            channel: "scores".into(),
            offset: Some(0),
            epoch: Some(epoch2.clone())
        }
    );
    for n in 1..=5 {
        assert_eq!(http_publish(&server2, n).await["offset"], n);
    }
    let third: Vec<(u64, u64)> = (1..=5).map(|n| (n, n)).collect();
    assert_eq!(messages(&mut sub, 5).await, third);

    // 4. Every message exactly once (also on the event_type listener and the all-events log),
    //    sane states, a token fetched for each reconnect, and a clean close.
    client.close().await;
    assert_eq!(client.state(), State::Closed);
    assert!(sub.recv().await.is_none(), "nothing after the close");
    while let Some(ev) = log.events.recv().await {
        log.seen.push(ev);
    }
    let mut by_type = Vec::new();
    while let Some(ev) = score_events.recv().await {
        if let Event::Message(m) = ev {
            by_type.push(m.offset.unwrap_or(0));
        }
    }
    let expected: Vec<u64> = (1..=23).chain(1..=5).collect();
    assert_eq!(by_type, expected);
    let states = log.states();
    assert_eq!(states.first(), Some(&(State::Connecting, State::Connected)));
    assert_eq!(states.last().map(|s| s.1), Some(State::Closed));
    for (from, to) in &states {
        assert!(
            is_valid_transition(*from, *to),
            "{from:?} → {to:?} in {states:?}"
        );
    }
    let connects = log
        .seen
        .iter()
        .filter(|e| matches!(e, Event::Connected { .. }))
        .count();
    assert_eq!(connects, 3, "{:?}", log.seen);
    assert!(token_calls.load(Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn the_queue_is_bounded_while_disconnected_and_fails_on_close() {
    let server = Server::start(&[]);
    let proxy = Proxy::start(server.addr).await;
    proxy.hold(true);
    let client = Client::connect(
        &proxy.ws_url("/ws"),
        Options {
            queue_limit: 2,
            ..Options::default()
        },
    );
    let a = client.publish("c", "t", json!({}));
    client
        .send_raw(json!({"event_type":"heartbeat"}))
        .expect("queued");
    let c = client.publish("c", "t", json!({}));
    assert_eq!(
        tokio::time::timeout(WAIT, c).await.expect("fails at once"),
        Err(Error::QueueFull { limit: 2 })
    );
    assert!(matches!(
        client.send_raw(json!({})),
        Err(Error::QueueFull { limit: 2 })
    ));
    assert_eq!(client.state(), State::Connecting);
    tokio::time::timeout(WAIT, client.close())
        .await
        .expect("close while connecting");
    assert_eq!(a.await, Err(Error::Closed));
    assert_eq!(
        client.publish("c", "t", json!({})).await,
        Err(Error::Closed)
    );
    assert_eq!(client.state(), State::Closed);
}

/// A scripted WebSocket server: the test plays the server's side frame by frame.
struct Fake {
    listener: TcpListener,
}

struct FakeConn {
    ws: WebSocketStream<TcpStream>,
    /// Path and query of the upgrade request.
    uri: String,
}

impl Fake {
    async fn start() -> Fake {
        Fake {
            listener: TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/ws", self.listener.local_addr().expect("addr"))
    }

    // The callback's `Result<Response, ErrorResponse>` is tungstenite's signature, not ours.
    #[allow(clippy::result_large_err)]
    async fn accept(&self) -> FakeConn {
        let (stream, _) = tokio::time::timeout(WAIT, self.listener.accept())
            .await
            .expect("client reconnects")
            .expect("accept");
        let uri = Arc::new(std::sync::Mutex::new(String::new()));
        let seen = uri.clone();
        let callback = move |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                             resp| {
            *seen.lock().unwrap() = req.uri().to_string();
            Ok(resp)
        };
        let ws = tokio_tungstenite::accept_hdr_async(stream, callback)
            .await
            .expect("upgrade");
        let uri = uri.lock().unwrap().clone();
        FakeConn { ws, uri }
    }
}

impl FakeConn {
    async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    async fn send_text(&mut self, t: &str) {
        self.ws
            .send(WsMessage::Text(t.to_owned()))
            .await
            .expect("send");
    }

    async fn ack(&mut self, id: &str, interval: f64, timeout: f64) {
        self.send(
            json!({"event_type":"connection_ack","data":{"connection_id":id,
            "heartbeat_interval":interval,"heartbeat_timeout":timeout,"subscriptions":[]}}),
        )
        .await;
    }

    /// The next client message, skipping heartbeats.
    async fn recv(&mut self) -> Value {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("client message")
                .expect("stream open")
                .expect("frame");
            if let WsMessage::Text(t) = m {
                let v: Value = serde_json::from_str(&t).expect("client sends JSON");
                if v["event_type"] != "heartbeat" {
                    return v;
                }
            }
        }
    }
}

#[tokio::test]
async fn api_key_first_no_resend_of_unanswered_publishes_junk_survived_and_silence_is_death() {
    let fake = Fake::start().await;
    let client = Client::connect(
        &fake.url(),
        Options {
            api_key: Some("secret-key".into()),
            user_id: Some("u1".into()),
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            ..Options::default()
        },
    );
    let mut log = Log::new(client.events());
    let mut sub = client.subscribe("c", SubOptions::default());
    let lost_publish = client.publish("c", "t", json!({"n": 1}));

    // First connection: the API key goes in a refresh, never in the URL, before the subscribe;
    // the queued publish waits for the key's answer.
    let mut c1 = fake.accept().await;
    assert_eq!(c1.uri, "/ws?user_id=u1");
    c1.ack("a", 30.0, 60.0).await;
    let refresh = c1.recv().await;
    assert_eq!(refresh["event_type"], "refresh", "{refresh}");
    assert_eq!(refresh["data"], json!({"api_key":"secret-key"}));
    let subscribe = c1.recv().await;
    assert_eq!(subscribe["event_type"], "user_subscription", "{subscribe}");
    assert_eq!(subscribe["data"], json!({"channel":"c"}));
    c1.send(
        json!({"event_type":"refresh","reply_to":refresh["message_id"],"data":{"api_key":true}}),
    )
    .await;
    let publish = c1.recv().await;
    assert_eq!(publish["event_type"], "publish", "{publish}");
    assert_eq!(
        publish["data"],
        json!({"channel":"c","event_type":"t","data":{"n":1}})
    );
    c1.send(
        json!({"event_type":"user_subscription","reply_to":subscribe["message_id"],
        "data":{"channel":"c","status":"subscribed","offset":0,"epoch":"E"}}),
    )
    .await;
    // Junk and oddities: none of it may hurt; unknown events pass through.
    for junk in [
        "not json",
        "[1,2]",
        "{\"data\":{}}",
        "{\"event_type\":7}",
        "null",
    ] {
        c1.send_text(junk).await;
    }
    c1.send(json!({"event_type":"weird_thing","data":5})).await;
    for offset in [1, 1, 2, 1] {
        c1.send(json!({"event_type":"t","channel":"c","offset":offset,"data":{"n":offset}}))
            .await;
    }
    assert!(matches!(notice(&mut sub).await, Event::Subscribed { .. }));
    assert_eq!(messages(&mut sub, 2).await, [(1, 1), (2, 2)]);
    log.until(
        "the unknown event",
        |e| matches!(e, Event::Message(m) if m.event_type == "weird_thing" && m.data == json!(5)),
    )
    .await;
    // The connection drops with the publish unanswered: its outcome is unknown.
    drop(c1);
    assert_eq!(
        tokio::time::timeout(WAIT, lost_publish)
            .await
            .expect("fails"),
        Err(Error::OutcomeUnknown)
    );
    let second = client.publish("c", "t", json!({"n": 2}));

    // Second connection: key again, resume from offset 2, and only the new publish is sent.
    let mut c2 = fake.accept().await;
    c2.ack("b", 0.05, 0.3).await;
    let refresh = c2.recv().await;
    assert_eq!(refresh["data"]["api_key"], "secret-key");
    let subscribe = c2.recv().await;
    assert_eq!(
        subscribe["data"],
        json!({"channel":"c","since":{"offset":2,"epoch":"E"}})
    );
    c2.send(
        json!({"event_type":"error","reply_to":refresh["message_id"],
        "data":{"code":"forbidden","message":"bad key"}}),
    )
    .await;
    let publish = c2.recv().await;
    assert_eq!(publish["data"]["data"], json!({"n": 2}), "not the lost one");
    c2.send(
        json!({"event_type":"error","reply_to":publish["message_id"],
        "data":{"code":"forbidden","message":"no publish right"}}),
    )
    .await;
    assert_eq!(
        second.await,
        Err(Error::Server {
            code: "forbidden".into(),
            message: "no publish right".into()
        })
    );
    log.until(
        "the refused key",
        |e| matches!(e, Event::ServerError { code, .. } if code == "forbidden"),
    )
    .await;
    // Heartbeats every 50 ms from the ack; then silence for 0.3 s means a dead connection.
    let hb = tokio::time::timeout(WAIT, c2.ws.next())
        .await
        .expect("heartbeat");
    assert!(
        matches!(&hb, Some(Ok(WsMessage::Text(t))) if t.contains("heartbeat")),
        "{hb:?}"
    );
    let ev = log
        .until("the silence", |e| matches!(e, Event::Disconnected { .. }))
        .await;
    assert!(
        matches!(&ev, Event::Disconnected { code: None, reason, .. } if reason.contains("no frame")),
        "{ev:?}"
    );
    let mut c3 = fake.accept().await;
    c3.ack("c", 30.0, 60.0).await;
    log.until(
        "third connection",
        |e| matches!(e, Event::Connected { connection_id, .. } if connection_id == "c"),
    )
    .await;
    client.close().await;
    // The close handshake: a 1000 close frame reaches the server.
    let mut close = None;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(WAIT, c3.ws.next()).await {
        if let WsMessage::Close(f) = m {
            close = f.map(|f| u16::from(f.code));
            break;
        }
    }
    assert_eq!(close, Some(1000));
    assert_eq!(client.state(), State::Closed);
}

#[tokio::test]
async fn tokens_are_refreshed_at_80_percent_and_fetched_again_for_a_reconnect() {
    let fake = Fake::start().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let client = Client::connect(
        &fake.url(),
        Options {
            token: Some("t0".into()),
            get_token: Some(Arc::new(move || {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                async move { Ok(format!("t{n}")) }.boxed()
            })),
            min_delay: Duration::from_millis(10),
            ..Options::default()
        },
    );
    let mut c1 = fake.accept().await;
    assert_eq!(
        c1.uri, "/ws?token=t0",
        "the initial token, not the callback"
    );
    let acked = std::time::Instant::now();
    c1.send(
        json!({"event_type":"connection_ack","data":{"connection_id":"a",
        "heartbeat_interval":30,"heartbeat_timeout":60,"expires_in":0.5}}),
    )
    .await;
    let refresh = c1.recv().await;
    let after = acked.elapsed();
    assert_eq!(refresh["event_type"], "refresh", "{refresh}");
    assert_eq!(refresh["data"], json!({"token":"t1"}));
    assert!(
        after >= Duration::from_millis(350),
        "refreshed after {after:?}, not at 80 %"
    );
    // The reply's expires_in schedules the next refresh.
    c1.send(
        json!({"event_type":"refresh","reply_to":refresh["message_id"],
        "data":{"expires_in":0.25}}),
    )
    .await;
    assert_eq!(c1.recv().await["data"], json!({"token":"t2"}));
    drop(c1);
    let c2 = fake.accept().await;
    assert_eq!(c2.uri, "/ws?token=t3", "a fresh token for the reconnect");
    client.close().await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn an_api_key_client_publishes_and_reads_the_servers_stats_with_the_key_out_of_the_url() {
    let server = Server::start(&[]);
    let options = Options {
        api_key: Some(support::API_KEY.into()),
        ..Options::default()
    };
    let client = Client::connect(&server.ws_url("/ws"), options);
    let mut stats = client.subscribe("huddle:stats", SubOptions::default());
    let results = tokio::time::timeout(WAIT, client.publish("odds", "tick", json!({"n": 1})))
        .await
        .expect("publish answered")
        .expect("the key lets the connection publish");
    assert_eq!(
        (results[0].channel.as_str(), results[0].offset),
        ("odds", 1)
    );
    let push = loop {
        match tokio::time::timeout(WAIT, stats.recv())
            .await
            .expect("a stats push")
        {
            Some(Event::Message(m)) => break m,
            Some(Event::ServerError { code, message, .. }) => panic!("{code}: {message}"),
            Some(_) => {}
            None => panic!("subscription ended"),
        }
    };
    assert_eq!(push.event_type, "stats");
    assert_eq!(push.offset, None);
    assert_eq!(push.data["connections"], 1, "{}", push.data);
    client.close().await;
    assert!(server.logs().iter().all(|l| !l.contains(support::API_KEY)));
}

/// The server itself closes the connection (4001: this client sends no heartbeat within
/// `--heartbeat-timeout`) and keeps its history: what was published while the client was away
/// arrives once, in order, after `recovered:true`.
#[tokio::test]
async fn the_server_closing_the_connection_loses_nothing() {
    let server = Server::start(support::jsprobe::SERVER_CLOSE_ARGS);
    let proxy = Proxy::start(server.addr).await;
    let silent = Duration::from_secs(3600);
    let options = Options {
        heartbeat_interval: Some(silent),
        heartbeat_timeout: Some(silent),
        min_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        ..Options::default()
    };
    let client = Client::connect(&proxy.ws_url("/ws"), options);
    let mut log = Log::new(client.events());
    let mut sub = client.subscribe("scores", SubOptions::default());
    assert!(matches!(
        notice(&mut sub).await,
        Event::Subscribed {
            recovered: None,
            ..
        }
    ));
    for n in 1..=5 {
        http_publish(&server, n).await;
    }
    assert_eq!(
        messages(&mut sub, 5).await,
        (1..=5).map(|n| (n, n)).collect::<Vec<_>>()
    );
    proxy.hold(true);
    let closed = log
        .until("the server's close", |e| {
            matches!(e, Event::Disconnected { .. })
        })
        .await;
    assert!(
        matches!(
            closed,
            Event::Disconnected {
                code: Some(4001),
                ..
            }
        ),
        "{closed:?}"
    );
    for n in 6..=10 {
        http_publish(&server, n).await;
    }
    proxy.hold(false);
    assert!(
        matches!(
            notice(&mut sub).await,
            Event::Subscribed {
                recovered: Some(true),
                ..
            }
        ),
        "{:?}",
        log.seen
    );
    assert_eq!(
        messages(&mut sub, 5).await,
        (6..=10).map(|n| (n, n)).collect::<Vec<_>>()
    );
    client.close().await;
}
