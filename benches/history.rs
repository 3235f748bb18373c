//! Server memory per stored history message (PROTOCOL.md §10): starts the release `huddle`
//! binary, fills the history of C channels with M messages each (an `odds_update` of the seed's
//! shape, ~330 bytes of JSON), and reports the server's VmRSS growth per stored message next to
//! the frame bytes `huddle_history_bytes` counts for them.
//!
//! `cargo bench --bench history` (C from `HISTORY_CHANNELS`, default 1000; M from
//! `HISTORY_MESSAGES`, default 100 = `--history-size`).

mod support;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use support::{ready_addr, vm_rss_kib};
use tokio_tungstenite::tungstenite::Message;

/// Sum over shards of a gauge in `/metrics`.
fn metric(addr: &str, name: &str) -> u64 {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn odds(game: usize, n: usize) -> serde_json::Value {
    serde_json::json!({
        "game_id": game.to_string(), "sportsbook": "fanduel", "home_team": "Kansas City Chiefs",
        "away_team": "Buffalo Bills", "spread": -3.5 + (n % 7) as f64 * 0.5,
        "moneyline_home": -150, "moneyline_away": 130, "over_under": 47.5,
        "updated_at": "2026-11-25T18:04:05.123Z"
    })
}

fn main() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (channels, per) = (env("HISTORY_CHANNELS", 1000), env("HISTORY_MESSAGES", 100));
    let status = Command::new("cargo")
        .args(["build", "--release", "--bin", "huddle"])
        .status()
        .expect("cargo build");
    assert!(status.success());
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/huddle");
    let size = per.to_string();
    let mut child = Command::new(bin)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--api-key",
            "bench",
            "--conn-rate",
            "off",
            "--shards",
            "2",
            "--history-size",
            &size,
            "--publish-queue",
            "65536",
        ])
        .env("RUST_LOG", "warn,huddle=info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn huddle");
    let pid = child.id();
    let addr = ready_addr(child.stderr.take().expect("stderr")).to_string();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = format!("ws://{addr}/ws?api_key=bench");
    let (before, elapsed) = rt.block_on(async {
        // Warm up: one channel's worth, then measure from the steady state.
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        ws.next().await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = vm_rss_kib(pid);
        let started = Instant::now();
        let total = channels * per;
        // Pipelined: sends run ahead of the answers up to --max-inflight-publishes.
        let (mut tx, mut rx) = ws.split();
        let reader = tokio::spawn(async move {
            let mut answered = 0;
            while answered < total {
                match rx.next().await {
                    Some(Ok(Message::Text(t))) => {
                        assert!(t.contains("\"publish\""), "unexpected answer {t}");
                        answered += 1;
                    }
                    Some(Ok(_)) => {}
                    other => panic!("publisher closed: {other:?}"),
                }
            }
        });
        for n in 0..per {
            for c in 0..channels {
                let msg = serde_json::json!({"event_type":"publish","data":{
                    "channel": format!("odds_{c}"), "event_type":"odds_update", "data": odds(c, n)}});
                tx.send(Message::Text(msg.to_string())).await.unwrap();
            }
        }
        reader.await.unwrap();
        (before, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(1500));
    let after = vm_rss_kib(pid);
    let stored = metric(&addr, "huddle_history_messages");
    let frame_bytes = metric(&addr, "huddle_history_bytes");
    let _ = child.kill();
    let _ = child.wait();
    let grown = (after.saturating_sub(before)) * 1024;
    println!("history: {channels} channels x {per} messages, --history-size {per}, 2 shards");
    println!(
        "published {} in {:.2} s ({:.0}/s, one pipelined WebSocket publisher)",
        channels * per,
        elapsed.as_secs_f64(),
        (channels * per) as f64 / elapsed.as_secs_f64()
    );
    println!("stored messages (huddle_history_messages): {stored}");
    println!("server VmRSS before: {before} KiB, after: {after} KiB");
    if let (Some(rss), Some(frame)) = (grown.checked_div(stored), frame_bytes.checked_div(stored)) {
        println!(
            "per stored message: {rss} bytes of RSS, of which {frame} bytes of frame (JSON + header)"
        );
    }
}
