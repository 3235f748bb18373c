//! One connection's protocol state, sans-IO in the manner of quinn-proto's `Connection`: frames
//! and time go in, what to send and what to do come out. The shard drives it (`handle_frame`,
//! `handle_timeout` when `poll_timeout` is due, `close`); only `shard::driver` touches the socket.
//!
//! Liveness (PROTOCOL.md §5): any frame from the client counts as life. After
//! `heartbeat-interval` of silence the server pings once; after `heartbeat-timeout` of silence
//! the connection expires (4001). Close (RFC 6455 §5.5.1, PROTOCOL.md §6): the first close,
//! ours or the client's, moves the connection to `Closing`; nothing it sends afterwards is
//! processed, and it is dropped at `Phase::linger_deadline` whatever it does.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Phase;
use crate::codec::{self, Event};
use crate::error::CloseReason;

/// Heartbeat settings, shared by every connection of a shard.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    pub interval: Duration,
    pub timeout: Duration,
}

/// Inbound message rate (PROTOCOL.md §9): a token bucket per connection, `per_second` refill
/// up to `burst`.
#[derive(Debug, Clone, Copy)]
pub struct MessageRate {
    pub per_second: f64,
    pub burst: f64,
    /// Seconds of the "refused in each of 10 consecutive seconds" rule are whole seconds from
    /// here (the shard's start), so no connection needs a clock origin of its own.
    pub origin: Instant,
}

/// Consecutive seconds with refused messages that close a connection with 4029.
pub const RATE_STRIKE_SECONDS: u8 = 10;

/// The verdict on one client message under `--message-rate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Accept,
    /// Over the rate: answer `rate_limited`, do not process it.
    Refuse,
    /// Refused messages in each of `RATE_STRIKE_SECONDS` consecutive seconds: close with 4029.
    Close,
}

/// What a client frame asks of the shard.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameAction {
    /// Nothing to do (a pong, or data after a close).
    None,
    /// Queue this frame to the client (a pong, or an echo).
    Send(Bytes),
    /// A complete text message for the protocol layer.
    Text(Bytes),
    /// A binary message on a pub/sub connection: answered with an error, connection goes on.
    Binary,
    /// The client started the close handshake: answer with `close(reason)`.
    Close(CloseReason),
    /// The client answered our close: stop reading, drop once flushed.
    PeerClosed,
}

/// What a due deadline asks of the shard.
#[derive(Debug, PartialEq, Eq)]
pub enum TimeoutAction {
    None,
    /// Silent for `interval`: send this ping.
    Ping(Bytes),
    /// Silent for `timeout`: close with 4001.
    Expire,
    /// The token's `exp` (+ leeway) passed without a refresh: close with 4401.
    TokenExpired,
}

/// A connection's protocol state.
#[derive(Debug)]
pub struct ConnState {
    phase: Phase,
    /// Last time any byte arrived from the client.
    last_seen: Instant,
    /// A server ping was sent since `last_seen`.
    pinged: bool,
    /// `/ws/echo`: echo every message, nothing of the pub/sub protocol.
    echo: bool,
    /// Tokens taken from the message bucket (0 = full), as of `bucket_ms`.
    debt: f32,
    /// Milliseconds from `MessageRate::origin` of the last bucket update.
    bucket_ms: u64,
    /// The last second (from the origin) in which a message was refused, and how many
    /// consecutive seconds up to it had refusals.
    strike_second: u32,
    strikes: u8,
    /// When the connection's token runs out (None: no token). A deadline like the heartbeat's:
    /// `poll_timeout` gives the earlier of the two.
    expires_at: Option<Instant>,
}

impl ConnState {
    pub fn new(now: Instant, echo: bool) -> Self {
        ConnState {
            phase: Phase::Open,
            last_seen: now,
            pinged: false,
            echo,
            debt: 0.0,
            bucket_ms: 0,
            strike_second: 0,
            strikes: 0,
            expires_at: None,
        }
    }

    /// Sets (or, after a `refresh`, moves) the token deadline.
    pub fn set_expiry(&mut self, at: Option<Instant>) {
        self.expires_at = at;
    }

    /// The token deadline, if the connection has a token.
    pub fn expires_at(&self) -> Option<Instant> {
        self.expires_at
    }

    /// Takes one message from the bucket at `now` (PROTOCOL.md §9).
    pub fn admit_message(&mut self, now: Instant, rate: &MessageRate) -> Admit {
        let ms = u64::try_from(now.saturating_duration_since(rate.origin).as_millis())
            .unwrap_or(u64::MAX);
        let refill = ms.saturating_sub(self.bucket_ms) as f64 / 1000.0 * rate.per_second;
        self.bucket_ms = self.bucket_ms.max(ms);
        let debt = (f64::from(self.debt) - refill).max(0.0);
        if debt + 1.0 <= rate.burst {
            self.debt = (debt + 1.0) as f32;
            return Admit::Accept;
        }
        self.debt = debt as f32;
        let second = u32::try_from(ms / 1000).unwrap_or(u32::MAX);
        if self.strikes == 0 || second > self.strike_second.saturating_add(1) {
            self.strikes = 1;
        } else if second == self.strike_second + 1 {
            self.strikes = self.strikes.saturating_add(1);
        }
        self.strike_second = self.strike_second.max(second);
        if self.strikes >= RATE_STRIKE_SECONDS {
            Admit::Close
        } else {
            Admit::Refuse
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    pub fn is_echo(&self) -> bool {
        self.echo
    }

    /// Bytes arrived from the client: it is alive.
    pub fn on_activity(&mut self, now: Instant) {
        self.last_seen = now;
        self.pinged = false;
    }

    /// The next deadline: a ping after `interval` of silence, expiry `timeout` after the last
    /// frame once pinged, or the token's end if sooner. None once closing (the driver's linger
    /// bounds that).
    pub fn poll_timeout(&self, cfg: &Liveness) -> Option<Instant> {
        if !self.is_open() {
            return None;
        }
        let after = if self.pinged {
            cfg.timeout
        } else {
            cfg.interval.min(cfg.timeout)
        };
        let liveness = self.last_seen.checked_add(after).unwrap_or(self.last_seen);
        Some(self.expires_at.map_or(liveness, |t| t.min(liveness)))
    }

    /// Called at (or after) `poll_timeout`.
    pub fn handle_timeout(&mut self, now: Instant, cfg: &Liveness) -> TimeoutAction {
        if !self.is_open() {
            return TimeoutAction::None;
        }
        if self.expires_at.is_some_and(|t| now >= t) {
            return TimeoutAction::TokenExpired;
        }
        let silent = now.saturating_duration_since(self.last_seen);
        if silent >= cfg.timeout {
            return TimeoutAction::Expire;
        }
        if silent >= cfg.interval && !self.pinged {
            self.pinged = true;
            return TimeoutAction::Ping(codec::ping_frame(b""));
        }
        TimeoutAction::None
    }

    /// One decoded frame from the client.
    pub fn handle_frame(&mut self, ev: Event) -> FrameAction {
        match (ev, self.phase) {
            (Event::Close(frame), Phase::Open) => {
                FrameAction::Close(CloseReason::Echo(frame.map_or(0, |f| f.code)))
            }
            (Event::Close(_), Phase::Closing { since, reason, .. }) => {
                self.phase = Phase::Closing {
                    peer_closed: true,
                    since,
                    reason,
                };
                FrameAction::PeerClosed
            }
            // Data after a close is read and ignored (RFC 6455 §1.4).
            (_, Phase::Closing { .. }) => FrameAction::None,
            (Event::Ping(payload), _) => FrameAction::Send(codec::pong_frame(&payload)),
            (Event::Pong(_), _) => FrameAction::None,
            (Event::Text(p), _) if self.echo => {
                FrameAction::Send(codec::encode_frame(true, codec::OpCode::Text, &p))
            }
            (Event::Binary(p), _) if self.echo => {
                FrameAction::Send(codec::encode_frame(true, codec::OpCode::Binary, &p))
            }
            (Event::Text(text), _) => FrameAction::Text(text),
            (Event::Binary(_), _) => FrameAction::Binary,
        }
    }

    /// Starts the close handshake; the close frame to send, or None if already closing.
    pub fn close(&mut self, reason: CloseReason, now: Instant) -> Option<Bytes> {
        if !self.is_open() {
            return None;
        }
        self.phase = Phase::Closing {
            peer_closed: matches!(reason, CloseReason::Echo(_)),
            since: now,
            reason,
        };
        Some(match reason {
            CloseReason::Echo(0) => codec::empty_close_frame(),
            r => codec::close_frame(r.code(), r.text()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::CloseFrame;

    const CFG: Liveness = Liveness {
        interval: Duration::from_secs(30),
        timeout: Duration::from_secs(60),
    };

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn silence_pings_once_then_expires() {
        let t0 = Instant::now();
        let mut c = ConnState::new(t0, false);
        assert_eq!(c.poll_timeout(&CFG), Some(t0 + secs(30)));
        assert_eq!(c.handle_timeout(t0 + secs(29), &CFG), TimeoutAction::None);
        assert!(matches!(
            c.handle_timeout(t0 + secs(30), &CFG),
            TimeoutAction::Ping(_)
        ));
        assert_eq!(c.poll_timeout(&CFG), Some(t0 + secs(60)));
        assert_eq!(
            c.handle_timeout(t0 + secs(45), &CFG),
            TimeoutAction::None,
            "one ping per silence"
        );
        assert_eq!(c.handle_timeout(t0 + secs(60), &CFG), TimeoutAction::Expire);
    }

    #[test]
    fn any_frame_is_life() {
        let t0 = Instant::now();
        let mut c = ConnState::new(t0, false);
        assert!(matches!(
            c.handle_timeout(t0 + secs(31), &CFG),
            TimeoutAction::Ping(_)
        ));
        c.on_activity(t0 + secs(50));
        assert_eq!(c.poll_timeout(&CFG), Some(t0 + secs(80)));
        assert!(matches!(
            c.handle_timeout(t0 + secs(80), &CFG),
            TimeoutAction::Ping(_)
        ));
        assert_eq!(c.handle_timeout(t0 + secs(109), &CFG), TimeoutAction::None);
        assert_eq!(
            c.handle_timeout(t0 + secs(110), &CFG),
            TimeoutAction::Expire
        );
    }

    #[test]
    fn timeout_below_interval_expires_without_ping() {
        let cfg = Liveness {
            interval: secs(30),
            timeout: secs(10),
        };
        let t0 = Instant::now();
        let mut c = ConnState::new(t0, false);
        assert_eq!(c.poll_timeout(&cfg), Some(t0 + secs(10)));
        assert_eq!(c.handle_timeout(t0 + secs(10), &cfg), TimeoutAction::Expire);
    }

    #[test]
    fn huge_settings_do_not_overflow() {
        let cfg = Liveness {
            interval: Duration::MAX,
            timeout: Duration::MAX,
        };
        let t0 = Instant::now();
        let c = ConnState::new(t0, false);
        assert!(c.poll_timeout(&cfg).is_some());
    }

    fn rate(per_second: f64, burst: f64, origin: Instant) -> MessageRate {
        MessageRate {
            per_second,
            burst,
            origin,
        }
    }

    #[test]
    fn message_rate_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let r = rate(50.0, 100.0, t0);
        let mut c = ConnState::new(t0, false);
        for i in 0..100 {
            assert_eq!(c.admit_message(t0, &r), Admit::Accept, "burst message {i}");
        }
        assert_eq!(c.admit_message(t0, &r), Admit::Refuse);
        // 50/s: 100 ms later five more.
        let t = t0 + Duration::from_millis(100);
        for _ in 0..5 {
            assert_eq!(c.admit_message(t, &r), Admit::Accept);
        }
        assert_eq!(c.admit_message(t, &r), Admit::Refuse);
        // A quiet while refills the whole burst, no more.
        let t = t0 + Duration::from_secs(60);
        for _ in 0..100 {
            assert_eq!(c.admit_message(t, &r), Admit::Accept);
        }
        assert_eq!(c.admit_message(t, &r), Admit::Refuse);
    }

    #[test]
    fn refusals_in_ten_consecutive_seconds_close_with_4029() {
        let t0 = Instant::now();
        let r = rate(1.0, 1.0, t0);
        let mut c = ConnState::new(t0, false);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Seconds 0..=8: each has a refused message; second 9 makes ten.
        for s in 0..9u64 {
            assert_eq!(c.admit_message(at(s * 1000 + 100), &r), Admit::Accept);
            assert_eq!(
                c.admit_message(at(s * 1000 + 200), &r),
                Admit::Refuse,
                "second {s}"
            );
            assert_eq!(c.admit_message(at(s * 1000 + 300), &r), Admit::Refuse);
        }
        assert_eq!(c.admit_message(at(9_100), &r), Admit::Accept);
        assert_eq!(c.admit_message(at(9_200), &r), Admit::Close);
    }

    #[test]
    fn a_second_without_refusals_resets_the_count() {
        let t0 = Instant::now();
        let r = rate(1.0, 1.0, t0);
        let mut c = ConnState::new(t0, false);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        for s in (0..9u64).chain(10..19) {
            c.admit_message(at(s * 1000 + 100), &r);
            assert_eq!(
                c.admit_message(at(s * 1000 + 200), &r),
                Admit::Refuse,
                "second {s}"
            );
        }
        // Second 9 had no refusal: seconds 10..=18 are nine in a row, the tenth closes.
        c.admit_message(at(19_100), &r);
        assert_eq!(c.admit_message(at(19_200), &r), Admit::Close);
    }

    #[test]
    fn close_handshake_server_first() {
        let t0 = Instant::now();
        let mut c = ConnState::new(t0, false);
        let frame = c.close(CloseReason::HeartbeatTimeout, t0).expect("frame");
        assert_eq!(&frame[2..4], &4001u16.to_be_bytes());
        assert!(c.close(CloseReason::ShuttingDown, t0).is_none(), "once");
        assert_eq!(c.poll_timeout(&CFG), None);
        // Anything but the client's close is ignored now.
        assert_eq!(
            c.handle_frame(Event::Text(Bytes::from_static(b"{}"))),
            FrameAction::None
        );
        assert_eq!(c.handle_frame(Event::Ping(Bytes::new())), FrameAction::None);
        assert_eq!(c.handle_frame(Event::Close(None)), FrameAction::PeerClosed);
        assert!(matches!(
            c.phase(),
            Phase::Closing {
                peer_closed: true,
                ..
            }
        ));
        assert_eq!(
            c.phase().linger_deadline(None),
            Some(t0 + super::super::CLOSE_LINGER)
        );
    }

    #[test]
    fn close_handshake_client_first_is_echoed() {
        let t0 = Instant::now();
        let mut c = ConnState::new(t0, false);
        let close = Event::Close(Some(CloseFrame {
            code: 4321,
            reason: String::new(),
        }));
        let FrameAction::Close(reason) = c.handle_frame(close) else {
            panic!("expected a close")
        };
        assert_eq!(reason, CloseReason::Echo(4321));
        let frame = c.close(reason, t0).unwrap();
        assert_eq!(&frame[2..4], &4321u16.to_be_bytes());
        assert!(matches!(
            c.phase(),
            Phase::Closing {
                peer_closed: true,
                ..
            }
        ));
    }

    #[test]
    fn frames_while_open() {
        let t0 = Instant::now();
        let mut c = ConnState::new(t0, false);
        assert!(matches!(
            c.handle_frame(Event::Ping(Bytes::from_static(b"x"))),
            FrameAction::Send(_)
        ));
        assert_eq!(c.handle_frame(Event::Pong(Bytes::new())), FrameAction::None);
        assert_eq!(
            c.handle_frame(Event::Text(Bytes::from_static(b"{}"))),
            FrameAction::Text(Bytes::from_static(b"{}"))
        );
        assert_eq!(
            c.handle_frame(Event::Binary(Bytes::from_static(b"\0"))),
            FrameAction::Binary
        );
        let mut echo = ConnState::new(t0, true);
        let FrameAction::Send(f) = echo.handle_frame(Event::Binary(Bytes::from_static(b"ab")))
        else {
            panic!("echo")
        };
        assert_eq!(&f[..], &[0x82, 2, b'a', b'b']);
    }

    #[test]
    fn token_expiry_rides_the_same_deadline() {
        let t0 = Instant::now();
        let mut c = ConnState::new(t0, false);
        c.set_expiry(Some(t0 + secs(10)));
        assert_eq!(
            c.poll_timeout(&CFG),
            Some(t0 + secs(10)),
            "sooner than the ping"
        );
        assert_eq!(c.handle_timeout(t0 + secs(9), &CFG), TimeoutAction::None);
        // A refresh moves it past the ping: the ping comes first, then the new end.
        c.set_expiry(Some(t0 + secs(45)));
        assert_eq!(c.poll_timeout(&CFG), Some(t0 + secs(30)));
        assert!(matches!(
            c.handle_timeout(t0 + secs(30), &CFG),
            TimeoutAction::Ping(_)
        ));
        c.on_activity(t0 + secs(31));
        assert_eq!(c.poll_timeout(&CFG), Some(t0 + secs(45)));
        assert_eq!(
            c.handle_timeout(t0 + secs(45), &CFG),
            TimeoutAction::TokenExpired
        );
        c.close(CloseReason::TokenExpired, t0 + secs(45));
        assert_eq!(c.poll_timeout(&CFG), None);
        assert_eq!(c.handle_timeout(t0 + secs(99), &CFG), TimeoutAction::None);
    }
}
