//! BLAKE3 evaluation: one compression per step, state as four 128-bit rows.
//!
//! A chain is latency-bound, so the 16 state words sit in four rows and the
//! four G functions of a step run in one register each. The step is
//! specialised for the 32-byte input: the message is two registers (words
//! 0..7, the previous value, which never leaves registers), words 8..15 are
//! zero, so each round's permuted message vectors are two precomputed byte
//! shuffles and an OR (off the critical path); the constant rows (IV,
//! counter 0, block_len 32, flags) are immediates; there is no hasher, buffer
//! or finalisation. Generic over the rotations: SSE4.1 shuffles/shifts them,
//! AVX-512VL has a rotate instruction.

use core::arch::x86_64::*;

use crate::consts::{BLAKE3_BLOCK_LEN, BLAKE3_FLAGS, BLAKE3_IV, BLAKE3_SCHEDULE};

/// The four rotations of G on a row.
///
/// # Safety
/// Implementations require their CPU feature; they are `#[inline(always)]`
/// and compiled inside the caller's `#[target_feature]` function.
#[allow(clippy::missing_safety_doc)] // the trait's `# Safety` covers each method
pub trait RowRotate {
    unsafe fn rot16(x: __m128i) -> __m128i;
    unsafe fn rot12(x: __m128i) -> __m128i;
    unsafe fn rot8(x: __m128i) -> __m128i;
    unsafe fn rot7(x: __m128i) -> __m128i;
}

/// Byte-shuffle masks that gather one round's message vector from the two
/// message registers: `GATHER[r][v] = [mask on words 0..3, mask on words 4..7]`
/// for v = column x, column y, diagonal x, diagonal y. A mask byte with the
/// top bit set yields zero: message words 8..15.
const GATHER: [[[[u8; 16]; 2]; 4]; 7] = {
    let mut out = [[[[0x80u8; 16]; 2]; 4]; 7];
    let mut r = 0;
    while r < 7 {
        let mut v = 0;
        while v < 4 {
            let mut lane = 0;
            while lane < 4 {
                // Columns: lane j is G_j. Diagonals (row 1 fixed, the others
                // rotated): lane j is diagonal G_(j+3)%4.
                let g = if v < 2 { lane } else { (lane + 3) % 4 };
                let k = if v < 2 {
                    2 * g + v
                } else {
                    8 + 2 * g + (v - 2)
                };
                let word = BLAKE3_SCHEDULE[r][k];
                if word < 8 {
                    let reg = word / 4;
                    let mut b = 0;
                    while b < 4 {
                        out[r][v][reg][4 * lane + b] = (4 * (word % 4) + b) as u8;
                        b += 1;
                    }
                }
                lane += 1;
            }
            v += 1;
        }
        r += 1;
    }
    out
};

#[inline(always)]
unsafe fn mask(bytes: &[u8; 16]) -> __m128i {
    _mm_loadu_si128(bytes.as_ptr().cast())
}

/// Message vector v of round R.
#[inline(always)]
unsafe fn gather<const R: usize>(v: usize, m0: __m128i, m1: __m128i) -> __m128i {
    let [lo, hi] = &GATHER[R][v];
    _mm_or_si128(
        _mm_shuffle_epi8(m0, mask(lo)),
        _mm_shuffle_epi8(m1, mask(hi)),
    )
}

/// Hides a value from LLVM's shuffle combining (no instruction emitted).
///
/// Without it LLVM rewrites `rot16(d ^ a)` as `shuffle(d) ^ shuffle(a)` to
/// merge the diagonalising shuffle of row 3 into the rotation, which puts two
/// shuffles instead of one on the critical path through row 0.
#[inline(always)]
pub fn opaque(mut x: __m128i) -> __m128i {
    // SAFETY: an empty template; the register is only declared modified.
    unsafe {
        core::arch::asm!("/* {0} */", inout(xmm_reg) x, options(pure, nomem, nostack, preserves_flags));
    }
    x
}

#[inline(always)]
unsafe fn g<Rot: RowRotate, const SECOND: bool>(rows: &mut [__m128i; 4], m: __m128i) {
    let [r0, r1, r2, r3] = rows;
    *r0 = _mm_add_epi32(_mm_add_epi32(*r0, m), *r1);
    *r3 = opaque(_mm_xor_si128(*r3, *r0));
    *r3 = if SECOND {
        Rot::rot8(*r3)
    } else {
        Rot::rot16(*r3)
    };
    *r2 = _mm_add_epi32(*r2, *r3);
    *r1 = _mm_xor_si128(*r1, *r2);
    *r1 = if SECOND {
        Rot::rot7(*r1)
    } else {
        Rot::rot12(*r1)
    };
}

#[inline(always)]
unsafe fn round<Rot: RowRotate, const R: usize>(rows: &mut [__m128i; 4], m0: __m128i, m1: __m128i) {
    g::<Rot, false>(rows, gather::<R>(0, m0, m1));
    g::<Rot, true>(rows, gather::<R>(1, m0, m1));
    // Diagonalise: rotate rows 0, 2, 3 so the diagonals line up as columns.
    rows[0] = _mm_shuffle_epi32(rows[0], 0x93);
    rows[3] = _mm_shuffle_epi32(rows[3], 0x4E);
    rows[2] = _mm_shuffle_epi32(rows[2], 0x39);
    g::<Rot, false>(rows, gather::<R>(2, m0, m1));
    g::<Rot, true>(rows, gather::<R>(3, m0, m1));
    rows[0] = _mm_shuffle_epi32(rows[0], 0x39);
    rows[3] = _mm_shuffle_epi32(rows[3], 0x4E);
    rows[2] = _mm_shuffle_epi32(rows[2], 0x93);
}

#[inline(always)]
unsafe fn set(w: [u32; 4]) -> __m128i {
    _mm_setr_epi32(w[0] as i32, w[1] as i32, w[2] as i32, w[3] as i32)
}

/// One chain step: (m0, m1), the value's little-endian words, become its hash.
#[inline(always)]
unsafe fn step<Rot: RowRotate>(m0: &mut __m128i, m1: &mut __m128i) {
    let iv_lo = set([BLAKE3_IV[0], BLAKE3_IV[1], BLAKE3_IV[2], BLAKE3_IV[3]]);
    let iv_hi = set([BLAKE3_IV[4], BLAKE3_IV[5], BLAKE3_IV[6], BLAKE3_IV[7]]);
    let mut rows = [
        iv_lo,
        iv_hi,
        iv_lo,
        set([0, 0, BLAKE3_BLOCK_LEN, BLAKE3_FLAGS]),
    ];
    let (a, b) = (*m0, *m1);
    round::<Rot, 0>(&mut rows, a, b);
    round::<Rot, 1>(&mut rows, a, b);
    round::<Rot, 2>(&mut rows, a, b);
    round::<Rot, 3>(&mut rows, a, b);
    round::<Rot, 4>(&mut rows, a, b);
    round::<Rot, 5>(&mut rows, a, b);
    round::<Rot, 6>(&mut rows, a, b);
    *m0 = _mm_xor_si128(rows[0], rows[2]);
    *m1 = _mm_xor_si128(rows[1], rows[3]);
}

/// Applies `n` steps to a value given as little-endian words.
///
/// # Safety
/// The CPU must have SSE4.1 and what `Rot` needs; call from a
/// `#[target_feature]` function.
#[inline(always)]
pub unsafe fn advance<Rot: RowRotate>(words: &mut [u32; 8], n: u64) {
    let p: *mut __m128i = words.as_mut_ptr().cast();
    let mut m0 = _mm_loadu_si128(p);
    let mut m1 = _mm_loadu_si128(p.add(1));
    for _ in 0..n {
        step::<Rot>(&mut m0, &mut m1);
    }
    _mm_storeu_si128(p, m0);
    _mm_storeu_si128(p.add(1), m1);
}
