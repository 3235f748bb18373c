//! Invariant: the same client → server byte stream is accepted or rejected alike by our
//! `codec::Decoder` and by tungstenite 0.24's server-side `WebSocket` (same message and frame size
//! limit, no extensions, unmasked frames refused), with the same messages (text, binary, ping,
//! pong, close) up to the first error or the first close frame, and the failure at the same frame.
//!
//! Both sides are fed one frame at a time (frame boundaries come from a small length-only walker
//! in this file; tungstenite sees `WouldBlock` between frames), so each message and the failure
//! are attributed to a frame index. Error *classes* are compared too: protocol error (1002),
//! invalid UTF-8 (1007), too big (1009); tungstenite's end-of-input (`ResetWithoutClosingHandshake`)
//! corresponds to our decoder simply waiting for more bytes. After a close frame tungstenite stops
//! reading, so the comparison stops there.
//!
//! Deliberate, justified differences, masked narrowly (each only at the frame where it applies):
//!
//! - D1 non-minimal length: RFC 6455 §5.2 says "the minimal number of bytes MUST be used to encode
//!   the length"; we fail the connection, tungstenite accepts. When we fail with a protocol error
//!   at a frame whose length is encoded non-minimally, only the frames before it are compared.
//!   (A control frame with a 16/64-bit length field is refused as "control frame payload over 125
//!   bytes" before its length is read: it can only be minimal if it is over 125.)
//! - D2 fragment cap: we cap a message at max(64, limit / 16) fragments so tiny fragments cannot
//!   spin (see `Decoder::new`); tungstenite has no cap. When we fail with TooBig at the first
//!   continuation over the cap while the size is still within the limit, only the frames before
//!   are compared.
//! - D3 early rejection: we reject a frame from its header alone (reserved opcode, control frame
//!   rules, reserved bits, missing mask, continuation state, size) while tungstenite first reads
//!   the whole frame. If the stream ends inside that frame, tungstenite only sees end-of-input.
//! - D4 check order within one frame (RFC 6455 does not order them): tungstenite checks the frame
//!   length against the limit before anything but the opcode, so a frame that breaks a protocol
//!   rule *and* is over the limit is TooBig there and a protocol error here. Likewise a close frame
//!   with both an invalid code and a non-UTF-8 reason is a protocol error here (code checked first)
//!   and invalid UTF-8 there.
//! - D5 invalid close codes: tungstenite does not fail on a close code that may not appear on the
//!   wire (e.g. 1005, 999); it returns a Close carrying 1002 "Protocol violation" and replies with
//!   1002, i.e. a protocol-error close. We fail with a protocol error: same outcome for the peer.
//! - D6 close code 1014 (IANA "Bad Gateway", registered after RFC 6455): valid for us, unknown to
//!   tungstenite 0.24 which turns it into 1002 as in D5.
//! - D7 control frames and the size limit: our limit is on messages (`max_message_size`); control
//!   frames are bounded by RFC 6455's 125 bytes only. tungstenite's `max_frame_size` applies to
//!   every frame, so with a limit under 125 it refuses a ping/pong/close we accept. Only the frames
//!   before that control frame are compared.

#![no_main]

use std::io::{self, Read, Write};

use huddle::codec::{is_valid_close_code, CodecError, Decoder, Event};
use libfuzzer_sys::fuzz_target;
use tokio_tungstenite::tungstenite::{
    self,
    error::ProtocolError,
    protocol::{Role, WebSocket, WebSocketConfig},
    Message,
};

/// Same table as `frame_decoder_split`: small limits make TooBig and the fragment cap reachable.
const LIMITS: [usize; 8] = [0, 1, 16, 125, 126, 1024, 65_536, 1 << 20];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Msg {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Protocol,
    Utf8,
    TooBig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    /// Input exhausted without an error (possibly in the middle of a frame).
    Eof,
    /// A close frame was received (the last message).
    Closed,
    /// Failure with this class; ours also keeps the decoder's exact error for the masks.
    Failed(Class, Option<CodecError>),
}

#[derive(Debug)]
struct Outcome {
    /// Messages, each with the index of the frame that completed it.
    msgs: Vec<(usize, Msg)>,
    /// How it ended, and at which frame (frames.len() for end of input).
    end: End,
    end_frame: usize,
}

/// One frame as delimited by the walker: only lengths are interpreted, nothing is validated.
#[derive(Debug, Clone)]
struct WFrame {
    start: usize,
    /// Exclusive end; `None` when the stream stops inside this frame.
    end: Option<usize>,
    b0: u8,
    /// Announced payload length, when the header is complete.
    len: Option<u64>,
    /// The length uses a 16- or 64-bit field for a value that fits a shorter one.
    non_minimal: bool,
    /// Masking key and payload start, when the header is complete.
    mask: Option<[u8; 4]>,
    payload_start: usize,
}

/// Splits the stream into frames using only the length fields (RFC 6455 §5.2).
fn walk(stream: &[u8]) -> Vec<WFrame> {
    let mut frames = Vec::new();
    let mut pos = 0;
    while pos < stream.len() {
        let s = &stream[pos..];
        let mut f = WFrame {
            start: pos,
            end: None,
            b0: s[0],
            len: None,
            non_minimal: false,
            mask: None,
            payload_start: 0,
        };
        let header = (|| {
            let b1 = *s.get(1)?;
            let (len, mut at) = match b1 & 0x7F {
                126 => (
                    u64::from(u16::from_be_bytes(s.get(2..4)?.try_into().ok()?)),
                    4,
                ),
                127 => (u64::from_be_bytes(s.get(2..10)?.try_into().ok()?), 10),
                n => (u64::from(n), 2),
            };
            let mask = if b1 & 0x80 != 0 {
                let k: [u8; 4] = s.get(at..at + 4)?.try_into().ok()?;
                at += 4;
                Some(k)
            } else {
                None
            };
            Some((len, mask, at))
        })();
        if let Some((len, mask, at)) = header {
            f.len = Some(len);
            f.non_minimal = match s[1] & 0x7F {
                126 => len < 126,
                127 => len <= 0xFFFF,
                _ => false,
            };
            f.mask = mask;
            f.payload_start = pos + at;
            f.end = usize::try_from(len)
                .ok()
                .and_then(|l| (pos + at).checked_add(l))
                .filter(|&e| e <= stream.len());
        }
        let end = f.end;
        frames.push(f);
        match end {
            Some(e) => pos = e,
            None => break,
        }
    }
    frames
}

fn class_of(e: &CodecError) -> Class {
    match e {
        CodecError::Protocol(_) => Class::Protocol,
        CodecError::InvalidUtf8 => Class::Utf8,
        CodecError::TooBig => Class::TooBig,
    }
}

fn ours(limit: usize, stream: &[u8], frames: &[WFrame]) -> Outcome {
    let mut d = Decoder::new(limit);
    let mut msgs = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        d.feed(&stream[f.start..f.end.unwrap_or(stream.len())]);
        loop {
            match d.next_event() {
                Ok(None) => break,
                Ok(Some(e)) => {
                    let (m, closed) = match e {
                        Event::Text(p) => (Msg::Text(p.to_vec()), false),
                        Event::Binary(p) => (Msg::Binary(p.to_vec()), false),
                        Event::Ping(p) => (Msg::Ping(p.to_vec()), false),
                        Event::Pong(p) => (Msg::Pong(p.to_vec()), false),
                        Event::Close(c) => (Msg::Close(c.map(|c| (c.code, c.reason))), true),
                    };
                    msgs.push((i, m));
                    if closed {
                        return Outcome {
                            msgs,
                            end: End::Closed,
                            end_frame: i,
                        };
                    }
                }
                Err(e) => {
                    return Outcome {
                        msgs,
                        end: End::Failed(class_of(&e), Some(e)),
                        end_frame: i,
                    }
                }
            }
        }
    }
    Outcome {
        msgs,
        end: End::Eof,
        end_frame: frames.len(),
    }
}

/// In-memory socket: reads up to `avail` (then WouldBlock, or EOF once `eof`), swallows writes.
struct Mem<'a> {
    data: &'a [u8],
    pos: usize,
    avail: usize,
    eof: bool,
}

impl Read for Mem<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.avail {
            return if self.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = buf.len().min(self.avail - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for Mem<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn theirs(limit: usize, stream: &[u8], frames: &[WFrame]) -> Outcome {
    let config = WebSocketConfig {
        max_message_size: Some(limit),
        max_frame_size: Some(limit),
        accept_unmasked_frames: false,
        ..WebSocketConfig::default()
    };
    let mem = Mem {
        data: stream,
        pos: 0,
        avail: 0,
        eof: false,
    };
    let mut ws = WebSocket::from_raw_socket(mem, Role::Server, Some(config));
    let mut msgs = Vec::new();
    // One round per frame, then a last round at end of input.
    for i in 0..=frames.len() {
        match frames.get(i) {
            Some(f) => ws.get_mut().avail = f.end.unwrap_or(stream.len()),
            None => {
                let mem = ws.get_mut();
                mem.avail = stream.len();
                mem.eof = true;
            }
        }
        loop {
            let m = match ws.read() {
                Ok(m) => m,
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
                    return Outcome {
                        msgs,
                        end: End::Eof,
                        end_frame: frames.len(),
                    }
                }
                Err(e) => {
                    let class = match e {
                        tungstenite::Error::Protocol(_) => Class::Protocol,
                        tungstenite::Error::Utf8 => Class::Utf8,
                        tungstenite::Error::Capacity(_) => Class::TooBig,
                        other => panic!("unexpected tungstenite error {other:?}"),
                    };
                    return Outcome {
                        msgs,
                        end: End::Failed(class, None),
                        end_frame: i,
                    };
                }
            };
            let (m, closed) = match m {
                Message::Text(s) => (Msg::Text(s.into_bytes()), false),
                Message::Binary(b) => (Msg::Binary(b), false),
                Message::Ping(b) => (Msg::Ping(b), false),
                Message::Pong(b) => (Msg::Pong(b), false),
                Message::Close(c) => (
                    Msg::Close(c.map(|c| (u16::from(c.code), c.reason.into_owned()))),
                    true,
                ),
                Message::Frame(_) => panic!("tungstenite returned a raw frame from read()"),
            };
            msgs.push((i, m));
            if closed {
                return Outcome {
                    msgs,
                    end: End::Closed,
                    end_frame: i,
                };
            }
        }
    }
    unreachable!("tungstenite did not report end of input");
}

/// Unmasked payload of a complete frame.
fn payload(stream: &[u8], f: &WFrame) -> Vec<u8> {
    let mut p = stream[f.payload_start..f.end.expect("complete frame")].to_vec();
    if let Some(k) = f.mask {
        for (i, b) in p.iter_mut().enumerate() {
            *b ^= k[i % 4];
        }
    }
    p
}

/// D2: frame `at` is a continuation that takes its message over the fragment cap while the
/// message size stays within the limit (frames before `at` were all accepted by our decoder).
fn over_fragment_cap(frames: &[WFrame], at: usize, limit: usize) -> bool {
    let cap = (limit / 16).max(64);
    let mut open: Option<(usize, u64)> = None; // (fragments, bytes)
    for (i, f) in frames.iter().enumerate().take(at + 1) {
        let Some(len) = f.len else { return false };
        let (op, fin) = (f.b0 & 0x0F, f.b0 & 0x80 != 0);
        let next = match (op, open) {
            (0, Some((n, bytes))) => (n + 1, bytes.saturating_add(len)),
            (1 | 2, None) => (1, len),
            _ => {
                continue; // control frame
            }
        };
        if i == at {
            return op == 0 && next.0 > cap && next.1 <= limit as u64;
        }
        open = (!fin).then_some(next);
    }
    false
}

fn prefix_before(o: &Outcome, frame: usize) -> Vec<(usize, Msg)> {
    o.msgs.iter().filter(|(i, _)| *i < frame).cloned().collect()
}

fn compare(limit: usize, stream: &[u8], frames: &[WFrame], a: &Outcome, b: &Outcome) {
    let fail = |why: &str| -> ! {
        panic!("{why}\nlimit {limit}\nours:   {a:?}\ntheirs: {b:?}\nframes: {frames:?}")
    };
    let at = a.end_frame;

    // D1 / D2: we refuse a frame tungstenite accepts.
    let ours_only = match &a.end {
        End::Failed(_, Some(e)) => {
            let d1 = matches!(e, CodecError::Protocol(_)) && frames[at].non_minimal;
            let d2 = *e == CodecError::TooBig && over_fragment_cap(frames, at, limit);
            (d1 || d2).then_some(at)
        }
        _ => None,
    };
    // D7: tungstenite refuses a control frame over its frame size limit; we accept up to 125.
    let theirs_only = (b.end == End::Failed(Class::TooBig, None))
        .then(|| &frames[b.end_frame])
        .filter(|f| f.b0 & 0x08 != 0 && f.len.is_some_and(|l| l <= 125 && l > limit as u64))
        .map(|_| b.end_frame);
    // Only the frames before the first such frame are compared.
    if let Some(cut) = ours_only.into_iter().chain(theirs_only).min() {
        if a.end_frame < cut || b.end_frame < cut {
            fail("one side stopped before the frame of a known difference (D1/D2/D7)");
        }
        if prefix_before(a, cut) != prefix_before(b, cut) {
            fail("messages differ before the frame of a known difference (D1/D2/D7)");
        }
        return;
    }

    // D5 / D6: tungstenite turns a close code it does not allow into 1002 "Protocol violation".
    if let Some((_, Msg::Close(Some((1002, reason))))) = b.msgs.last() {
        if b.end == End::Closed && reason == "Protocol violation" {
            let f = &frames[b.end_frame];
            let p = payload(stream, f);
            let code = u16::from_be_bytes([p[0], p[1]]);
            let reason_ok = std::str::from_utf8(&p[2..]).is_ok();
            if code != 1002 && reason_ok {
                let ok = match (&a.end, a.msgs.last()) {
                    // D5: we fail on the code.
                    (End::Failed(_, Some(CodecError::Protocol("invalid close code"))), _) => {
                        !is_valid_close_code(code)
                    }
                    // D6: 1014 is valid for us.
                    (End::Closed, Some((_, Msg::Close(Some((1014, _)))))) => code == 1014,
                    _ => false,
                };
                if !ok || a.end_frame != b.end_frame {
                    fail("close code handling differs beyond D5/D6");
                }
                if a.msgs
                    .iter()
                    .filter(|(i, _)| *i < at)
                    .cloned()
                    .collect::<Vec<_>>()
                    != prefix_before(b, at)
                {
                    fail("messages differ before the close frame");
                }
                return;
            }
        }
    }

    if a.msgs != b.msgs {
        fail("different messages");
    }
    match (&a.end, &b.end) {
        (End::Eof, End::Eof) | (End::Closed, End::Closed) => {}
        // D3: we reject the final, truncated frame from its header; tungstenite waits for it.
        (End::Failed(..), End::Eof) if frames.get(at).is_some_and(|f| f.end.is_none()) => {}
        (End::Failed(x, e), End::Failed(y, _)) => {
            if at != b.end_frame {
                fail("failure at different frames");
            }
            if x == y {
                return;
            }
            let f = &frames[at];
            // D4: tungstenite checks the frame length against the limit first.
            let over = f.len.is_some_and(|l| l > limit as u64);
            let d4_size = *x == Class::Protocol && *y == Class::TooBig && over;
            // D4: close frame with an invalid code and a non-UTF-8 reason.
            let d4_close = *e == Some(CodecError::Protocol("invalid close code"))
                && *y == Class::Utf8
                && f.end.is_some()
                && {
                    let p = payload(stream, f);
                    p.len() >= 2 && std::str::from_utf8(&p[2..]).is_err()
                };
            if !(d4_size || d4_close) {
                fail("different error classes");
            }
        }
        _ => fail("accepted by one side, rejected by the other"),
    }
}

fuzz_target!(|data: &[u8]| {
    let [limit_byte, stream @ ..] = data else {
        return;
    };
    let limit = LIMITS[usize::from(limit_byte & 7)];
    let frames = walk(stream);
    let a = ours(limit, stream, &frames);
    let b = theirs(limit, stream, &frames);
    compare(limit, stream, &frames, &a, &b);
});
