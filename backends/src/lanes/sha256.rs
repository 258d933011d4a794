//! SHA-256 chain steps, word-sliced over the lanes of any [`U32Lanes`].
//!
//! Each lane hashes its own 32-byte value: message words 0..7 are that
//! value's big-endian words (the previous state, kept in registers), words
//! 8..15 the fixed padding, whose `W + K` and schedule terms fold to
//! constants. The 64 rounds are unrolled so every index is a constant.

use montana_vdf::Hash32;

use super::{slice, unslice, U32Lanes};
use crate::consts::{be_words, from_be_words, SHA256_IV, SHA256_K, SHA256_PAD32};

#[inline(always)]
unsafe fn big_sigma0<V: U32Lanes>(x: V) -> V {
    V::xor3(x.ror::<2>(), x.ror::<13>(), x.ror::<22>())
}

#[inline(always)]
unsafe fn big_sigma1<V: U32Lanes>(x: V) -> V {
    V::xor3(x.ror::<6>(), x.ror::<11>(), x.ror::<25>())
}

#[inline(always)]
unsafe fn small_sigma0<V: U32Lanes>(x: V) -> V {
    V::xor3(x.ror::<7>(), x.ror::<18>(), x.shr::<3>())
}

#[inline(always)]
unsafe fn small_sigma1<V: U32Lanes>(x: V) -> V {
    V::xor3(x.ror::<17>(), x.ror::<19>(), x.shr::<10>())
}

/// Round T. Roles rotate through the slots of `s` instead of moving values:
/// role i (a = 0 .. h = 7) lives in slot (i - T) mod 8.
#[inline(always)]
pub(crate) unsafe fn round<V: U32Lanes, const T: usize>(s: &mut [V; 8], w: &mut [V; 16]) {
    let at = |role: usize| (role + 8 - T % 8) % 8;
    let (a, b, c, d) = (s[at(0)], s[at(1)], s[at(2)], s[at(3)]);
    let (e, f, g, h) = (s[at(4)], s[at(5)], s[at(6)], s[at(7)]);
    let wk = if T < 8 {
        w[T].add(V::splat(SHA256_K[T]))
    } else if T < 16 {
        V::splat(SHA256_K[T].wrapping_add(SHA256_PAD32[T - 8]))
    } else {
        w[T % 16] = small_sigma1(w[(T - 2) % 16])
            .add(w[(T - 7) % 16])
            .add(small_sigma0(w[(T - 15) % 16]))
            .add(w[T % 16]);
        w[T % 16].add(V::splat(SHA256_K[T]))
    };
    let t1 = h.add(big_sigma1(e)).add(V::ch(e, f, g)).add(wk);
    let t2 = big_sigma0(a).add(V::maj(a, b, c));
    s[at(3)] = d.add(t1);
    s[at(7)] = t1.add(t2);
}

macro_rules! rounds {
    ($s:ident, $w:ident; $($t:literal)*) => { $( round::<V, $t>(&mut $s, &mut $w); )* };
}

/// One chain step in every lane: `m` (the value's words) becomes its hash.
#[inline(always)]
unsafe fn step<V: U32Lanes>(m: &mut [V; 8]) {
    let mut w = [V::splat(0); 16];
    for j in 0..8 {
        w[j] = m[j];
        w[8 + j] = V::splat(SHA256_PAD32[j]);
    }
    let mut s = [V::splat(0); 8];
    for j in 0..8 {
        s[j] = V::splat(SHA256_IV[j]);
    }
    rounds!(s, w; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15
        16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
        32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47
        48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63);
    for j in 0..8 {
        m[j] = s[j].add(V::splat(SHA256_IV[j]));
    }
}

/// Applies `n` steps to each of `vals` (at most `V::LANES` of them).
///
/// # Safety
/// The CPU must have `V`'s feature; call from a `#[target_feature]` function.
#[inline(always)]
pub unsafe fn advance<V: U32Lanes>(vals: &mut [Hash32], n: u64) {
    assert!(vals.len() <= V::LANES);
    let mut sl = slice(vals, be_words);
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
    unslice(&sl, vals, from_be_words);
}
