//! What the dashboard stands on (PROTOCOL.md §14): `GET /` and `GET /huddle.js` served by the
//! binary, the API key presented in a `refresh` instead of a URL, and the `huddle:stats`
//! channel pushing the server's numbers once a second to API-key connections only.
mod support;

use serde_json::{json, Value};
use support::{Client, Server, API_KEY};

/// The next `stats` push, skipping pings and anything else.
async fn next_stats(c: &mut Client) -> Value {
    loop {
        let m = c.next_json().await;
        if m["event_type"] == "stats" {
            return m;
        }
    }
}

/// The sum of a JSON array of counts.
fn sum(counts: &Value) -> u64 {
    counts
        .as_array()
        .map_or(0, |a| a.iter().filter_map(Value::as_u64).sum())
}

/// Presents the API key over the socket and subscribes to `huddle:stats`.
async fn watch_stats(c: &mut Client) {
    c.send_json(&json!({"event_type":"refresh","message_id":"k","data":{"api_key":API_KEY}}))
        .await;
    let r = c.next_json().await;
    assert_eq!(
        r,
        json!({"event_type":"refresh","reply_to":"k","data":{"api_key":true}})
    );
    c.subscribe("huddle:stats").await;
}

#[tokio::test]
async fn the_dashboard_and_the_client_are_served_from_the_binary() {
    let s = Server::start(&[]);
    let page = s.http("GET", "/", &[], b"").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").unwrap_or("");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    let html = page.text();
    assert!(
        html.contains("/huddle.js"),
        "the page uses the served client"
    );
    for external in ["http://", "https://", "//cdn", "@import"] {
        assert!(
            !html.contains(external),
            "the page names no outside resource ({external})"
        );
    }

    let js = s
        .http(
            "GET",
            "/huddle.js",
            &[("Origin", "https://app.example")],
            b"",
        )
        .await;
    assert_eq!(js.status, 200);
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(js.header("access-control-allow-origin"), Some("*"));
    assert!(
        js.text().contains("export class Huddle"),
        "an ES module exporting Huddle"
    );

    assert_eq!(s.http("POST", "/huddle.js", &[], b"").await.status, 405);
    assert_eq!(s.http("GET", "/nothing-here", &[], b"").await.status, 404);
}

#[tokio::test]
async fn stats_need_the_api_key_and_a_wrong_key_changes_nothing() {
    let s = Server::start(&[]);
    let (mut c, _) = s.connect("/ws").await;
    c.send_json(&json!({"event_type":"user_subscription","message_id":"s1","data":{"channel":"huddle:stats"}}))
        .await;
    let e = c.next_json().await;
    assert_eq!(e["event_type"], "error", "{e}");
    assert_eq!(e["data"]["code"], "forbidden", "{e}");
    assert_eq!(e["reply_to"], "s1");

    c.send_json(
        &json!({"event_type":"refresh","message_id":"k0","data":{"api_key":"not-the-key"}}),
    )
    .await;
    let e = c.next_json().await;
    assert_eq!(e["data"]["code"], "forbidden", "{e}");
    assert_eq!(e["reply_to"], "k0");
    // Still not allowed, and the key never reached the log.
    c.send_json(&json!({"event_type":"user_subscription","message_id":"s2","data":{"channel":"huddle:stats"}}))
        .await;
    assert_eq!(c.next_json().await["data"]["code"], "forbidden");
    assert!(s.logs().iter().all(|l| !l.contains("not-the-key")));

    watch_stats(&mut c).await;
    let m = next_stats(&mut c).await;
    assert_eq!(m["channel"], "huddle:stats");
    assert!(m.get("offset").is_none(), "pushes carry no offset: {m}");
    assert!(m["timestamp"].is_string());
}

#[tokio::test]
async fn stats_follow_the_traffic_once_a_second_without_counting_themselves() {
    let s = Server::start(&[]);
    let (mut watcher, _) = s.connect("/ws").await;
    watch_stats(&mut watcher).await;
    let (mut sub, _) = s.connect("/ws").await;
    sub.subscribe("odds").await;
    // Two pushes with no traffic: nothing published, nothing delivered (pushes are not counted).
    let quiet = next_stats(&mut watcher).await;
    next_stats(&mut watcher).await;
    let stats = s.stats().await;
    assert_eq!(stats["messages_delivered"], 0, "{stats}");
    assert_eq!(quiet["data"]["messages_published"], 0, "{quiet}");

    for i in 0..30 {
        let r = s
            .post(
                "/api/publish",
                &json!({"channel":"odds","event_type":"tick","data":{"i":i}}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    for _ in 0..30 {
        assert_eq!(sub.next_json().await["event_type"], "tick");
    }
    // The push after the publishes has them in its totals, its rates and its latency counts;
    // the channel table arrives within a few pushes of the first one.
    let d = loop {
        let d = next_stats(&mut watcher).await["data"].take();
        let listed = d["top_channels"]
            .as_array()
            .is_some_and(|t| t.iter().any(|c| c["channel"] == "odds"));
        if d["messages_published"] == 30 && listed {
            break d;
        }
    };
    assert_eq!(d["messages_delivered"], 30, "{d}");
    assert_eq!(d["connections"], 2, "{d}");
    let rate = sum(&d["per_second"]["published"]);
    assert_eq!(
        rate, 30,
        "the last minute's rates add up to the publishes: {d}"
    );
    let observed = sum(&d["latency"]["counts"]);
    assert_eq!(
        observed, 30,
        "one publish-to-write observation per delivery: {d}"
    );
    assert!(d["latency"]["p99"].as_f64().is_some_and(|p| p > 0.0), "{d}");
    let odds = d["top_channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == "odds")
        .cloned();
    assert_eq!(odds, Some(json!({"channel":"odds","subscribers":1})));
    assert_eq!(d["channels"], 2, "odds and huddle:stats: {d}");
}

#[tokio::test]
async fn nobody_publishes_to_the_servers_own_channels() {
    let s = Server::start(&[]);
    let r = s
        .post(
            "/api/publish",
            &json!({"channel":"huddle:stats","event_type":"stats","data":{}}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        r.text().contains("written by the server only"),
        "{}",
        r.text()
    );

    let (mut c, _) = s.connect(&format!("/ws?api_key={API_KEY}")).await;
    c.send_json(&json!({"event_type":"publish","message_id":"p1","data":{"channel":"huddle:x","event_type":"tick","data":{}}}))
        .await;
    let e = c.next_json().await;
    assert_eq!(e["event_type"], "error", "{e}");
    assert_eq!(e["data"]["code"], "invalid_channel", "{e}");
    assert_eq!(e["reply_to"], "p1");
}

#[tokio::test]
async fn per_user_streams_are_listed_under_their_channel() {
    let s = Server::start(&[]);
    let (mut a, _) = s.connect("/ws?user_id=alice").await;
    let (mut b, _) = s.connect("/ws?user_id=bob").await;
    a.subscribe("bankroll").await;
    b.subscribe("bankroll").await;
    let listed = s.get("/api/channels").await.json();
    assert_eq!(
        listed,
        json!({"channels":[{"channel":"bankroll","subscribers":2}]}),
        "two users' own streams, one channel name"
    );
    let (mut watcher, _) = s.connect("/ws").await;
    watch_stats(&mut watcher).await;
    let d = loop {
        let d = next_stats(&mut watcher).await["data"].take();
        if !d["channels"].is_null() {
            break d;
        }
    };
    assert_eq!(d["channels"], 2, "bankroll and huddle:stats: {d}");
    let bankroll = d["top_channels"]
        .as_array()
        .and_then(|t| t.iter().find(|c| c["channel"] == "bankroll").cloned());
    assert_eq!(
        bankroll,
        Some(json!({"channel":"bankroll","subscribers":2})),
        "{d}"
    );
}
