//! Server-side frame decoder: bytes from a client in, complete messages and control frames out.
//!
//! ```text
//!            feed()                          next_event()
//! socket ──► buf: [ header | payload ... | next frame ... ]
//!                   │ parse, check limits     │ split_to(len), unmask in place
//!                   ▼                         ▼
//!            pending: Header           FIN data frame ─────────────► Event (zero copy)
//!                                      control frame ──────────────► Event (zero copy)
//!                                      fragment ──► assembly ──FIN──► Event
//! ```
//!
//! Invariants:
//! - `buf` holds only bytes actually received and not yet consumed; nothing is ever reserved
//!   from an announced length. When it is empty its allocation is dropped, so an idle
//!   connection holds no heap.
//! - Every limit is decided from the header, before the payload is buffered: a header announcing
//!   more than `max_message_size` (counting what the open message already holds) fails with
//!   [`CodecError::TooBig`] at once. So `buf` never needs more than one frame of at most
//!   `max_message_size + 14` bytes, and `assembly` never exceeds `max_message_size`.
//! - `pending` is `Some` exactly when a header has been consumed from `buf` and its payload has
//!   not yet fully arrived.
//! - `message` is `Some` exactly when a fragmented Text/Binary message is open; for text, `utf8`
//!   has seen every fragment of it so far and succeeded.
//! - For a pending text frame, payload bytes `..checked` in `buf` are already unmasked and
//!   validated: invalid UTF-8 fails when it arrives, even in the middle of a frame.
//! - After an error the decoder is poisoned: buffers are freed, input is ignored, and every call
//!   returns the same error.
//!
//! Outcomes depend only on the byte stream, never on how it was split across `feed` calls.

use bytes::{Buf, Bytes, BytesMut};

use super::close::parse_close_body;
use super::error::CodecError;
use super::header::{self, Header, OpCode};
use super::mask::apply_mask;
use super::utf8::Utf8Validator;

/// A close frame's status code and reason, both already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// Status code; always satisfies [`super::is_valid_close_code`].
    pub code: u16,
    /// Reason text (valid UTF-8 by construction, at most 123 bytes).
    pub reason: String,
}

/// What a client sent, one complete unit at a time.
///
/// Payloads of unfragmented frames are views into the decoder's receive buffer (zero copy), so
/// holding one keeps that read allocation alive: parse or copy it, then drop it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete, reassembled, UTF-8-validated text message.
    Text(Bytes),
    /// A complete, reassembled binary message.
    Binary(Bytes),
    /// A ping; the server should answer with a pong echoing the payload (§5.5.2).
    Ping(Bytes),
    /// An (unsolicited or answering) pong.
    Pong(Bytes),
    /// A close frame; `None` when its body is empty. The decoder does not stop by itself: the
    /// connection state answers the close and stops reading (§5.5.1).
    Close(Option<CloseFrame>),
}

/// A fragmented message being reassembled.
#[derive(Debug)]
struct Message {
    /// Text or Binary, from the first fragment.
    opcode: OpCode,
    /// Unmasked payload of the fragments so far.
    assembly: BytesMut,
    /// Fragments received so far, including the first.
    fragments: usize,
}

/// Sans-IO decoder for frames sent by a client (RFC 6455 §5): feed bytes, pull events.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    pending: Option<Header>,
    /// Leading payload bytes of the pending frame already unmasked in `buf` and fed to `utf8`
    /// (text only), so invalid UTF-8 fails as soon as it arrives, not when the frame completes.
    checked: usize,
    message: Option<Message>,
    utf8: Utf8Validator,
    max_message_size: usize,
    max_fragments: usize,
    poisoned: Option<CodecError>,
}

impl Decoder {
    /// `max_message_size`: largest message after reassembly (payload bytes). A message may have
    /// at most `max(64, max_message_size / 16)` fragments, so tiny fragments cannot spin.
    pub fn new(max_message_size: usize) -> Self {
        Decoder {
            buf: BytesMut::new(),
            pending: None,
            checked: 0,
            message: None,
            utf8: Utf8Validator::new(),
            max_message_size,
            max_fragments: (max_message_size / 16).max(64),
            poisoned: None,
        }
    }

    /// Appends bytes read from the socket. Ignored once the decoder is poisoned.
    pub fn feed(&mut self, data: &[u8]) {
        if self.poisoned.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// Next complete event, Ok(None) when more bytes are needed. After an Err, the decoder is
    /// poisoned: every later call returns the same error.
    pub fn next_event(&mut self) -> Result<Option<Event>, CodecError> {
        if let Some(err) = self.poisoned {
            return Err(err);
        }
        let result = self.decode();
        if let Err(err) = result {
            self.poisoned = Some(err);
            self.buf = BytesMut::new();
            self.pending = None;
            self.checked = 0;
            self.message = None;
        }
        result
    }

    /// Bytes of heap the decoder currently holds (for memory accounting): the receive buffer and
    /// the assembly buffer of an open fragmented message.
    pub fn buffered_capacity(&self) -> usize {
        self.buf.capacity() + self.message.as_ref().map_or(0, |m| m.assembly.capacity())
    }

    /// Consumes frames until one yields an event or the buffer runs dry.
    fn decode(&mut self) -> Result<Option<Event>, CodecError> {
        loop {
            let header = match self.pending {
                Some(header) => header,
                None => {
                    let Some(header) = header::parse(&self.buf)? else {
                        return Ok(None);
                    };
                    self.check(&header)?;
                    self.buf.advance(header.header_len);
                    self.pending = Some(header);
                    self.checked = 0;
                    if header.opcode == OpCode::Text {
                        self.utf8.reset();
                    }
                    header
                }
            };
            // `check` bounded the length by 125 or by `max_message_size`, so it fits in usize.
            let len = usize::try_from(header.payload_len).map_err(|_| CodecError::TooBig)?;
            let text = self.is_text(&header);
            if self.buf.len() < len {
                if text {
                    // Fail fast: check what has arrived of a text frame (Autobahn 6.4.x).
                    let upto = self.buf.len();
                    self.unmask_and_check(&header, upto)?;
                }
                self.release_if_empty();
                return Ok(None);
            }
            if text {
                self.unmask_and_check(&header, len)?;
            } else if let Some(key) = header.mask {
                apply_mask(&mut self.buf[..len], key);
            }
            self.pending = None;
            self.checked = 0;
            let payload = self.buf.split_to(len);
            self.release_if_empty();
            if let Some(event) = self.dispatch(header, payload)? {
                return Ok(Some(event));
            }
        }
    }

    /// True for a Text frame or a continuation of an open text message.
    fn is_text(&self, header: &Header) -> bool {
        match header.opcode {
            OpCode::Text => true,
            OpCode::Continuation => self
                .message
                .as_ref()
                .is_some_and(|m| m.opcode == OpCode::Text),
            _ => false,
        }
    }

    /// Unmasks payload bytes `checked..upto` of the pending text frame in place and feeds them
    /// to the message's UTF-8 validator.
    fn unmask_and_check(&mut self, header: &Header, upto: usize) -> Result<(), CodecError> {
        let from = self.checked;
        if upto <= from {
            return Ok(());
        }
        let chunk = &mut self.buf[from..upto];
        if let Some(key) = header.mask {
            // The mask continues where the previous chunk stopped (§5.3: octet i uses key[i % 4]).
            let rotated = [0, 1, 2, 3].map(|i| key[(from + i) % 4]);
            apply_mask(chunk, rotated);
        }
        self.checked = upto;
        self.utf8.feed(chunk).map_err(|_| CodecError::InvalidUtf8)
    }

    /// Validates a header against the connection state before any of its payload is buffered.
    fn check(&self, header: &Header) -> Result<(), CodecError> {
        if header.has_rsv() {
            // §5.2: "If a nonzero value is received and none of the negotiated extensions defines
            // the meaning of such a nonzero value, the receiving endpoint MUST _Fail_".
            return Err(CodecError::Protocol("reserved bit set"));
        }
        if !header.is_masked() {
            // §5.1: "The server MUST close the connection upon receiving a frame that is not
            // masked."
            return Err(CodecError::Protocol("unmasked client frame"));
        }
        let (already, fragments) = match (header.opcode, &self.message) {
            (op, _) if op.is_control() => return Ok(()), // ≤125 and FIN checked by header::parse
            (OpCode::Continuation, None) => {
                return Err(CodecError::Protocol("continuation frame without a message"))
            }
            (OpCode::Continuation, Some(m)) => (m.assembly.len(), m.fragments + 1),
            (_, Some(_)) => {
                return Err(CodecError::Protocol(
                    "new message inside a fragmented message",
                ))
            }
            (_, None) => (0, 1),
        };
        let total = (already as u64).saturating_add(header.payload_len);
        if total > self.max_message_size as u64 || fragments > self.max_fragments {
            return Err(CodecError::TooBig);
        }
        Ok(())
    }

    /// Turns a complete, unmasked frame into an event, or folds it into the open message.
    fn dispatch(&mut self, header: Header, payload: BytesMut) -> Result<Option<Event>, CodecError> {
        match header.opcode {
            OpCode::Ping => Ok(Some(Event::Ping(payload.freeze()))),
            OpCode::Pong => Ok(Some(Event::Pong(payload.freeze()))),
            OpCode::Close => Ok(Some(Event::Close(parse_close_body(&payload)?))),
            // Text payloads were already fed to `utf8` by `unmask_and_check`.
            OpCode::Text | OpCode::Binary if header.fin => {
                if header.opcode == OpCode::Text {
                    self.utf8.finish().map_err(|_| CodecError::InvalidUtf8)?;
                }
                Ok(Some(data_event(header.opcode, payload.freeze())))
            }
            OpCode::Text | OpCode::Binary => {
                let mut assembly = BytesMut::new();
                assembly.extend_from_slice(&payload);
                self.message = Some(Message {
                    opcode: header.opcode,
                    assembly,
                    fragments: 1,
                });
                Ok(None)
            }
            OpCode::Continuation => {
                let Some(message) = self.message.as_mut() else {
                    return Err(CodecError::Protocol("continuation frame without a message"));
                };
                if message.opcode == OpCode::Text && header.fin {
                    self.utf8.finish().map_err(|_| CodecError::InvalidUtf8)?;
                }
                message.assembly.extend_from_slice(&payload);
                message.fragments += 1;
                if !header.fin {
                    return Ok(None);
                }
                let opcode = message.opcode;
                let assembly = std::mem::take(&mut message.assembly);
                self.message = None;
                Ok(Some(data_event(opcode, assembly.freeze())))
            }
        }
    }

    /// Drops the receive buffer's allocation once everything in it has been consumed.
    fn release_if_empty(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }
}

fn data_event(opcode: OpCode, payload: Bytes) -> Event {
    if opcode == OpCode::Text {
        Event::Text(payload)
    } else {
        Event::Binary(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::super::encoder::encode_masked_frame;
    use super::*;

    const KEY: [u8; 4] = [0x11, 0x22, 0x33, 0x44];

    fn masked(fin: bool, opcode: OpCode, payload: &[u8]) -> Bytes {
        encode_masked_frame(fin, opcode, payload, KEY)
    }

    /// Feeds `frames` and collects events until `Ok(None)` or the first error.
    fn decode_all(max: usize, frames: &[Bytes]) -> (Vec<Event>, Option<CodecError>) {
        let mut d = Decoder::new(max);
        for f in frames {
            d.feed(f);
        }
        let mut events = Vec::new();
        loop {
            match d.next_event() {
                Ok(Some(e)) => events.push(e),
                Ok(None) => return (events, None),
                Err(e) => return (events, Some(e)),
            }
        }
    }

    fn first_error(max: usize, frames: &[Bytes]) -> Option<CodecError> {
        decode_all(max, frames).1
    }

    fn is_protocol(err: Option<CodecError>) -> bool {
        matches!(err, Some(CodecError::Protocol(_)))
    }

    #[test]
    fn single_frames() {
        let (events, err) = decode_all(
            1024,
            &[
                masked(true, OpCode::Text, b"hi"),
                masked(true, OpCode::Binary, &[0, 1, 2]),
                masked(true, OpCode::Ping, b"p"),
                masked(true, OpCode::Pong, b""),
                masked(true, OpCode::Close, b"\x03\xe8bye"),
                masked(true, OpCode::Close, b""),
            ],
        );
        assert_eq!(err, None);
        assert_eq!(
            events,
            vec![
                Event::Text(Bytes::from_static(b"hi")),
                Event::Binary(Bytes::from_static(&[0, 1, 2])),
                Event::Ping(Bytes::from_static(b"p")),
                Event::Pong(Bytes::new()),
                Event::Close(Some(CloseFrame {
                    code: 1000,
                    reason: "bye".into()
                })),
                Event::Close(None),
            ]
        );
    }

    #[test]
    fn unmasked_frame_is_protocol_error() {
        let frame = super::super::encoder::text_frame(b"hi");
        assert!(is_protocol(first_error(1024, &[frame])));
    }

    #[test]
    fn rsv_bits_are_protocol_errors() {
        for bit in [0x40u8, 0x20, 0x10] {
            let mut frame = masked(true, OpCode::Text, b"hi").to_vec();
            frame[0] |= bit;
            assert!(is_protocol(first_error(1024, &[frame.into()])), "{bit:#x}");
        }
    }

    #[test]
    fn reserved_opcodes_are_protocol_errors() {
        for op in (0x3u8..=0x7).chain(0xB..=0xF) {
            let mut frame = masked(true, OpCode::Binary, b"x").to_vec();
            frame[0] = 0x80 | op;
            assert!(is_protocol(first_error(1024, &[frame.into()])), "{op:#x}");
        }
    }

    #[test]
    fn control_frame_over_125_is_protocol_error() {
        let frame = masked(true, OpCode::Ping, &[0; 126]);
        assert!(is_protocol(first_error(1024, &[frame])));
        let frame = masked(true, OpCode::Ping, &[0; 125]);
        assert_eq!(first_error(1024, &[frame]), None);
    }

    #[test]
    fn fragmented_control_frame_is_protocol_error() {
        for op in [OpCode::Ping, OpCode::Pong, OpCode::Close] {
            let frame = masked(false, op, b"");
            assert!(is_protocol(first_error(1024, &[frame])), "{op:?}");
        }
    }

    #[test]
    fn continuation_without_message_is_protocol_error() {
        let frame = masked(true, OpCode::Continuation, b"x");
        assert!(is_protocol(first_error(1024, &[frame])));
        // Also after a complete message.
        let frames = [
            masked(false, OpCode::Text, b"a"),
            masked(true, OpCode::Continuation, b"b"),
            masked(false, OpCode::Continuation, b"c"),
        ];
        let (events, err) = decode_all(1024, &frames);
        assert_eq!(events, vec![Event::Text(Bytes::from_static(b"ab"))]);
        assert!(is_protocol(err));
    }

    #[test]
    fn new_message_inside_fragmented_message_is_protocol_error() {
        for op in [OpCode::Text, OpCode::Binary] {
            let frames = [masked(false, OpCode::Binary, b"a"), masked(true, op, b"b")];
            assert!(is_protocol(first_error(1024, &frames)), "{op:?}");
        }
    }

    #[test]
    fn control_frames_between_fragments_are_returned_immediately() {
        let mut d = Decoder::new(1024);
        d.feed(&masked(false, OpCode::Text, b"hel"));
        d.feed(&masked(true, OpCode::Ping, b"ping"));
        assert_eq!(
            d.next_event(),
            Ok(Some(Event::Ping(Bytes::from_static(b"ping"))))
        );
        assert_eq!(d.next_event(), Ok(None));
        d.feed(&masked(true, OpCode::Pong, b""));
        d.feed(&masked(true, OpCode::Continuation, b"lo"));
        assert_eq!(d.next_event(), Ok(Some(Event::Pong(Bytes::new()))));
        assert_eq!(
            d.next_event(),
            Ok(Some(Event::Text(Bytes::from_static(b"hello"))))
        );
        assert_eq!(d.next_event(), Ok(None));
    }

    #[test]
    fn non_minimal_lengths_are_protocol_errors() {
        // 16-bit field holding 5.
        let frame = Bytes::from_static(&[0x82, 0xFE, 0x00, 0x05, 1, 2, 3, 4, 0, 0, 0, 0, 0]);
        assert!(is_protocol(first_error(1 << 20, &[frame])));
        // 64-bit field holding 65535.
        let mut frame = vec![0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 1, 2, 3, 4];
        frame.extend(std::iter::repeat_n(0, 65535));
        assert!(is_protocol(first_error(1 << 20, &[frame.into()])));
    }

    #[test]
    fn length_with_msb_set_is_protocol_error() {
        let frame = Bytes::from_static(&[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4]);
        assert!(is_protocol(first_error(usize::MAX, &[frame])));
    }

    #[test]
    fn huge_announced_length_fails_at_header_without_reserving() {
        // 4 GiB announced, header only: TooBig immediately, nothing buffered.
        let (header, n) =
            super::super::encoder::encode_header(true, OpCode::Binary, 1 << 32, Some(KEY));
        let mut d = Decoder::new(1 << 20);
        d.feed(&header[..n]);
        assert_eq!(d.next_event(), Err(CodecError::TooBig));
        assert_eq!(d.buffered_capacity(), 0);
        // Poisoned: the same error again, and input is ignored.
        d.feed(&[0; 1024]);
        assert_eq!(d.next_event(), Err(CodecError::TooBig));
        assert_eq!(d.buffered_capacity(), 0);
    }

    #[test]
    fn size_limit_applies_to_single_frames() {
        assert_eq!(
            first_error(10, &[masked(true, OpCode::Binary, &[0; 10])]),
            None
        );
        assert_eq!(
            first_error(10, &[masked(true, OpCode::Binary, &[0; 11])]),
            Some(CodecError::TooBig)
        );
    }

    #[test]
    fn size_limit_counts_assembled_fragments_before_payload_arrives() {
        let mut d = Decoder::new(10);
        d.feed(&masked(false, OpCode::Binary, &[0; 6]));
        assert_eq!(d.next_event(), Ok(None));
        // Header of a 5-byte continuation: 6 + 5 > 10, fails without its payload.
        let frame = masked(true, OpCode::Continuation, &[0; 5]);
        d.feed(&frame[..6]);
        assert_eq!(d.next_event(), Err(CodecError::TooBig));
        // Exactly at the limit is fine.
        let frames = [
            masked(false, OpCode::Binary, &[0; 6]),
            masked(true, OpCode::Continuation, &[0; 4]),
        ];
        let (events, err) = decode_all(10, &frames);
        assert_eq!((events.len(), err), (1, None));
    }

    #[test]
    fn fragment_count_is_capped() {
        // max 1024 → cap max(64, 64) = 64 fragments.
        let mut frames = vec![masked(false, OpCode::Binary, b"")];
        frames.extend((0..62).map(|_| masked(false, OpCode::Continuation, b"")));
        frames.push(masked(true, OpCode::Continuation, b"x"));
        let (events, err) = decode_all(1024, &frames);
        assert_eq!(events, vec![Event::Binary(Bytes::from_static(b"x"))]);
        assert_eq!(err, None);

        frames.insert(1, masked(false, OpCode::Continuation, b""));
        assert_eq!(first_error(1024, &frames), Some(CodecError::TooBig));

        // 100,000 one-byte fragments against a 1 MiB limit (cap 65,536).
        let mut d = Decoder::new(1 << 20);
        d.feed(&masked(false, OpCode::Binary, b"a"));
        let one = masked(false, OpCode::Continuation, b"a");
        let mut result = Ok(None);
        for _ in 0..100_000 {
            d.feed(&one);
            result = d.next_event();
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(CodecError::TooBig));
    }

    #[test]
    fn fragment_cap_scales_with_limit() {
        // max 4096 → cap 256.
        let mut frames = vec![masked(false, OpCode::Binary, b"")];
        frames.extend((0..254).map(|_| masked(false, OpCode::Continuation, b"")));
        frames.push(masked(true, OpCode::Continuation, b""));
        assert_eq!(first_error(4096, &frames), None);
        frames.insert(1, masked(false, OpCode::Continuation, b""));
        assert_eq!(first_error(4096, &frames), Some(CodecError::TooBig));
    }

    #[test]
    fn invalid_utf8_fails_at_the_offending_fragment() {
        let mut d = Decoder::new(1024);
        d.feed(&masked(false, OpCode::Text, b"ok "));
        assert_eq!(d.next_event(), Ok(None));
        // Surrogate U+D800 encoded: invalid as soon as this fragment arrives.
        d.feed(&masked(false, OpCode::Continuation, b"\xed\xa0\x80"));
        assert_eq!(d.next_event(), Err(CodecError::InvalidUtf8));
        assert_eq!(d.next_event(), Err(CodecError::InvalidUtf8));
    }

    #[test]
    fn invalid_utf8_fails_before_the_frame_is_complete() {
        // A 1000-byte text frame whose third byte is invalid: the error must come from the
        // first few payload bytes, without waiting for the other ~990 (Autobahn 6.4.3/6.4.4).
        let mut payload = vec![b'a'; 1000];
        payload[2] = 0xff;
        let frame = masked(true, OpCode::Text, &payload);
        let mut d = Decoder::new(4096);
        d.feed(&frame[..8 + 4]); // 4-byte header + 4-byte mask + 4 payload bytes
        assert_eq!(d.next_event(), Err(CodecError::InvalidUtf8));

        // Valid text trickled byte by byte, with a 4-byte code point split across reads.
        let text = "ab😀cd".repeat(50);
        let frame = masked(true, OpCode::Text, text.as_bytes());
        let mut d = Decoder::new(4096);
        let mut events = Vec::new();
        for b in frame.iter() {
            d.feed(&[*b]);
            while let Some(ev) = d.next_event().unwrap() {
                events.push(ev);
            }
        }
        assert_eq!(events, vec![Event::Text(Bytes::from(text))]);
    }

    #[test]
    fn invalid_utf8_in_single_frame() {
        let frame = masked(true, OpCode::Text, b"bad \xff");
        assert_eq!(first_error(1024, &[frame]), Some(CodecError::InvalidUtf8));
        // Binary messages are not validated.
        let frame = masked(true, OpCode::Binary, b"bad \xff");
        assert_eq!(first_error(1024, &[frame]), None);
    }

    #[test]
    fn code_point_split_across_three_fragments() {
        let emoji = "😀".as_bytes(); // F0 9F 98 80
        let frames = [
            masked(false, OpCode::Text, &[b'a', emoji[0]]),
            masked(false, OpCode::Continuation, &emoji[1..3]),
            masked(true, OpCode::Continuation, &[emoji[3], b'b']),
        ];
        let (events, err) = decode_all(1024, &frames);
        assert_eq!(err, None);
        assert_eq!(events, vec![Event::Text(Bytes::from("a😀b"))]);
    }

    #[test]
    fn incomplete_code_point_at_end_of_message() {
        let frames = [
            masked(false, OpCode::Text, b"a\xf0\x9f"),
            masked(true, OpCode::Continuation, b"\x98"),
        ];
        assert_eq!(first_error(1024, &frames), Some(CodecError::InvalidUtf8));
        assert_eq!(
            first_error(1024, &[masked(true, OpCode::Text, b"a\xe2\x82")]),
            Some(CodecError::InvalidUtf8)
        );
    }

    #[test]
    fn utf8_state_does_not_leak_between_messages() {
        // A binary fragmented message in between must not disturb text validation.
        let frames = [
            masked(false, OpCode::Text, b"x"),
            masked(true, OpCode::Continuation, b"y"),
            masked(false, OpCode::Binary, b"\xf0"),
            masked(true, OpCode::Continuation, b"\x9f"),
            masked(false, OpCode::Text, b"z"),
            masked(true, OpCode::Continuation, b""),
        ];
        let (events, err) = decode_all(1024, &frames);
        assert_eq!(err, None);
        assert_eq!(events.len(), 3);
    }

    #[test]
    fn close_body_rules() {
        let one_byte = masked(true, OpCode::Close, b"\x03");
        assert!(is_protocol(first_error(1024, &[one_byte])));
        let bad_code = masked(true, OpCode::Close, &1005u16.to_be_bytes());
        assert!(is_protocol(first_error(1024, &[bad_code])));
        let bad_reason = masked(true, OpCode::Close, b"\x03\xe8\xff");
        assert_eq!(
            first_error(1024, &[bad_reason]),
            Some(CodecError::InvalidUtf8)
        );
        let (events, err) = decode_all(1024, &[masked(true, OpCode::Close, b"")]);
        assert_eq!((events, err), (vec![Event::Close(None)], None));
    }

    #[test]
    fn single_frame_is_zero_copy() {
        let mut d = Decoder::new(1024);
        d.feed(&masked(true, OpCode::Binary, &[7; 100]));
        let start = d.buf.as_ptr() as usize;
        let Ok(Some(Event::Binary(payload))) = d.next_event() else {
            panic!("expected a binary event");
        };
        // The payload is a view into the receive buffer, right after the 6-byte header.
        assert_eq!(payload.as_ptr() as usize, start + 6);
        assert_eq!(&payload[..], &[7; 100][..]);
    }

    #[test]
    fn idle_decoder_holds_no_heap() {
        let mut d = Decoder::new(1 << 20);
        assert_eq!(d.buffered_capacity(), 0);
        d.feed(&masked(true, OpCode::Text, &[b'a'; 5000]));
        assert!(d.buffered_capacity() >= 5000);
        assert!(matches!(d.next_event(), Ok(Some(Event::Text(_)))));
        assert_eq!(d.buffered_capacity(), 0);
        // Also after a fragmented message.
        d.feed(&masked(false, OpCode::Binary, &[1; 300]));
        d.feed(&masked(true, OpCode::Continuation, &[2; 300]));
        assert!(matches!(d.next_event(), Ok(Some(Event::Binary(_)))));
        assert_eq!(d.buffered_capacity(), 0);
    }

    #[test]
    fn partial_payload_buffers_only_received_bytes() {
        let mut d = Decoder::new(1 << 30);
        let frame = masked(true, OpCode::Binary, &vec![0; 1 << 20]);
        d.feed(&frame[..100]);
        assert_eq!(d.next_event(), Ok(None));
        assert!(d.buffered_capacity() < 4096, "{}", d.buffered_capacity());
    }

    #[test]
    fn errors_poison_the_decoder() {
        let mut d = Decoder::new(1024);
        d.feed(&masked(true, OpCode::Continuation, b"x"));
        let err = d.next_event();
        assert!(matches!(err, Err(CodecError::Protocol(_))));
        d.feed(&masked(true, OpCode::Text, b"fine"));
        assert_eq!(d.next_event(), err);
        assert_eq!(d.next_event(), err);
    }
}
