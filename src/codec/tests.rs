//! Cross-module tests: encoder → decoder round trips, independence from how the byte stream is
//! split into reads, and frames produced by an independent client (tungstenite).

use bytes::Bytes;

use super::*;

/// Decodes `stream` fed in pieces of `chunk` bytes (0 = all at once), draining events after every
/// feed; stops at the first error.
fn decode_chunked(max: usize, stream: &[u8], chunk: usize) -> (Vec<Event>, Option<CodecError>) {
    let mut d = Decoder::new(max);
    let mut events = Vec::new();
    let pieces: Vec<&[u8]> = if chunk == 0 {
        vec![stream]
    } else {
        stream.chunks(chunk).collect()
    };
    for piece in pieces {
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

fn concat(frames: &[Bytes]) -> Vec<u8> {
    frames.iter().flat_map(|f| f.iter().copied()).collect()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn round_trip_lengths() {
    for len in [0usize, 1, 125, 126, 65535, 65536, 70000] {
        let payload = pattern(len);
        let text: Vec<u8> = payload.iter().map(|b| b'a' + b % 26).collect();
        let frames = [
            encode_masked_frame(true, OpCode::Binary, &payload, [1, 2, 3, 4]),
            encode_masked_frame(true, OpCode::Text, &text, [0xDE, 0xAD, 0xBE, 0xEF]),
        ];
        let (events, err) = decode_chunked(1 << 20, &concat(&frames), 0);
        assert_eq!(err, None, "len {len}");
        assert_eq!(
            events,
            vec![Event::Binary(payload.into()), Event::Text(text.into())],
            "len {len}"
        );
    }
}

#[test]
fn round_trip_control_frames() {
    let frames = [
        encode_masked_frame(true, OpCode::Ping, &pattern(125), [5, 6, 7, 8]),
        encode_masked_frame(true, OpCode::Pong, b"", [5, 6, 7, 8]),
        encode_masked_frame(true, OpCode::Close, b"\x0f\xa1bye", [5, 6, 7, 8]),
    ];
    let (events, err) = decode_chunked(1024, &concat(&frames), 0);
    assert_eq!(err, None);
    assert_eq!(
        events,
        vec![
            Event::Ping(pattern(125).into()),
            Event::Pong(Bytes::new()),
            Event::Close(Some(CloseFrame {
                code: 4001,
                reason: "bye".into()
            })),
        ]
    );
}

/// A stream exercising every path: single frames of each length class, fragments with control
/// frames between them, a code point split across fragments, and a close.
fn mixed_stream() -> Vec<u8> {
    let key = [0x37, 0xFA, 0x21, 0x3D];
    let frames = [
        encode_masked_frame(true, OpCode::Text, "héllo".as_bytes(), key),
        encode_masked_frame(true, OpCode::Binary, &pattern(300), key),
        encode_masked_frame(false, OpCode::Text, b"a\xf0", key),
        encode_masked_frame(true, OpCode::Ping, b"between", key),
        encode_masked_frame(false, OpCode::Continuation, b"\x9f\x98", key),
        encode_masked_frame(false, OpCode::Continuation, b"", key),
        encode_masked_frame(true, OpCode::Pong, b"", key),
        encode_masked_frame(true, OpCode::Continuation, b"\x80z", key),
        encode_masked_frame(true, OpCode::Binary, &pattern(70000), key),
        encode_masked_frame(false, OpCode::Binary, &pattern(10), key),
        encode_masked_frame(true, OpCode::Continuation, &pattern(20), key),
        encode_masked_frame(true, OpCode::Close, b"\x03\xe8done", key),
    ];
    concat(&frames)
}

#[test]
fn split_points_do_not_change_events() {
    let stream = mixed_stream();
    let whole = decode_chunked(1 << 20, &stream, 0);
    assert_eq!(whole.1, None);
    assert_eq!(whole.0.len(), 8);
    assert_eq!(whole.0[2], Event::Ping(Bytes::from_static(b"between")));
    assert_eq!(whole.0[4], Event::Text(Bytes::from("a😀z")));
    assert_eq!(decode_chunked(1 << 20, &stream, 1), whole, "byte by byte");
    assert_eq!(decode_chunked(1 << 20, &stream, 7), whole, "chunks of 7");
}

#[test]
fn split_points_do_not_change_errors() {
    // Valid prefix, then a text fragment that breaks UTF-8.
    let key = [9, 9, 9, 9];
    let mut stream = mixed_stream();
    stream.truncate(stream.len() - 12); // drop the close frame
    stream.extend_from_slice(&encode_masked_frame(false, OpCode::Text, b"ok", key));
    stream.extend_from_slice(&encode_masked_frame(true, OpCode::Ping, b"", key));
    stream.extend_from_slice(&encode_masked_frame(
        false,
        OpCode::Continuation,
        b"\xc0",
        key,
    ));
    let whole = decode_chunked(1 << 20, &stream, 0);
    assert_eq!(whole.1, Some(CodecError::InvalidUtf8));
    assert_eq!(whole.0.len(), 8); // 7 events before the bad message, plus the ping inside it
    for chunk in [1, 7] {
        assert_eq!(
            decode_chunked(1 << 20, &stream, chunk),
            whole,
            "chunks of {chunk}"
        );
    }
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A deterministic xorshift stream, mutated frames and raw noise: decoding must return,
    // whatever it returns.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let base = mixed_stream();
    for round in 0..300 {
        let mut stream = base.get(..2000).unwrap_or(&base).to_vec();
        for _ in 0..(round % 5 + 1) {
            let i = (next() as usize) % stream.len();
            stream[i] = next() as u8;
        }
        if round % 3 == 0 {
            stream = (0..256).map(|_| next() as u8).collect();
        }
        let whole = decode_chunked(4096, &stream, 0);
        assert_eq!(decode_chunked(4096, &stream, 3), whole);
    }
}

mod tungstenite_cross_check {
    use super::*;
    use std::io::{self, Read, Write};
    // huddle's dev-dependency is tokio-tungstenite, which re-exports tungstenite.
    use tokio_tungstenite::tungstenite;
    use tungstenite::protocol::frame::coding::{Data, OpCode as TOpCode};
    use tungstenite::protocol::frame::Frame;
    use tungstenite::protocol::{CloseFrame as TCloseFrame, Role, WebSocket};
    use tungstenite::Message;

    /// An in-memory socket: collects written bytes, never has anything to read.
    #[derive(Default)]
    struct Sink(Vec<u8>);

    impl Read for Sink {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn client_frames_from_tungstenite_decode_identically() {
        let mut ws = WebSocket::from_raw_socket(Sink::default(), Role::Client, None);
        let big = pattern(70000);
        let sent = [
            Message::Text("hello 😀".into()),
            Message::Binary(big.clone()),
            Message::Binary(Vec::new()),
            Message::Ping(b"are you there".to_vec()),
            Message::Pong(Vec::new()),
            Message::Frame(Frame::message(
                "frag😀".as_bytes()[..6].to_vec(),
                TOpCode::Data(Data::Text),
                false,
            )),
            Message::Ping(b"mid".to_vec()),
            Message::Frame(Frame::message(
                "frag😀".as_bytes()[6..].to_vec(),
                TOpCode::Data(Data::Continue),
                true,
            )),
            Message::Close(Some(TCloseFrame {
                code: 4008.into(),
                reason: "slow consumer".into(),
            })),
        ];
        for message in sent {
            ws.send(message).expect("in-memory send");
        }
        let stream = std::mem::take(&mut ws.get_mut().0);
        let expected = vec![
            Event::Text(Bytes::from("hello 😀")),
            Event::Binary(big.into()),
            Event::Binary(Bytes::new()),
            Event::Ping(Bytes::from_static(b"are you there")),
            Event::Pong(Bytes::new()),
            Event::Ping(Bytes::from_static(b"mid")),
            Event::Text(Bytes::from("frag😀")),
            Event::Close(Some(CloseFrame {
                code: 4008,
                reason: "slow consumer".into(),
            })),
        ];
        for chunk in [0, 1, 7] {
            assert_eq!(
                decode_chunked(1 << 20, &stream, chunk),
                (expected.clone(), None),
                "chunks of {chunk}"
            );
        }
    }

    #[test]
    fn our_masked_frames_match_tungstenite_bytes() {
        let key = [0xA1, 0xB2, 0xC3, 0xD4];
        for len in [0usize, 1, 125, 126, 65535, 65536, 70000] {
            let payload = pattern(len);
            let mut header = tungstenite::protocol::frame::FrameHeader {
                opcode: TOpCode::Data(Data::Binary),
                ..Default::default()
            };
            header.mask = Some(key);
            let mut theirs = Vec::new();
            Frame::from_payload(header, payload.clone())
                .format(&mut theirs)
                .expect("format into Vec");
            let ours = encode_masked_frame(true, OpCode::Binary, &payload, key);
            assert_eq!(&ours[..], &theirs[..], "len {len}");
        }
    }
}
