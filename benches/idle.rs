//! Server memory per idle connection: starts the release `huddle` binary, opens N WebSocket
//! connections that each receive `connection_ack` and then stay silent, and reports the
//! server's VmRSS before and after, and the upgrade rate of the connect phase.
//!
//! `cargo bench --bench idle` (N from `IDLE_CONNS`, default 10000; needs `ulimit -n` > N).
//!
//! - `IDLE_TOKENS=1` runs the same with tokens on (PROTOCOL.md §9): the server gets
//!   `--jwt-secret` (32 bytes), and every connection (the warm-up ones too) comes with a token
//!   of its own in `?token=`: HS256, `sub` = `user-{i}`, `exp` one hour ahead, and the
//!   `channels` claim `["vip_*","box_*"]` that all tokens share. The tokens and URLs are made
//!   before the clock starts, and every `connection_ack` must carry `expires_in` (the token was
//!   accepted, not ignored). The report then checks the issue 8 targets: at most 2.5 KiB per
//!   idle connection, at least 5,000 upgrades/s.
//! - The upgrade rate is N over the connect phase, from the first connect to the last
//!   `connection_ack` received, with `IDLE_INFLIGHT` upgrades in flight (default 64). The
//!   client runs in this process, on the same cores as the server; the report gives both
//!   processes' CPU time over the phase.
//! - `IDLE_SHARDS` (default 2) is the server's `--shards`.
//! - File descriptors: this process holds N client sockets and the server N accepted ones, each
//!   under the soft `ulimit -n` of the shell (the server inherits it). The bench checks its own
//!   limit first and stops with a hint when it is too low, e.g.
//!   `ulimit -n 20000; IDLE_CONNS=10000 cargo bench --bench idle`.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use support::{cpu_seconds, ready_addr, vm_rss_kib};

/// `--jwt-secret` in token mode (the server wants at least 16 bytes).
const SECRET: &str = "huddle-bench-idle-secret-32bytes";
/// Warm-up connections, opened and closed before the "before" sample.
const WARM: usize = 16;
/// Descriptors beyond the N sockets: stdio, epoll, the runtime's and the warm-up ones.
const FD_SLACK: u64 = 64;

/// The soft and hard "Max open files" of this process (`None` = unlimited).
fn fd_limits() -> (Option<u64>, Option<u64>) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let line = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .unwrap_or("");
    let mut f = line.split_whitespace().map(|v| v.parse().ok());
    (f.next().flatten(), f.next().flatten())
}

/// Stops early, with the `ulimit -n` to use, when N sockets would not fit.
fn check_fd_limit(n: usize) {
    let need = n as u64 + FD_SLACK;
    let (soft, hard) = fd_limits();
    if soft.is_some_and(|s| s < need) {
        let show = |v: Option<u64>| v.map_or("unlimited".to_owned(), |v| v.to_string());
        eprintln!(
            "idle: {n} connections need about {need} file descriptors in this process and in the \
             server, but `ulimit -n` (soft) is {} (hard {}).",
            show(soft),
            show(hard),
        );
        match hard {
            Some(h) if h < need => eprintln!(
                "The hard limit is too low as well: lower IDLE_CONNS to at most {}, or raise the \
                 hard limit (as root, or in /etc/security/limits.conf).",
                h.saturating_sub(FD_SLACK)
            ),
            _ => eprintln!(
                "Raise it in this shell first, e.g. `ulimit -n {}; IDLE_CONNS={n} cargo bench \
                 --bench idle`, or lower IDLE_CONNS.",
                hard.unwrap_or(need)
            ),
        }
        std::process::exit(2);
    }
}

/// One HS256 token per connection: `sub` = `user-{i}`, `exp` an hour ahead, shared `channels`.
fn mint_tokens(count: usize) -> Vec<String> {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let header = Header::new(Algorithm::HS256);
    (0..count)
        .map(|i| {
            let claims = serde_json::json!({
                "sub": format!("user-{i}"),
                "exp": exp,
                "channels": ["vip_*", "box_*"],
            });
            encode(&header, &claims, &key).expect("sign token")
        })
        .collect()
}

fn main() {
    let n: usize = std::env::var("IDLE_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let shards = std::env::var("IDLE_SHARDS").unwrap_or_else(|_| "2".into());
    let tokens_on = std::env::var("IDLE_TOKENS").is_ok_and(|v| !v.is_empty() && v != "0");
    let inflight: usize = std::env::var("IDLE_INFLIGHT")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&v| v > 0)
        .unwrap_or(64);
    check_fd_limit(n);
    let status = Command::new("cargo")
        .args(["build", "--release", "--bin", "huddle"])
        .status()
        .expect("cargo build");
    assert!(status.success());

    // Tokens and their URLs are made here, before the server starts and long before the clock.
    let minted = Instant::now();
    let tokens = if tokens_on {
        mint_tokens(WARM + n)
    } else {
        Vec::new()
    };
    let mint_secs = minted.elapsed().as_secs_f64();

    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/huddle");
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--api-key",
        "bench",
        "--conn-rate",
        "off",
        "--shards",
        &shards,
    ];
    if tokens_on {
        args.extend(["--jwt-secret", SECRET]);
    }
    let mut child = Command::new(bin)
        .args(&args)
        .env("RUST_LOG", "warn,huddle=info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn huddle");
    let pid = child.id();
    let addr = ready_addr(child.stderr.take().expect("stderr"));

    let base = format!("ws://{addr}/ws/games");
    let urls: Vec<String> = if tokens_on {
        tokens.iter().map(|t| format!("{base}?token={t}")).collect()
    } else {
        vec![base; WARM + n]
    };
    drop(tokens);
    let (warm_urls, urls) = urls.split_at(WARM);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Warm up allocator arenas and runtime structures with a handful of connections first,
        // so "before" is the steady state of a running server, not a cold process.
        let mut warm = Vec::new();
        for url in warm_urls {
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            ws.next().await.unwrap().unwrap();
            warm.push(ws);
        }
        drop(warm);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = vm_rss_kib(pid);
        let (server_cpu0, client_cpu0) = (cpu_seconds(pid), cpu_seconds(std::process::id()));
        let started = Instant::now();
        let mut conns = Vec::with_capacity(n);
        let mut pending = futures_util::stream::iter(urls)
            .map(|url| async move {
                let (mut ws, _) = tokio_tungstenite::connect_async(url)
                    .await
                    .unwrap_or_else(|e| panic!("connect: {e}"));
                let ack = ws.next().await.expect("ack").expect("ack");
                if tokens_on {
                    let ack = ack.to_text().unwrap_or("");
                    assert!(
                        ack.contains("\"expires_in\""),
                        "token not taken: connection_ack without expires_in: {ack}"
                    );
                }
                ws
            })
            .buffer_unordered(inflight);
        while let Some(ws) = pending.next().await {
            conns.push(ws);
        }
        let connect_secs = started.elapsed().as_secs_f64();
        let server_cpu = cpu_seconds(pid) - server_cpu0;
        let client_cpu = cpu_seconds(std::process::id()) - client_cpu0;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = vm_rss_kib(pid);
        let per = (after.saturating_sub(before)) as f64 * 1024.0 / n as f64;
        let rate = n as f64 / connect_secs;
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        println!("idle connections: {n} on {shards} shards");
        println!("server VmRSS before: {before} KiB, after: {after} KiB");
        println!(
            "per idle connection: {per:.0} bytes ({:.2} KiB)",
            per / 1024.0
        );
        println!(
            "connect + upgrade + ack: {:.2} s ({:.0} upgrades/s, client in the same box)",
            connect_secs, rate
        );
        println!(
            "connect phase: {inflight} upgrades in flight; CPU {server_cpu:.2} s server, \
             {client_cpu:.2} s bench client ({cores} cores = {:.2} s available)",
            cores as f64 * connect_secs
        );
        if tokens_on {
            println!(
                "tokens: HS256, one per connection (sub user-{{i}}, exp +1 h, channels \
                 [\"vip_*\",\"box_*\"]), {} minted in {mint_secs:.2} s before the clock started",
                WARM + n
            );
            let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
            println!(
                "target per idle connection with a token <= 2.5 KiB (2560 B): {per:.0} B, {}",
                verdict(per <= 2560.0)
            );
            println!(
                "target upgrades/s with HS256 >= 5000: {rate:.0}, {}",
                verdict(rate >= 5000.0)
            );
        }
        drop(conns);
    });
    let _ = child.kill();
    let _ = child.wait();
}
