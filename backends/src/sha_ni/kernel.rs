//! SHA-256 chain steps on the x86 SHA extensions.
//!
//! A step hashes the previous 32-byte value, so the message block is the
//! previous state words followed by the fixed padding of a 32-byte message:
//! no byte swapping between steps (SHA-256 reads and writes big-endian
//! words), rounds 8..15 take precomputed `W + K` constants, and the state stays
//! in the (ABEF, CDGH) register order `sha256rnds2` uses from the first step to
//! the last. Several independent chains ("streams") can run interleaved
//! instruction by instruction, so one core overlaps the latency of one chain's
//! `sha256rnds2` with the others' (verification only; evaluation is one chain).

use core::arch::x86_64::*;

use crate::consts::{SHA256_IV, SHA256_K, SHA256_PAD32};

/// Four u32s as a vector, lane 0 first (usable in constants).
const fn v4(x: [u32; 4]) -> __m128i {
    // SAFETY: both types are 16 plain bytes.
    unsafe { core::mem::transmute::<[u32; 4], __m128i>(x) }
}

/// The IV in ABEF / CDGH order: lanes (F, E, B, A) and (H, G, D, C).
pub(super) const IV_ABEF: __m128i = v4([SHA256_IV[5], SHA256_IV[4], SHA256_IV[1], SHA256_IV[0]]);
pub(super) const IV_CDGH: __m128i = v4([SHA256_IV[7], SHA256_IV[6], SHA256_IV[3], SHA256_IV[2]]);

/// Message words 8..11 and 12..15: the fixed padding of a 32-byte message.
pub(super) const PAD_LO: __m128i = v4([
    SHA256_PAD32[0],
    SHA256_PAD32[1],
    SHA256_PAD32[2],
    SHA256_PAD32[3],
]);
pub(super) const PAD_HI: __m128i = v4([
    SHA256_PAD32[4],
    SHA256_PAD32[5],
    SHA256_PAD32[6],
    SHA256_PAD32[7],
]);

/// `K[4g..4g+4]` as a vector.
const fn k4(g: usize) -> __m128i {
    v4([
        SHA256_K[4 * g],
        SHA256_K[4 * g + 1],
        SHA256_K[4 * g + 2],
        SHA256_K[4 * g + 3],
    ])
}

/// `W + K` for rounds 8..11 and 12..15, where W is the fixed padding.
const WK_PAD_LO: __m128i = v4([
    SHA256_PAD32[0].wrapping_add(SHA256_K[8]),
    SHA256_PAD32[1].wrapping_add(SHA256_K[9]),
    SHA256_PAD32[2].wrapping_add(SHA256_K[10]),
    SHA256_PAD32[3].wrapping_add(SHA256_K[11]),
]);
const WK_PAD_HI: __m128i = v4([
    SHA256_PAD32[4].wrapping_add(SHA256_K[12]),
    SHA256_PAD32[5].wrapping_add(SHA256_K[13]),
    SHA256_PAD32[6].wrapping_add(SHA256_K[14]),
    SHA256_PAD32[7].wrapping_add(SHA256_K[15]),
]);

/// Four rounds given `W + K` for them.
#[inline]
#[target_feature(enable = "sha,sse4.1")]
fn rounds4(abef: &mut __m128i, cdgh: &mut __m128i, wk: __m128i) {
    *cdgh = _mm_sha256rnds2_epu32(*cdgh, *abef, wk);
    *abef = _mm_sha256rnds2_epu32(*abef, *cdgh, _mm_shuffle_epi32(wk, 0x0E));
}

/// The next four message words from the previous sixteen (w[i] is replaced).
#[inline]
#[target_feature(enable = "sha,sse4.1")]
fn schedule4<const I: usize>(w: &mut [__m128i; 4]) -> __m128i {
    let t1 = _mm_sha256msg1_epu32(w[I], w[(I + 1) % 4]);
    let t2 = _mm_alignr_epi8(w[(I + 3) % 4], w[(I + 2) % 4], 4);
    w[I] = _mm_sha256msg2_epu32(_mm_add_epi32(t1, t2), w[(I + 3) % 4]);
    w[I]
}

/// Round group G (rounds 4G..4G+4) for every stream, interleaved.
#[inline]
#[target_feature(enable = "sha,sse4.1")]
pub(super) fn group<const G: usize, const N: usize>(
    abef: &mut [__m128i; N],
    cdgh: &mut [__m128i; N],
    w: &mut [[__m128i; 4]; N],
) {
    for s in 0..N {
        let wk = match G {
            0 | 1 => _mm_add_epi32(w[s][G], const { k4(G) }),
            2 => WK_PAD_LO,
            3 => WK_PAD_HI,
            _ => {
                let next = match G % 4 {
                    0 => schedule4::<0>(&mut w[s]),
                    1 => schedule4::<1>(&mut w[s]),
                    2 => schedule4::<2>(&mut w[s]),
                    _ => schedule4::<3>(&mut w[s]),
                };
                _mm_add_epi32(next, const { k4(G) })
            }
        };
        rounds4(&mut abef[s], &mut cdgh[s], wk);
    }
}

/// One chain step on N streams: state `H` becomes `SHA-256(H as 32 bytes)`.
#[inline]
#[target_feature(enable = "sha,sse4.1")]
fn step<const N: usize>(abef: &mut [__m128i; N], cdgh: &mut [__m128i; N]) {
    // The message is the previous state A..H in natural lane order.
    let mut w: [[__m128i; 4]; N] = [[PAD_LO; 4]; N];
    for s in 0..N {
        w[s][0] = _mm_shuffle_epi32(_mm_unpackhi_epi64(cdgh[s], abef[s]), 0x1B);
        w[s][1] = _mm_shuffle_epi32(_mm_unpacklo_epi64(cdgh[s], abef[s]), 0x1B);
        w[s][2] = PAD_LO;
        w[s][3] = PAD_HI;
    }
    *abef = [IV_ABEF; N];
    *cdgh = [IV_CDGH; N];
    group::<0, N>(abef, cdgh, &mut w);
    group::<1, N>(abef, cdgh, &mut w);
    group::<2, N>(abef, cdgh, &mut w);
    group::<3, N>(abef, cdgh, &mut w);
    group::<4, N>(abef, cdgh, &mut w);
    group::<5, N>(abef, cdgh, &mut w);
    group::<6, N>(abef, cdgh, &mut w);
    group::<7, N>(abef, cdgh, &mut w);
    group::<8, N>(abef, cdgh, &mut w);
    group::<9, N>(abef, cdgh, &mut w);
    group::<10, N>(abef, cdgh, &mut w);
    group::<11, N>(abef, cdgh, &mut w);
    group::<12, N>(abef, cdgh, &mut w);
    group::<13, N>(abef, cdgh, &mut w);
    group::<14, N>(abef, cdgh, &mut w);
    group::<15, N>(abef, cdgh, &mut w);
    for s in 0..N {
        abef[s] = _mm_add_epi32(abef[s], IV_ABEF);
        cdgh[s] = _mm_add_epi32(cdgh[s], IV_CDGH);
    }
}

/// State words A..H into (ABEF, CDGH).
#[inline]
#[target_feature(enable = "sha,sse4.1")]
pub(super) fn load(words: &[u32; 8]) -> (__m128i, __m128i) {
    let p: *const __m128i = words.as_ptr().cast();
    // SAFETY: `words` is 32 readable bytes; unaligned loads.
    let (dcba, hgfe) = unsafe { (_mm_loadu_si128(p), _mm_loadu_si128(p.add(1))) };
    let cdab = _mm_shuffle_epi32(dcba, 0xB1);
    let efgh = _mm_shuffle_epi32(hgfe, 0x1B);
    (
        _mm_alignr_epi8(cdab, efgh, 8),
        _mm_blend_epi16(efgh, cdab, 0xF0),
    )
}

/// (ABEF, CDGH) back into state words A..H.
#[inline]
#[target_feature(enable = "sha,sse4.1")]
pub(super) fn store(abef: __m128i, cdgh: __m128i, words: &mut [u32; 8]) {
    let feba = _mm_shuffle_epi32(abef, 0x1B);
    let dchg = _mm_shuffle_epi32(cdgh, 0xB1);
    let p: *mut __m128i = words.as_mut_ptr().cast();
    // SAFETY: `words` is 32 writable bytes; unaligned stores.
    unsafe {
        _mm_storeu_si128(p, _mm_blend_epi16(feba, dchg, 0xF0));
        _mm_storeu_si128(p.add(1), _mm_alignr_epi8(dchg, feba, 8));
    }
}

/// Applies `n` chain steps to each of N chains (big-endian words of the
/// values), interleaved on one core.
///
/// # Safety
/// Safe to write, unsafe to call: the CPU must have SHA-NI and SSE4.1
/// (`platform::Feature::ShaNi`).
#[target_feature(enable = "sha,sse4.1")]
pub fn advance<const N: usize>(chains: &mut [[u32; 8]; N], n: u64) {
    let mut abef = [_mm_setzero_si128(); N];
    let mut cdgh = [_mm_setzero_si128(); N];
    for s in 0..N {
        (abef[s], cdgh[s]) = load(&chains[s]);
    }
    for _ in 0..n {
        step(&mut abef, &mut cdgh);
    }
    for s in 0..N {
        store(abef[s], cdgh[s], &mut chains[s]);
    }
}
