//! The task that drives one connection: the only code that waits on its socket.
//!
//! It sleeps on (the close linger | a wake from the shard | writable while the outbox is
//! non-empty | readable while the connection may read), and hands every event to the shard,
//! which owns all state. Fairness: a connection reads at most a few buffers per wake and then
//! yields, so one client streaming data can't starve the rest of its shard. Closing: after our
//! close frame is flushed we half-close (FIN) and read (discarding) until the client's close or
//! EOF; after the client's close is echoed we drop the socket. The linger deadline
//! (`Phase::linger_deadline`) is checked before anything else on every turn, so a client that
//! keeps sending can't hold a closing connection open.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;

use super::{ConnIo, ReadOutcome, Shard};
use crate::codec::Decoder;
use crate::conn::Phase;

/// Runs a registered connection until it is closed, then removes it from the shard.
pub async fn drive(cell: Rc<RefCell<Shard>>, key: usize, io: Rc<ConnIo>, early: Bytes) {
    let max = cell.borrow().shared.config.max_message_size;
    let mut decoder = Decoder::new(max);
    let mut reading = true;
    let mut paused = false;
    {
        let mut shard = cell.borrow_mut();
        if !early.is_empty() {
            match shard.on_bytes(key, &mut decoder, &early) {
                ReadOutcome::Stop => reading = false,
                ReadOutcome::Paused => paused = true,
                _ => {}
            }
        }
        shard.flush_dirty();
    }
    drop(early);
    let mut flushed_at: Option<Instant> = None;
    let mut fin_sent = false;
    loop {
        let Some(it) = cell.borrow().wants(key) else {
            break;
        };
        let mut deadline = None;
        match it.phase {
            Phase::Open if !reading => break,
            Phase::Open => {}
            Phase::Closing { peer_closed, .. } => {
                if !it.want_write {
                    flushed_at.get_or_insert_with(Instant::now);
                    if peer_closed || !reading {
                        break;
                    }
                    if !fin_sent {
                        fin_sent = true;
                        let _ =
                            socket2::SockRef::from(&io.stream).shutdown(std::net::Shutdown::Write);
                    }
                }
                deadline = it.phase.linger_deadline(flushed_at);
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
            }
        }
        if paused && it.may_read {
            // Replies went out: handle what the decoder still holds before reading more.
            paused = false;
            let mut shard = cell.borrow_mut();
            match shard.on_bytes(key, &mut decoder, &[]) {
                ReadOutcome::Stop => reading = false,
                ReadOutcome::Paused => paused = true,
                _ => {}
            }
            shard.flush_dirty();
            continue;
        }
        let read_now = reading && !paused && it.may_read;
        tokio::select! {
            biased;
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                    None => std::future::pending().await,
                }
            } => break,
            _ = io.wake.notified() => {}
            // poll_*_ready (not readable()/writable()) store our waker in the socket's single
            // reader/writer slot, replacing the one hyper left there: otherwise hyper's finished
            // connection task stays allocated, pinned by that waker, for the socket's life.
            r = std::future::poll_fn(|cx| io.stream.poll_write_ready(cx)), if it.want_write => {
                if r.is_err() {
                    break;
                }
                cell.borrow_mut().on_writable(key);
            }
            r = std::future::poll_fn(|cx| io.stream.poll_read_ready(cx)), if read_now => {
                if r.is_err() {
                    break;
                }
                let outcome = cell.borrow_mut().on_readable(key, &mut decoder);
                match outcome {
                    ReadOutcome::Stop => reading = false,
                    ReadOutcome::Paused => paused = true,
                    ReadOutcome::Yield => tokio::task::yield_now().await,
                    ReadOutcome::Continue => {}
                }
            }
        }
    }
    cell.borrow_mut().remove(key);
}
