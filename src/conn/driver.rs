//! The task that drives one connection: the only code that waits on its socket.
//!
//! It sleeps on (readable | writable-while-the-outbox-is-non-empty | a wake from the shard |
//! the close linger), and hands every event to the shard, which owns all state. Closing:
//! after our close frame is flushed we half-close (FIN) and read until the client's close or
//! EOF; after the client's close is echoed we drop the socket; `CLOSE_LINGER` bounds both, so
//! a peer that never reads can't keep a closing connection alive.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use super::{ConnIo, Phase};
use crate::codec::Decoder;
use crate::shard::{ReadOutcome, Shard};

/// Longest a closing connection is kept waiting for its flush or the client's close.
pub const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Runs a registered connection until it is closed, then removes it from the shard.
pub async fn drive(cell: Rc<RefCell<Shard>>, key: usize, io: Rc<ConnIo>, early: Bytes) {
    let max = cell.borrow().shared.config.max_message_size;
    let mut decoder = Decoder::new(max);
    let mut reading = true;
    {
        let mut shard = cell.borrow_mut();
        if !early.is_empty() && shard.on_bytes(key, &mut decoder, &early) == ReadOutcome::Stop {
            reading = false;
        }
        shard.flush_dirty();
    }
    drop(early);
    let mut linger: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let mut fin_sent = false;
    loop {
        let Some((want_write, phase)) = cell.borrow().interest(key) else {
            break;
        };
        match phase {
            Phase::Open if !reading => break,
            Phase::Open => {}
            Phase::Closing { peer_closed, since } => {
                if linger.is_none() {
                    let deadline = tokio::time::Instant::from_std(since + CLOSE_LINGER);
                    linger = Some(Box::pin(tokio::time::sleep_until(deadline)));
                }
                if !want_write {
                    if peer_closed || !reading {
                        break;
                    }
                    if !fin_sent {
                        fin_sent = true;
                        let _ =
                            socket2::SockRef::from(&io.stream).shutdown(std::net::Shutdown::Write);
                    }
                }
            }
        }
        tokio::select! {
            biased;
            _ = io.wake.notified() => {}
            // poll_*_ready (not readable()/writable()) store our waker in the socket's single
            // reader/writer slot, replacing the one hyper left there: otherwise hyper's finished
            // connection task stays allocated, pinned by that waker, for the socket's life.
            r = std::future::poll_fn(|cx| io.stream.poll_write_ready(cx)), if want_write => {
                if r.is_err() {
                    break;
                }
                cell.borrow_mut().on_writable(key);
            }
            r = std::future::poll_fn(|cx| io.stream.poll_read_ready(cx)), if reading => {
                if r.is_err() {
                    break;
                }
                if cell.borrow_mut().on_readable(key, &mut decoder) == ReadOutcome::Stop {
                    reading = false;
                }
            }
            _ = async {
                match linger.as_mut() {
                    Some(sleep) => sleep.await,
                    None => std::future::pending().await,
                }
            } => break,
        }
    }
    cell.borrow_mut().remove(key);
}
