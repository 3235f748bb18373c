//! Settings (PROTOCOL.md §1): flag > `HUDDLE_*` env > TOML file > default, the generated API
//! key, several API keys (§7), `--listen` forms, a port already in use, out-of-range durations,
//! `--help` listing every flag, refusal of unknown TOML keys, and JSON logs.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::Server;

const BASE: [&str; 7] = [
    "serve",
    "--listen",
    "127.0.0.1:0",
    "--api-key",
    "k",
    "--conn-rate",
    "off",
];

/// A TOML file under the temp dir, removed on drop.
struct TempToml(PathBuf);

impl TempToml {
    fn new(tag: &str, text: &str) -> TempToml {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path = std::env::temp_dir().join(format!(
            "huddle-test-{tag}-{}-{nanos}.toml",
            std::process::id()
        ));
        std::fs::write(&path, text).expect("write config file");
        TempToml(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempToml {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `huddle` with `args` to completion (killed after `support::WAIT`).
fn run(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_huddle"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn huddle");
    let deadline = Instant::now() + support::WAIT;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("huddle {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// (heartbeat_interval, heartbeat_timeout) from a fresh connection's ack.
async fn ack_intervals(server: &Server) -> (serde_json::Value, serde_json::Value) {
    let (_c, ack) = server.connect("/ws").await;
    (
        ack["data"]["heartbeat_interval"].clone(),
        ack["data"]["heartbeat_timeout"].clone(),
    )
}

#[tokio::test]
async fn env_var_sets_a_flag() {
    let server = Server::start_raw(&BASE, &[("HUDDLE_HEARTBEAT_TIMEOUT", "7s")]);
    assert_eq!(ack_intervals(&server).await, (json!(30), json!(7)));
}

#[tokio::test]
async fn flag_beats_env() {
    let mut args = BASE.to_vec();
    args.extend(["--heartbeat-timeout", "9s"]);
    let server = Server::start_raw(&args, &[("HUDDLE_HEARTBEAT_TIMEOUT", "7s")]);
    assert_eq!(ack_intervals(&server).await.1, json!(9));
}

#[tokio::test]
async fn toml_file_sets_flags_and_env_beats_it() {
    let file = TempToml::new(
        "file",
        "heartbeat-timeout = \"45s\"\nheartbeat-interval = \"15s\"\n",
    );
    let mut args = BASE.to_vec();
    args.extend(["--config", file.path()]);

    let server = Server::start_raw(&args, &[]);
    assert_eq!(ack_intervals(&server).await, (json!(15), json!(45)));
    drop(server);

    let server = Server::start_raw(&args, &[("HUDDLE_HEARTBEAT_TIMEOUT", "7s")]);
    assert_eq!(ack_intervals(&server).await, (json!(15), json!(7)));
    drop(server);

    let mut with_flag = args.clone();
    with_flag.extend(["--heartbeat-interval", "2s"]);
    let server = Server::start_raw(&with_flag, &[("HUDDLE_HEARTBEAT_TIMEOUT", "7s")]);
    assert_eq!(ack_intervals(&server).await, (json!(2), json!(7)));
}

#[tokio::test]
async fn api_key_from_env() {
    let args = ["serve", "--listen", "127.0.0.1:0", "--conn-rate", "off"];
    let server = Server::start_raw(&args, &[("HUDDLE_API_KEY", "env-secret")]);
    let body =
        json!({"channel": "odds", "event_type": "odds_update", "data": support::odds("7", 1)});
    let body = body.to_string();
    let r = server
        .http(
            "POST",
            "/api/publish",
            &[
                ("X-API-Key", "env-secret"),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["results"][0]["channel"], "odds", "{}", r.text());
    let wrong = server
        .http(
            "POST",
            "/api/publish",
            &[("X-API-Key", support::API_KEY)],
            body.as_bytes(),
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert!(
        !server
            .logs()
            .iter()
            .any(|l| l.contains("generated API key")),
        "no key is generated when one is configured: {:?}",
        server.logs()
    );
}

#[tokio::test]
async fn generated_api_key_is_logged_and_works() {
    let args = ["serve", "--listen", "127.0.0.1:0", "--conn-rate", "off"];
    let server = Server::start_raw(&args, &[]);
    let line = server.wait_log("generated API key").await;
    let key = line
        .split_whitespace()
        .last()
        .expect("key at the end of the line")
        .trim_matches(|c: char| !c.is_ascii_alphanumeric());
    assert!(key.len() >= 16, "key {key:?} in {line:?}");
    let ok = server
        .http(
            "GET",
            "/api/stats",
            &[("Authorization", &format!("Bearer {key}"))],
            b"",
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["connections"], 0);
    let wrong = server.get("/api/stats").await;
    assert_eq!(wrong.status, 401);

    // A second start generates a different key.
    let other = Server::start_raw(&args, &[]);
    let other_line = other.wait_log("generated API key").await;
    assert_ne!(
        line.split_whitespace().last(),
        other_line.split_whitespace().last()
    );
}

const FLAGS: [&str; 17] = [
    "--listen",
    "--shards",
    "--api-key",
    "--heartbeat-interval",
    "--heartbeat-timeout",
    "--conn-rate",
    "--max-message-size",
    "--max-subscriptions",
    "--send-queue-bytes",
    "--allowed-origins",
    "--shutdown-grace",
    "--log-format",
    "--config",
    "--handshake-timeout",
    "--max-inflight-publishes",
    "--publish-queue",
    "--history-ttl",
];

#[test]
fn help_lists_every_flag() {
    let top = run(&["--help"]);
    assert!(top.status.success(), "{top:?}");
    let top_text = String::from_utf8_lossy(&top.stdout);
    assert!(top_text.contains("serve"), "{top_text}");

    let serve = run(&["serve", "--help"]);
    assert!(serve.status.success(), "{serve:?}");
    let text = String::from_utf8_lossy(&serve.stdout);
    for flag in FLAGS {
        assert!(
            text.contains(flag),
            "{flag} missing from `huddle serve --help`:\n{text}"
        );
    }
}

#[test]
fn unknown_toml_key_is_refused() {
    let file = TempToml::new(
        "unknown",
        "heartbeat-timeout = \"5s\"\nno-such-setting = 3\n",
    );
    let out = run(&["serve", "--listen", "127.0.0.1:0", "--config", file.path()]);
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-setting"), "stderr: {err}");
}

#[test]
fn json_log_format_makes_the_ready_line_json() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_huddle"))
        .args(BASE)
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn huddle");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("listening on") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx.recv_timeout(support::WAIT);
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("no ready line");
    let v: serde_json::Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("ready line is not JSON ({e}): {line}"));
    let text = v.to_string();
    assert!(text.contains("listening on 127.0.0.1:"), "{v}");
    assert!(v["level"].is_string(), "{v}");
}

/// `GET /api/stats` at `addr` with one extra header; the status.
async fn stats_status(addr: SocketAddr, header: (&str, &str)) -> u16 {
    let req = format!(
        "GET /api/stats HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{}: {}\r\n\r\n",
        header.0, header.1
    );
    support::raw_http(addr, req.as_bytes()).await.status
}

#[tokio::test]
async fn listen_port_only_means_all_interfaces() {
    let args = [
        "serve",
        "--listen",
        ":0",
        "--api-key",
        "k",
        "--conn-rate",
        "off",
    ];
    let server = Server::start_raw(&args, &[]);
    assert!(server.addr.ip().is_unspecified(), "{}", server.addr);
    assert!(server.addr.is_ipv4(), "{}", server.addr);
    assert_ne!(server.addr.port(), 0);
    let local: SocketAddr = ([127, 0, 0, 1], server.addr.port()).into();
    assert_eq!(stats_status(local, ("X-API-Key", "k")).await, 200);
}

#[tokio::test]
async fn listen_localhost_resolves_to_loopback() {
    let args = [
        "serve",
        "--listen",
        "localhost:0",
        "--api-key",
        "k",
        "--conn-rate",
        "off",
    ];
    let server = Server::start_raw(&args, &[]);
    assert_eq!(server.addr.ip().to_string(), "127.0.0.1");
    assert_eq!(stats_status(server.addr, ("X-API-Key", "k")).await, 200);
}

#[test]
fn listen_host_name_is_refused_clearly() {
    let out = run(&["serve", "--listen", "example.com:80"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--listen") && err.contains("invalid address"),
        "{err}"
    );
}

#[tokio::test]
async fn last_config_file_wins() {
    let first = TempToml::new("first", "heartbeat-timeout = \"11s\"\n");
    let second = TempToml::new("second", "heartbeat-timeout = \"22s\"\n");
    let mut args = BASE.to_vec();
    args.extend(["--config", first.path(), "--config", second.path()]);
    let server = Server::start_raw(&args, &[]);
    assert_eq!(ack_intervals(&server).await.1, json!(22));
    drop(server);

    let eq_form = format!("--config={}", first.path());
    let mut args = BASE.to_vec();
    args.extend(["--config", second.path(), &eq_form]);
    let server = Server::start_raw(&args, &[]);
    assert_eq!(ack_intervals(&server).await.1, json!(11));
}

#[test]
fn huge_heartbeat_timeout_is_refused_without_panic() {
    let mut args = BASE.to_vec();
    args.extend(["--heartbeat-timeout", "1e19"]);
    let out = run(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--heartbeat-timeout"), "stderr: {err}");
    assert!(!err.contains("panicked"), "stderr: {err}");

    for flag in [
        "--heartbeat-interval",
        "--shutdown-grace",
        "--handshake-timeout",
        "--history-ttl",
    ] {
        let mut args = BASE.to_vec();
        args.extend([flag, "1e12"]);
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {err}");
        assert!(
            err.contains(flag) && !err.contains("panicked"),
            "{flag}: {err}"
        );
    }
    for bad in ["NaN", "inf", "1e30"] {
        let mut args = BASE.to_vec();
        args.extend(["--heartbeat-timeout", bad]);
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(!err.contains("panicked"), "{bad}: {err}");
    }
}

#[tokio::test]
async fn address_in_use_fails_at_once() {
    let first = Server::start(&[]);
    let addr = first.addr.to_string();
    let started = Instant::now();
    let out = run(&[
        "serve",
        "--listen",
        &addr,
        "--api-key",
        "k",
        "--shards",
        "2",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "second server started: {err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(err.contains("in use"), "stderr: {err}");
    assert!(!err.contains("panicked"), "stderr: {err}");
    // The first one keeps serving, and every new client reaches it.
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(first.connect("/ws").await.0);
    }
    first
        .wait_stats("8 connections", |s| s["connections"] == 8)
        .await;
}

#[tokio::test]
async fn several_api_keys_from_flags() {
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--conn-rate",
        "off",
        "--api-key",
        "old-key",
        "--api-key",
        "new-key,next-key",
    ];
    let server = Server::start_raw(&args, &[]);
    let a = server.addr;
    assert_eq!(stats_status(a, ("X-API-Key", "old-key")).await, 200);
    assert_eq!(
        stats_status(a, ("Authorization", "Bearer new-key")).await,
        200
    );
    assert_eq!(
        stats_status(a, ("Authorization", "Bearer next-key")).await,
        200
    );
    assert_eq!(stats_status(a, ("X-API-Key", "other-key")).await, 401);
    assert_eq!(
        stats_status(a, ("Authorization", "Bearer old-key,new-key")).await,
        401
    );
    assert_eq!(stats_status(a, ("X-API-Key", "")).await, 401);
    // RFC 9110: the auth scheme is case-insensitive.
    assert_eq!(
        stats_status(a, ("authorization", "bearer new-key")).await,
        200
    );
    assert_eq!(
        stats_status(a, ("Authorization", "BEARER old-key")).await,
        200
    );
    assert_eq!(
        stats_status(a, ("Authorization", "Basic old-key")).await,
        401
    );

    // Publishing over the WebSocket accepts any of them.
    let (mut p, _) = server.connect("/ws?api_key=next-key").await;
    p.send_json(&json!({"event_type":"publish","message_id":"p1",
        "data":{"channel":"odds","event_type":"odds_update","data":support::odds("7", 1)}}))
        .await;
    let r = p.next_json().await;
    assert_eq!(r["event_type"], "publish", "{r}");
    assert_eq!(r["reply_to"], "p1", "{r}");
}

#[tokio::test]
async fn several_api_keys_from_env_and_file() {
    let args = ["serve", "--listen", "127.0.0.1:0", "--conn-rate", "off"];
    let server = Server::start_raw(&args, &[("HUDDLE_API_KEY", "env-a, env-b")]);
    let a = server.addr;
    assert_eq!(stats_status(a, ("X-API-Key", "env-a")).await, 200);
    assert_eq!(stats_status(a, ("X-API-Key", "env-b")).await, 200);
    assert_eq!(stats_status(a, ("X-API-Key", "env-c")).await, 401);
    drop(server);

    for text in [
        "api-key = [\"file-a\", \"file-b\"]\n",
        "api-key = \"file-a,file-b\"\n",
    ] {
        let file = TempToml::new("keys", text);
        let args = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--conn-rate",
            "off",
            "--config",
            file.path(),
        ];
        let server = Server::start_raw(&args, &[]);
        let a = server.addr;
        assert_eq!(
            stats_status(a, ("X-API-Key", "file-a")).await,
            200,
            "{text}"
        );
        assert_eq!(
            stats_status(a, ("Authorization", "bearer file-b")).await,
            200,
            "{text}"
        );
        assert_eq!(
            stats_status(a, ("X-API-Key", "file-c")).await,
            401,
            "{text}"
        );
        assert!(!server
            .logs()
            .iter()
            .any(|l| l.contains("generated API key")));
    }
}
