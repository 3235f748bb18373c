//! Invariant: `codec::Decoder` output depends only on the byte stream, never on how it was split
//! across `feed` calls. The stream is decoded whole, then again cut at points taken from the
//! input's first bytes (draining events after every feed, the way the connection driver does);
//! both runs must yield the same events and the same first error.
//!
//! Also checked: a poisoned decoder keeps returning the same error, and the heap it holds stays
//! bounded by the bytes actually fed (never by a length a header announces).
//!
//! Input layout: byte 0 picks the message size limit, byte 1 the number of cut points `n`
//! (0..=15), then `n` bytes of cut lengths, then the stream.

#![no_main]

use huddle::codec::{CodecError, Decoder, Event};
use libfuzzer_sys::fuzz_target;

/// Limits chosen to put the TooBig boundary (and the fragment cap, max(64, limit / 16)) within
/// reach of small inputs, plus the 1 MiB a real deployment uses.
const LIMITS: [usize; 8] = [0, 1, 16, 125, 126, 1024, 65_536, 1 << 20];

type Outcome = (Vec<Event>, Option<CodecError>);

/// Feeds `pieces` one after another, draining events after each; stops at the first error.
fn run(limit: usize, pieces: &[&[u8]]) -> Outcome {
    let mut d = Decoder::new(limit);
    let mut events = Vec::new();
    let mut fed = 0usize;
    for piece in pieces {
        d.feed(piece);
        fed += piece.len();
        loop {
            match d.next_event() {
                Ok(Some(e)) => events.push(e),
                Ok(None) => break,
                Err(e) => {
                    // Poisoned: the same error again, input ignored, no heap kept.
                    d.feed(b"\x82\x80\0\0\0\0");
                    assert_eq!(d.next_event(), Err(e), "poisoned decoder changed its error");
                    assert_eq!(d.buffered_capacity(), 0, "poisoned decoder holds heap");
                    return (events, Some(e));
                }
            }
        }
        // Loose bound (allocator growth may double each buffer): memory follows bytes received.
        let cap = d.buffered_capacity();
        assert!(
            cap <= 4 * fed + 256,
            "decoder holds {cap} bytes of heap after {fed} bytes fed"
        );
    }
    (events, None)
}

fuzz_target!(|data: &[u8]| {
    let [limit_byte, n_cuts, rest @ ..] = data else {
        return;
    };
    let limit = LIMITS[usize::from(limit_byte & 7)];
    let n_cuts = usize::from(n_cuts & 15).min(rest.len());
    let (cuts, stream) = rest.split_at(n_cuts);

    let whole = run(limit, &[stream]);

    let mut pieces: Vec<&[u8]> = Vec::with_capacity(cuts.len() + 1);
    let mut tail = stream;
    for &c in cuts {
        let (head, t) = tail.split_at(usize::from(c).min(tail.len()));
        pieces.push(head);
        tail = t;
    }
    pieces.push(tail);
    let split = run(limit, &pieces);
    assert_eq!(whole, split, "outcome depends on the split: cuts {cuts:?}");

    // Byte by byte is the harshest split; only for short streams to keep executions fast.
    if stream.len() <= 256 {
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(
            whole,
            run(limit, &bytes),
            "outcome differs when fed byte by byte"
        );
    }

    // Every event respects the decoder's documented guarantees.
    for e in &whole.0 {
        match e {
            Event::Text(p) => {
                assert!(p.len() <= limit);
                assert!(std::str::from_utf8(p).is_ok(), "Text event is not UTF-8");
            }
            Event::Binary(p) => assert!(p.len() <= limit),
            Event::Ping(p) | Event::Pong(p) => assert!(p.len() <= 125),
            Event::Close(Some(c)) => {
                assert!(huddle::codec::is_valid_close_code(c.code));
                assert!(c.reason.len() <= 123);
            }
            Event::Close(None) => {}
        }
    }
});
