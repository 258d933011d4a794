//! AVX2 intrinsics: 8-lane vectors for the word-sliced verification kernels.

use core::arch::x86_64::*;

use montana_vdf::Hash32;

use crate::lanes::{self, U32Lanes, MAX_LANES};

/// Hides a constant from LLVM (no instruction emitted), so a rotation by 16
/// stays one `vpshufb` instead of becoming `vpshuflw` + `vpshufhw`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn opaque(mut x: __m256i) -> __m256i {
    // SAFETY: an empty template; the register is only declared modified.
    unsafe {
        core::arch::asm!("/* {0} */", inout(ymm_reg) x, options(pure, nomem, nostack, preserves_flags));
    }
    x
}

/// Eight u32 lanes in a YMM register.
#[derive(Clone, Copy)]
pub struct U32x8(__m256i);

impl U32Lanes for U32x8 {
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn splat(x: u32) -> Self {
        U32x8(_mm256_set1_epi32(x as i32))
    }
    #[inline(always)]
    unsafe fn load(src: &[u32; MAX_LANES]) -> Self {
        U32x8(_mm256_loadu_si256(src.as_ptr().cast()))
    }
    #[inline(always)]
    unsafe fn store(self, dst: &mut [u32; MAX_LANES]) {
        _mm256_storeu_si256(dst.as_mut_ptr().cast(), self.0)
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        U32x8(_mm256_add_epi32(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn xor(self, b: Self) -> Self {
        U32x8(_mm256_xor_si256(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn and(self, b: Self) -> Self {
        U32x8(_mm256_and_si256(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn or(self, b: Self) -> Self {
        U32x8(_mm256_or_si256(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn andnot(self, b: Self) -> Self {
        U32x8(_mm256_andnot_si256(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn ror<const R: i32>(self) -> Self {
        // Shift counts in a register; constant, so they compile to immediates.
        U32x8(_mm256_or_si256(
            _mm256_srl_epi32(self.0, _mm_cvtsi32_si128(R)),
            _mm256_sll_epi32(self.0, _mm_cvtsi32_si128(32 - R)),
        ))
    }
    #[inline(always)]
    unsafe fn shr<const R: i32>(self) -> Self {
        U32x8(_mm256_srli_epi32::<R>(self.0))
    }
    #[inline(always)]
    unsafe fn ror16(self) -> Self {
        U32x8(_mm256_shuffle_epi8(
            self.0,
            opaque(_mm256_setr_epi8(
                2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13, 2, 3, 0, 1, 6, 7, 4, 5, 10,
                11, 8, 9, 14, 15, 12, 13,
            )),
        ))
    }
    #[inline(always)]
    unsafe fn ror8(self) -> Self {
        U32x8(_mm256_shuffle_epi8(
            self.0,
            _mm256_setr_epi8(
                1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12, 1, 2, 3, 0, 5, 6, 7, 4, 9,
                10, 11, 8, 13, 14, 15, 12,
            ),
        ))
    }
}

/// SHA-256: `n` steps of up to 8 chains side by side.
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn sha256_advance_lanes(vals: &mut [Hash32], n: u64) {
    lanes::sha256::advance::<U32x8>(vals, n)
}

/// BLAKE3: `n` steps of up to 8 chains side by side.
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn blake3_advance_lanes(vals: &mut [Hash32], n: u64) {
    lanes::blake3::advance::<U32x8>(vals, n)
}
