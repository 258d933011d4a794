//! Multi-lane verification: many independent segments side by side.
//!
//! Verification is throughput-bound: segment i only needs its own start
//! value, so W segments run in the W 32-bit lanes of one vector register, one
//! vector per state word ("word-sliced"), each lane iterating its whole
//! segment with the state in registers and L1. The hash steps are written
//! once, generically over [`U32Lanes`] ([`sha256`], [`blake3`]); each
//! instruction-set module supplies the vector type (`avx2`: 8 lanes,
//! `avx512`: 16) and a `#[target_feature]` entry point that monomorphises them.
//!
//! [`check_group`] turns any "advance these chains by n steps" kernel into a
//! group verifier that copes with uneven segment lengths and groups smaller
//! than the lane count: it runs all unfinished lanes for the shortest
//! remaining length, retires the lanes that finished, and repeats.

pub mod blake3;
pub mod sha256;

use montana_vdf::{Hash32, Segment, VerifyOutcome};

use crate::driver;

/// The widest kernel (AVX-512: 16 x 32 bits).
pub const MAX_LANES: usize = 16;

/// W lanes of u32 and the operations the hash steps need.
///
/// # Safety
/// Every method requires the CPU feature of the implementing type; they are
/// `#[inline(always)]` so they are compiled inside the caller's
/// `#[target_feature]` function.
#[allow(clippy::missing_safety_doc)] // the trait's `# Safety` covers each method
pub trait U32Lanes: Copy {
    /// Number of lanes W (at most [`MAX_LANES`]).
    const LANES: usize;

    unsafe fn splat(x: u32) -> Self;
    /// Lanes from `src[0..W]`.
    unsafe fn load(src: &[u32; MAX_LANES]) -> Self;
    /// Lanes into `dst[0..W]`.
    unsafe fn store(self, dst: &mut [u32; MAX_LANES]);
    unsafe fn add(self, b: Self) -> Self;
    unsafe fn xor(self, b: Self) -> Self;
    unsafe fn and(self, b: Self) -> Self;
    unsafe fn or(self, b: Self) -> Self;
    /// `!self & b`.
    unsafe fn andnot(self, b: Self) -> Self;
    /// Rotate right by R bits (0 < R < 32).
    unsafe fn ror<const R: i32>(self) -> Self;
    /// Shift right by R bits.
    unsafe fn shr<const R: i32>(self) -> Self;

    /// `a ^ b ^ c` (one instruction with AVX-512's ternary logic).
    #[inline(always)]
    unsafe fn xor3(a: Self, b: Self, c: Self) -> Self {
        a.xor(b).xor(c)
    }
    /// SHA-256 `Ch(e, f, g) = (e & f) ^ (!e & g)`.
    #[inline(always)]
    unsafe fn ch(e: Self, f: Self, g: Self) -> Self {
        e.and(f).xor(e.andnot(g))
    }
    /// SHA-256 `Maj(a, b, c)`, as `((a ^ b) & c) ^ (a & b)`.
    #[inline(always)]
    unsafe fn maj(a: Self, b: Self, c: Self) -> Self {
        a.xor(b).and(c).xor(a.and(b))
    }
    /// Rotations by whole bytes have one-shuffle forms on some ISAs.
    #[inline(always)]
    unsafe fn ror16(self) -> Self {
        self.ror::<16>()
    }
    #[inline(always)]
    unsafe fn ror8(self) -> Self {
        self.ror::<8>()
    }
}

/// Word-sliced chain values: `words[j][lane]` is word j of that lane's value.
pub type Sliced = [[u32; MAX_LANES]; 8];

/// Splits up to [`MAX_LANES`] values into word slices with `words_of`
/// (big-endian for SHA-256, little-endian for BLAKE3).
pub fn slice(vals: &[Hash32], words_of: fn(&[u8; 32]) -> [u32; 8]) -> Sliced {
    let mut s = [[0u32; MAX_LANES]; 8];
    for (lane, v) in vals.iter().enumerate() {
        for (j, w) in words_of(&v.0).into_iter().enumerate() {
            s[j][lane] = w;
        }
    }
    s
}

/// Writes word slices back into `vals`.
pub fn unslice(s: &Sliced, vals: &mut [Hash32], bytes_of: fn(&[u32; 8]) -> [u8; 32]) {
    for (lane, v) in vals.iter_mut().enumerate() {
        v.0 = bytes_of(&std::array::from_fn(|j| s[j][lane]));
    }
}

/// Checks a group of at most [`MAX_LANES`] segments with `advance(values, n)`,
/// a kernel applying n steps to each of its values (as many as it is given,
/// up to its lane count). Returns the index in `group` of the first false
/// claim.
///
/// Lanes run together for the shortest remaining length; finished lanes are
/// retired (compared with their claimed end), and lanes after a known failure
/// are dropped, since only the lowest failing index is reported.
pub fn check_group(
    group: &[Segment],
    mut advance: impl FnMut(&mut [Hash32], u64),
) -> Option<usize> {
    assert!(group.len() <= MAX_LANES, "group larger than MAX_LANES");
    let mut value = [Hash32::ZERO; MAX_LANES];
    let mut left = [0u64; MAX_LANES];
    let mut first_bad: Option<usize> = None;
    for (i, s) in group.iter().enumerate() {
        value[i] = s.start;
        left[i] = s.steps;
        if s.steps == 0 && s.start != s.end {
            first_bad = first_bad.or(Some(i));
        }
    }
    let mut active = [0usize; MAX_LANES];
    let mut buf = [Hash32::ZERO; MAX_LANES];
    loop {
        let limit = first_bad.unwrap_or(group.len());
        let mut count = 0;
        for i in 0..limit {
            if left[i] > 0 {
                active[count] = i;
                buf[count] = value[i];
                count += 1;
            }
        }
        if count == 0 {
            return first_bad;
        }
        let n = active[..count].iter().map(|&i| left[i]).min().unwrap_or(0);
        advance(&mut buf[..count], n);
        for (&i, v) in active[..count].iter().zip(&buf) {
            value[i] = *v;
            left[i] -= n;
            if left[i] == 0 && value[i] != group[i].end {
                first_bad = Some(first_bad.map_or(i, |b| b.min(i)));
            }
        }
    }
}

/// A word-sliced kernel entry point: `n` steps of each value, at most its
/// lane count of them.
pub type LaneKernel = unsafe fn(&mut [Hash32], u64);

/// Verifies `segments` with `kernel`, `lanes` segments per group, groups
/// spread over `threads` by the driver.
///
/// # Safety
/// The CPU must have the kernel's feature (checked with `platform::require`).
pub unsafe fn verify_with(
    segments: &[Segment],
    lanes: usize,
    threads: usize,
    kernel: LaneKernel,
) -> VerifyOutcome {
    driver::verify_batch(segments, lanes, threads, |group| {
        // SAFETY: the caller checked the feature.
        check_group(group, |vals, n| unsafe { kernel(vals, n) })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use montana_vdf::HashSuite;

    /// A reference "kernel" of any width, counting the steps it is asked for.
    fn reference(suite: HashSuite, work: &mut u64) -> impl FnMut(&mut [Hash32], u64) + '_ {
        move |vals, n| {
            for v in vals.iter_mut() {
                *v = suite.iterate(v, n);
                *work += n;
            }
        }
    }

    fn seg(suite: HashSuite, seed: u8, steps: u64) -> Segment {
        let start = Hash32([seed; 32]);
        Segment {
            start,
            end: suite.iterate(&start, steps),
            steps,
        }
    }

    #[test]
    fn uneven_lengths_and_short_groups() {
        let suite = HashSuite::Blake3;
        let mut group: Vec<Segment> = (0..11)
            .map(|i| seg(suite, i, 1 + (i as u64 * 7) % 5))
            .collect();
        group.push(Segment {
            start: Hash32::ZERO,
            end: Hash32::ZERO,
            steps: 0,
        });
        let mut work = 0;
        assert_eq!(check_group(&group, reference(suite, &mut work)), None);
        // Each lane does exactly its own steps: retired lanes cost nothing.
        assert_eq!(work, group.iter().map(|s| s.steps).sum::<u64>());

        for bad in [0, 5, 11] {
            let mut g = group.clone();
            g[bad].end.0[3] ^= 1;
            let mut w = 0;
            assert_eq!(check_group(&g, reference(suite, &mut w)), Some(bad));
        }
        let mut w = 0;
        assert_eq!(check_group(&[], reference(suite, &mut w)), None);
    }

    #[test]
    fn lanes_after_a_failure_are_dropped() {
        let suite = HashSuite::Sha256;
        let mut group: Vec<Segment> = (0..4).map(|i| seg(suite, i, 100)).collect();
        group[0].steps = 0; // start != end after 0 steps: segment 0 is false
        let mut work = 0;
        assert_eq!(check_group(&group, reference(suite, &mut work)), Some(0));
        assert_eq!(work, 0);
    }

    #[test]
    fn slicing_round_trips() {
        let vals: Vec<Hash32> = (0..13u8).map(|i| Hash32([i; 32])).collect();
        let s = slice(&vals, crate::consts::be_words);
        let mut back = vec![Hash32::ZERO; 13];
        unslice(&s, &mut back, crate::consts::from_be_words);
        assert_eq!(back, vals);
    }
}
