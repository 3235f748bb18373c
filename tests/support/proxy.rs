//! A TCP proxy between a client under test and the server, so a test decides when the network
//! drops (`cut`), when reconnects get through (`hold`), and which server they reach
//! (`set_upstream`, for a restart on another port).
//!
//! Held connections are accepted and kept waiting, not refused: the client sits in its
//! connecting state, and the test knows it is away for as long as it holds.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

struct Shared {
    upstream: Mutex<SocketAddr>,
    /// true while new connections wait.
    hold: watch::Sender<bool>,
    /// Bumped by every cut; a connection ends when it changes.
    generation: watch::Sender<u64>,
    accepted: Mutex<u64>,
}

/// A running proxy; stops accepting and drops every connection when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on 127.0.0.1:0 and forwards to `upstream`. Must be called inside a tokio runtime.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let shared = Arc::new(Shared {
            upstream: Mutex::new(upstream),
            hold: watch::channel(false).0,
            generation: watch::channel(0).0,
            accepted: Mutex::new(0),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                *s.accepted.lock().unwrap() += 1;
                tokio::spawn(pair(s.clone(), client));
            }
        });
        Proxy { addr, shared, task }
    }

    /// Drops every connection, live or held, both sides, without a close frame (a network
    /// failure).
    pub fn cut(&self) {
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// While `on`, new connections are accepted but not forwarded until released.
    pub fn hold(&self, on: bool) {
        self.shared.hold.send_replace(on);
    }

    /// Where the next forwarded connection goes.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self.shared.upstream.lock().unwrap() = upstream;
    }

    /// Connections accepted so far (held ones included).
    pub fn accepted(&self) -> u64 {
        *self.shared.accepted.lock().unwrap()
    }

    /// `ws://` URL of `path` through the proxy.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

/// Forwards one accepted connection until either side ends or the proxy cuts.
async fn pair(s: Arc<Shared>, mut client: TcpStream) {
    let mut generation = s.generation.subscribe();
    generation.mark_unchanged();
    let mut hold = s.hold.subscribe();
    while *hold.borrow_and_update() {
        tokio::select! {
            r = hold.changed() => if r.is_err() { return },
            _ = generation.changed() => return,
        }
    }
    let upstream = *s.upstream.lock().unwrap();
    let mut server = tokio::select! {
        r = TcpStream::connect(upstream) => match r {
            Ok(server) => server,
            Err(_) => return,
        },
        _ = generation.changed() => return,
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = generation.changed() => {}
    }
    // Dropping both streams here ends them: the client sees its connection go with no close frame.
}
