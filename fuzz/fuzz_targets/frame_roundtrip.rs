//! Invariant: any valid client stream built with `codec::encode_masked_frame` (text messages from
//! a `String`, binary messages, both optionally fragmented at arbitrary byte offsets, with ping /
//! pong / close frames between the fragments, every frame with its own mask key) decodes back to
//! exactly the messages that were encoded, in order, with no error, whether the stream is fed
//! whole or in chunks.
//!
//! Also checked per frame: `header::parse` reads back what `encode_header` wrote (fin, opcode,
//! length, mask, header length), and the unmasked `encode_frame` carries the payload verbatim.

#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use huddle::codec::{self, header, CloseFrame, Decoder, Event, OpCode};
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 1 << 20;

#[derive(Arbitrary, Debug)]
enum Control {
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// `None`: empty body. Otherwise a code (mapped onto a wire-valid one) and a reason.
    Close(Option<(u16, String)>),
}

#[derive(Arbitrary, Debug)]
enum Payload {
    Text(String),
    Binary(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct DataMessage {
    payload: Payload,
    /// Repeat the payload this many extra times (capped), to reach 16- and 64-bit lengths.
    repeat: u8,
    /// Fragment lengths; whatever is left after the last one is the final fragment.
    cuts: Vec<u16>,
    /// (after fragment i, control frame) pairs; i is taken modulo the fragment count.
    between: Vec<(u8, Control)>,
}

#[derive(Arbitrary, Debug)]
enum Item {
    Data(DataMessage),
    Control(Control),
}

#[derive(Arbitrary, Debug)]
struct Input {
    items: Vec<Item>,
    keys: Vec<[u8; 4]>,
    chunk: u16,
}

/// Maps any u16 onto a close code an endpoint may send (1000-1003, 1007-1014, 3000-4999).
fn wire_code(c: u16) -> u16 {
    let valid: u16 = 4 + 8 + 2000;
    match c % valid {
        i @ 0..=3 => 1000 + i,
        i @ 4..=11 => 1007 + (i - 4),
        i => 3000 + (i - 12),
    }
}

/// `s` cut to at most `max` bytes at a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

struct Builder<'a> {
    stream: Vec<u8>,
    expected: Vec<Event>,
    keys: &'a [[u8; 4]],
    frames: usize,
}

impl Builder<'_> {
    fn frame(&mut self, fin: bool, opcode: OpCode, payload: &[u8]) {
        let key = if self.keys.is_empty() {
            [0x37, 0xFA, 0x21, 0x3D]
        } else {
            self.keys[self.frames % self.keys.len()]
        };
        self.frames += 1;
        let masked = codec::encode_masked_frame(fin, opcode, payload, key);
        let plain = codec::encode_frame(fin, opcode, payload);

        let h = header::parse(&masked)
            .unwrap()
            .expect("complete masked frame");
        assert_eq!(
            (h.fin, h.opcode, h.mask, h.payload_len),
            (fin, opcode, Some(key), payload.len() as u64)
        );
        assert!(!h.has_rsv());
        assert_eq!(h.header_len + payload.len(), masked.len());
        let p = header::parse(&plain).unwrap().expect("complete frame");
        assert_eq!((p.fin, p.opcode, p.mask), (fin, opcode, None));
        assert_eq!(
            p.header_len + 4,
            h.header_len,
            "mask adds exactly 4 header bytes"
        );
        assert_eq!(&plain[p.header_len..], payload);
        // Minimal length encoding.
        let expected_header = match payload.len() {
            0..=125 => 2,
            126..=65_535 => 4,
            _ => 10,
        };
        assert_eq!(p.header_len, expected_header);
        // Every proper prefix of a header needs more bytes.
        for n in 0..h.header_len {
            assert_eq!(header::parse(&masked[..n]), Ok(None), "prefix {n}");
        }

        self.stream.extend_from_slice(&masked);
    }

    fn control(&mut self, c: &Control) {
        match c {
            Control::Ping(p) => {
                let p = &p[..p.len().min(125)];
                self.frame(true, OpCode::Ping, p);
                self.expected.push(Event::Ping(Bytes::copy_from_slice(p)));
            }
            Control::Pong(p) => {
                let p = &p[..p.len().min(125)];
                self.frame(true, OpCode::Pong, p);
                self.expected.push(Event::Pong(Bytes::copy_from_slice(p)));
            }
            Control::Close(None) => {
                self.frame(true, OpCode::Close, b"");
                self.expected.push(Event::Close(None));
            }
            Control::Close(Some((code, reason))) => {
                let code = wire_code(*code);
                let reason = truncate(reason, 123);
                let mut body = code.to_be_bytes().to_vec();
                body.extend_from_slice(reason.as_bytes());
                self.frame(true, OpCode::Close, &body);
                self.expected.push(Event::Close(Some(CloseFrame {
                    code,
                    reason: reason.to_owned(),
                })));
            }
        }
    }

    fn data(&mut self, m: &DataMessage) {
        let (opcode, unit): (OpCode, &[u8]) = match &m.payload {
            Payload::Text(s) => (OpCode::Text, s.as_bytes()),
            Payload::Binary(b) => (OpCode::Binary, b),
        };
        // Repeating a valid UTF-8 string keeps it valid.
        let copies = if unit.is_empty() {
            1
        } else {
            (1 + usize::from(m.repeat)).min(70_000 / unit.len()).max(1)
        };
        let payload = unit.repeat(copies);

        let mut fragments: Vec<&[u8]> = Vec::new();
        let mut rest = &payload[..];
        for &c in m.cuts.iter().take(62) {
            let (head, tail) = rest.split_at(usize::from(c).min(rest.len()));
            fragments.push(head);
            rest = tail;
        }
        fragments.push(rest);

        let n = fragments.len();
        for (i, frag) in fragments.iter().enumerate() {
            let op = if i == 0 { opcode } else { OpCode::Continuation };
            self.frame(i + 1 == n, op, frag);
            if i + 1 < n {
                for (_, c) in m.between.iter().filter(|(at, _)| usize::from(*at) % n == i) {
                    self.control(c);
                }
            }
        }
        let bytes = Bytes::from(payload);
        self.expected.push(if opcode == OpCode::Text {
            Event::Text(bytes)
        } else {
            Event::Binary(bytes)
        });
    }
}

fn decode(stream: &[u8], chunk: usize) -> (Vec<Event>, Option<codec::CodecError>) {
    let mut d = Decoder::new(LIMIT);
    let mut events = Vec::new();
    for piece in stream.chunks(chunk.max(1)) {
        d.feed(piece);
        loop {
            match d.next_event() {
                Ok(Some(e)) => events.push(e),
                Ok(None) => break,
                Err(e) => return (events, Some(e)),
            }
        }
    }
    (events, None)
}

fuzz_target!(|input: Input| {
    let mut b = Builder {
        stream: Vec::new(),
        expected: Vec::new(),
        keys: &input.keys,
        frames: 0,
    };
    for item in input.items.iter().take(64) {
        match item {
            Item::Data(m) => b.data(m),
            Item::Control(c) => b.control(c),
        }
    }

    let whole = decode(&b.stream, b.stream.len());
    assert_eq!(whole.1, None, "valid stream rejected");
    assert_eq!(
        whole.0, b.expected,
        "decoded events differ from encoded messages"
    );

    // Tiny chunks over a multi-megabyte stream would only slow the fuzzer down.
    let chunk = usize::from(input.chunk).max(b.stream.len() / 4096);
    let chunked = decode(&b.stream, chunk);
    assert_eq!(chunked, whole, "chunked decoding differs (chunk {chunk})");
});
