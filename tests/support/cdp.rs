//! Headless Chromium driven over the DevTools protocol (CDP) with tokio-tungstenite: launch,
//! open one page, evaluate scripts, and keep what the page did (console errors, exceptions,
//! every request it made) so a test can assert on it. Event-driven: every wait is for a CDP
//! event or a promise inside the page, bounded by a timeout.
//!
//! Chromium is Debian's `chromium` (`HUDDLE_CHROMIUM` overrides the path). Without it a test
//! is skipped with a note, unless `CI` is set: then it fails, as CI installs it.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Longest wait for one CDP answer or event (a page-side wait may run most of a minute).
const WAIT: Duration = Duration::from_secs(60);

/// What the page did that a test may assert on.
#[derive(Debug, Default, Clone)]
pub struct PageLog {
    /// Console messages of level error, uncaught exceptions, and browser log errors (CSP
    /// violations, failed loads).
    pub errors: Vec<String>,
    /// URL of every request the page made, WebSockets included.
    pub requests: Vec<String>,
}

/// A running headless Chromium with one attached page; killed on drop.
pub struct Browser {
    child: Child,
    profile: PathBuf,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    /// Events read while waiting for an answer, not yet taken.
    pending: VecDeque<Value>,
    pub log: PageLog,
}

/// The Chromium binary, or None (after printing why) when the test should be skipped.
pub fn chromium() -> Option<PathBuf> {
    let path = std::env::var("HUDDLE_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/usr/bin/chromium"));
    if path.exists() {
        return Some(path);
    }
    if std::env::var_os("CI").is_some() {
        panic!("{} is missing; .ci/run installs chromium", path.display());
    }
    eprintln!(
        "skipped: no Chromium at {} (apt-get install chromium, or set HUDDLE_CHROMIUM)",
        path.display()
    );
    None
}

impl Browser {
    /// Starts Chromium headless with a fresh profile and attaches to its page.
    pub async fn launch(binary: &Path) -> Browser {
        let profile = std::env::temp_dir().join(format!(
            "huddle-chromium-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&profile).expect("profile dir");
        let mut child = Command::new(binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-default-apps",
                "--mute-audio",
                "--hide-scrollbars",
                "--window-size=1280,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn chromium");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        // Drain stderr for the whole run; the first DevTools line gives the browser endpoint.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(i) = line.find("ws://") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(line[i..].trim().to_owned());
                    }
                }
            }
        });
        let url = match rx.recv_timeout(WAIT) {
            Ok(u) => u,
            Err(_) => {
                let _ = child.kill();
                panic!("chromium did not print its DevTools endpoint within {WAIT:?}");
            }
        };
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("devtools connect timed out")
            .expect("devtools connect");
        let mut b = Browser {
            child,
            profile,
            ws,
            session: String::new(),
            next_id: 0,
            pending: VecDeque::new(),
            log: PageLog::default(),
        };
        let targets = b.browser_call("Target.getTargets", json!({})).await;
        let page = targets["targetInfos"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .map(|t| t["targetId"].clone());
        let target = match page {
            Some(id) => id,
            None => b
                .browser_call("Target.createTarget", json!({"url":"about:blank"}))
                .await["targetId"]
                .clone(),
        };
        let attached = b
            .browser_call(
                "Target.attachToTarget",
                json!({"targetId": target, "flatten": true}),
            )
            .await;
        b.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_owned();
        for domain in [
            "Page.enable",
            "Runtime.enable",
            "Network.enable",
            "Log.enable",
        ] {
            b.call(domain, json!({})).await;
        }
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width":1280,"height":900,"deviceScaleFactor":1,"mobile":false}),
        )
        .await;
        b
    }

    async fn browser_call(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None).await
    }

    /// A command on the page's session; panics on a CDP error.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(method, params, Some(session)).await
    }

    async fn send(&mut self, method: &str, params: Value, session: Option<String>) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::Text(msg.to_string()))
            .await
            .expect("devtools send");
        loop {
            let m = self.read().await;
            if m["id"] == id {
                if let Some(e) = m.get("error") {
                    panic!("{method} failed: {e}");
                }
                return m["result"].clone();
            }
            self.pending.push_back(m);
        }
    }

    /// The next message from Chromium, noting what the page did.
    async fn read(&mut self) -> Value {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no DevTools message within {WAIT:?}; page log: {:?}",
                        self.log
                    )
                });
            let text = match next {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(_)) => continue,
                other => panic!("devtools connection ended: {other:?}"),
            };
            let m: Value = serde_json::from_str(&text).expect("devtools JSON");
            self.note(&m);
            return m;
        }
    }

    fn note(&mut self, m: &Value) {
        let p = &m["params"];
        match m["method"].as_str().unwrap_or("") {
            "Network.requestWillBeSent" => {
                if let Some(u) = p["request"]["url"].as_str() {
                    self.log.requests.push(u.to_owned());
                }
            }
            "Network.webSocketCreated" => {
                if let Some(u) = p["url"].as_str() {
                    self.log.requests.push(u.to_owned());
                }
            }
            "Runtime.exceptionThrown" => self
                .log
                .errors
                .push(format!("exception: {}", p["exceptionDetails"])),
            "Runtime.consoleAPICalled" if p["type"] == "error" => self
                .log
                .errors
                .push(format!("console.error: {}", p["args"])),
            "Log.entryAdded" if p["entry"]["level"] == "error" => {
                self.log.errors.push(format!("log: {}", p["entry"]["text"]))
            }
            _ => {}
        }
    }

    /// The next event `pred` accepts (earlier events stay noted in `log`).
    pub async fn event(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        while let Some(m) = self.pending.pop_front() {
            if pred(&m) {
                return m;
            }
        }
        loop {
            let m = self.read().await;
            if pred(&m) {
                return m;
            }
        }
    }

    /// Navigates and waits for the page's load event.
    pub async fn navigate(&mut self, url: &str) {
        self.pending.clear();
        self.call("Page.navigate", json!({"url": url})).await;
        self.event(|m| m["method"] == "Page.loadEventFired").await;
    }

    /// Evaluates `expr` in the page, awaiting a promise; returns its value. An exception fails
    /// the test with its text.
    pub async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "awaitPromise": true, "returnByValue": true}),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!(
                "script failed: {e}\nscript: {expr}\npage log: {:?}",
                self.log
            );
        }
        r["result"]["value"].clone()
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&mut self) -> Vec<u8> {
        use base64::Engine as _;
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("screenshot base64")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .elapsed()
            .map_or(0, |d| d.as_nanos() as u64),
    );
    h.finish()
}
