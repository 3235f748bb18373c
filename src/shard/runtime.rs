//! A shard's thread: a current-thread tokio runtime running the accept loop, the inbox loop,
//! the timer-wheel tick and every connection task of this shard.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::{spawn_local, LocalSet};

use super::mesh::ShardMsg;
use super::Shard;
use crate::server::Shared;

/// Largest batch drained from the inbox per wake.
const INBOX_BATCH: usize = 512;

/// Starts shard `id` on its own OS thread.
pub fn spawn(
    id: usize,
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    inbox: mpsc::UnboundedReceiver<ShardMsg>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("huddle-shard-{id}"))
        .spawn(move || run(id, shared, listener, inbox))
}

fn run(
    id: usize,
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    inbox: mpsc::UnboundedReceiver<ShardMsg>,
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
        let cell = Shard::new_cell(id, shared);
        let accept = spawn_local(accept_loop(cell.clone(), listener));
        let ticker = spawn_local(tick_loop(cell.clone()));
        inbox_loop(&cell, inbox).await;
        accept.abort();
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
    });
}

async fn accept_loop(cell: Rc<RefCell<Shard>>, listener: tokio::net::TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                spawn_local(crate::http::serve(cell.clone(), stream, peer));
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

/// Drains the inbox a batch per wake until a shutdown message arrives.
async fn inbox_loop(cell: &Rc<RefCell<Shard>>, mut inbox: mpsc::UnboundedReceiver<ShardMsg>) {
    let mut batch = Vec::with_capacity(INBOX_BATCH);
    while inbox.recv_many(&mut batch, INBOX_BATCH).await > 0 {
        let mut shard = cell.borrow_mut();
        for msg in batch.drain(..) {
            shard.on_message(msg);
        }
        shard.flush_dirty();
        if shard.is_draining() {
            break;
        }
    }
}
