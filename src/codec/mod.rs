//! Sans-IO WebSocket framing (RFC 6455 §5): bytes in, events out; frames in, bytes out.
//!
//! Nothing here touches a socket, a runtime or a clock, so every rule is unit-tested and fuzzed
//! on plain byte slices. The connection driver feeds what it reads into a [`Decoder`] and writes
//! what the encoder functions return.
//!
//! | file         | role                                                                  |
//! |--------------|-----------------------------------------------------------------------|
//! | `header.rs`  | [`OpCode`], frame header parsing with "need more bytes" as `Ok(None)` |
//! | `decoder.rs` | client frames → [`Event`]s: masking, fragments, limits, UTF-8         |
//! | `encoder.rs` | server frames (unmasked) and client frames (masked, for tests)        |
//! | `mask.rs`    | XOR masking, fast path plus the scalar reference it is tested against |
//! | `utf8.rs`    | incremental UTF-8 validation across fragments                         |
//! | `close.rs`   | close codes allowed on the wire and close body parsing                |
//! | `error.rs`   | [`CodecError`] and its close code (1002 / 1007 / 1009)                |
//!
//! Invariants shared by the whole module: no `unsafe`; no input can make it panic; memory held
//! for a client is bounded by bytes actually received and by the message size limit, never by
//! a length a header announces.

pub mod close;
pub mod decoder;
pub mod encoder;
pub mod error;
pub mod header;
pub mod mask;
pub mod utf8;

#[cfg(test)]
mod tests;

pub use close::is_valid_close_code;
pub use decoder::{CloseFrame, Decoder, Event};
pub use encoder::*;
pub use error::CodecError;
pub use header::OpCode;
pub use mask::apply_mask;
pub use utf8::Utf8Validator;
