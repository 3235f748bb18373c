//! Server memory per idle connection: starts the release `huddle` binary, opens N WebSocket
//! connections that each receive `connection_ack` and then stay silent, and reports the
//! server's VmRSS before and after.
//!
//! `cargo bench --bench idle` (N from `IDLE_CONNS`, default 10000; needs `ulimit -n` > N).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

fn main() {
    let n: usize = std::env::var("IDLE_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let shards = std::env::var("IDLE_SHARDS").unwrap_or_else(|_| "2".into());
    let status = Command::new("cargo")
        .args(["build", "--release", "--bin", "huddle"])
        .status()
        .expect("cargo build");
    assert!(status.success());
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/huddle");
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
            &shards,
        ])
        .env("RUST_LOG", "warn,huddle=info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn huddle");
    let pid = child.id();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("ready line").expect("stderr");
        if let Some(i) = line.find("listening on ") {
            break line[i + 13..].split_whitespace().next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Warm up allocator arenas and runtime structures with a handful of connections first,
        // so "before" is the steady state of a running server, not a cold process.
        let url = format!("ws://{addr}/ws/games");
        let mut warm = Vec::new();
        for _ in 0..16 {
            let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
            ws.next().await.unwrap().unwrap();
            warm.push(ws);
        }
        drop(warm);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = vm_rss_kib(pid);
        let started = Instant::now();
        let mut conns = Vec::with_capacity(n);
        let mut pending = futures_util::stream::iter(0..n)
            .map(|_| {
                let url = url.clone();
                async move {
                    let (mut ws, _) = tokio_tungstenite::connect_async(&url)
                        .await
                        .expect("connect");
                    ws.next().await.expect("ack").expect("ack");
                    ws
                }
            })
            .buffer_unordered(64);
        while let Some(ws) = pending.next().await {
            conns.push(ws);
        }
        let connect_secs = started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = vm_rss_kib(pid);
        let per = (after.saturating_sub(before)) as f64 * 1024.0 / n as f64;
        println!("idle connections: {n} on {shards} shards");
        println!("server VmRSS before: {before} KiB, after: {after} KiB");
        println!(
            "per idle connection: {per:.0} bytes ({:.2} KiB)",
            per / 1024.0
        );
        println!(
            "connect + upgrade + ack: {:.2} s ({:.0} upgrades/s, client in the same box)",
            connect_secs,
            n as f64 / connect_secs
        );
        drop(conns);
    });
    let _ = child.kill();
    let _ = child.wait();
}
