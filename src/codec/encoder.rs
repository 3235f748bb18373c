//! Frame encoding (RFC 6455 §5.2).
//!
//! Server → client frames are unmasked ("A server MUST NOT mask any frames that it sends to the
//! client", §5.1); the masked variants exist for tests and fuzzers that play the client. Every
//! function builds a complete frame in a single allocation and returns it as `Bytes`, so one
//! encoded frame can be shared by every subscriber of a broadcast.
//!
//! Length encoding is always minimal: 7-bit for < 126, 16-bit for < 65536, 64-bit above.
//! Control frame payloads are truncated to 125 bytes (§5.5) rather than producing an invalid frame.

use bytes::{BufMut, Bytes, BytesMut};

use super::header::OpCode;
use super::mask::apply_mask;

/// Longest frame header: 2 fixed bytes + 8 length bytes + 4 mask bytes.
const MAX_HEADER_LEN: usize = 14;
/// Longest unmasked header, the headroom [`text_frame_with`] leaves in front of the payload.
const HEADROOM: usize = 10;
/// Control frame payload limit (§5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// Writes a frame header into a stack buffer; returns (buffer, length used). Max header is 14
/// bytes. RSV bits are always 0 (no extensions).
pub fn encode_header(
    fin: bool,
    opcode: OpCode,
    payload_len: usize,
    mask: Option<[u8; 4]>,
) -> ([u8; 14], usize) {
    let mut buf = [0u8; MAX_HEADER_LEN];
    buf[0] = if fin { 0x80 } else { 0 } | opcode.as_u8();
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut len = 2;
    if payload_len < 126 {
        buf[1] = mask_bit | payload_len as u8;
    } else if let Ok(short) = u16::try_from(payload_len) {
        buf[1] = mask_bit | 126;
        buf[2..4].copy_from_slice(&short.to_be_bytes());
        len = 4;
    } else {
        buf[1] = mask_bit | 127;
        buf[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
        len = 10;
    }
    if let Some(key) = mask {
        buf[len..len + 4].copy_from_slice(&key);
        len += 4;
    }
    (buf, len)
}

/// Complete unmasked frame in one allocation.
pub fn encode_frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Bytes {
    let (header, header_len) = encode_header(fin, opcode, payload.len(), None);
    let mut out = BytesMut::with_capacity(header_len + payload.len());
    out.put_slice(&header[..header_len]);
    out.put_slice(payload);
    out.freeze()
}

/// Complete masked (client → server) frame, for tests and fuzzers that play the client.
pub fn encode_masked_frame(fin: bool, opcode: OpCode, payload: &[u8], key: [u8; 4]) -> Bytes {
    let (header, header_len) = encode_header(fin, opcode, payload.len(), Some(key));
    let mut out = BytesMut::with_capacity(header_len + payload.len());
    out.put_slice(&header[..header_len]);
    out.put_slice(payload);
    apply_mask(&mut out[header_len..], key);
    out.freeze()
}

/// A final, unmasked text frame. The caller guarantees `payload` is UTF-8.
pub fn text_frame(payload: &[u8]) -> Bytes {
    encode_frame(true, OpCode::Text, payload)
}

/// A close frame with `code` and `reason`; the reason is cut at a char boundary so the payload
/// stays within 125 bytes (§5.5). `code` is sent as given (the server picks its own codes).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
    encode_frame(true, OpCode::Close, &payload[..2 + end])
}

/// A close frame with no body ("no status code present", seen by the peer as 1005).
pub fn empty_close_frame() -> Bytes {
    encode_frame(true, OpCode::Close, &[])
}

/// A ping frame; the payload is truncated to 125 bytes (§5.5).
pub fn ping_frame(payload: &[u8]) -> Bytes {
    encode_frame(true, OpCode::Ping, truncate_control(payload))
}

/// A pong frame (the answer to a ping, echoing its payload, §5.5.3); truncated to 125 bytes.
pub fn pong_frame(payload: &[u8]) -> Bytes {
    encode_frame(true, OpCode::Pong, truncate_control(payload))
}

fn truncate_control(payload: &[u8]) -> &[u8] {
    payload.get(..MAX_CONTROL_PAYLOAD).unwrap_or(payload)
}

/// Builds a FIN text frame whose payload is written by `write` straight into the final buffer, so a
/// JSON message is serialized once with no copy.
///
/// `write` must only append to the `Vec` it is given (e.g. `serde_json::to_writer(&mut *buf, ..)`)
/// and must append UTF-8. Layout, with the header right-aligned against the payload:
///
/// ```text
/// [ unused headroom | header (2, 4 or 10) | payload ... ]
///   0                 10 - header_len       10
/// ```
///
/// The returned `Bytes` starts at the header; the unused headroom stays in the allocation.
pub fn text_frame_with<F: FnOnce(&mut Vec<u8>)>(capacity_hint: usize, write: F) -> Bytes {
    let mut buf = Vec::with_capacity(HEADROOM.saturating_add(capacity_hint));
    buf.resize(HEADROOM, 0);
    write(&mut buf);
    debug_assert!(
        buf.len() >= HEADROOM,
        "text_frame_with: `write` removed the headroom"
    );
    if buf.len() < HEADROOM {
        buf.resize(HEADROOM, 0);
    }
    let payload_len = buf.len() - HEADROOM;
    let (header, header_len) = encode_header(true, OpCode::Text, payload_len, None);
    let start = HEADROOM - header_len;
    buf[start..HEADROOM].copy_from_slice(&header[..header_len]);
    // A frame may be kept (channel history) long after it is sent: give back a doubled
    // buffer's slack once, here, rather than hold it per stored message.
    if buf.capacity() - buf.len() > buf.len() / 8 {
        buf.shrink_to_fit();
    }
    Bytes::from(buf).slice(start..)
}

/// The payload of a complete unmasked frame as the server encodes them (a stored history
/// frame), by its header; None if `frame` is not one.
pub fn frame_payload(frame: &[u8]) -> Option<&[u8]> {
    let h = super::header::parse(frame).ok()??;
    let len = usize::try_from(h.payload_len).ok()?;
    frame.get(h.header_len..h.header_len.checked_add(len)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_examples() {
        // RFC 6455 §5.7.
        assert_eq!(&text_frame(b"Hello")[..], b"\x81\x05Hello");
        assert_eq!(
            &encode_masked_frame(true, OpCode::Text, b"Hello", [0x37, 0xFA, 0x21, 0x3D])[..],
            [0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58]
        );
        assert_eq!(
            &encode_frame(false, OpCode::Text, b"Hel")[..],
            b"\x01\x03Hel"
        );
        assert_eq!(
            &encode_frame(true, OpCode::Continuation, b"lo")[..],
            b"\x80\x02lo"
        );
        assert_eq!(&ping_frame(b"Hello")[..], b"\x89\x05Hello");
        assert_eq!(&pong_frame(b"Hello")[..], b"\x8a\x05Hello");
    }

    #[test]
    fn header_length_boundaries() {
        let cases: [(usize, &[u8]); 6] = [
            (0, &[0x82, 0x00]),
            (125, &[0x82, 0x7D]),
            (126, &[0x82, 0x7E, 0x00, 0x7E]),
            (65535, &[0x82, 0x7E, 0xFF, 0xFF]),
            (65536, &[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]),
            (1 << 32, &[0x82, 0x7F, 0, 0, 0, 1, 0, 0, 0, 0]),
        ];
        for (len, expected) in cases {
            let (buf, n) = encode_header(true, OpCode::Binary, len, None);
            assert_eq!(&buf[..n], expected, "len {len}");
        }
        let (buf, n) = encode_header(false, OpCode::Binary, 65536, Some([1, 2, 3, 4]));
        assert_eq!(n, 14);
        assert_eq!(&buf[..n], [0x02, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4]);
    }

    #[test]
    fn encoded_headers_parse_back() {
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 1 << 20] {
            for mask in [None, Some([9, 8, 7, 6])] {
                let (buf, n) = encode_header(true, OpCode::Binary, len, mask);
                let h = super::super::header::parse(&buf[..n]).unwrap().unwrap();
                assert_eq!((h.payload_len, h.header_len, h.mask), (len as u64, n, mask));
            }
        }
    }

    #[test]
    fn close_frames() {
        assert_eq!(&empty_close_frame()[..], [0x88, 0x00]);
        assert_eq!(&close_frame(1000, "")[..], [0x88, 0x02, 0x03, 0xE8]);
        assert_eq!(
            &close_frame(4008, "slow consumer")[..4],
            [0x88, 15, 0x0F, 0xA8]
        );
        assert_eq!(&close_frame(4008, "slow consumer")[4..], b"slow consumer");
    }

    #[test]
    fn close_reason_truncated_at_char_boundary() {
        // 122 ASCII bytes + a 2-byte char would make 124 reason bytes: one too many.
        let reason = format!("{}é", "a".repeat(122));
        let frame = close_frame(1000, &reason);
        assert_eq!(frame[1] as usize, 2 + 122);
        assert!(std::str::from_utf8(&frame[4..]).is_ok());
        let long = "€".repeat(100);
        let frame = close_frame(1001, &long);
        assert!(frame[1] as usize <= 125);
        assert_eq!(frame.len(), 2 + frame[1] as usize);
        assert_eq!(&frame[4..], "€".repeat(41).as_bytes());
    }

    #[test]
    fn control_payload_truncated() {
        let big = [7u8; 300];
        let ping = ping_frame(&big);
        assert_eq!(ping[1], 125);
        assert_eq!(ping.len(), 127);
        assert_eq!(pong_frame(&big).len(), 127);
    }

    #[test]
    fn text_frame_with_matches_text_frame() {
        for len in [0usize, 5, 125, 126, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let built = text_frame_with(len, |buf| buf.extend_from_slice(&payload));
            assert_eq!(built, text_frame(&payload), "len {len}");
        }
    }

    #[test]
    fn text_frame_with_writes_in_place() {
        let frame = text_frame_with(64, |buf| buf.extend_from_slice(b"{\"a\":1}"));
        assert_eq!(&frame[..], b"\x81\x07{\"a\":1}");
    }
}
