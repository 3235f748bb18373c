//! `GET /ws/echo` (only with `--echo-endpoint`): echoes through the same codec and limits as
//! the pub/sub endpoints, with no `connection_ack`, for conformance runs.

mod support;

use futures_util::{SinkExt, StreamExt};
use support::{RawWs, Server};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn echoes_text_and_binary_without_an_ack() {
    let server = Server::start(&["--echo-endpoint"]);
    let mut c = server.connect_raw("/ws/echo").await;
    c.ws.send(Message::Text("héllo".into())).await.unwrap();
    let m = tokio::time::timeout(support::WAIT, c.ws.next())
        .await
        .unwrap();
    assert_eq!(
        m.unwrap().unwrap(),
        Message::Text("héllo".into()),
        "first frame is the echo, no ack"
    );
    c.ws.send(Message::Binary(vec![0, 1, 2, 255]))
        .await
        .unwrap();
    let m = tokio::time::timeout(support::WAIT, c.ws.next())
        .await
        .unwrap();
    assert_eq!(m.unwrap().unwrap(), Message::Binary(vec![0, 1, 2, 255]));
    c.close(1000).await;
    assert_eq!(c.recv_close().await.0, 1000);
}

#[tokio::test]
async fn fragments_are_echoed_as_one_message_and_limits_apply() {
    let server = Server::start(&["--echo-endpoint", "--max-message-size", "1000"]);
    let mut raw = RawWs::connect(server.addr, "/ws/echo").await;
    raw.send_frame(false, 0x1, b"frag").await;
    raw.send_frame(false, 0x0, b"men").await;
    raw.send_frame(true, 0x0, b"ted").await;
    assert_eq!(raw.read_frame().await, Some((0x1, b"fragmented".to_vec())));
    raw.send_frame(true, 0x2, &[7u8; 1001]).await;
    assert_eq!(raw.read_close().await, Some(1009));
}

#[tokio::test]
async fn echo_is_absent_without_the_flag() {
    let server = Server::start(&[]);
    let r = server.http("GET", "/ws/echo", &[], b"").await;
    assert_eq!(r.status, 404);
}
