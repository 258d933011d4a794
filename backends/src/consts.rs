//! Constants of the two hash suites, shared by every kernel.
//!
//! Both steps hash exactly 32 bytes, so the second half of the one message
//! block is fixed: for SHA-256 the padding (0x80, zeros, bit length 256), for
//! BLAKE3 zeros (block_len 32 says how many bytes count). Kernels fold these
//! constants instead of building a block per step.

/// SHA-256 initial hash value (FIPS 180-4, 5.3.3).
pub const SHA256_IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// SHA-256 round constants (FIPS 180-4, 4.2.2).
pub const SHA256_K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// Message words 8..15 of the one block hashing a 32-byte input: the 0x80
/// end marker, zeros, and the length in bits (256).
pub const SHA256_PAD32: [u32; 8] = [0x8000_0000, 0, 0, 0, 0, 0, 0, 256];

/// BLAKE3 IV (the SHA-256 IV, as the BLAKE3 spec defines it).
pub const BLAKE3_IV: [u32; 8] = SHA256_IV;

/// BLAKE3 flags of the one block of a one-chunk input: CHUNK_START | CHUNK_END | ROOT.
pub const BLAKE3_FLAGS: u32 = 1 | 2 | 8;

/// BLAKE3 block length for a 32-byte input.
pub const BLAKE3_BLOCK_LEN: u32 = 32;

/// Which message word each of the 16 G inputs takes in each of the 7 rounds
/// (the BLAKE3 permutation applied r times).
pub const BLAKE3_SCHEDULE: [[usize; 16]; 7] = {
    const PERM: [usize; 16] = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8];
    let mut s = [[0usize; 16]; 7];
    let mut i = 0;
    while i < 16 {
        s[0][i] = i;
        i += 1;
    }
    let mut r = 1;
    while r < 7 {
        let mut i = 0;
        while i < 16 {
            s[r][i] = s[r - 1][PERM[i]];
            i += 1;
        }
        r += 1;
    }
    s
};

/// Big-endian message words of a chain value (SHA-256's view of 32 bytes).
pub fn be_words(v: &[u8; 32]) -> [u32; 8] {
    std::array::from_fn(|i| u32::from_be_bytes(v[4 * i..4 * i + 4].try_into().unwrap()))
}

/// The chain value of big-endian words.
pub fn from_be_words(w: &[u32; 8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (o, w) in out.chunks_exact_mut(4).zip(w) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// Little-endian message words of a chain value (BLAKE3's view of 32 bytes).
pub fn le_words(v: &[u8; 32]) -> [u32; 8] {
    std::array::from_fn(|i| u32::from_le_bytes(v[4 * i..4 * i + 4].try_into().unwrap()))
}

/// The chain value of little-endian words.
pub fn from_le_words(w: &[u32; 8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (o, w) in out.chunks_exact_mut(4).zip(w) {
        o.copy_from_slice(&w.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_matches_the_blake3_spec() {
        // Rows of the reference implementation's MSG_SCHEDULE table.
        assert_eq!(
            BLAKE3_SCHEDULE[1],
            [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8]
        );
        assert_eq!(
            BLAKE3_SCHEDULE[6],
            [11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13]
        );
    }

    #[test]
    fn word_views_round_trip() {
        let v: [u8; 32] = std::array::from_fn(|i| i as u8 * 7 + 1);
        assert_eq!(from_be_words(&be_words(&v)), v);
        assert_eq!(from_le_words(&le_words(&v)), v);
    }
}
