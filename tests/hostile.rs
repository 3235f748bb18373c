//! The core under hostile or merely busy load (issue "The core, rebuilt to hold under hostile
//! load"): each test reproduces one observed failure over real sockets and asserts what a user
//! sees instead. Run against an older build with `HUDDLE_TEST_BIN=path cargo test --test hostile`.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::{client_frame, odds, parse_server_frame, RawWs, Server, API_KEY, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// These tests load the machine and some measure latency: they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn publish_frame(id: &str, channel: &str, n: u64) -> Message {
    Message::Text(
        json!({"event_type":"publish","message_id":id,
               "data":{"channel":channel,"event_type":"tick","data":{"n":n}}})
        .to_string(),
    )
}

/// Time of one `GET /healthz` round trip.
async fn healthz_latency(server: &Server) -> Duration {
    let t = Instant::now();
    let r = server.http("GET", "/healthz", &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    t.elapsed()
}

/// Observed: one `?api_key` connection pipelining publishes grew RSS without limit and delayed
/// `/healthz` and HTTP publishes by 12–21 s; an HTTP publish was answered "shutting down".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_publish_flood_is_backpressured_and_answers_stay_truthful() {
    let _serial = SERIAL.lock().await;
    // Test clients share two cores with the server: a deep send queue keeps a reader that falls
    // behind for a moment from being closed as a slow consumer.
    let server = Server::start(&["--send-queue-bytes", "67108864"]);
    // Enough readers that fan-out, not the publisher, is the bottleneck.
    let mut crowd = Vec::new();
    for _ in 0..40 {
        let (mut c, _) = server.connect("/ws").await;
        c.subscribe("flood").await;
        crowd.push(tokio::spawn(async move {
            while let Some(Ok(m)) = c.ws.next().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        }));
    }
    let (mut sub, _) = server.connect("/ws").await;
    sub.subscribe("flood").await;
    // The subscriber keeps up, collecting offsets until the end marker.
    let subscriber = tokio::spawn(async move {
        let mut offsets = Vec::new();
        loop {
            let m = sub.next_json().await;
            if m["channel"] != "flood" {
                continue;
            }
            offsets.push(m["offset"].as_u64().unwrap());
            if m["data"]["end"] == true {
                return offsets;
            }
        }
    });
    let (publisher, _) = server.connect(&format!("/ws?api_key={API_KEY}")).await;
    let (mut sink, mut stream) = publisher.ws.split();

    let flood_for = Duration::from_secs(3);
    let writer = tokio::spawn(async move {
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < flood_for {
            for _ in 0..50 {
                sent += 1;
                let m = publish_frame(&format!("p{sent}"), "flood", sent);
                if sink.feed(m).await.is_err() {
                    return (sent - 1, sink);
                }
            }
            if sink.flush().await.is_err() {
                break;
            }
        }
        (sent, sink)
    });
    let (expect_tx, mut expect_rx) = tokio::sync::oneshot::channel::<u64>();
    let reader = tokio::spawn(async move {
        // Replies may come in another order than the publishes (each completes when its
        // shards have reported); every one comes exactly once.
        let (mut ok, mut overloaded) = (Vec::new(), 0u64);
        let mut expected = None;
        let mut told = false;
        while expected.is_none_or(|n| ok.len() as u64 + overloaded < n) {
            let msg = tokio::select! {
                n = &mut expect_rx, if !told => {
                    told = true;
                    expected = Some(n.expect("the writer tells how many it sent"));
                    continue;
                }
                m = tokio::time::timeout(WAIT, stream.next()) => m,
            };
            let Ok(Some(Ok(msg))) = msg else {
                panic!("publisher stream ended or went silent: {msg:?}")
            };
            let Message::Text(t) = msg else { continue };
            let v: Value = serde_json::from_str(&t).expect("JSON");
            match v["event_type"].as_str() {
                Some("publish") => ok.push(v["data"]["results"][0]["offset"].as_u64().unwrap()),
                Some("error") if v["data"]["code"] == "overloaded" => overloaded += 1,
                _ => panic!("unexpected reply to a publish: {v}"),
            }
        }
        (ok, overloaded, stream)
    });

    // While the flood runs, the server keeps serving everything else promptly.
    let mut http_ok = 0u64;
    let mut worst = Duration::ZERO;
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        worst = worst.max(healthz_latency(&server).await);
        let r = server
            .post(
                "/api/publish",
                &json!({"channel":"flood","event_type":"tick","data":{"http":i}}),
            )
            .await;
        match r.status {
            200 => http_ok += 1,
            503 => {
                assert_eq!(r.json()["error"]["code"], "overloaded", "{}", r.text());
                assert!(r.header("retry-after").is_some());
            }
            s => panic!("HTTP publish during the flood answered {s}: {}", r.text()),
        }
    }
    eprintln!("flood: worst /healthz {worst:?}, HTTP publishes accepted {http_ok}/6");
    assert!(
        worst < Duration::from_secs(1),
        "/healthz took {worst:?} during a publish flood"
    );

    let (sent, mut sink) = writer.await.unwrap();
    expect_tx.send(sent).unwrap();
    let (ok, overloaded, mut stream) = reader.await.unwrap();
    assert_eq!(
        ok.len() as u64 + overloaded,
        sent,
        "every publish answered once"
    );
    // Once everything is answered the server is idle again: a last publish is admitted, and its
    // delivery ends the subscriber.
    let end = json!({"event_type":"publish","message_id":"end",
        "data":{"channel":"flood","event_type":"tick","data":{"end":true}}});
    sink.send(Message::Text(end.to_string())).await.unwrap();
    let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(WAIT, stream.next()).await else {
        panic!("no reply to the last publish");
    };
    let v: Value = serde_json::from_str(&t).unwrap();
    assert_eq!(v["event_type"], "publish", "{v}");
    let last_ok = v["data"]["results"][0]["offset"].as_u64();
    assert!(sent > 1000, "the flood sent only {sent} publishes");
    // Every offset answered is delivered, in order, and nothing else.
    let total = ok.len() as u64 + http_ok + u64::from(last_ok.is_some());
    let answered: BTreeSet<u64> = ok.iter().copied().chain(last_ok).collect();
    assert!(answered.iter().all(|&o| o <= total));
    let offsets = subscriber.await.unwrap();
    assert_eq!(
        offsets,
        (1..=total).collect::<Vec<_>>(),
        "gap, duplicate or reorder"
    );
    for c in crowd {
        c.abort();
    }
}

/// Observed: a failure half-way through a multi-channel publish delivered it to some channels
/// only, and a publish could be answered "refused" after it was delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_multi_channel_publish_is_refused_whole() {
    let _serial = SERIAL.lock().await;
    let server = Server::start(&["--publish-queue", "4"]);
    let channels = ["mc_a", "mc_b", "mc_c", "mc_d"];
    let (mut sub, _) = server.connect("/ws").await;
    for c in channels {
        sub.subscribe(c).await;
    }
    let mut tasks = Vec::new();
    for t in 0..8 {
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for i in 0..30 {
                let id = format!("m{t}-{i}");
                let body =
                    json!({"channels":channels,"event_type":"tick","message_id":id,"data":{}})
                        .to_string();
                let req = format!(
                    "POST /api/publish HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
                     X-API-Key: {API_KEY}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let r = support::raw_http(addr, req.as_bytes()).await;
                answers.push((id, r));
            }
            answers
        }));
    }
    let (mut accepted, mut refused) = (BTreeSet::new(), 0);
    for t in tasks {
        for (id, r) in t.await.unwrap() {
            match r.status {
                200 => {
                    let results = r.json()["results"].as_array().unwrap().clone();
                    assert_eq!(results.len(), 4);
                    assert!(results.iter().all(|x| x["offset"].as_u64() > Some(0)));
                    accepted.insert(id);
                }
                503 => {
                    assert_eq!(r.json()["error"]["code"], "overloaded", "{}", r.text());
                    assert_eq!(r.header("retry-after"), Some("1"));
                    refused += 1;
                }
                s => panic!("{s}: {}", r.text()),
            }
        }
    }
    assert!(refused > 0, "a publish queue of 4 refused nothing");
    assert!(!accepted.is_empty(), "nothing was accepted");
    // An end marker on every channel, retried until admitted.
    loop {
        let r = server
            .post(
                "/api/publish",
                &json!({"channels":channels,"event_type":"tick","message_id":"end","data":{}}),
            )
            .await;
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut got: Vec<BTreeSet<String>> = vec![BTreeSet::new(); 4];
    let mut ends = 0;
    while ends < 4 {
        let m = sub.next_json().await;
        let i = channels.iter().position(|c| m["channel"] == *c).unwrap();
        let id = m["message_id"].as_str().unwrap().to_owned();
        if id == "end" {
            ends += 1;
        } else {
            got[i].insert(id);
        }
    }
    for (i, set) in got.iter().enumerate() {
        assert_eq!(
            set, &accepted,
            "channel {} got other publishes",
            channels[i]
        );
    }
}

/// A connection subscribed to `channel` whose socket reads into a tiny buffer and then stops.
async fn stalled_subscriber(server: &Server, channel: &str) -> RawWs {
    let mut raw = RawWs::connect_small_rcvbuf(server.addr, "/ws", 4096).await;
    raw.read_ack().await;
    let sub = json!({"event_type":"user_subscription","data":{"channel":channel}}).to_string();
    raw.send_frame(true, 1, sub.as_bytes()).await;
    let (_, reply) = raw.read_frame().await.expect("subscribe reply");
    assert!(String::from_utf8_lossy(&reply).contains("subscribed"));
    raw
}

/// Pipelines `n` publishes of `pad` bytes each to `channel` and waits for their replies.
async fn publish_many(server: &Server, channel: &str, n: u64, pad: usize) {
    let (publisher, _) = server.connect(&format!("/ws?api_key={API_KEY}")).await;
    let (mut sink, mut stream) = publisher.ws.split();
    let filler = "x".repeat(pad);
    let channel = channel.to_owned();
    let writer = tokio::spawn(async move {
        for i in 0..n {
            let m = json!({"event_type":"publish","message_id":format!("q{i}"),
                "data":{"channel":channel,"event_type":"tick","data":{"n":i,"pad":filler}}});
            sink.feed(Message::Text(m.to_string())).await.unwrap();
        }
        sink.flush().await.unwrap();
        sink
    });
    let mut answered = 0;
    while answered < n {
        let msg = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("publish replies")
            .expect("open")
            .expect("ok");
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["event_type"] == "publish" {
                answered += 1;
            } else if v["data"]["code"] == "overloaded" {
                panic!("overloaded: {v}");
            }
        }
    }
    drop(writer.await.unwrap());
}

/// Observed: SIGTERM under an inbox backlog took 6–18 s to exit for a 5 s grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_by_the_grace_under_load() {
    let _serial = SERIAL.lock().await;
    let mut server = Server::start(&["--shutdown-grace", "3s", "--send-queue-bytes", "268435456"]);
    // A subscriber that never reads and a publisher that never stops.
    let _stalled = stalled_subscriber(&server, "drain").await;
    publish_many(&server, "drain", 500, 4096).await;
    let (publisher, _) = server.connect(&format!("/ws?api_key={API_KEY}")).await;
    let (mut sink, mut stream) = publisher.ws.split();
    tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
    let flood = tokio::spawn(async move {
        let start = Instant::now();
        let mut i = 0;
        while start.elapsed() < Duration::from_secs(8) {
            i += 1;
            if sink
                .send(publish_frame(&format!("f{i}"), "drain", i))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    server.sigterm();
    let status = server.wait_exit(Duration::from_secs(8));
    let took = t.elapsed();
    eprintln!("shutdown under load: exit 0 after {took:?} (grace 3 s)");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        took < Duration::from_millis(4000),
        "exit took {took:?} for a 3 s grace"
    );
    flood.abort();
}

/// Observed: a grace above 2 s had no effect, a 2 s close linger ended the drain first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grace_above_two_seconds_lets_a_slow_reader_drain() {
    let _serial = SERIAL.lock().await;
    let mut server = Server::start(&["--shutdown-grace", "6s", "--send-queue-bytes", "268435456"]);
    let mut slow = stalled_subscriber(&server, "slow_drain").await;
    let n = 400u64;
    publish_many(&server, "slow_drain", n, 16 * 1024).await;
    let t = Instant::now();
    server.sigterm();
    // The reader is slow for longer than the close linger.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let mut seen = 0;
    let code = loop {
        match slow.read_frame().await {
            Some((1, _)) => seen += 1,
            Some((8, p)) => break u16::from_be_bytes([p[0], p[1]]),
            Some(_) => {}
            None => panic!("connection ended after {seen} of {n} messages, without a close"),
        }
    };
    assert_eq!(seen, n, "every queued message arrives before the close");
    assert_eq!(code, 1001);
    let status = server.wait_exit(Duration::from_secs(8));
    assert!(status.success());
    assert!(t.elapsed() < Duration::from_secs(7));
}

/// Reads one server frame from `rd` (buffered in `buf`): (opcode, payload), None on EOF.
async fn read_frame_from(
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut Vec<u8>,
) -> Option<(u8, Vec<u8>)> {
    loop {
        if let Some((op, payload, used)) = parse_server_frame(buf) {
            buf.drain(..used);
            return Some((op, payload));
        }
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(WAIT, rd.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("no frame within {WAIT:?}"),
        }
    }
}

/// Observed: a client that kept sending after the server's close held the connection open
/// forever (the linger timer was checked last); the server read 5.9 GB in 12 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_close_linger_ends_however_much_the_client_sends() {
    let _serial = SERIAL.lock().await;
    let mut server = Server::start(&["--shutdown-grace", "30s"]);
    let RawWs { stream, mut buf } = RawWs::connect(server.addr, "/ws").await;
    let (mut rd, mut wr) = stream.into_split();
    let (op, _) = read_frame_from(&mut rd, &mut buf).await.expect("ack");
    assert_eq!(op, 1);
    // Unsolicited pongs: valid, answered with nothing, never a close.
    let spam: Vec<u8> = (0..256)
        .flat_map(|_| client_frame(true, 0xA, &[7u8; 125]))
        .collect();
    // Writes until the server drops the connection (the write fails), at most 15 s.
    let writer = tokio::spawn(async move {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if wr.write_all(&spam).await.is_err() {
                return Some(Instant::now());
            }
        }
        None
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.sigterm();
    let closed_at = loop {
        match read_frame_from(&mut rd, &mut buf).await {
            Some((8, p)) => {
                assert_eq!(u16::from_be_bytes([p[0], p[1]]), 1001);
                break Instant::now();
            }
            Some(_) => {}
            None => panic!("EOF before the close frame"),
        }
    };
    // The client never answers the close and keeps sending: the server drops it anyway (our
    // half-close, FIN, comes right after the close frame; the drop shows as a failed write).
    while read_frame_from(&mut rd, &mut buf).await.is_some() {}
    let dropped_at = writer
        .await
        .unwrap()
        .expect("the server kept reading the closing connection for 15 s");
    let lingered = dropped_at.saturating_duration_since(closed_at);
    eprintln!("linger: dropped {lingered:?} after the close frame");
    assert!(
        lingered < Duration::from_millis(3500),
        "closing connection lingered {lingered:?} (bound: 2 s)"
    );
    let status = server.wait_exit(Duration::from_secs(5));
    assert!(status.success());
}

/// Observed: one client streaming data starved its shard: `/healthz` took 0.4–0.6 s and a
/// well-behaved client got its 1001 3.3 s late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_streaming_client_does_not_starve_its_shard() {
    let _serial = SERIAL.lock().await;
    let mut server = Server::start(&["--shards", "1"]);
    let (mut polite, _) = server.connect("/ws").await;
    let raw = RawWs::connect(server.addr, "/ws").await;
    let (mut rd, mut wr) = raw.stream.into_split();
    let pad = "y".repeat(60 * 1024);
    let frame = client_frame(
        true,
        1,
        json!({"event_type":"heartbeat","data":{"pad":pad}})
            .to_string()
            .as_bytes(),
    );
    let writer = tokio::spawn(async move {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if wr.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    let drain = tokio::spawn(async move {
        let mut chunk = vec![0u8; 64 * 1024];
        while let Ok(n) = rd.read(&mut chunk).await {
            if n == 0 {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        worst = worst.max(healthz_latency(&server).await);
    }
    eprintln!("starvation: worst /healthz {worst:?} next to a streaming client");
    assert!(
        worst < Duration::from_millis(250),
        "/healthz took {worst:?} next to a streaming client"
    );
    let t = Instant::now();
    server.sigterm();
    let (code, _) = polite.recv_close().await;
    assert_eq!(code, 1001);
    let late = t.elapsed();
    eprintln!("starvation: 1001 {late:?} after SIGTERM");
    assert!(
        late < Duration::from_secs(1),
        "1001 came {late:?} after SIGTERM"
    );
    let _ = server.wait_exit(Duration::from_secs(8));
    writer.abort();
    drain.abort();
}

/// The sum of a metric family over its shard labels.
async fn metric_sum(server: &Server, name: &str) -> Option<f64> {
    let r = server.http("GET", "/metrics", &[], b"").await;
    let text = r.text();
    let mut found = None;
    for line in text.lines() {
        if line.starts_with(name) && line[name.len()..].starts_with(['{', ' ']) {
            let v: f64 = line.rsplit(' ').next()?.parse().ok()?;
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// Observed: the offset maps kept one entry per channel ever published, on every shard.
#[tokio::test]
async fn idle_channel_state_is_freed_and_returns_with_a_new_epoch() {
    let _serial = SERIAL.lock().await;
    let server = Server::start(&["--history-ttl", "1s"]);
    let (mut holder, _) = server.connect("/ws").await;
    holder.subscribe("held").await;
    let held = server
        .post(
            "/api/publish",
            &json!({"channel":"held","event_type":"tick","data":{}}),
        )
        .await
        .json();
    let mut first_epoch = String::new();
    for i in 0..40 {
        let r = server
            .post(
                "/api/publish",
                &json!({"channel":format!("idle_{i}"),"event_type":"tick","data":{}}),
            )
            .await;
        assert_eq!(r.status, 200);
        if i == 0 {
            first_epoch = r.json()["results"][0]["epoch"].as_str().unwrap().to_owned();
        }
    }
    // The gauge follows the channels in use: 41 with state, then only the held one.
    let wait_states = |want: fn(f64) -> bool| {
        let server = &server;
        async move {
            let deadline = Instant::now() + WAIT;
            loop {
                let states = metric_sum(server, "huddle_channel_states").await;
                if states.is_some_and(want) {
                    return;
                }
                assert!(Instant::now() < deadline, "channel states: {states:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_states(|n| n >= 41.0).await;
    wait_states(|n| n == 1.0).await;
    let r = server
        .post(
            "/api/publish",
            &json!({"channel":"idle_0","event_type":"tick","data":{}}),
        )
        .await
        .json();
    assert_eq!(r["results"][0]["offset"], 1, "a freed channel starts over");
    assert_ne!(
        r["results"][0]["epoch"],
        first_epoch.as_str(),
        "with a new epoch"
    );
    let r = server
        .post(
            "/api/publish",
            &json!({"channel":"held","event_type":"tick","data":{}}),
        )
        .await
        .json();
    assert_eq!(
        r["results"][0]["offset"], 2,
        "a subscribed channel keeps its state"
    );
    assert_eq!(r["results"][0]["epoch"], held["results"][0]["epoch"]);
}

/// Observed: a slow consumer never saw its 4008 (the close frame waited behind ~2 MB, the
/// linger expired, and the client saw a truncated frame and FIN).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_sees_its_4008() {
    let _serial = SERIAL.lock().await;
    let server = Server::start(&["--send-queue-bytes", "262144"]);
    let mut slow = stalled_subscriber(&server, "slow").await;
    let (mut witness, _) = server.connect("/ws/odds").await;
    let mut published = 0;
    while server.stats().await["slow_consumer_disconnects"] == 0 {
        assert!(published < 4000, "never became a slow consumer");
        publish_many(&server, "slow", 50, 4096).await;
        published += 50;
    }
    // The client reads again, promptly: complete frames, then the 4008 close frame.
    let mut frames = 0;
    let code = loop {
        match slow.read_frame().await {
            Some((1, p)) => {
                serde_json::from_slice::<Value>(&p).expect("a complete JSON message");
                frames += 1;
            }
            Some((8, p)) => break u16::from_be_bytes([p[0], p[1]]),
            Some((op, _)) => panic!("unexpected opcode {op}"),
            None => panic!("FIN after {frames} frames without a close frame"),
        }
    };
    assert_eq!(code, 4008);
    assert!(
        frames < published as usize + 2,
        "the rest of the queue was dropped"
    );
    slow.wait_eof().await;
    // Nobody else was slowed down.
    let r = server
        .post(
            "/api/publish",
            &json!({"channel":"odds","event_type":"odds_update","data":odds("1", 1)}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(witness.next_json().await["channel"], "odds");
}

/// Observed: a trickled `/api/*` body held its task forever.
#[tokio::test]
async fn a_trickled_request_body_is_cut_with_408() {
    let _serial = SERIAL.lock().await;
    let server = Server::start(&["--handshake-timeout", "1s"]);
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nContent-Length: 200\r\n\r\n{{\"ch"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let t = Instant::now();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("the server answers and closes")
        .ok();
    let r = support::parse_response(&buf);
    assert_eq!(r.status, 408, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "request_timeout");
    assert!(t.elapsed() < Duration::from_secs(3));
}

/// Observed: the 4008 of a consumer that reads, but slower than the feed, waited behind ~2 MB
/// of kernel buffer; the close linger expired first and the client saw a truncated frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowly_reading_consumer_sees_its_4008_after_complete_frames() {
    let _serial = SERIAL.lock().await;
    let server = Server::start(&["--send-queue-bytes", "262144"]);
    let RawWs { stream, mut buf } = RawWs::connect(server.addr, "/ws").await;
    let (mut rd, mut wr) = stream.into_split();
    read_frame_from(&mut rd, &mut buf).await.expect("ack");
    let sub = json!({"event_type":"user_subscription","data":{"channel":"trickle"}}).to_string();
    wr.write_all(&client_frame(true, 1, sub.as_bytes()))
        .await
        .unwrap();
    read_frame_from(&mut rd, &mut buf).await.expect("reply");
    // A publisher much faster than the reader.
    let (publisher, _) = server.connect(&format!("/ws?api_key={API_KEY}")).await;
    let (mut sink, mut replies) = publisher.ws.split();
    tokio::spawn(async move { while let Some(Ok(_)) = replies.next().await {} });
    let pad = "z".repeat(4096);
    let flood = tokio::spawn(async move {
        let start = Instant::now();
        let mut i = 0u64;
        while start.elapsed() < Duration::from_secs(10) {
            i += 1;
            let m = json!({"event_type":"publish","message_id":format!("t{i}"),
                "data":{"channel":"trickle","event_type":"tick","data":{"pad":pad}}});
            if sink.send(Message::Text(m.to_string())).await.is_err() {
                break;
            }
        }
    });
    // When the server decides it is a slow consumer.
    let addr = server.addr;
    let decided = tokio::spawn(async move {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            let r = support::raw_http(
                addr,
                format!("GET /api/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-API-Key: {API_KEY}\r\n\r\n").as_bytes(),
            )
            .await;
            if r.json()["slow_consumer_disconnects"] != 0 {
                return Some(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    });
    // The reader: about 1 MB/s, in 8 KiB reads.
    let mut chunk = vec![0u8; 8 * 1024];
    let mut frames = 0u64;
    let mut next_offset = 1u64;
    let code = 'read: loop {
        while let Some((op, payload, used)) = parse_server_frame(&buf) {
            buf.drain(..used);
            match op {
                1 => {
                    let m: Value = serde_json::from_slice(&payload).expect("complete JSON");
                    assert_eq!(m["offset"], next_offset, "in order, no gap");
                    next_offset += 1;
                    frames += 1;
                }
                8 => break 'read u16::from_be_bytes([payload[0], payload[1]]),
                _ => {}
            }
        }
        let n = tokio::time::timeout(WAIT, rd.read(&mut chunk))
            .await
            .expect("read")
            .unwrap_or(0);
        assert!(n > 0, "FIN after {frames} frames without a close frame");
        buf.extend_from_slice(&chunk[..n]);
        tokio::time::sleep(Duration::from_millis(8)).await;
    };
    let seen = Instant::now();
    assert_eq!(code, 4008, "after {frames} complete frames");
    let decided = decided.await.unwrap().expect("counted as a slow consumer");
    let waited = seen.saturating_duration_since(decided);
    eprintln!(
        "slow reader: 4008 seen {waited:?} after the server counted it, after {frames} frames"
    );
    assert!(
        waited < Duration::from_millis(1500),
        "the close frame reached the reader {waited:?} after the server closed it"
    );
    flood.abort();
}
