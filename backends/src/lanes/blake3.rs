//! BLAKE3 chain steps, word-sliced over the lanes of any [`U32Lanes`].
//!
//! Each lane compresses one block: its 32-byte value as message words 0..7,
//! zeros after (folded away), counter 0, block_len 32, flags
//! CHUNK_START | CHUNK_END | ROOT; the first 8 output words are the next value.

use montana_vdf::Hash32;

use super::{slice, unslice, U32Lanes};
use crate::consts::{
    from_le_words, le_words, BLAKE3_BLOCK_LEN, BLAKE3_FLAGS, BLAKE3_IV, BLAKE3_SCHEDULE,
};

/// Four G functions side by side (a column or a diagonal step), written
/// operation by operation across the four so they interleave.
#[inline(always)]
unsafe fn g4<V: U32Lanes>(v: &mut [V; 16], idx: [[usize; 4]; 4], x: [V; 4], y: [V; 4]) {
    let [a, b, c, d] = idx;
    for i in 0..4 {
        v[a[i]] = v[a[i]].add(v[b[i]]).add(x[i]);
    }
    for i in 0..4 {
        v[d[i]] = v[d[i]].xor(v[a[i]]).ror16();
    }
    for i in 0..4 {
        v[c[i]] = v[c[i]].add(v[d[i]]);
    }
    for i in 0..4 {
        v[b[i]] = v[b[i]].xor(v[c[i]]).ror::<12>();
    }
    for i in 0..4 {
        v[a[i]] = v[a[i]].add(v[b[i]]).add(y[i]);
    }
    for i in 0..4 {
        v[d[i]] = v[d[i]].xor(v[a[i]]).ror8();
    }
    for i in 0..4 {
        v[c[i]] = v[c[i]].add(v[d[i]]);
    }
    for i in 0..4 {
        v[b[i]] = v[b[i]].xor(v[c[i]]).ror::<7>();
    }
}

const COLUMNS: [[usize; 4]; 4] = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]];
const DIAGONALS: [[usize; 4]; 4] = [[0, 1, 2, 3], [5, 6, 7, 4], [10, 11, 8, 9], [15, 12, 13, 14]];

#[inline(always)]
unsafe fn round<V: U32Lanes, const R: usize>(v: &mut [V; 16], m: &[V; 16]) {
    let s = &BLAKE3_SCHEDULE[R];
    let pick = |k: usize| [m[s[k]], m[s[k + 2]], m[s[k + 4]], m[s[k + 6]]];
    g4(v, COLUMNS, pick(0), pick(1));
    g4(v, DIAGONALS, pick(8), pick(9));
}

/// One chain step in every lane: `m` (the value's words) becomes its hash.
#[inline(always)]
unsafe fn step<V: U32Lanes>(m: &mut [V; 8]) {
    let zero = V::splat(0);
    let mut msg = [zero; 16];
    msg[..8].copy_from_slice(m);
    let mut v = [zero; 16];
    for j in 0..8 {
        v[j] = V::splat(BLAKE3_IV[j]);
    }
    for j in 0..4 {
        v[8 + j] = V::splat(BLAKE3_IV[j]);
    }
    v[14] = V::splat(BLAKE3_BLOCK_LEN);
    v[15] = V::splat(BLAKE3_FLAGS);
    round::<V, 0>(&mut v, &msg);
    round::<V, 1>(&mut v, &msg);
    round::<V, 2>(&mut v, &msg);
    round::<V, 3>(&mut v, &msg);
    round::<V, 4>(&mut v, &msg);
    round::<V, 5>(&mut v, &msg);
    round::<V, 6>(&mut v, &msg);
    for j in 0..8 {
        m[j] = v[j].xor(v[j + 8]);
    }
}

/// Applies `n` steps to each of `vals` (at most `V::LANES` of them).
///
/// # Safety
/// The CPU must have `V`'s feature; call from a `#[target_feature]` function.
#[inline(always)]
pub unsafe fn advance<V: U32Lanes>(vals: &mut [Hash32], n: u64) {
    assert!(vals.len() <= V::LANES);
    let mut sl = slice(vals, le_words);
    let mut m = [V::splat(0); 8];
    for j in 0..8 {
        m[j] = V::load(&sl[j]);
    }
    for _ in 0..n {
        step(&mut m);
    }
    for j in 0..8 {
        m[j].store(&mut sl[j]);
    }
    unslice(&sl, vals, from_le_words);
}
