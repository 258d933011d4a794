//! An experiment, not a backend (issue 14: "SHA-NI streams and AVX2 lanes
//! interleaved on one core, if the units are independent there: measure
//! it"): one loop steps N SHA-NI streams and the 8 lanes of the AVX2 kernel
//! at once, their rounds interleaved four at a time (one SHA-NI round group
//! of every stream, then four word-sliced rounds), so that an out-of-order
//! core can keep its SHA unit and its vector ALUs busy together. Measured
//! against each alone by `cargo run --release -p montana-benches --example
//! peak`; the result is in docs/BENCHMARKS.md ("SHA-NI and AVX2 on one
//! core").

use core::arch::x86_64::*;

use montana_vdf::Hash32;

use super::kernel::{group, load, store, IV_ABEF, IV_CDGH, PAD_HI, PAD_LO};
use crate::avx2::kernel::U32x8;
use crate::consts::{be_words, from_be_words, SHA256_IV, SHA256_PAD32};
use crate::lanes::sha256::round;
use crate::lanes::{slice, unslice, U32Lanes};
use crate::sse41::kernel::U32x4;

/// SHA-NI round group G of every stream, then the lanes' rounds 4G..4G+3.
macro_rules! interleave {
    ($v:ty; $abef:ident, $cdgh:ident, $wn:ident, $s:ident, $w:ident;
     $($g:literal [$($t:literal)*])*) => {
        $(
            group::<$g, N>(&mut $abef, &mut $cdgh, &mut $wn);
            $( round::<$v, $t>(&mut $s, &mut $w); )*
        )*
    };
}

/// `n` chain steps of each of N SHA-NI `chains` (state words) and of each
/// of up to 8 `vals` (AVX2 lanes), in one loop.
///
/// # Safety
/// The CPU must have SHA-NI, SSE4.1 and AVX2.
#[target_feature(enable = "sha,sse4.1,avx2")]
pub unsafe fn advance_avx2<const N: usize>(
    chains: &mut [[u32; 8]; N],
    vals: &mut [Hash32],
    n: u64,
) {
    run::<N, U32x8>(chains, vals, n)
}

/// The same with up to 4 `vals` in SSE4.1 lanes (128 bits: no upper
/// register halves for the SHA instructions, which have only a legacy SSE
/// encoding, to wait on).
///
/// # Safety
/// The CPU must have SHA-NI and SSE4.1.
#[target_feature(enable = "sha,sse4.1")]
pub unsafe fn advance_sse41<const N: usize>(
    chains: &mut [[u32; 8]; N],
    vals: &mut [Hash32],
    n: u64,
) {
    run::<N, U32x4>(chains, vals, n)
}

#[inline(always)]
unsafe fn run<const N: usize, V: U32Lanes>(
    chains: &mut [[u32; 8]; N],
    vals: &mut [Hash32],
    n: u64,
) {
    assert!(vals.len() <= V::LANES);
    let mut abef = [_mm_setzero_si128(); N];
    let mut cdgh = [_mm_setzero_si128(); N];
    for s in 0..N {
        (abef[s], cdgh[s]) = load(&chains[s]);
    }
    let mut sl = slice(vals, be_words);
    let mut m = [V::splat(0); 8];
    for j in 0..8 {
        m[j] = V::load(&sl[j]);
    }
    for _ in 0..n {
        // SHA-NI: the message is the previous state (as kernel::step).
        let mut wn: [[__m128i; 4]; N] = [[PAD_LO; 4]; N];
        for s in 0..N {
            wn[s][0] = _mm_shuffle_epi32(_mm_unpackhi_epi64(cdgh[s], abef[s]), 0x1B);
            wn[s][1] = _mm_shuffle_epi32(_mm_unpacklo_epi64(cdgh[s], abef[s]), 0x1B);
            wn[s][3] = PAD_HI;
        }
        abef = [IV_ABEF; N];
        cdgh = [IV_CDGH; N];
        // Lanes: the message is the value's words (as lanes::sha256::step).
        let mut w = [V::splat(0); 16];
        let mut st = [V::splat(0); 8];
        for j in 0..8 {
            w[j] = m[j];
            w[8 + j] = V::splat(SHA256_PAD32[j]);
            st[j] = V::splat(SHA256_IV[j]);
        }
        interleave!(V; abef, cdgh, wn, st, w;
            0 [0 1 2 3] 1 [4 5 6 7] 2 [8 9 10 11] 3 [12 13 14 15]
            4 [16 17 18 19] 5 [20 21 22 23] 6 [24 25 26 27] 7 [28 29 30 31]
            8 [32 33 34 35] 9 [36 37 38 39] 10 [40 41 42 43] 11 [44 45 46 47]
            12 [48 49 50 51] 13 [52 53 54 55] 14 [56 57 58 59] 15 [60 61 62 63]);
        for s in 0..N {
            abef[s] = _mm_add_epi32(abef[s], IV_ABEF);
            cdgh[s] = _mm_add_epi32(cdgh[s], IV_CDGH);
        }
        for j in 0..8 {
            m[j] = st[j].add(V::splat(SHA256_IV[j]));
        }
    }
    for s in 0..N {
        store(abef[s], cdgh[s], &mut chains[s]);
    }
    for j in 0..8 {
        m[j].store(&mut sl[j]);
    }
    unslice(&sl, vals, from_be_words);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consts::{be_words, from_be_words};
    use crate::platform::{Feature, Platform};
    use montana_vdf::HashSuite;

    /// Both halves against the scalar oracle.
    #[test]
    fn both_halves_match_the_oracle() {
        let p = Platform::get();
        if !p.has(Feature::ShaNi) || !p.has(Feature::Avx2) {
            eprintln!("skipped: this CPU lacks SHA-NI or AVX2");
            return;
        }
        let starts: Vec<Hash32> = (0..12u8)
            .map(|i| Hash32([i.wrapping_mul(37); 32]))
            .collect();
        let mut chains = [[0u32; 8]; 4];
        for (c, h) in chains.iter_mut().zip(&starts[..4]) {
            *c = be_words(&h.0);
        }
        let oracle = |h: &Hash32| (0..33).fold(*h, |x, _| HashSuite::Sha256.hash(&x.0));
        for lanes in [8, 4] {
            let mut c = chains;
            let mut vals = starts[4..4 + lanes].to_vec();
            // SAFETY: the features were checked above.
            unsafe {
                if lanes == 8 {
                    advance_avx2::<4>(&mut c, &mut vals, 33)
                } else {
                    advance_sse41::<4>(&mut c, &mut vals, 33)
                }
            };
            for (c, h) in c.iter().zip(&starts[..4]) {
                assert_eq!(Hash32(from_be_words(c)), oracle(h));
            }
            for (v, h) in vals.iter().zip(&starts[4..]) {
                assert_eq!(*v, oracle(h));
            }
        }
    }
}
