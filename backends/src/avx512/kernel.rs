//! AVX-512 (F + VL) intrinsics: 16-lane vectors for the word-sliced
//! verification kernels, and native rotates for the row-wise BLAKE3 step.
//!
//! Same shape as `avx2::kernel` (the hash steps are shared, in `lanes`);
//! what differs is the width, one-instruction rotates (`vprord`) and
//! three-input logic (`vpternlogd`) for SHA-256's Ch, Maj and xor3.

use core::arch::x86_64::*;

use montana_vdf::Hash32;

use crate::blake3_rows::{self, RowRotate};
use crate::lanes::{self, U32Lanes, MAX_LANES};

/// Sixteen u32 lanes in a ZMM register.
#[derive(Clone, Copy)]
pub struct U32x16(__m512i);

impl U32Lanes for U32x16 {
    const LANES: usize = 16;

    #[inline(always)]
    unsafe fn splat(x: u32) -> Self {
        U32x16(_mm512_set1_epi32(x as i32))
    }
    #[inline(always)]
    unsafe fn load(src: &[u32; MAX_LANES]) -> Self {
        U32x16(_mm512_loadu_epi32(src.as_ptr().cast()))
    }
    #[inline(always)]
    unsafe fn store(self, dst: &mut [u32; MAX_LANES]) {
        _mm512_storeu_epi32(dst.as_mut_ptr().cast(), self.0)
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        U32x16(_mm512_add_epi32(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn xor(self, b: Self) -> Self {
        U32x16(_mm512_xor_si512(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn and(self, b: Self) -> Self {
        U32x16(_mm512_and_si512(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn or(self, b: Self) -> Self {
        U32x16(_mm512_or_si512(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn andnot(self, b: Self) -> Self {
        U32x16(_mm512_andnot_si512(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn ror<const R: i32>(self) -> Self {
        U32x16(_mm512_ror_epi32::<R>(self.0))
    }
    #[inline(always)]
    unsafe fn shr<const R: i32>(self) -> Self {
        U32x16(_mm512_srl_epi32(self.0, _mm_cvtsi32_si128(R)))
    }
    #[inline(always)]
    unsafe fn xor3(a: Self, b: Self, c: Self) -> Self {
        U32x16(_mm512_ternarylogic_epi32::<0x96>(a.0, b.0, c.0))
    }
    #[inline(always)]
    unsafe fn ch(e: Self, f: Self, g: Self) -> Self {
        // e ? f : g
        U32x16(_mm512_ternarylogic_epi32::<0xCA>(e.0, f.0, g.0))
    }
    #[inline(always)]
    unsafe fn maj(a: Self, b: Self, c: Self) -> Self {
        U32x16(_mm512_ternarylogic_epi32::<0xE8>(a.0, b.0, c.0))
    }
}

/// AVX-512VL rotations on XMM rows: one `vprord` each.
pub struct Avx512Rotate;

impl RowRotate for Avx512Rotate {
    #[inline(always)]
    unsafe fn rot16(x: __m128i) -> __m128i {
        _mm_ror_epi32::<16>(x)
    }
    #[inline(always)]
    unsafe fn rot12(x: __m128i) -> __m128i {
        _mm_ror_epi32::<12>(x)
    }
    #[inline(always)]
    unsafe fn rot8(x: __m128i) -> __m128i {
        _mm_ror_epi32::<8>(x)
    }
    #[inline(always)]
    unsafe fn rot7(x: __m128i) -> __m128i {
        _mm_ror_epi32::<7>(x)
    }
}

/// BLAKE3: `n` steps of one chain (little-endian words).
///
/// # Safety
/// The CPU must have AVX-512F and AVX-512VL.
#[target_feature(enable = "avx512f,avx512vl")]
pub unsafe fn blake3_advance(words: &mut [u32; 8], n: u64) {
    blake3_rows::advance::<Avx512Rotate>(words, n)
}

/// SHA-256: `n` steps of up to 16 chains side by side.
///
/// # Safety
/// The CPU must have AVX-512F and AVX-512VL.
#[target_feature(enable = "avx512f,avx512vl")]
pub unsafe fn sha256_advance_lanes(vals: &mut [Hash32], n: u64) {
    lanes::sha256::advance::<U32x16>(vals, n)
}

/// BLAKE3: `n` steps of up to 16 chains side by side.
///
/// # Safety
/// The CPU must have AVX-512F and AVX-512VL.
#[target_feature(enable = "avx512f,avx512vl")]
pub unsafe fn blake3_advance_lanes(vals: &mut [Hash32], n: u64) {
    lanes::blake3::advance::<U32x16>(vals, n)
}

#[cfg(test)]
mod tests {
    /// `vpternlogd` semantics: bit i of the result is bit (a_i b_i c_i) of imm.
    fn ternlog(imm: u8, a: u32, b: u32, c: u32) -> u32 {
        (0..32)
            .map(|i| {
                let idx = ((a >> i) & 1) << 2 | ((b >> i) & 1) << 1 | ((c >> i) & 1);
                (((imm as u32) >> idx) & 1) << i
            })
            .sum()
    }

    /// The immediates are the one part of the AVX-512 vectors that the
    /// development machine cannot run; check them against the formulas
    /// the AVX2 path (tested against the oracle) uses.
    #[test]
    fn ternary_logic_immediates_compute_xor3_ch_and_maj() {
        let (a, b, c) = (0x0123_4567u32, 0x89ab_cdefu32, 0xf0f0_3c3cu32);
        for (a, b, c) in [(a, b, c), (b, c, a), (c, a, b), (!a, b, !c)] {
            assert_eq!(ternlog(0x96, a, b, c), a ^ b ^ c);
            assert_eq!(ternlog(0xCA, a, b, c), (a & b) ^ (!a & c));
            assert_eq!(ternlog(0xE8, a, b, c), ((a ^ b) & c) ^ (a & b));
        }
    }
}
