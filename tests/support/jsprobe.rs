//! The JavaScript client (`src/http/assets/huddle.js`) under test: one scenario, written once,
//! run against any host that can drive `tests/js/probe.mjs` — Node now ([`NodeProbe`]), a
//! browser later. The host sends the probe JSON commands and hands back its JSON reports, in
//! order; the scenario owns the servers and the proxy and decides what must have been seen.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::proxy::Proxy;
use super::{tokens, Server, WAIT};

/// Something that runs `probe.mjs` somewhere.
#[allow(async_fn_in_trait)] // only implemented and awaited inside this test suite, never Send-bound
pub trait ProbeHost {
    /// Hands one command to the probe.
    async fn command(&mut self, cmd: Value);
    /// The probe's next report, in order; panics after [`WAIT`].
    async fn report(&mut self) -> Value;
}

/// `src/http/assets/huddle.js`: the file the server compiles in.
pub fn client_js_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http/assets/huddle.js")
}

/// How to run Node, or None (the test is skipped) when it is missing outside CI. Node 20 needs
/// `--experimental-websocket` for a global WebSocket; later versions have one already.
pub fn node_command() -> Option<Command> {
    let has_global = |flag: Option<&str>| {
        let mut c = std::process::Command::new("node");
        c.args(flag)
            .args([
                "-e",
                "process.exit(typeof WebSocket === 'function' ? 0 : 1)",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c.status().is_ok_and(|s| s.success())
    };
    let flag = if has_global(None) {
        None
    } else if has_global(Some("--experimental-websocket")) {
        Some("--experimental-websocket")
    } else {
        assert!(
            std::env::var_os("CI").is_none(),
            "node (>= 20) is not installed: the JavaScript client tests need it"
        );
        eprintln!("SKIPPED: node >= 20 is not installed (the JavaScript client tests need it)");
        return None;
    };
    let mut cmd = Command::new("node");
    cmd.args(flag).current_dir(env!("CARGO_MANIFEST_DIR"));
    Some(cmd)
}

/// `tests/js/node_probe.mjs` in a child process; killed on drop.
pub struct NodeProbe {
    _child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
}

impl NodeProbe {
    /// Starts the probe on the client at `js` (a path); None when Node is missing outside CI.
    pub fn start(js: &Path) -> Option<NodeProbe> {
        let mut cmd = node_command()?;
        cmd.arg("tests/js/node_probe.mjs")
            .arg(js)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn node");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut err = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = err.next_line().await {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Some(NodeProbe {
            _child: child,
            stdin,
            stdout,
            stderr,
        })
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl ProbeHost for NodeProbe {
    async fn command(&mut self, cmd: Value) {
        let line = format!("{cmd}\n");
        if let Err(e) = self.stdin.write_all(line.as_bytes()).await {
            panic!("probe stdin: {e}; stderr:\n{}", self.stderr());
        }
    }

    async fn report(&mut self) -> Value {
        match tokio::time::timeout(WAIT, self.stdout.next_line()).await {
            Ok(Ok(Some(line))) => serde_json::from_str(&line).unwrap_or_else(|e| {
                panic!(
                    "probe printed {line:?}, not JSON ({e}); stderr:\n{}",
                    self.stderr()
                )
            }),
            Ok(_) => panic!("the probe ended; stderr:\n{}", self.stderr()),
            Err(_) => panic!(
                "no report from the probe within {WAIT:?}; stderr:\n{}",
                self.stderr()
            ),
        }
    }
}

/// Every report of one run, read through `until`.
struct Run<'h, H> {
    host: &'h mut H,
    log: Vec<Value>,
}

impl<H: ProbeHost> Run<'_, H> {
    /// Reads reports until `pred` holds for one and returns it; all are kept in the log.
    async fn until(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let r = self.host.report().await;
            eprintln!("probe: {r}");
            self.log.push(r.clone());
            assert!(r["event"] != "probe_error", "probe failed: {r}");
            if pred(&r) {
                return r;
            }
            assert!(
                self.log.len() < 10_000,
                "no report for {what} among {}",
                self.log.len()
            );
        }
    }

    /// Sends a command and waits for its ack.
    async fn command(&mut self, cmd: Value) -> Value {
        let name = cmd["cmd"].clone();
        self.host.command(cmd).await;
        let ack = self.until("the ack", |r| r["ack"] == name).await;
        assert!(ack.get("error").is_none(), "{ack}");
        ack
    }

    async fn state(&mut self, state: &str) {
        self.until(state, |r| r["event"] == "state" && r["state"] == state)
            .await;
    }

    /// Waits for the channel message with `offset`.
    async fn message(&mut self, offset: u64) {
        self.until(&format!("message {offset}"), |r| {
            r["event"] == "message" && r["channel"] == CHANNEL && r["offset"] == offset
        })
        .await;
    }

    fn events(&self, event: &str) -> Vec<&Value> {
        self.log.iter().filter(|r| r["event"] == event).collect()
    }
}

const CHANNEL: &str = "scores";

/// Publishes `{"n": n}` over HTTP; asserts it got offset `n`.
async fn publish(server: &Server, n: u64) {
    let r = server
        .post(
            "/api/publish",
            &json!({"channel": CHANNEL, "event_type": "score", "data": {"n": n}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["results"][0]["offset"], n, "{}", r.text());
}

/// The client through a network cut (recovers: every message exactly once, queued publishes go
/// out) and through a server restart (history lost: `lost` surfaces).
///
/// Tokens are on so the client may publish (a token with a `publish` claim, §9), handed out
/// again by `getToken` before each reconnect. The start command names the client as the first
/// server serves it (`js`), for hosts that load it from there (a browser page).
pub async fn reconnect_scenario<H: ProbeHost>(host: &mut H) {
    let args = ["--history-size", "1000", "--jwt-secret", tokens::SECRET];
    let mut server = Server::start(&args);
    let proxy = Proxy::start(server.addr).await;
    let token = tokens::hs256(&tokens::claims(
        "probe",
        json!({"channels": [CHANNEL], "publish": [CHANNEL]}),
    ));
    let mut run = Run {
        host,
        log: Vec::new(),
    };

    // (a) Connect, subscribe, receive 1..10.
    run.command(
        json!({"cmd": "start", "js": format!("http://{}/huddle.js", server.addr), "url": proxy.ws_url("/ws"), "channel": CHANNEL,
        "options": {"token": token, "minDelay": 20, "maxDelay": 200}}),
    )
    .await;
    let first = run
        .until("subscribed", |r| r["event"] == "subscribed")
        .await;
    assert_eq!(first["offset"], 0, "{first}");
    assert!(first.get("recovered").is_none(), "{first}");
    for n in 1..=10 {
        publish(&server, n).await;
    }
    run.message(10).await;

    // (b) Cut the network and hold reconnects: 11..20 published meanwhile, 3 publishes queued.
    proxy.hold(true);
    proxy.cut();
    run.state("disconnected").await;
    run.state("connecting").await;
    for n in 11..=20 {
        publish(&server, n).await;
    }
    for n in 21..=23 {
        run.command(
            json!({"cmd": "publish", "channel": CHANNEL, "event_type": "score", "data": {"n": n}}),
        )
        .await;
    }
    proxy.hold(false);
    let resumed = run
        .until("resubscribed", |r| r["event"] == "subscribed")
        .await;
    assert_eq!(resumed["recovered"], true, "{resumed}");
    assert_eq!(resumed["offset"], 10, "position kept: {resumed}");
    assert_eq!(resumed["epoch"], first["epoch"], "{resumed}");
    run.message(23).await;
    while run.events("published").len() < 3 {
        run.until("publish results", |r| {
            r["event"] == "published" || r["event"] == "publish_failed"
        })
        .await;
        assert!(run.events("publish_failed").is_empty(), "{:?}", run.log);
    }
    for (i, p) in run.events("published").iter().enumerate() {
        assert_eq!(p["id"], i + 1, "{p}");
        assert_eq!(p["results"][0]["offset"], 21 + i, "flushed in order: {p}");
        assert_eq!(p["results"][0]["epoch"], first["epoch"], "{p}");
    }

    // (c) Restart: a real close (1001), then a server with no history.
    server.sigterm();
    run.until("1001", |r| {
        r["event"] == "disconnected" && r["code"] == 1001
    })
    .await;
    server.wait_exit(Duration::from_secs(10));
    let new = Server::start(&args);
    proxy.set_upstream(new.addr);
    let lost = run.until("lost", |r| r["event"] == "lost").await;
    let third = run.events("subscribed")[2].clone();
    assert_eq!(third["recovered"], false, "{third}");
    assert_eq!(
        (&lost["offset"], &lost["epoch"]),
        (&json!(0), &third["epoch"])
    );
    assert_ne!(third["epoch"], first["epoch"], "a new server, a new epoch");
    for n in 1..=5 {
        publish(&new, n).await;
    }
    run.message(5).await;
    run.command(json!({"cmd": "close"})).await; // the state "closed" comes before the ack

    check_log(&run.log);
}

/// A server that keeps history and closes (4001) a client silent for one second: the server
/// closing a connection on its own, with nothing of the channel lost.
pub const SERVER_CLOSE_ARGS: &[&str] = &[
    "--history-size",
    "1000",
    "--heartbeat-interval",
    "30s",
    "--heartbeat-timeout",
    "1s",
];

/// The server itself closes the connection while keeping its history: a client that sends
/// nothing (heartbeats off) is closed with 4001 after `--heartbeat-timeout`. Reconnects are held
/// meanwhile, so messages 6..10 are published while it is away; it recovers them exactly once.
pub async fn server_close_scenario<H: ProbeHost>(host: &mut H) {
    let server = Server::start(SERVER_CLOSE_ARGS);
    let proxy = Proxy::start(server.addr).await;
    let mut run = Run {
        host,
        log: Vec::new(),
    };
    run.command(
        json!({"cmd": "start", "js": format!("http://{}/huddle.js", server.addr),
        "url": proxy.ws_url("/ws"), "channel": CHANNEL,
        "options": {"heartbeat": false, "minDelay": 20, "maxDelay": 200}}),
    )
    .await;
    run.until("subscribed", |r| r["event"] == "subscribed")
        .await;
    for n in 1..=5 {
        publish(&server, n).await;
    }
    run.message(5).await;
    proxy.hold(true);
    let closed = run
        .until("the server's close", |r| r["event"] == "disconnected")
        .await;
    assert_eq!(closed["code"], 4001, "closed by the server: {closed}");
    for n in 6..=10 {
        publish(&server, n).await;
    }
    proxy.hold(false);
    let resumed = run
        .until("resubscribed", |r| r["event"] == "subscribed")
        .await;
    assert_eq!(resumed["recovered"], true, "{resumed}");
    run.message(10).await;
    run.command(json!({"cmd": "close"})).await;
    let got: Vec<u64> = run
        .events("message")
        .iter()
        .filter_map(|m| m["offset"].as_u64())
        .collect();
    assert_eq!(
        got,
        (1..=10).collect::<Vec<_>>(),
        "every message once, in order"
    );
    assert!(run.events("lost").is_empty(), "{:?}", run.log);
}

/// What must hold over the whole run, whatever interleaving the reports had.
fn check_log(log: &[Value]) {
    let of = |e: &'static str| log.iter().filter(move |r| r["event"] == e);
    // Messages: 1..23 then 1..5, no gap, no duplicate, each with its own data.
    let got: Vec<(u64, u64)> = of("message")
        .map(|m| {
            assert_eq!(m["channel"], CHANNEL, "{m}");
            (
                m["offset"].as_u64().expect("offset"),
                m["data"]["n"].as_u64().expect("n"),
            )
        })
        .collect();
    let want: Vec<(u64, u64)> = (1..=23).chain(1..=5).map(|n| (n, n)).collect();
    assert_eq!(got, want, "messages as the app saw them");

    // States: a connected chain from connecting to closed; three connections.
    let states: Vec<(&str, &str)> = of("state")
        .map(|s| {
            (
                s["previous"].as_str().unwrap(),
                s["state"].as_str().unwrap(),
            )
        })
        .collect();
    let mut last = "disconnected";
    for &(previous, state) in &states {
        assert_eq!(previous, last, "states {states:?}");
        let ok = matches!(
            (previous, state),
            ("disconnected", "connecting")
                | ("connecting", "connected" | "disconnected")
                | ("connected", "disconnected")
                | (_, "closed")
        );
        assert!(ok, "{previous} -> {state} in {states:?}");
        last = state;
    }
    assert_eq!(last, "closed", "{states:?}");
    let connects = states.iter().filter(|s| s.1 == "connected").count();
    assert_eq!(connects, 3, "{states:?}");
    assert_eq!(of("connected").count(), 3);

    // getToken before every reconnect, not before the first connect (the token was given).
    let attempts = states.iter().filter(|s| s.1 == "connecting").count();
    assert_eq!(of("get_token").count(), attempts - 1, "{states:?}");

    let recovered: Vec<&Value> = of("subscribed").map(|s| &s["recovered"]).collect();
    assert_eq!(recovered, [&Value::Null, &json!(true), &json!(false)]);
    assert_eq!(of("lost").count(), 1);
    assert_eq!(of("published").count(), 3);
    for bad in ["publish_failed", "sub_error", "probe_error"] {
        assert_eq!(of(bad).count(), 0, "{bad}: {log:?}");
    }
    // Errors only from failed connection attempts while the server was away.
    for e in of("error") {
        assert_eq!(e["code"], "transport", "{e}");
    }
}
