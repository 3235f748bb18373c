//! A shard's thread: a current-thread tokio runtime running the accept loop, the inbox loop,
//! the timer-wheel tick and every connection task of this shard.
//!
//! Shutdown arrives through `Shared::shutdown` (a flag and a wake), not through the inbox, so
//! an inbox backlog can't delay it. The inbox keeps being served while the shard drains, so
//! every publish already admitted is sequenced and answered.

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::{spawn_local, LocalSet};

use super::mesh::ShardMsg;
use super::{Shard, Shared};

/// Largest batch drained from the inbox per wake.
const INBOX_BATCH: usize = 512;

/// Connections accepted per turn of the shard's scheduler. A burst of reconnects (hundreds of
/// upgrades, each tens of microseconds of handshake work) is admitted this many at a time, with
/// the inbox (live fan-out) and the open connections served between batches, instead of all
/// at once ahead of them in the run queue.
const ACCEPT_BATCH: usize = 16;

/// What serves an accepted socket (the HTTP layer, given by the server so the shard does not
/// depend on it).
pub type AcceptFn =
    fn(Rc<RefCell<Shard>>, TcpStream, SocketAddr) -> Pin<Box<dyn Future<Output = ()>>>;

/// Starts shard `id` on its own OS thread.
pub fn spawn(
    id: usize,
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    inbox: mpsc::UnboundedReceiver<ShardMsg>,
    serve: AcceptFn,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("huddle-shard-{id}"))
        .spawn(move || run(id, shared, listener, inbox, serve))
}

fn run(
    id: usize,
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    inbox: mpsc::UnboundedReceiver<ShardMsg>,
    serve: AcceptFn,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(shard = id, "cannot start runtime: {e}");
            return;
        }
    };
    let local = LocalSet::new();
    local.block_on(&rt, async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(shard = id, "cannot register listener: {e}");
                return;
            }
        };
        let grace = shared.config.shutdown_grace;
        let stop = shared.shutdown.wake(id);
        let cell = Shard::new_cell(id, shared);
        let accept = spawn_local(accept_loop(cell.clone(), listener, serve));
        let ticker = spawn_local(tick_loop(cell.clone()));
        let inbox_task = spawn_local(inbox_loop(cell.clone(), inbox));
        stop.notified().await;
        accept.abort();
        cell.borrow_mut().begin_shutdown();
        let drained = cell.borrow().drained.clone();
        let wait = async {
            loop {
                let signalled = drained.notified();
                if cell.borrow().connection_count() == 0 {
                    break;
                }
                signalled.await;
            }
        };
        if tokio::time::timeout(grace, wait).await.is_err() {
            tracing::warn!(
                shard = id,
                left = cell.borrow().connection_count(),
                "shutdown grace over; dropping remaining connections"
            );
        }
        ticker.abort();
        inbox_task.abort();
    });
}

async fn accept_loop(cell: Rc<RefCell<Shard>>, listener: tokio::net::TcpListener, serve: AcceptFn) {
    let mut accepted = 0;
    loop {
        if accepted == ACCEPT_BATCH {
            accepted = 0;
            tokio::task::yield_now().await;
        }
        match listener.accept().await {
            Ok((stream, peer)) => {
                accepted += 1;
                let _ = stream.set_nodelay(true);
                spawn_local(serve(cell.clone(), stream, peer));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn tick_loop(cell: Rc<RefCell<Shard>>) {
    let tick = cell.borrow().tick();
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        cell.borrow_mut().on_tick(Instant::now());
    }
}

/// Drains the inbox a batch per wake, yielding between batches so connections get their turn.
async fn inbox_loop(cell: Rc<RefCell<Shard>>, mut inbox: mpsc::UnboundedReceiver<ShardMsg>) {
    let mut batch = Vec::with_capacity(INBOX_BATCH);
    while inbox.recv_many(&mut batch, INBOX_BATCH).await > 0 {
        {
            let mut shard = cell.borrow_mut();
            for msg in batch.drain(..) {
                shard.on_message(msg);
            }
            shard.flush_dirty();
        }
        tokio::task::yield_now().await;
    }
}
