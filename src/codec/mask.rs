//! Payload masking (RFC 6455 §5.3): "octet i of the transformed data is the XOR of octet i of the
//! original data with octet at index i modulo 4 of the masking key".
//!
//! Masking is its own inverse, so the same function masks and unmasks. [`apply_mask`] is the fast
//! path (8 bytes per step as one `u64` XOR); [`apply_mask_scalar`] is the byte-at-a-time
//! reference it is tested against. Both start at key phase 0: the caller always passes a whole
//! payload, never a slice starting mid-payload.

/// XORs `buf` with the repeating 4-byte `key`, 8 bytes at a time.
///
/// Each 8-byte chunk starts at an offset that is a multiple of 4, so every chunk sees the key in
/// the same phase (`key ++ key`), and so does the tail handed to the scalar loop.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    let [a, b, c, d] = key;
    let wide = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        if let Ok(bytes) = <[u8; 8]>::try_from(&*chunk) {
            chunk.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ wide).to_ne_bytes());
        }
    }
    // The remainder starts at a multiple of 8, hence at key phase 0.
    apply_mask_scalar(chunks.into_remainder(), key);
}

/// Reference implementation of [`apply_mask`]: one byte at a time, `buf[i] ^= key[i % 4]`.
pub fn apply_mask_scalar(buf: &mut [u8], key: [u8; 4]) {
    for (byte, k) in buf.iter_mut().zip(key.iter().cycle()) {
        *byte ^= k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: [[u8; 4]; 5] = [
        [0, 0, 0, 0],
        [0xFF, 0xFF, 0xFF, 0xFF],
        [0x37, 0xFA, 0x21, 0x3D],
        [1, 2, 3, 4],
        [0x80, 0x00, 0x7F, 0x01],
    ];

    #[test]
    fn fast_equals_scalar_for_all_small_lengths() {
        for key in KEYS {
            for len in 0..=70usize {
                let original: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
                let mut fast = original.clone();
                let mut slow = original.clone();
                apply_mask(&mut fast, key);
                apply_mask_scalar(&mut slow, key);
                assert_eq!(fast, slow, "len {len} key {key:?}");
            }
        }
    }

    #[test]
    fn scalar_matches_rfc_definition() {
        let key = [0x37, 0xFA, 0x21, 0x3D];
        let mut buf = b"Hello".to_vec();
        apply_mask_scalar(&mut buf, key);
        // RFC 6455 §5.7: a masked "Hello" is 0x7f 0x9f 0x4d 0x51 0x58.
        assert_eq!(buf, [0x7F, 0x9F, 0x4D, 0x51, 0x58]);
    }

    #[test]
    fn masking_twice_is_identity() {
        let original: Vec<u8> = (0..=255u8).collect();
        let mut buf = original.clone();
        apply_mask(&mut buf, [9, 8, 7, 6]);
        assert_ne!(buf, original);
        apply_mask(&mut buf, [9, 8, 7, 6]);
        assert_eq!(buf, original);
    }
}
