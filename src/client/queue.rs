//! The bounded outbound queue (sans-IO): what the application sends while the connection is
//! not ready waits here, in order, up to a limit; past it a send fails at once instead of
//! growing without bound.

use std::collections::VecDeque;

/// FIFO of at most `limit` items.
#[derive(Debug)]
pub struct Outbox<T> {
    items: VecDeque<T>,
    limit: usize,
}

impl<T> Outbox<T> {
    /// An empty queue holding at most `limit` items.
    pub fn new(limit: usize) -> Outbox<T> {
        Outbox {
            items: VecDeque::new(),
            limit,
        }
    }

    /// Appends `item`, or hands it back when the queue is full.
    pub fn push(&mut self, item: T) -> Result<(), T> {
        if self.items.len() >= self.limit {
            return Err(item);
        }
        self.items.push_back(item);
        Ok(())
    }

    /// The oldest item.
    pub fn pop(&mut self) -> Option<T> {
        self.items.pop_front()
    }

    /// Everything queued, oldest first (used when the client closes).
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.items.drain(..)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_refuses_past_the_limit() {
        let mut q = Outbox::new(3);
        for i in 0..3 {
            assert!(q.push(i).is_ok());
        }
        assert_eq!(q.push(3), Err(3));
        assert_eq!(q.len(), 3);
        assert_eq!(q.pop(), Some(0));
        // Room again after a pop.
        assert!(q.push(4).is_ok());
        assert_eq!(q.drain().collect::<Vec<_>>(), [1, 2, 4]);
        assert!(q.is_empty());
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn zero_limit_refuses_everything() {
        let mut q = Outbox::new(0);
        assert_eq!(q.push("x"), Err("x"));
        assert_eq!(q.limit(), 0);
    }
}
