//! A connection's unsent frames.
//!
//! Frames are `Bytes`: a broadcast frame is one allocation shared by every subscriber's outbox,
//! so queueing it costs a reference-count increment. The head frame may be partly written;
//! `head_sent` says how much. An empty outbox holds no heap memory (idle connections stay small),
//! and one pending frame needs none either (it sits inline).
//!
//! ```text
//!  frames:  [ frame0 ............ ][ frame1 ... ][ frame2 ..... ]
//!            ^-- head_sent --^ next byte to write
//!  queued_bytes = total length - head_sent
//! ```

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use bytes::Bytes;

/// Frames handed to one `writev` at most (Linux IOV_MAX is 1024).
pub const MAX_IOV: usize = 64;

/// Unsent frames of one connection.
#[derive(Debug, Default)]
pub struct Outbox {
    /// The oldest unsent frame, inline: a connection with one pending frame (the usual case
    /// in fan-out) needs no allocation.
    head: Option<Bytes>,
    /// Frames after `head`, allocated only while more than one is pending.
    rest: VecDeque<Bytes>,
    head_sent: usize,
    queued_bytes: usize,
}

impl Outbox {
    /// Appends a frame (shared, not copied).
    pub fn push(&mut self, frame: Bytes) {
        self.queued_bytes += frame.len();
        if self.head.is_none() {
            self.head = Some(frame);
        } else {
            self.rest.push_back(frame);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    /// Bytes not yet written to the socket.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Drops every frame not yet started, keeping a partly written head frame so the byte stream
    /// stays valid; used before a close frame is queued to a slow consumer.
    pub fn truncate_unstarted(&mut self) {
        if self.head_sent == 0 {
            self.head = None;
        }
        self.rest = VecDeque::new();
        self.queued_bytes = self.head.as_ref().map_or(0, |f| f.len() - self.head_sent);
    }

    /// Writes as much as `write` accepts, up to [`MAX_IOV`] frames per call, until the outbox is
    /// empty (`Ok(true)`) or the socket would block (`Ok(false)`).
    pub fn flush_with<W>(&mut self, mut write: W) -> io::Result<bool>
    where
        W: FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
    {
        while let Some(head) = &self.head {
            let mut iov: [IoSlice<'_>; MAX_IOV] = [IoSlice::new(&[]); MAX_IOV];
            iov[0] = IoSlice::new(&head[self.head_sent..]);
            let mut n = 1;
            for f in self.rest.iter().take(MAX_IOV - 1) {
                iov[n] = IoSlice::new(f);
                n += 1;
            }
            match write(&iov[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => self.consume(written),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Marks `n` bytes written.
    fn consume(&mut self, mut n: usize) {
        self.queued_bytes -= n.min(self.queued_bytes);
        while n > 0 {
            let Some(head) = &self.head else {
                break;
            };
            let left = head.len() - self.head_sent;
            if n >= left {
                n -= left;
                self.head = self.rest.pop_front();
                self.head_sent = 0;
            } else {
                self.head_sent += n;
                n = 0;
            }
        }
        if self.rest.is_empty() && self.rest.capacity() > KEEP_WHILE_ACTIVE {
            // A burst's worth of queue is given back at once; a small one is kept for the
            // next batch until the connection goes idle (`release_if_idle`).
            self.rest = VecDeque::new();
        }
    }

    /// Gives back the queue allocation of a drained outbox, so an idle connection holds no heap.
    /// Called from the heartbeat timer, not per flush: an active connection keeps its small
    /// queue instead of reallocating it for every batch.
    pub fn release_if_idle(&mut self) {
        if self.rest.is_empty() && self.rest.capacity() > 0 {
            self.rest = VecDeque::new();
        }
    }
}

/// Queue capacity (frames) an active connection keeps between batches.
const KEEP_WHILE_ACTIVE: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that accepts at most `cap` bytes per call and records them.
    fn writer<'a>(
        sink: &'a mut Vec<u8>,
        cap: usize,
    ) -> impl FnMut(&[IoSlice<'_>]) -> io::Result<usize> + 'a {
        move |iov| {
            let mut n = 0;
            for s in iov {
                let take = (cap - n).min(s.len());
                sink.extend_from_slice(&s[..take]);
                n += take;
                if n == cap {
                    break;
                }
            }
            if n == 0 {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(n)
            }
        }
    }

    #[test]
    fn partial_writes_keep_byte_order() {
        let mut o = Outbox::default();
        let frames: Vec<Bytes> = (0..10u8).map(|i| Bytes::from(vec![i; 7])).collect();
        for f in &frames {
            o.push(f.clone());
        }
        assert_eq!(o.queued_bytes(), 70);
        let mut sink = Vec::new();
        assert!(o.flush_with(writer(&mut sink, 5)).unwrap());
        assert!(o.is_empty());
        assert_eq!(o.queued_bytes(), 0);
        assert_eq!(sink, frames.concat());
    }

    #[test]
    fn would_block_leaves_tail_queued() {
        let mut o = Outbox::default();
        o.push(Bytes::from_static(b"hello"));
        o.push(Bytes::from_static(b"world"));
        let mut calls = 0;
        let done = o
            .flush_with(|_iov| {
                calls += 1;
                if calls == 1 {
                    Ok(3)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                }
            })
            .unwrap();
        assert!(!done);
        assert_eq!(o.queued_bytes(), 7);
        let mut sink = Vec::new();
        assert!(o.flush_with(writer(&mut sink, 100)).unwrap());
        assert_eq!(sink, b"loworld");
    }

    #[test]
    fn truncate_keeps_started_head_only() {
        let mut o = Outbox::default();
        o.push(Bytes::from_static(b"abcdef"));
        o.push(Bytes::from_static(b"ghi"));
        let mut first = true;
        let _ = o.flush_with(|_| {
            if first {
                first = false;
                Ok(2)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            }
        });
        o.truncate_unstarted();
        assert_eq!(o.queued_bytes(), 4);
        let mut sink = Vec::new();
        assert!(o.flush_with(writer(&mut sink, 100)).unwrap());
        assert_eq!(sink, b"cdef");

        let mut o = Outbox::default();
        o.push(Bytes::from_static(b"abc"));
        o.truncate_unstarted();
        assert!(o.is_empty());
        assert_eq!(o.queued_bytes(), 0);
    }

    #[test]
    fn one_pending_frame_allocates_nothing_and_idle_queue_is_released() {
        let mut o = Outbox::default();
        o.push(Bytes::from_static(b"one"));
        assert_eq!(o.rest.capacity(), 0, "a single frame sits inline");
        o.push(Bytes::from_static(b"two"));
        o.push(Bytes::from_static(b"three"));
        let mut sink = Vec::new();
        assert!(o.flush_with(writer(&mut sink, 4)).unwrap());
        assert_eq!(sink, b"onetwothree");
        assert!(o.is_empty());
        assert!(
            o.rest.capacity() > 0,
            "kept for the next batch while active"
        );
        o.release_if_idle();
        assert_eq!(o.rest.capacity(), 0, "released once idle");
        // A burst's worth is released as soon as it drains.
        for _ in 0..200 {
            o.push(Bytes::from_static(b"x"));
        }
        assert!(o.flush_with(writer(&mut sink, 1000)).unwrap());
        assert_eq!(o.rest.capacity(), 0);
    }

    #[test]
    fn shared_frames_are_not_copied() {
        let frame = Bytes::from(vec![1u8; 1000]);
        let mut a = Outbox::default();
        let mut b = Outbox::default();
        a.push(frame.clone());
        b.push(frame.clone());
        let mut ptrs = Vec::new();
        let _ = a.flush_with(|iov| {
            ptrs.push(iov[0].as_ptr());
            Ok(iov[0].len())
        });
        let _ = b.flush_with(|iov| {
            ptrs.push(iov[0].as_ptr());
            Ok(iov[0].len())
        });
        assert_eq!(ptrs[0], frame.as_ptr());
        assert_eq!(ptrs[1], frame.as_ptr());
    }
}
