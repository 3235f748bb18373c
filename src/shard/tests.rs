//! Shard tests with a fake clock and hand-delivered inbox messages: the shard's liveness and the
//! mesh's ordering rule, deterministic, without sleeping. Each connection is a real loopback
//! socket pair (the shard writes to it); time is passed to `on_tick`, and messages between shards
//! are moved from one inbox to the other by the test.

use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc;

use super::mesh::{owner_of, ShardMsg};
use super::*;
use crate::codec::{encode_masked_frame, Decoder, OpCode};
use crate::config::{parse_from, Command};

/// Shared state for `shards` shards with `args` as flags; the inbox receivers are the test's.
fn shared(shards: usize, args: &[&str]) -> (Arc<Shared>, Vec<mpsc::UnboundedReceiver<ShardMsg>>) {
    let mut argv = vec!["huddle", "serve"];
    argv.extend_from_slice(args);
    let Command::Serve(config) = parse_from(argv).expect("flags").command else {
        unreachable!("serve was asked for")
    };
    let (inboxes, receivers): (Vec<_>, Vec<_>) =
        (0..shards).map(|_| mpsc::unbounded_channel()).unzip();
    let shared = Shared::new(*config, vec!["k".into()], inboxes).expect("shared state");
    (Arc::new(shared), receivers)
}

/// A registered connection and the client's end of its socket.
struct Peer {
    key: usize,
    client: std::net::TcpStream,
    buf: Vec<u8>,
    decoder: Decoder,
}

impl Peer {
    /// Reads the next server frame: (opcode, payload).
    fn frame(&mut self) -> (u8, Vec<u8>) {
        loop {
            if self.buf.len() >= 2 {
                let len = (self.buf[1] & 0x7f) as usize;
                let (len, hdr) = match len {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    126 => (usize::MAX, 0),
                    n => (n, 2),
                };
                if hdr > 0 && self.buf.len() >= hdr + len {
                    let payload = self.buf[hdr..hdr + len].to_vec();
                    let op = self.buf[0] & 0x0f;
                    self.buf.drain(..hdr + len);
                    return (op, payload);
                }
            }
            let mut chunk = [0u8; 4096];
            let n = self
                .client
                .read(&mut chunk)
                .expect("a frame within the read timeout");
            assert!(n > 0, "EOF");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn json(&mut self) -> Value {
        let (op, payload) = self.frame();
        assert_eq!(op, 1, "text frame");
        serde_json::from_slice(&payload).expect("JSON")
    }

    /// Nothing is waiting on the socket.
    fn nothing_pending(&mut self) {
        self.client.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        let r = self.client.read(&mut b);
        self.client.set_nonblocking(false).unwrap();
        assert!(
            self.buf.is_empty()
                && matches!(r, Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "unexpected bytes from the server"
        );
    }
}

/// Registers a connection on `shard` over a loopback socket pair and reads its ack.
async fn connect(cell: &Rc<RefCell<Shard>>, channels: &[&str]) -> Peer {
    let params = ConnParams {
        echo: false,
        channels: channels.iter().map(|c| c.to_string()).collect(),
        user_id: None,
        api_key: true,
        token: None,
    };
    connect_with(cell, params).await
}

async fn connect_with(cell: &Rc<RefCell<Shard>>, params: ConnParams) -> Peer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = std::net::TcpStream::connect(addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    let (key, _io) = cell.borrow_mut().register(server, params);
    cell.borrow_mut().flush_dirty();
    let mut peer = Peer {
        key,
        client,
        buf: Vec::new(),
        decoder: Decoder::new(65536),
    };
    assert_eq!(peer.json()["event_type"], "connection_ack");
    peer
}

/// The client sends one JSON text message.
fn send(cell: &Rc<RefCell<Shard>>, peer: &mut Peer, json: &str) {
    let frame = encode_masked_frame(true, OpCode::Text, json.as_bytes(), [1, 2, 3, 4]);
    let mut shard = cell.borrow_mut();
    shard.on_bytes(peer.key, &mut peer.decoder, &frame);
    shard.flush_dirty();
}

/// Moves every message waiting in `rx` to `cell`.
fn pump(cell: &Rc<RefCell<Shard>>, rx: &mut mpsc::UnboundedReceiver<ShardMsg>) -> usize {
    let mut n = 0;
    while let Ok(m) = rx.try_recv() {
        cell.borrow_mut().on_message(m);
        n += 1;
    }
    cell.borrow_mut().flush_dirty();
    n
}

fn run<F: std::future::Future<Output = ()>>(f: F) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&rt, f);
}

#[test]
fn liveness_on_a_fake_clock_pings_once_then_closes_with_4001() {
    run(async {
        let (shared, _rx) = shared(
            1,
            &["--heartbeat-interval", "30s", "--heartbeat-timeout", "60s"],
        );
        let cell = Shard::new_cell(0, shared.clone());
        let mut peer = connect(&cell, &[]).await;
        let t0 = Instant::now();
        cell.borrow_mut().on_tick(t0 + Duration::from_secs(29));
        peer.nothing_pending();
        cell.borrow_mut().on_tick(t0 + Duration::from_secs(32));
        assert_eq!(peer.frame().0, 0x9, "a ping after the interval of silence");
        cell.borrow_mut().on_tick(t0 + Duration::from_secs(45));
        peer.nothing_pending();
        cell.borrow_mut().on_tick(t0 + Duration::from_secs(62));
        let (op, payload) = peer.frame();
        assert_eq!(op, 0x8);
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 4001);
        assert_eq!(shared.metrics.totals().heartbeat_expiries, 1);
    });
}

/// A connection of `user` with a token valid for `valid_for` and these `channels` claims.
fn token_params(user: &str, valid_for: Duration, channels: &[&str]) -> ConnParams {
    let channels: Vec<String> = channels.iter().map(|c| c.to_string()).collect();
    ConnParams {
        echo: false,
        channels: Vec::new(),
        user_id: Some(user.into()),
        api_key: false,
        token: Some(TokenGrant {
            valid_for,
            expires_in: valid_for.as_secs(),
            grants: crate::auth::Grants::new(&channels, &[]),
        }),
    }
}

#[test]
fn token_expiry_on_a_fake_clock_closes_with_4401_and_claims_are_shared() {
    run(async {
        let (shared, _rx) = shared(
            1,
            &["--heartbeat-interval", "30s", "--heartbeat-timeout", "60s"],
        );
        let cell = Shard::new_cell(0, shared.clone());
        let t0 = Instant::now();
        let mut a = connect_with(
            &cell,
            token_params("a", Duration::from_secs(10), &["vip_*"]),
        )
        .await;
        let b = connect_with(
            &cell,
            token_params("b", Duration::from_secs(3600), &["vip_*"]),
        )
        .await;
        let c = connect_with(
            &cell,
            token_params("c", Duration::from_secs(3600), &["box_*"]),
        )
        .await;
        {
            let shard = cell.borrow();
            let (ga, gb) = (&shard.conns[a.key].grants, &shard.conns[b.key].grants);
            assert!(matches!((ga, gb), (Some(x), Some(y)) if Arc::ptr_eq(x, y)));
            assert_eq!(shard.grants.len(), 2, "one copy per distinct claims");
        }
        cell.borrow_mut().on_tick(t0 + Duration::from_secs(9));
        a.nothing_pending();
        cell.borrow_mut().on_tick(t0 + Duration::from_secs(11));
        let (op, payload) = a.frame();
        assert_eq!(op, 0x8);
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 4401);
        assert_eq!(shared.metrics.shard(0).token_expiries.get(), 1);
        // A refresh that brings the end before the armed heartbeat deadline moves the timer.
        let grant = token_params("c", Duration::from_secs(5), &["box_*"])
            .token
            .unwrap();
        cell.borrow_mut()
            .grant(c.key, grant, t0 + Duration::from_secs(11));
        cell.borrow_mut().on_tick(t0 + Duration::from_secs(17));
        let mut c = c;
        let (op, payload) = c.frame();
        assert_eq!(
            (op, u16::from_be_bytes([payload[0], payload[1]])),
            (0x8, 4401)
        );
        cell.borrow_mut().remove(a.key);
        cell.borrow_mut().remove(c.key);
        assert_eq!(
            cell.borrow().grants.len(),
            1,
            "the vip_* copy lives on with b"
        );
        cell.borrow_mut().remove(b.key);
        assert!(cell.borrow().grants.is_empty());
    });
}

/// Channel names owned by shard 0 and by shard 1 of two.
fn names_by_owner() -> (String, String) {
    let mut owned_by = [None, None];
    for i in 0.. {
        let name = format!("ch{i}");
        let o = owner_of(&name, 2);
        owned_by[o].get_or_insert(name);
        if owned_by.iter().all(Option::is_some) {
            break;
        }
    }
    let [a, b] = owned_by;
    (a.unwrap(), b.unwrap())
}

/// Two shards over test-held inboxes, with presence off (so only the interest and recovery
/// messages are counted), a publisher on shard 0, and the owner-0 channel name.
struct TwoShards {
    s0: Rc<RefCell<Shard>>,
    s1: Rc<RefCell<Shard>>,
    rx0: mpsc::UnboundedReceiver<ShardMsg>,
    rx1: mpsc::UnboundedReceiver<ShardMsg>,
    publisher: Peer,
    on_0: String,
}

impl TwoShards {
    async fn new() -> TwoShards {
        let (shared, mut rx) = shared(2, &["--presence-channels", ""]);
        let (on_0, _) = names_by_owner();
        let s0 = Shard::new_cell(0, shared.clone());
        let s1 = Shard::new_cell(1, shared.clone());
        let (rx0, rx1) = {
            let mut it = rx.drain(..);
            (it.next().unwrap(), it.next().unwrap())
        };
        let publisher = connect(&s0, &[]).await;
        TwoShards {
            s0,
            s1,
            rx0,
            rx1,
            publisher,
            on_0,
        }
    }
}

/// A WebSocket publish of tick `n` to `channel`.
fn publish_msg(channel: &str, n: u32) -> String {
    format!(
        r#"{{"event_type":"publish","data":{{"channel":"{channel}","event_type":"tick","data":{{"n":{n}}}}}}}"#
    )
}

#[test]
fn mesh_interest_gives_exact_subscribe_offsets_and_no_gap_or_duplicate() {
    run(async {
        // A publisher on the owner; three messages before anyone on shard 1 is interested.
        let TwoShards {
            s0,
            s1,
            mut rx0,
            mut rx1,
            mut publisher,
            on_0,
        } = TwoShards::new().await;
        let publish = |n: u32| publish_msg(&on_0, n);
        for n in 1..=3 {
            send(&s0, &mut publisher, &publish(n));
        }
        assert_eq!(
            pump(&s1, &mut rx1),
            0,
            "shard 1 is not interested: nothing sent there"
        );

        // Shard 1's first subscriber: its request waits for the owner's ack.
        let mut sub = connect(&s1, &[]).await;
        send(
            &s1,
            &mut sub,
            &format!(
                r#"{{"event_type":"user_subscription","message_id":"s","data":{{"channel":"{on_0}"}}}}"#
            ),
        );
        sub.nothing_pending();
        // Messages published while the Interest is on its way are not lost or duplicated.
        send(&s0, &mut publisher, &publish(4));
        assert_eq!(pump(&s0, &mut rx0), 1, "the Interest");
        send(&s0, &mut publisher, &publish(5));
        assert_eq!(pump(&s1, &mut rx1), 2, "the ack, then offset 5");
        let reply = sub.json();
        assert_eq!(reply["reply_to"], "s");
        assert_eq!(
            reply["data"]["offset"], 4,
            "the offset before the first message delivered"
        );
        let m = sub.json();
        assert_eq!(
            (m["channel"].as_str(), m["offset"].as_u64()),
            (Some(on_0.as_str()), Some(5))
        );
        sub.nothing_pending();

        // The epoch in the reply is the channel's, as the publisher's replies say (they come
        // from tasks that wait for the gathers; let them run).
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let publish_reply = publisher.json();
        assert_eq!(publish_reply["event_type"], "publish");
        assert_eq!(
            publish_reply["data"]["results"][0]["epoch"],
            reply["data"]["epoch"]
        );

        // The last subscriber leaving ends the interest: nothing more goes to shard 1.
        send(
            &s1,
            &mut sub,
            &format!(
                r#"{{"event_type":"user_unsubscription","message_id":"u","data":{{"channel":"{on_0}"}}}}"#
            ),
        );
        assert_eq!(sub.json()["data"]["offset"], 5);
        assert_eq!(pump(&s0, &mut rx0), 1, "the end of interest");
        send(&s0, &mut publisher, &publish(6));
        assert_eq!(pump(&s1, &mut rx1), 0);
    });
}

#[test]
fn recovery_on_another_shard_replays_up_to_the_answer_then_goes_live() {
    run(async {
        let TwoShards {
            s0,
            s1,
            mut rx0,
            mut rx1,
            mut publisher,
            on_0,
        } = TwoShards::new().await;
        let publish = |n: u32| publish_msg(&on_0, n);
        for n in 1..=3 {
            send(&s0, &mut publisher, &publish(n));
        }
        let epoch = s0.borrow().engine.position(&on_0).unwrap().epoch;
        // Shard 1 already follows the channel through another subscriber.
        let mut plain = connect(&s1, &[]).await;
        let sub = |id: &str, since: &str| {
            format!(
                r#"{{"event_type":"user_subscription","message_id":"{id}","data":{{"channel":"{on_0}"{since}}}}}"#
            )
        };
        send(&s1, &mut plain, &sub("p", ""));
        pump(&s0, &mut rx0);
        pump(&s1, &mut rx1);
        assert_eq!(plain.json()["data"]["offset"], 3);

        // 4 is on its way to shard 1 when the recovering request goes out; 5 follows it.
        send(&s0, &mut publisher, &publish(4));
        let mut late = connect(&s1, &[]).await;
        send(
            &s1,
            &mut late,
            &sub(
                "r",
                &format!(r#","since":{{"offset":1,"epoch":"{epoch}"}}"#),
            ),
        );
        late.nothing_pending();
        send(&s0, &mut publisher, &publish(5));
        assert_eq!(pump(&s0, &mut rx0), 1, "the Recover");
        send(&s0, &mut publisher, &publish(6));
        // Deliver 4, Deliver 5, Recovered (top 5), Deliver 6: the FIFO order.
        assert_eq!(pump(&s1, &mut rx1), 4);
        let reply = late.json();
        assert_eq!(reply["reply_to"], "r");
        assert_eq!(
            (
                reply["data"]["recovered"].as_bool(),
                reply["data"]["offset"].as_u64()
            ),
            (Some(true), Some(5))
        );
        let offsets: Vec<u64> = (0..5)
            .map(|_| late.json()["offset"].as_u64().unwrap())
            .collect();
        assert_eq!(
            offsets,
            [2, 3, 4, 5, 6],
            "replay, then live, no gap or duplicate"
        );
        late.nothing_pending();
        let plain_offsets: Vec<u64> = (0..3)
            .map(|_| plain.json()["offset"].as_u64().unwrap())
            .collect();
        assert_eq!(plain_offsets, [4, 5, 6]);

        // A recovery whose view is new on shard 1: the answer is also the interest's ack.
        let other = (0..)
            .map(|i| format!("other{i}"))
            .find(|n| owner_of(n, 2) == 0)
            .unwrap();
        let msg = publish_msg(&other, 0);
        send(&s0, &mut publisher, &msg);
        send(&s0, &mut publisher, &msg);
        let epoch = s0.borrow().engine.position(&other).unwrap().epoch;
        let mut fresh = connect(&s1, &[]).await;
        send(
            &s1,
            &mut fresh,
            &format!(
                r#"{{"event_type":"user_subscription","message_id":"f","data":{{"channel":"{other}","since":{{"offset":0,"epoch":"{epoch}"}}}}}}"#
            ),
        );
        assert_eq!(pump(&s0, &mut rx0), 1, "one Recover, no separate Interest");
        assert_eq!(pump(&s1, &mut rx1), 1);
        let reply = fresh.json();
        assert_eq!(reply["data"]["recovered"], true, "{reply}");
        assert_eq!(fresh.json()["offset"], 1);
        assert_eq!(fresh.json()["offset"], 2);
        send(&s0, &mut publisher, &msg);
        pump(&s1, &mut rx1);
        assert_eq!(
            fresh.json()["offset"],
            3,
            "the view is followed after the answer"
        );
        fresh.nothing_pending();
    });
}
