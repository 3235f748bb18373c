//! Frame header parsing (RFC 6455 §5.2).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! ```
//!
//! [`parse`] enforces only the rules that hold for every endpoint: known opcode, control frames
//! unfragmented with ≤125 bytes, minimal length encoding, 64-bit length MSB clear. Role- and
//! negotiation-dependent rules (masking, RSV bits) and message-level rules are the decoder's.
//! Checks run in a fixed order over a prefix of the header (first-byte and second-byte rules
//! before any extended field is needed), so the outcome never depends on how bytes were split
//! across reads.

use super::error::CodecError;

/// Frame opcode (RFC 6455 §5.2, §11.8). Reserved opcodes 0x3–0x7 and 0xB–0xF have no variant:
/// receiving one is a protocol error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// 0x0: continues a fragmented Text or Binary message.
    Continuation,
    /// 0x1: first (or only) frame of a UTF-8 text message.
    Text,
    /// 0x2: first (or only) frame of a binary message.
    Binary,
    /// 0x8: connection close (§5.5.1).
    Close,
    /// 0x9: ping; the peer answers with a pong carrying the same payload (§5.5.2).
    Ping,
    /// 0xA: pong (§5.5.3).
    Pong,
}

impl OpCode {
    /// The opcode for a 4-bit wire value; `None` for reserved values (0x3–0x7, 0xB–0xF) and for
    /// anything above 0xF.
    pub fn from_u8(value: u8) -> Option<OpCode> {
        match value {
            0x0 => Some(OpCode::Continuation),
            0x1 => Some(OpCode::Text),
            0x2 => Some(OpCode::Binary),
            0x8 => Some(OpCode::Close),
            0x9 => Some(OpCode::Ping),
            0xA => Some(OpCode::Pong),
            _ => None,
        }
    }

    /// The 4-bit wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Close, Ping and Pong: "Control frames are identified by opcodes where the most significant
    /// bit of the opcode is 1" (§5.5).
    pub fn is_control(self) -> bool {
        self.as_u8() & 0x8 != 0
    }
}

/// A parsed frame header. The payload (`payload_len` bytes, still masked) follows the
/// `header_len` header bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// FIN: this is the final fragment of a message.
    pub fin: bool,
    /// RSV1: meaning defined by an extension (none is negotiated by huddle).
    pub rsv1: bool,
    /// RSV2: meaning defined by an extension.
    pub rsv2: bool,
    /// RSV3: meaning defined by an extension.
    pub rsv3: bool,
    /// The frame's opcode.
    pub opcode: OpCode,
    /// The masking key when the MASK bit is set (always, for client → server frames).
    pub mask: Option<[u8; 4]>,
    /// Announced payload length; < 2^63 by construction.
    pub payload_len: u64,
    /// Bytes taken by the header itself: 2 to 14.
    pub header_len: usize,
}

impl Header {
    /// Whether the MASK bit is set.
    pub fn is_masked(&self) -> bool {
        self.mask.is_some()
    }

    /// Whether any reserved bit is set.
    pub fn has_rsv(&self) -> bool {
        self.rsv1 || self.rsv2 || self.rsv3
    }
}

/// Parses the header at the start of `buf`. `Ok(None)` means more bytes are needed (nothing is
/// consumed; call again with a longer buffer). Errors are framing violations (close 1002).
pub fn parse(buf: &[u8]) -> Result<Option<Header>, CodecError> {
    let Some((&[b0, b1], rest)) = buf.split_first_chunk::<2>() else {
        return Ok(None);
    };
    let fin = b0 & 0x80 != 0;
    let opcode = OpCode::from_u8(b0 & 0x0F).ok_or(CodecError::Protocol("reserved opcode"))?;
    let masked = b1 & 0x80 != 0;
    let len7 = b1 & 0x7F;
    if opcode.is_control() {
        // §5.5: "All control frames MUST have a payload length of 125 bytes or less and MUST NOT
        // be fragmented."
        if !fin {
            return Err(CodecError::Protocol("fragmented control frame"));
        }
        if len7 > 125 {
            return Err(CodecError::Protocol("control frame payload over 125 bytes"));
        }
    }
    // §5.2: "the minimal number of bytes MUST be used to encode the length".
    let (payload_len, rest) = match len7 {
        126 => {
            let Some((ext, rest)) = rest.split_first_chunk::<2>() else {
                return Ok(None);
            };
            let len = u64::from(u16::from_be_bytes(*ext));
            if len < 126 {
                return Err(CodecError::Protocol("non-minimal 16-bit payload length"));
            }
            (len, rest)
        }
        127 => {
            let Some((ext, rest)) = rest.split_first_chunk::<8>() else {
                return Ok(None);
            };
            let len = u64::from_be_bytes(*ext);
            // §5.2: "the most significant bit MUST be 0".
            if len >> 63 != 0 {
                return Err(CodecError::Protocol("64-bit payload length with MSB set"));
            }
            if len <= u64::from(u16::MAX) {
                return Err(CodecError::Protocol("non-minimal 64-bit payload length"));
            }
            (len, rest)
        }
        short => (u64::from(short), rest),
    };
    let mask = if masked {
        let Some(key) = rest.first_chunk::<4>() else {
            return Ok(None);
        };
        Some(*key)
    } else {
        None
    };
    Ok(Some(Header {
        fin,
        rsv1: b0 & 0x40 != 0,
        rsv2: b0 & 0x20 != 0,
        rsv3: b0 & 0x10 != 0,
        opcode,
        mask,
        payload_len,
        header_len: buf.len() - rest.len() + if masked { 4 } else { 0 },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcode_round_trip_and_reserved() {
        for v in 0u8..=0xFF {
            match OpCode::from_u8(v) {
                Some(op) => assert_eq!(op.as_u8(), v),
                None => assert!(matches!(v, 0x3..=0x7 | 0xB..=0xFF), "{v:#x}"),
            }
        }
        assert!(OpCode::Close.is_control());
        assert!(OpCode::Ping.is_control());
        assert!(OpCode::Pong.is_control());
        assert!(!OpCode::Text.is_control());
        assert!(!OpCode::Binary.is_control());
        assert!(!OpCode::Continuation.is_control());
    }

    #[test]
    fn rfc_examples() {
        // RFC 6455 §5.7: unmasked and masked "Hello".
        let h = parse(&[0x81, 0x05]).unwrap().unwrap();
        assert!(h.fin && !h.has_rsv() && !h.is_masked());
        assert_eq!(
            (h.opcode, h.payload_len, h.header_len),
            (OpCode::Text, 5, 2)
        );
        let h = parse(&[0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D])
            .unwrap()
            .unwrap();
        assert_eq!(h.mask, Some([0x37, 0xFA, 0x21, 0x3D]));
        assert_eq!((h.payload_len, h.header_len), (5, 6));
        // 256 bytes binary in a single unmasked frame: 0x82 0x7E 0x0100.
        let h = parse(&[0x82, 0x7E, 0x01, 0x00]).unwrap().unwrap();
        assert_eq!(
            (h.opcode, h.payload_len, h.header_len),
            (OpCode::Binary, 256, 4)
        );
        // 64 KiB binary: 0x82 0x7F 0x0000000000010000.
        let h = parse(&[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0])
            .unwrap()
            .unwrap();
        assert_eq!((h.payload_len, h.header_len), (65536, 10));
    }

    #[test]
    fn every_proper_prefix_needs_more() {
        let full = [0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4];
        for n in 0..full.len() {
            assert_eq!(parse(&full[..n]), Ok(None), "prefix {n}");
        }
        let h = parse(&full).unwrap().unwrap();
        assert_eq!((h.payload_len, h.header_len), (65536, 14));
        assert_eq!(h.mask, Some([1, 2, 3, 4]));
    }

    #[test]
    fn rsv_bits_are_reported() {
        let h = parse(&[0xF2, 0x00]).unwrap().unwrap();
        assert!(h.rsv1 && h.rsv2 && h.rsv3);
        let h = parse(&[0xA2, 0x00]).unwrap().unwrap();
        assert!(!h.rsv1 && h.rsv2 && !h.rsv3);
    }

    #[test]
    fn reserved_opcodes_rejected_from_first_two_bytes() {
        for op in (0x3..=0x7).chain(0xB..=0xF) {
            assert!(matches!(
                parse(&[0x80 | op, 0x80]),
                Err(CodecError::Protocol(_))
            ));
        }
    }

    #[test]
    fn control_frame_rules() {
        // Not FIN.
        assert!(matches!(parse(&[0x09, 0x80]), Err(CodecError::Protocol(_))));
        // 126 and 127 length markers on a control frame.
        assert!(matches!(parse(&[0x89, 0xFE]), Err(CodecError::Protocol(_))));
        assert!(matches!(parse(&[0x88, 0xFF]), Err(CodecError::Protocol(_))));
        assert!(parse(&[0x8A, 0xFD]).is_ok());
    }

    #[test]
    fn non_minimal_lengths_rejected() {
        assert!(matches!(
            parse(&[0x82, 0x7E, 0x00, 0x7D]),
            Err(CodecError::Protocol(_))
        ));
        assert!(parse(&[0x82, 0x7E, 0x00, 0x7E]).unwrap().is_some());
        assert!(matches!(
            parse(&[0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF]),
            Err(CodecError::Protocol(_))
        ));
        assert!(matches!(
            parse(&[0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0, 5]),
            Err(CodecError::Protocol(_))
        ));
    }

    #[test]
    fn length_msb_rejected() {
        assert!(matches!(
            parse(&[0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(CodecError::Protocol(_))
        ));
        let h = parse(&[0x82, 0x7F, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
            .unwrap()
            .unwrap();
        assert_eq!(h.payload_len, (1 << 63) - 1);
    }
}
