//! Frame codec throughput: our sans-IO decoder vs tungstenite parsing the same masked client
//! bytes; encoding; and the unmask fast path vs its scalar reference.
//!
//! `cargo bench --bench codec`

use std::io::{Cursor, Read, Write};

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use huddle::codec::{self, mask, Decoder, Event, OpCode};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket, WebSocketConfig};

const SIZES: [usize; 3] = [20, 1024, 64 * 1024];
/// Bytes of frames per iteration, so small frames are measured over many frames.
const BATCH_BYTES: usize = 1 << 20;

fn masked_stream(size: usize) -> (Vec<u8>, usize) {
    let payload: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    let frame = codec::encode_masked_frame(true, OpCode::Text, &payload, [1, 2, 3, 4]);
    let count = (BATCH_BYTES / frame.len()).max(1);
    let mut out = Vec::with_capacity(frame.len() * count);
    for _ in 0..count {
        out.extend_from_slice(&frame);
    }
    (out, count)
}

/// An in-memory socket for tungstenite: reads the prepared bytes, discards writes.
struct Mem(Cursor<Vec<u8>>);
impl Read for Mem {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}
impl Write for Mem {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_masked");
    for size in SIZES {
        let (bytes, count) = masked_stream(size);
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_with_input(BenchmarkId::new("huddle", size), &bytes, |b, bytes| {
            b.iter(|| {
                let mut d = Decoder::new(1 << 20);
                d.feed(bytes);
                let mut n = 0;
                while let Ok(Some(ev)) = d.next_event() {
                    if let Event::Text(t) = ev {
                        n += t.len();
                    }
                }
                assert_eq!(n, size * count);
                black_box(n)
            })
        });
        g.bench_with_input(BenchmarkId::new("tungstenite", size), &bytes, |b, bytes| {
            b.iter(|| {
                let config = WebSocketConfig {
                    max_message_size: Some(1 << 20),
                    ..Default::default()
                };
                let mut ws = WebSocket::from_raw_socket(
                    Mem(Cursor::new(bytes.clone())),
                    Role::Server,
                    Some(config),
                );
                let mut n = 0;
                for _ in 0..count {
                    n += ws.read().expect("message").len();
                }
                black_box(n)
            })
        });
    }
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    for size in SIZES {
        let payload = vec![b'x'; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("frame", size), &payload, |b, p| {
            b.iter(|| black_box(codec::encode_frame(true, OpCode::Text, p)))
        });
    }
    let data = serde_json::json!({"game_id":"7","sportsbook":"fanduel","home_team":"KC","away_team":"BUF",
        "spread":-3.5,"moneyline_home":-150,"moneyline_away":130,"over_under":47.5,"updated_at":"2026-11-25T18:04:05Z"});
    g.throughput(Throughput::Elements(1));
    g.bench_function("json_message_once", |b| {
        b.iter(|| {
            black_box(codec::text_frame_with(256, |buf| {
                let _ = serde_json::to_writer(buf, &data);
            }))
        })
    });
    g.finish();
}

fn unmask(c: &mut Criterion) {
    let mut g = c.benchmark_group("unmask");
    for size in SIZES {
        let mut buf = vec![0x5au8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(BenchmarkId::new("fast", size), |b| {
            b.iter(|| mask::apply_mask(black_box(&mut buf), [1, 2, 3, 4]))
        });
        g.bench_function(BenchmarkId::new("scalar", size), |b| {
            b.iter(|| mask::apply_mask_scalar(black_box(&mut buf), [1, 2, 3, 4]))
        });
    }
    g.finish();
}

criterion_group!(benches, decode, encode, unmask);
criterion_main!(benches);
