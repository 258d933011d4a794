//! SSE4.1 intrinsics: rotations for the row-wise BLAKE3 step, and 4-lane
//! vectors for the word-sliced verification kernels.

use core::arch::x86_64::*;

use montana_vdf::Hash32;

use crate::blake3_rows::{self, opaque, RowRotate};
use crate::lanes::{self, U32Lanes, MAX_LANES};

/// Byte shuffles rotating each u32 right by 16 and by 8 bits.
#[inline(always)]
unsafe fn rot16_mask() -> __m128i {
    _mm_setr_epi8(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13)
}
#[inline(always)]
unsafe fn rot8_mask() -> __m128i {
    _mm_setr_epi8(1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12)
}

/// SSE4.1 rotations: byte shuffles for 16 and 8, shift pairs for 12 and 7.
pub struct SseRotate;

impl RowRotate for SseRotate {
    #[inline(always)]
    unsafe fn rot16(x: __m128i) -> __m128i {
        // An opaque mask keeps this one `pshufb` (latency 1): LLVM would
        // otherwise pick `pshuflw` + `pshufhw` (latency 2) on the critical path.
        _mm_shuffle_epi8(x, opaque(rot16_mask()))
    }
    #[inline(always)]
    unsafe fn rot12(x: __m128i) -> __m128i {
        _mm_or_si128(_mm_srli_epi32::<12>(x), _mm_slli_epi32::<20>(x))
    }
    #[inline(always)]
    unsafe fn rot8(x: __m128i) -> __m128i {
        _mm_shuffle_epi8(x, rot8_mask())
    }
    #[inline(always)]
    unsafe fn rot7(x: __m128i) -> __m128i {
        _mm_or_si128(_mm_srli_epi32::<7>(x), _mm_slli_epi32::<25>(x))
    }
}

/// Four u32 lanes in an XMM register.
#[derive(Clone, Copy)]
pub struct U32x4(__m128i);

impl U32Lanes for U32x4 {
    const LANES: usize = 4;

    #[inline(always)]
    unsafe fn splat(x: u32) -> Self {
        U32x4(_mm_set1_epi32(x as i32))
    }
    #[inline(always)]
    unsafe fn load(src: &[u32; MAX_LANES]) -> Self {
        U32x4(_mm_loadu_si128(src.as_ptr().cast()))
    }
    #[inline(always)]
    unsafe fn store(self, dst: &mut [u32; MAX_LANES]) {
        _mm_storeu_si128(dst.as_mut_ptr().cast(), self.0)
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        U32x4(_mm_add_epi32(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn xor(self, b: Self) -> Self {
        U32x4(_mm_xor_si128(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn and(self, b: Self) -> Self {
        U32x4(_mm_and_si128(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn or(self, b: Self) -> Self {
        U32x4(_mm_or_si128(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn andnot(self, b: Self) -> Self {
        U32x4(_mm_andnot_si128(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn ror<const R: i32>(self) -> Self {
        U32x4(_mm_or_si128(
            _mm_srl_epi32(self.0, _mm_cvtsi32_si128(R)),
            _mm_sll_epi32(self.0, _mm_cvtsi32_si128(32 - R)),
        ))
    }
    #[inline(always)]
    unsafe fn shr<const R: i32>(self) -> Self {
        U32x4(_mm_srli_epi32::<R>(self.0))
    }
    #[inline(always)]
    unsafe fn ror16(self) -> Self {
        U32x4(_mm_shuffle_epi8(self.0, rot16_mask()))
    }
    #[inline(always)]
    unsafe fn ror8(self) -> Self {
        U32x4(_mm_shuffle_epi8(self.0, rot8_mask()))
    }
}

/// BLAKE3: `n` steps of one chain (little-endian words).
///
/// # Safety
/// The CPU must have SSE4.1.
#[target_feature(enable = "sse4.1")]
pub unsafe fn blake3_advance(words: &mut [u32; 8], n: u64) {
    blake3_rows::advance::<SseRotate>(words, n)
}

/// BLAKE3: `n` steps of up to 4 chains side by side.
///
/// # Safety
/// The CPU must have SSE4.1.
#[target_feature(enable = "sse4.1")]
pub unsafe fn blake3_advance_lanes(vals: &mut [Hash32], n: u64) {
    lanes::blake3::advance::<U32x4>(vals, n)
}

/// SHA-256: `n` steps of up to 4 chains side by side.
///
/// # Safety
/// The CPU must have SSE4.1.
#[target_feature(enable = "sse4.1")]
pub unsafe fn sha256_advance_lanes(vals: &mut [Hash32], n: u64) {
    lanes::sha256::advance::<U32x4>(vals, n)
}
