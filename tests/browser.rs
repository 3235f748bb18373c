//! The dashboard and `/huddle.js` in a real browser (PROTOCOL.md §14): headless Chromium over
//! the DevTools protocol (tests/support/cdp.rs). Skipped without Chromium outside CI.
//!
//! `HUDDLE_SCREENSHOT=src/http/assets/dashboard.png cargo test --test browser` refreshes the
//! README's screenshot; otherwise it goes to the target directory.
mod support;

use base64::Engine as _;
use serde_json::Value;
use support::cdp::{chromium, Browser};
use support::jsprobe::{self, ProbeHost};
use support::{Server, API_KEY};

/// `tests/js/probe.mjs` in a page: the page is loaded from the server, imports `/huddle.js`
/// from it, and reports through `console.log` lines the host picks out of the CDP events.
struct BrowserProbe {
    browser: Browser,
    started: bool,
}

const REPORT: &str = "__probe ";

impl BrowserProbe {
    /// A fresh browser for one probe; None (skipped) without Chromium outside CI.
    async fn launch() -> Option<BrowserProbe> {
        let bin = chromium()?;
        Some(BrowserProbe {
            browser: Browser::launch(&bin).await,
            started: false,
        })
    }
}

impl ProbeHost for BrowserProbe {
    async fn command(&mut self, cmd: Value) {
        let cmd_js = serde_json::to_string(&cmd.to_string()).expect("command as a JS string");
        if self.started {
            self.browser
                .eval(&format!(
                    "window.__probe.command(JSON.parse({cmd_js})), true"
                ))
                .await;
            return;
        }
        self.started = true;
        let js = cmd["js"].as_str().expect("start names the client's URL");
        let origin = js.trim_end_matches("/huddle.js");
        self.browser.navigate(&format!("{origin}/healthz")).await;
        let probe = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js/probe.mjs"))
            .expect("probe.mjs");
        let probe = base64::engine::general_purpose::STANDARD.encode(probe);
        self.browser
            .eval(&format!(
                r#"(async () => {{
                    const {{ Huddle }} = await import({js:?});
                    const {{ Probe }} = await import("data:text/javascript;base64,{probe}");
                    window.__probe = new Probe(Huddle, (r) => console.log({REPORT:?} + JSON.stringify(r)));
                    await window.__probe.command(JSON.parse({cmd_js}));
                    return true;
                }})()"#
            ))
            .await;
    }

    async fn report(&mut self) -> Value {
        let m = self
            .browser
            .event(|m| {
                m["method"] == "Runtime.consoleAPICalled"
                    && m["params"]["args"][0]["value"]
                        .as_str()
                        .is_some_and(|v| v.starts_with(REPORT))
            })
            .await;
        let line = m["params"]["args"][0]["value"].as_str().unwrap_or("");
        serde_json::from_str(&line[REPORT.len()..]).expect("a JSON report")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_using_huddle_js_recovers_after_the_server_closes_its_connection() {
    let Some(mut probe) = BrowserProbe::launch().await else {
        return;
    };
    jsprobe::server_close_scenario(&mut probe).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_using_huddle_js_recovers_across_a_cut_and_is_told_of_a_restart() {
    let Some(mut probe) = BrowserProbe::launch().await else {
        return;
    };
    jsprobe::reconnect_scenario(&mut probe).await;
    // Only the failed reconnects while the server was down may have logged errors.
    let unexpected: Vec<&String> = probe
        .browser
        .log
        .errors
        .iter()
        .filter(|e| !e.contains("WebSocket connection to"))
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:?}");
}

/// Resolves once `cond` (a JS expression) is truthy, re-checked on every DOM change; rejects
/// after `ms` with `what` and the page's text.
fn wait_for(cond: &str, what: &str, ms: u64) -> String {
    format!(
        r#"new Promise((resolve, reject) => {{
            const ok = () => {{ try {{ return {cond}; }} catch (e) {{ return false; }} }};
            if (ok()) return resolve(true);
            const obs = new MutationObserver(() => {{ if (ok()) {{ obs.disconnect(); resolve(true); }} }});
            obs.observe(document.body, {{ subtree: true, childList: true, characterData: true, attributes: true }});
            setTimeout(() => {{ obs.disconnect(); reject(new Error({what:?} + " not seen; page: " + document.body.innerText.slice(0, 2000))); }}, {ms});
        }})"#
    )
}

fn number(text: &Value) -> u64 {
    text.as_str()
        .unwrap_or("")
        .replace(',', "")
        .parse()
        .unwrap_or(0)
}

#[tokio::test]
async fn the_dashboard_shows_live_numbers_and_the_demo_games_with_no_outside_request() {
    let Some(bin) = chromium() else { return };
    let s = Server::start(&["--demo", "--demo-interval", "100ms", "--demo-seed", "7"]);
    let origin = format!("http://{}", s.addr);
    let mut b = Browser::launch(&bin).await;
    b.navigate(&format!("{origin}/")).await;

    // Without the key: the scoreboard fills from the public channels, the numbers wait.
    b.eval(&wait_for(
        "document.querySelectorAll('.game').length >= 4",
        "four games on the scoreboard",
        15_000,
    ))
    .await;
    assert_eq!(
        b.eval("document.getElementById('connections').textContent")
            .await,
        "–"
    );

    // The key goes in the form, and from there over the socket.
    b.eval(&format!(
        "document.getElementById('api-key').value = {API_KEY:?}; \
         document.getElementById('key-submit').click(); true"
    ))
    .await;
    b.eval(&wait_for(
        "Number(document.getElementById('published-rate').textContent.replace(/,/g, '')) > 0 \
         && Number(document.getElementById('delivered-rate').textContent.replace(/,/g, '')) > 0 \
         && document.querySelectorAll('#channels tr.pick').length >= 3 \
         && document.getElementById('latency-p99').textContent !== '–'",
        "live non-zero rates, latency and the channel table",
        15_000,
    ))
    .await;
    let connections = number(
        &b.eval("document.getElementById('connections').textContent")
            .await,
    );
    assert!(
        connections >= 1,
        "the dashboard's own connection is counted"
    );
    let channels: Value = b
        .eval("[...document.querySelectorAll('#channels tr.pick td:first-child')].map(td => td.textContent)")
        .await;
    let names: Vec<&str> = channels
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for c in ["games", "odds", "predictions", "huddle:stats"] {
        assert!(names.contains(&c), "{c} in the channel table: {names:?}");
    }

    // A live view of a channel picked from the table.
    b.eval(
        "[...document.querySelectorAll('#channels tr.pick')].find(tr => tr.cells[0].textContent === 'odds').click(); true",
    )
    .await;
    b.eval(&wait_for(
        "document.querySelectorAll('#feed li').length >= 2 && document.getElementById('feed').textContent.includes('odds_update')",
        "odds messages in the live view",
        15_000,
    ))
    .await;
    // Let the charts gather some history for the screenshot: a few seconds in a test run, most
    // of the minute when the README's picture is being taken.
    let target = std::env::var("HUDDLE_SCREENSHOT").ok();
    let settle_ms = if target.is_some() { 45_000 } else { 8_000 };
    b.eval(&wait_for(
        &format!(
            "document.getElementById('rates-max').textContent.startsWith('peak') && performance.now() > {settle_ms}"
        ),
        "some seconds of rates",
        settle_ms + 15_000,
    ))
    .await;
    let png = b.screenshot().await;
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(png.len() > 20_000, "a real picture, {} bytes", png.len());
    let path = std::env::var("HUDDLE_SCREENSHOT")
        .unwrap_or_else(|_| format!("{}/dashboard.png", env!("CARGO_TARGET_TMPDIR")));
    std::fs::write(&path, &png).expect("write screenshot");

    let log = b.log.clone();
    assert!(log.errors.is_empty(), "no console error: {:?}", log.errors);
    let ws_origin = format!("ws://{}", s.addr);
    let outside: Vec<&String> = log
        .requests
        .iter()
        .filter(|u| {
            !u.starts_with(&origin) && !u.starts_with(&ws_origin) && !u.starts_with("data:")
        })
        .collect();
    assert!(
        outside.is_empty(),
        "requests outside the server: {outside:?}"
    );
    assert!(
        log.requests
            .iter()
            .any(|u| u == &format!("{origin}/huddle.js")),
        "{:?}",
        log.requests
    );
    // The key never appears in a URL.
    assert!(
        log.requests.iter().all(|u| !u.contains(API_KEY)),
        "{:?}",
        log.requests
    );
    assert!(s.logs().iter().all(|l| !l.contains(API_KEY)));
}
