//! Peak rates on a shared, noisy machine: the best of many short trials.
//!
//! `montana bench` reports medians (what a user sees under the load there
//! is); this reports what the core does when it is not preempted, which is
//! what kernel choices (e.g. `sha_ni::STREAMS`) should be made on. Each
//! figure is the maximum over 40 trials of about a millisecond or more, and
//! ratios are to the crate loops measured the same way.
//!
//! `cargo run --release -p montana-benches --example peak [threads]`

use std::time::Instant;

use montana_backends::registry::compiled;
use montana_backends::scalar;
use montana_vdf::{ChainParams, EvalControl, Hash32, HashSuite, Operation, Segment, VerifyOptions};

const TRIALS: usize = 40;
const STEPS: u64 = 20_000;
const SEGMENT_LEN: u64 = 2_000;

/// Millions of hashes per second, best of TRIALS; `f` returns hashes done.
fn best(mut f: impl FnMut() -> u64) -> f64 {
    (0..TRIALS)
        .map(|_| {
            let t = Instant::now();
            let n = f();
            n as f64 / t.elapsed().as_secs_f64() / 1e6
        })
        .fold(0.0, f64::max)
}

#[cfg(target_arch = "x86_64")]
fn sha_ni_streams() {
    use montana_backends::platform::{Feature, Platform};
    use montana_backends::sha_ni::kernel;
    if !Platform::get().has(Feature::ShaNi) {
        return;
    }
    fn streams<const N: usize>() -> f64 {
        let mut w = [[7u32; 8]; N];
        // SAFETY: SHA-NI detected by the caller.
        best(|| {
            unsafe { kernel::advance::<N>(&mut w, STEPS) };
            STEPS * N as u64
        })
    }
    println!(
        "sha-ni streams 1/2/3/4 on one core: {:.1} {:.1} {:.1} {:.1} M/s",
        streams::<1>(),
        streams::<2>(),
        streams::<3>(),
        streams::<4>()
    );
}

/// SHA-NI streams and AVX2 lanes stepped in one loop (`sha_ni::hybrid`,
/// an experiment): hashes per second of the pair against each alone.
#[cfg(target_arch = "x86_64")]
fn sha_ni_with_avx2() {
    use montana_backends::avx2::kernel::sha256_advance_lanes;
    use montana_backends::platform::{Feature, Platform};
    use montana_backends::sha_ni::{hybrid, kernel};
    let p = Platform::get();
    if !p.has(Feature::ShaNi) || !p.has(Feature::Avx2) {
        return;
    }
    let mut w = [[7u32; 8]; 4];
    let mut lanes = vec![Hash32([3; 32]); 8];
    // SAFETY (all three): SHA-NI and AVX2 detected above.
    let ni = best(|| {
        unsafe { kernel::advance::<4>(&mut w, STEPS) };
        STEPS * 4
    });
    let avx2 = best(|| {
        unsafe { sha256_advance_lanes(&mut lanes, STEPS) };
        STEPS * 8
    });
    let with_avx2 = best(|| {
        unsafe { hybrid::advance_avx2::<4>(&mut w, &mut lanes, STEPS) };
        STEPS * 12
    });
    // The same loop with no SHA-NI stream, and with one: where the time goes.
    let mut none = [[7u32; 8]; 0];
    let avx2_alone = best(|| {
        unsafe { hybrid::advance_avx2::<0>(&mut none, &mut lanes, STEPS) };
        STEPS * 8
    });
    let mut one = [[7u32; 8]; 1];
    let with_one = best(|| {
        unsafe { hybrid::advance_avx2::<1>(&mut one, &mut lanes, STEPS) };
        STEPS * 9
    });
    let mut four = vec![Hash32([3; 32]); 4];
    let sse41 = best(|| {
        unsafe { montana_backends::sse41::kernel::sha256_advance_lanes(&mut four, STEPS) };
        STEPS * 4
    });
    let with_sse41 = best(|| {
        unsafe { hybrid::advance_sse41::<4>(&mut w, &mut four, STEPS) };
        STEPS * 8
    });
    println!(
        "sha256 on one core: sha-ni 4 streams {ni:.1}, avx2 8 lanes {avx2:.1}, both in one loop \
         {with_avx2:.1} (with 0 streams {avx2_alone:.1}, 1 stream {with_one:.1}); sse41 4 lanes {sse41:.1}, sha-ni 4 + sse41 4 in one loop {with_sse41:.1} M/s"
    );
}

#[cfg(not(target_arch = "x86_64"))]
fn sha_ni_streams() {}
#[cfg(not(target_arch = "x86_64"))]
fn sha_ni_with_avx2() {}

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(VerifyOptions::default().threads);
    sha_ni_streams();
    sha_ni_with_avx2();
    let mut v = Hash32([1; 32]);
    for suite in HashSuite::ALL {
        let base = best(|| {
            scalar::advance(suite, &mut v, STEPS);
            STEPS
        });
        println!("{suite}: crate loop {base:.1} M/s");
        for b in compiled() {
            if !b.availability().is_available() {
                continue;
            }
            if b.supports(suite, Operation::Eval) {
                let p = ChainParams::new(STEPS, 1).unwrap();
                let r = best(|| {
                    v = b.evaluate(suite, &v, p, &EvalControl::none()).unwrap()[0];
                    STEPS
                });
                println!(
                    "  {:<7} eval           {r:6.1} M/s  {:5.2}x",
                    b.name(),
                    r / base
                );
            }
            if b.supports(suite, Operation::Verify) {
                let start = Hash32([2; 32]);
                let seg = Segment {
                    start,
                    end: suite.iterate(&start, SEGMENT_LEN),
                    steps: SEGMENT_LEN,
                };
                let mut counts = vec![1];
                if threads > 1 {
                    counts.push(threads);
                }
                for t in counts {
                    let segs = vec![seg; 2 * t * b.lanes()];
                    let opts = VerifyOptions::threads(t);
                    let r = best(|| {
                        assert!(b.verify(suite, &segs, &opts).unwrap().is_valid());
                        SEGMENT_LEN * segs.len() as u64
                    });
                    println!(
                        "  {:<7} verify {t:>2} thr   {r:6.1} M/s  {:5.2}x",
                        b.name(),
                        r / base
                    );
                }
            }
        }
    }
}
