//! Subscribing, publishing and the error replies of PROTOCOL.md §4 and §7, end to end.
//!
//! "Nothing else arrives" is checked without sleeping: after the action that must not deliver,
//! a marker is published on a channel the client does get, and the next message must be it.

mod support;

use serde_json::{json, Value};
use support::{odds, Client, Server, API_KEY};

/// Publishes over HTTP and returns the `results` array.
async fn publish(server: &Server, body: Value) -> Vec<Value> {
    let r = server.post("/api/publish", &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["results"].as_array().expect("results").clone()
}

async fn marker(server: &Server, channel: &str, tag: &str) {
    publish(
        server,
        json!({"channel": channel, "event_type": "marker", "data": {"tag": tag}}),
    )
    .await;
}

async fn expect_marker(c: &mut Client, tag: &str) {
    let m = c.next_json().await;
    assert_eq!(m["event_type"], "marker", "expected marker {tag}, got {m}");
    assert_eq!(m["data"]["tag"], tag);
}

#[tokio::test]
async fn subscribe_reply_then_published_message() {
    let server = Server::start(&[]);
    let (mut c, _) = server.connect("/ws").await;
    c.send_json(
        &json!({"event_type":"user_subscription","message_id":"c1","data":{"channel":"odds"}}),
    )
    .await;
    let reply = c.next_json().await;
    assert_eq!(reply["event_type"], "user_subscription");
    assert_eq!(reply["reply_to"], "c1");
    assert_eq!(reply["data"]["channel"], "odds");
    assert_eq!(reply["data"]["status"], "subscribed");
    assert_eq!(
        reply["data"]["offset"], 0,
        "a channel with no message is at offset 0"
    );
    let epoch = reply["data"]["epoch"].as_str().expect("epoch").to_owned();

    let results = publish(
        &server,
        json!({"channel":"odds","event_type":"odds_update","data":odds("7", 1)}),
    )
    .await;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["channel"], "odds");
    assert_eq!(results[0]["offset"], 1);
    assert_eq!(results[0]["epoch"], epoch.as_str());
    assert_eq!(results[0]["recipients"], 1);

    let m = c.next_json().await;
    assert_eq!(m["event_type"], "odds_update");
    assert_eq!(m["channel"], "odds");
    assert_eq!(m["offset"], 1);
    assert_eq!(m["data"]["sportsbook"], "fanduel");
    assert!(m["message_id"].as_str().is_some_and(|s| !s.is_empty()));
    let ts = m["timestamp"].as_str().expect("timestamp");
    assert!(
        ts.ends_with('Z') && ts.len() == "2026-11-25T18:04:05.123Z".len(),
        "{ts}"
    );
    assert!(m.get("reply_to").is_none());

    // A later subscriber is told the channel's last offset.
    let (mut late, _) = server.connect("/ws").await;
    let r = late.subscribe("odds").await;
    assert_eq!(r["data"]["offset"], 1);
    assert_eq!(r["reply_to"], "sub-odds");
}

#[tokio::test]
async fn several_channels_in_one_request() {
    let server = Server::start(&[]);
    let (mut c, _) = server.connect("/ws").await;
    c.send_json(&json!({"event_type":"user_subscription","message_id":"m","data":{"channels":["odds","games","lines"]}}))
        .await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let r = c.next_json().await;
        assert_eq!(r["reply_to"], "m");
        assert_eq!(r["data"]["status"], "subscribed");
        got.push(r["data"]["channel"].as_str().unwrap().to_owned());
    }
    assert_eq!(got, ["odds", "games", "lines"]);
    for ch in ["lines", "games"] {
        marker(&server, ch, ch).await;
        expect_marker(&mut c, ch).await;
    }
}

#[tokio::test]
async fn subscribing_twice_does_not_duplicate_delivery() {
    let server = Server::start(&[]);
    let (mut c, _) = server.connect("/ws/odds").await;
    c.subscribe("odds").await;
    let results = publish(
        &server,
        json!({"channel":"odds","event_type":"tick","data":{"n":1}}),
    )
    .await;
    assert_eq!(results[0]["recipients"], 1);
    let first = c.next_json().await;
    assert_eq!(first["offset"], 1);
    marker(&server, "odds", "after").await;
    let next = c.next_json().await;
    assert_eq!(next["offset"], 2, "no second copy of offset 1: {next}");
    assert_eq!(next["data"]["tag"], "after");
}

#[tokio::test]
async fn unsubscribe_stops_delivery_after_the_reply() {
    let server = Server::start(&[]);
    let (mut c, _) = server.connect("/ws/odds").await;
    c.subscribe("games").await;
    c.send_json(
        &json!({"event_type":"user_unsubscription","message_id":"u1","data":{"channel":"odds"}}),
    )
    .await;
    let r = c.next_json().await;
    assert_eq!(r["event_type"], "user_unsubscription");
    assert_eq!(r["reply_to"], "u1");
    assert_eq!(r["data"]["channel"], "odds");
    assert_eq!(r["data"]["status"], "unsubscribed");
    let results = publish(
        &server,
        json!({"channel":"odds","event_type":"tick","data":{}}),
    )
    .await;
    assert_eq!(results[0]["recipients"], 0);
    marker(&server, "games", "still-here").await;
    expect_marker(&mut c, "still-here").await;
}

#[tokio::test]
async fn a_message_to_two_subscribed_channels_arrives_once_per_channel() {
    let server = Server::start(&[]);
    let (mut c, _) = server.connect("/ws/odds").await;
    c.subscribe("odds_7").await;
    // odds_update without channels goes to `odds` and `odds_7` (default routing).
    let results = publish(
        &server,
        json!({"event_type":"odds_update","data":odds("7", 1)}),
    )
    .await;
    let chans: Vec<&str> = results
        .iter()
        .map(|r| r["channel"].as_str().unwrap())
        .collect();
    assert_eq!(chans, ["odds", "odds_7"]);
    let mut seen = vec![
        c.next_json().await["channel"].as_str().unwrap().to_owned(),
        c.next_json().await["channel"].as_str().unwrap().to_owned(),
    ];
    seen.sort();
    assert_eq!(seen, ["odds", "odds_7"]);
    marker(&server, "odds", "end").await;
    expect_marker(&mut c, "end").await;
}

#[tokio::test]
async fn default_routing_for_each_typed_event() {
    let server = Server::start(&[]);
    let game = json!({
        "game_id":"9","home_team":"KC","away_team":"BUF","home_score":21,"away_score":17,
        "quarter":4,"time_remaining":"02:00","game_status":"in_progress","updated_at":"2026-11-25T18:04:05Z"
    });
    let prediction = json!({
        "game_id":"9","home_team":"KC","away_team":"BUF","home_win_probability":0.6,
        "away_win_probability":0.4,"predicted_spread":-3.0,"confidence_level":0.8,
        "model_version":"v2","updated_at":"2026-11-25T18:04:05.123Z"
    });
    let (mut g, ack) = server.connect("/ws/game/9").await;
    assert_eq!(ack["data"]["subscriptions"].as_array().unwrap().len(), 3);
    let (mut games, _) = server.connect("/ws/games").await;
    let (mut preds, _) = server.connect("/ws/predictions").await;
    for (event, data, general) in [
        ("game_update", game, "games"),
        ("odds_update", odds("9", 1), "odds"),
        ("prediction_update", prediction, "predictions"),
    ] {
        let results = publish(&server, json!({"event_type": event, "data": data})).await;
        let chans: Vec<&str> = results
            .iter()
            .map(|r| r["channel"].as_str().unwrap())
            .collect();
        let per_game = format!("{}_9", if general == "games" { "game" } else { general });
        assert_eq!(chans, [general, per_game.as_str()], "{event}");
        let m = g.next_json().await;
        assert_eq!(m["event_type"], event);
        assert_eq!(m["channel"], per_game.as_str());
    }
    assert_eq!(games.next_json().await["event_type"], "game_update");
    assert_eq!(preds.next_json().await["event_type"], "prediction_update");
}

#[tokio::test]
async fn client_filters_pick_messages_by_data_fields() {
    let server = Server::start(&[]);
    let (mut c, _) = server.connect("/ws").await;
    c.send_json(
        &json!({"event_type":"user_subscription","message_id":"f","data":{
        "channel":"odds","filter":{"sportsbook":["draftkings","caesars"],"game_id":["7"]}}}),
    )
    .await;
    assert_eq!(c.next_json().await["data"]["status"], "subscribed");
    let (mut plain, _) = server.connect("/ws/odds").await;
    let mut fanduel = odds("7", 1);
    fanduel["sportsbook"] = json!("fanduel");
    let mut dk_other_game = odds("8", 2);
    dk_other_game["sportsbook"] = json!("draftkings");
    let mut dk = odds("7", 3);
    dk["sportsbook"] = json!("draftkings");
    for data in [&fanduel, &dk_other_game, &dk] {
        publish(
            &server,
            json!({"channel":"odds","event_type":"odds_update","data":data}),
        )
        .await;
    }
    let m = c.next_json().await;
    assert_eq!(m["data"]["seq"], 3, "only the matching message: {m}");
    assert_eq!(m["offset"], 3);
    for seq in 1..=3 {
        assert_eq!(
            plain.next_json().await["data"]["seq"],
            seq,
            "unfiltered gets all"
        );
    }
}

#[tokio::test]
async fn invalid_payload_is_422_and_delivers_nothing() {
    let server = Server::start(&[]);
    let (mut c, _) = server.connect("/ws/games").await;
    let bad = json!({"channel":"games","event_type":"game_update","data":{
        "game_id":"1","home_team":"A","away_team":"B","home_score":-1,"away_score":0,"quarter":1,
        "time_remaining":"12:00","game_status":"in_progress","updated_at":"2026-11-25T18:04:05Z"}});
    let r = server.post("/api/publish", &bad).await;
    assert_eq!(r.status, 422);
    let e = r.json();
    assert_eq!(e["error"]["code"], "validation_failed");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("data.home_score"),
        "{e}"
    );

    let missing = json!({"channel":"games","event_type":"notification","data":{"level":"info"}});
    let r = server.post("/api/publish", &missing).await;
    assert_eq!(r.status, 422);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("data.message"));

    let no_channel = json!({"event_type":"score_tick","data":{}});
    assert_eq!(server.post("/api/publish", &no_channel).await.status, 422);
    let bad_channel = json!({"channel":"has space","event_type":"tick","data":{}});
    assert_eq!(server.post("/api/publish", &bad_channel).await.status, 422);

    let r = server
        .http(
            "POST",
            "/api/publish",
            &[("X-API-Key", API_KEY)],
            b"{not json",
        )
        .await;
    assert_eq!(r.status, 400);
    let big = vec![b' '; 1024 * 1024 + 10];
    let r = server
        .http("POST", "/api/publish", &[("X-API-Key", API_KEY)], &big)
        .await;
    assert_eq!(r.status, 413);

    marker(&server, "games", "first-delivery").await;
    let m = c.next_json().await;
    assert_eq!(m["data"]["tag"], "first-delivery");
    assert_eq!(m["offset"], 1, "refused publishes took no offset");
}

#[tokio::test]
async fn publisher_message_id_and_custom_events_pass_through() {
    let server = Server::start(&[]);
    let (mut c, _) = server.connect("/ws").await;
    c.subscribe("eliminations").await;
    publish(
        &server,
        json!({"channel":"eliminations","event_type":"pool_elimination","message_id":"pub-1","data":{"user":"x","week":12}}),
    )
    .await;
    let m = c.next_json().await;
    assert_eq!(m["event_type"], "pool_elimination");
    assert_eq!(m["message_id"], "pub-1");
    assert_eq!(m["data"], json!({"user":"x","week":12}));
}

#[tokio::test]
async fn broadcast_reaches_every_connection() {
    let server = Server::start(&[]);
    let mut clients = Vec::new();
    for path in [
        "/ws",
        "/ws/games",
        "/ws/odds",
        "/ws/game/3",
        "/ws?user_id=u",
    ] {
        clients.push(server.connect(path).await.0);
    }
    let r = server
        .post(
            "/api/broadcast",
            &json!({"event_type":"notification","data":{"message":"maintenance at 3","level":"warning","title":"Heads up"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["recipients"], 5);
    for c in &mut clients {
        let m = c.next_json().await;
        assert_eq!(m["event_type"], "notification");
        assert_eq!(m["data"]["level"], "warning");
        assert!(m.get("channel").is_none() && m.get("offset").is_none());
    }
    let bad = server
        .post(
            "/api/broadcast",
            &json!({"event_type":"notification","data":{"message":"x","level":"loud"}}),
        )
        .await;
    assert_eq!(bad.status, 422);
}

#[tokio::test]
async fn send_reaches_every_connection_of_one_user_only() {
    let server = Server::start(&[]);
    let mut alice = Vec::new();
    for _ in 0..4 {
        alice.push(server.connect("/ws/games?user_id=alice").await.0);
    }
    let (mut bob, _) = server.connect("/ws/games?user_id=bob").await;
    let r = server
        .post(
            "/api/send",
            &json!({"user_id":"alice","event_type":"bet_settled","data":{"bet":"b1","won":true}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["recipients"], 4);
    for c in &mut alice {
        let m = c.next_json().await;
        assert_eq!(m["event_type"], "bet_settled");
        assert_eq!(m["user_id"], "alice");
    }
    marker(&server, "games", "bob-next").await;
    expect_marker(&mut bob, "bob-next").await;
    let none = server
        .post(
            "/api/send",
            &json!({"user_id":"nobody","event_type":"x","data":{}}),
        )
        .await;
    assert_eq!(none.json()["recipients"], 0);
    let missing = server
        .post("/api/send", &json!({"event_type":"x","data":{}}))
        .await;
    assert_eq!(missing.status, 422);
}

#[tokio::test]
async fn publishing_over_the_websocket_needs_the_key() {
    let server = Server::start(&[]);
    let (mut sub, _) = server.connect("/ws/odds").await;
    let (mut anon, _) = server.connect("/ws").await;
    anon.send_json(&json!({"event_type":"publish","message_id":"p0","data":{"channel":"odds","event_type":"tick","data":{}}}))
        .await;
    let e = anon.next_json().await;
    assert_eq!(e["event_type"], "error");
    assert_eq!(e["reply_to"], "p0");
    assert_eq!(e["data"]["code"], "forbidden");

    let (mut publisher, _) = server.connect(&format!("/ws?api_key={API_KEY}")).await;
    publisher
        .send_json(&json!({"event_type":"publish","message_id":"p1","data":{"channel":"odds","event_type":"odds_update","data":odds("7", 5)}}))
        .await;
    let reply = publisher.next_json().await;
    assert_eq!(reply["event_type"], "publish");
    assert_eq!(reply["reply_to"], "p1");
    assert_eq!(reply["data"]["results"][0]["channel"], "odds");
    assert_eq!(reply["data"]["results"][0]["offset"], 1);
    assert_eq!(reply["data"]["results"][0]["recipients"], 1);
    let m = sub.next_json().await;
    assert_eq!(m["data"]["seq"], 5);

    // The key may also come as a header on the upgrade request.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = server.ws_url("/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("X-API-Key", API_KEY.parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut hdr = Client { ws };
    assert_eq!(hdr.next_json().await["event_type"], "connection_ack");
    hdr.send_json(&json!({"event_type":"publish","message_id":"p2","data":{"channel":"odds","event_type":"tick","data":{}}}))
        .await;
    assert_eq!(hdr.next_json().await["data"]["results"][0]["offset"], 2);

    // Invalid payloads are refused with the validation message.
    publisher
        .send_json(&json!({"event_type":"publish","message_id":"p3","data":{"channel":"odds","event_type":"odds_update","data":{"game_id":"7"}}}))
        .await;
    let e = publisher.next_json().await;
    assert_eq!(e["event_type"], "error");
    assert_eq!(e["reply_to"], "p3");
    assert_eq!(e["data"]["code"], "invalid_message");
    assert!(
        e["data"]["message"].as_str().unwrap().contains("data."),
        "{e}"
    );
}

#[tokio::test]
async fn bad_client_messages_get_error_replies_and_the_connection_goes_on() {
    let server = Server::start(&["--max-subscriptions", "2"]);
    let (mut c, _) = server.connect("/ws").await;
    let cases: Vec<(String, &str, Option<&str>)> = vec![
        ("{not json".into(), "invalid_message", None),
        ("[1,2]".into(), "invalid_message", None),
        (r#"{"event_type":"dance","message_id":"d1"}"#.into(), "unknown_event", Some("d1")),
        (r#"{"event_type":"user_subscription","message_id":"s1","data":{"channel":"bad channel!"}}"#.into(), "invalid_channel", Some("s1")),
        (r#"{"event_type":"user_subscription","message_id":"s2","data":{"channel":""}}"#.into(), "invalid_channel", Some("s2")),
        (r#"{"event_type":"user_subscription","message_id":"s3","data":{}}"#.into(), "invalid_message", Some("s3")),
        (r#"{"event_type":"user_subscription","message_id":"s4","data":{"channels":["a","b","c"]}}"#.into(), "too_many_subscriptions", Some("s4")),
        (r#"{"event_type":"user_subscription","message_id":"s5","data":{"channel":"odds","since":{"offset":1}}}"#.into(), "invalid_message", Some("s5")),
    ];
    for (text, code, reply_to) in cases {
        c.send_text(&text).await;
        let e = c.next_json().await;
        assert_eq!(e["event_type"], "error", "{text}: {e}");
        assert_eq!(e["data"]["code"], code, "{text}: {e}");
        assert!(e["data"]["message"].as_str().is_some_and(|m| !m.is_empty()));
        match reply_to {
            Some(r) => assert_eq!(e["reply_to"], r, "{text}"),
            None => assert!(e.get("reply_to").is_none(), "{text}"),
        }
    }
    // The per-connection cap counts channels across requests.
    c.subscribe("a").await;
    c.subscribe("b").await;
    c.send_json(
        &json!({"event_type":"user_subscription","message_id":"s6","data":{"channel":"c"}}),
    )
    .await;
    let e = c.next_json().await;
    assert_eq!(e["data"]["code"], "too_many_subscriptions", "{e}");
    // Re-subscribing to a channel already held is fine at the cap.
    c.subscribe("a").await;
    // Still usable.
    c.send_json(&json!({"event_type":"heartbeat","message_id":"hb"}))
        .await;
    let hb = c.next_json().await;
    assert_eq!(hb["event_type"], "heartbeat");
    assert_eq!(hb["reply_to"], "hb");
    let s = server.stats().await;
    assert_eq!(s["connections"], 1);
}
