//! Invariant: `conn::state::ConnState` under arbitrary sequences of client activity, client
//! frames, server closes, token deadlines and timeouts (time a fake `Instant` moving forward by
//! bounded steps, settings from tiny to `Duration::MAX`) behaves like this model of PROTOCOL.md
//! §5–§6 and §9:
//!
//! - Token deadline: `set_expiry` sets, moves (a `refresh`) or clears it, to any instant
//!   including one already past; `expires_at()` returns it. While open, `handle_timeout(now)`
//!   returns `TokenExpired` exactly when `now >= expires_at`, before any heartbeat verdict, and
//!   changes nothing else (no ping recorded), so it repeats until the shard closes with 4401.
//! - Open: otherwise `handle_timeout(now)` expires exactly when `now - last_seen >= timeout`;
//!   otherwise it pings exactly when `now - last_seen >= interval` and no ping was sent since the
//!   last activity (at most one ping per silence). `poll_timeout()` is the earlier of the token
//!   deadline and the liveness deadline, `last_seen + min(interval, timeout)` before the ping and
//!   `last_seen + timeout` after it (saturating, never a panic), so a shard that calls
//!   `handle_timeout` at every `poll_timeout` never expires a connection or a token early and
//!   never skips its ping or the token's end.
//! - Client frames while open: ping → a pong, pong → nothing, text → handed on, binary →
//!   refused (or both echoed on an echo connection), close → asks for the close (its code
//!   echoed, 0 for an empty close).
//! - `close(reason)` returns a close frame exactly once (the first close wins) and moves the
//!   connection to closing; from then on timeouts do nothing (a past token deadline included),
//!   `poll_timeout` is None, every frame but a close is ignored, and the client's close marks
//!   `peer_closed`. The close frame carries `reason.code()`.
//!
//! Input: structured (`arbitrary`): `Input { echo, interval, timeout, ops }`, at most 500 ops;
//! `Op::Expiry` sets the token deadline relative to the current fake time.

#![no_main]

use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use bytes::Bytes;
use huddle::codec::{CloseFrame, Event};
use huddle::conn::state::{ConnState, FrameAction, Liveness, TimeoutAction};
use huddle::conn::Phase;
use huddle::error::CloseReason;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Frame {
    Ping,
    Pong,
    Text,
    Binary,
    Close(Option<u16>),
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// Time passes (milliseconds).
    Step(u16),
    /// Bytes arrive from the client.
    Activity,
    /// A decoded frame (counts as activity, as the shard feeds bytes first).
    Frame(Frame),
    /// The shard's timer fires now.
    Timeout,
    /// The shard's timer fires at `poll_timeout` (time jumps there if it is ahead).
    TimeoutAtDeadline,
    Close(u8),
    /// The token deadline is set, moved or cleared.
    Expiry(Expiry),
}

#[derive(Arbitrary, Debug)]
enum Expiry {
    Clear,
    /// Milliseconds from now; negative is already past (clamped at the start).
    At(i16),
    /// Far ahead (100 years).
    Far,
}

#[derive(Arbitrary, Debug)]
struct Input {
    echo: bool,
    interval: u8,
    timeout: u8,
    ops: Vec<Op>,
}

/// Durations from 1 ms to `Duration::MAX`, so huge settings are exercised too.
fn setting(v: u8) -> Duration {
    match v {
        0..=199 => Duration::from_millis(u64::from(v) * 5 + 1),
        200..=249 => Duration::from_secs(u64::from(v) * 1000),
        _ => Duration::MAX,
    }
}

const REASONS: [CloseReason; 6] = [
    CloseReason::ShuttingDown,
    CloseReason::Protocol,
    CloseReason::HeartbeatTimeout,
    CloseReason::SlowConsumer,
    CloseReason::TooBig,
    CloseReason::Echo(1000),
];

fuzz_target!(|input: Input| {
    let cfg = Liveness {
        interval: setting(input.interval),
        timeout: setting(input.timeout),
    };
    let start = Instant::now();
    let mut now = start;
    let mut c = ConnState::new(now, input.echo);
    // The model.
    let mut last_seen = now;
    let mut pinged = false;
    let mut closing = false;
    let mut peer_closed = false;
    let mut expires_at: Option<Instant> = None;
    for op in input.ops.iter().take(500) {
        match op {
            Op::Step(ms) => now += Duration::from_millis(u64::from(*ms)),
            Op::Activity => {
                c.on_activity(now);
                last_seen = now;
                pinged = false;
            }
            Op::Frame(f) => {
                c.on_activity(now);
                last_seen = now;
                pinged = false;
                let ev = match f {
                    Frame::Ping => Event::Ping(Bytes::from_static(b"p")),
                    Frame::Pong => Event::Pong(Bytes::new()),
                    Frame::Text => Event::Text(Bytes::from_static(b"{}")),
                    Frame::Binary => Event::Binary(Bytes::from_static(b"\x01")),
                    Frame::Close(code) => Event::Close(code.map(|code| CloseFrame {
                        code,
                        reason: String::new(),
                    })),
                };
                let action = c.handle_frame(ev);
                match (f, closing) {
                    (Frame::Close(_), true) => {
                        assert_eq!(action, FrameAction::PeerClosed);
                        peer_closed = true;
                    }
                    (_, true) => assert_eq!(action, FrameAction::None),
                    (Frame::Close(code), false) => {
                        assert_eq!(
                            action,
                            FrameAction::Close(CloseReason::Echo(code.unwrap_or(0)))
                        )
                    }
                    (Frame::Ping, false) => assert!(matches!(action, FrameAction::Send(_))),
                    (Frame::Pong, false) => assert_eq!(action, FrameAction::None),
                    (Frame::Text, false) if input.echo => {
                        assert!(matches!(action, FrameAction::Send(_)))
                    }
                    (Frame::Binary, false) if input.echo => {
                        assert!(matches!(action, FrameAction::Send(_)))
                    }
                    (Frame::Text, false) => assert!(matches!(action, FrameAction::Text(_))),
                    (Frame::Binary, false) => assert_eq!(action, FrameAction::Binary),
                }
            }
            Op::Timeout | Op::TimeoutAtDeadline => {
                if matches!(op, Op::TimeoutAtDeadline) {
                    if let Some(at) = c.poll_timeout(&cfg) {
                        // Bounded jumps only, so `now` stays representable.
                        if at > now && at - now < Duration::from_secs(86_400 * 365) {
                            now = at;
                        }
                    }
                }
                let action = c.handle_timeout(now, &cfg);
                let silent = now - last_seen;
                if closing {
                    assert_eq!(action, TimeoutAction::None);
                } else if expires_at.is_some_and(|t| now >= t) {
                    assert_eq!(action, TimeoutAction::TokenExpired);
                } else if silent >= cfg.timeout {
                    assert_eq!(action, TimeoutAction::Expire);
                } else if silent >= cfg.interval && !pinged {
                    assert!(matches!(action, TimeoutAction::Ping(_)), "{action:?}");
                    pinged = true;
                } else {
                    assert_eq!(action, TimeoutAction::None);
                }
            }
            Op::Close(r) => {
                let reason = REASONS[usize::from(*r) % REASONS.len()];
                let frame = c.close(reason, now);
                if closing {
                    assert!(frame.is_none(), "only the first close sends a frame");
                } else {
                    let frame = frame.expect("first close sends a frame");
                    assert_eq!(frame[0], 0x88);
                    assert_eq!(u16::from_be_bytes([frame[2], frame[3]]), reason.code());
                    closing = true;
                    peer_closed = matches!(reason, CloseReason::Echo(_));
                }
            }
            Op::Expiry(e) => {
                let at = match e {
                    Expiry::Clear => None,
                    Expiry::At(ms) if *ms >= 0 => {
                        Some(now + Duration::from_millis(ms.unsigned_abs().into()))
                    }
                    Expiry::At(ms) => {
                        let back = Duration::from_millis(ms.unsigned_abs().into());
                        Some(now - back.min(now - start))
                    }
                    Expiry::Far => now.checked_add(Duration::from_secs(100 * 365 * 86_400)),
                };
                c.set_expiry(at);
                expires_at = at;
            }
        }
        // Deadlines follow the model.
        let expected = (!closing).then(|| {
            let after = if pinged {
                cfg.timeout
            } else {
                cfg.interval.min(cfg.timeout)
            };
            let liveness = last_seen.checked_add(after).unwrap_or(last_seen);
            expires_at.map_or(liveness, |t| t.min(liveness))
        });
        assert_eq!(c.poll_timeout(&cfg), expected);
        assert_eq!(c.expires_at(), expires_at);
        assert_eq!(c.is_open(), !closing);
        if let Phase::Closing { peer_closed: p, .. } = c.phase() {
            assert_eq!(p, peer_closed);
        }
    }
});
