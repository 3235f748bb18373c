//! The JavaScript client `huddle.js` (PROTOCOL.md §14): the shared reconnect scenario
//! (tests/support/jsprobe.rs) run in Node, its unit tests (`node --test`), and how the server
//! serves it. Without Node these tests are skipped, except under CI (`CI` set), where they fail.

mod support;

use support::jsprobe::{self, NodeProbe};
use support::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_reconnects_recovers_and_surfaces_lost_history() {
    let js = jsprobe::client_js_path();
    let Some(mut probe) = NodeProbe::start(&js) else {
        return;
    };
    jsprobe::reconnect_scenario(&mut probe).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_recovers_after_the_server_closes_its_connection() {
    let js = jsprobe::client_js_path();
    let Some(mut probe) = NodeProbe::start(&js) else {
        return;
    };
    jsprobe::server_close_scenario(&mut probe).await;
}

#[tokio::test]
async fn unit_tests_pass_in_node() {
    let Some(mut cmd) = jsprobe::node_command() else {
        return;
    };
    let out = cmd
        .args(["--test", "tests/js/unit.test.mjs"])
        .output()
        .await
        .expect("run node --test");
    assert!(
        out.status.success(),
        "node --test failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn served_as_a_cross_origin_module() {
    let server = Server::start(&[]);
    let r = server.http("GET", "/huddle.js", &[], b"").await;
    assert_eq!(r.status, 200);
    let ct = r.header("content-type").unwrap_or("");
    assert!(ct.starts_with("text/javascript"), "{ct}");
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    // The bytes served are the file the Node tests import.
    let file = std::fs::read_to_string(jsprobe::client_js_path()).expect("huddle.js");
    assert!(
        r.text() == file,
        "served huddle.js differs from the source file"
    );
}
