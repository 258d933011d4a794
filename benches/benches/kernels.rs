//! Eval and verify kernels of every backend this CPU runs, next to the plain
//! crate loops (`sha2::Sha256::digest` / `blake3::hash` in a loop), in
//! hashes per second (criterion's elements/s).
//!
//! Short by default (the development machine is a shared 2-core VM):
//! `cargo bench -p montana-benches -- --measurement-time 5` for steadier
//! figures. `montana bench` gives the same figures as one table.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use montana_backends::registry::compiled;
use montana_backends::scalar;
use montana_vdf::{ChainParams, EvalControl, Hash32, HashSuite, Operation, Segment, VerifyOptions};

const EVAL_STEPS: u64 = 20_000;
const SEGMENT_LEN: u64 = 2_000;

fn eval(c: &mut Criterion) {
    for suite in HashSuite::ALL {
        let mut g = c.benchmark_group(format!("eval/{suite}"));
        g.throughput(Throughput::Elements(EVAL_STEPS));
        let crate_name = montana_backends::bench::crate_row_name(suite);
        g.bench_function(crate_name, |b| {
            let mut v = Hash32([1; 32]);
            b.iter(|| scalar::advance(suite, &mut v, EVAL_STEPS))
        });
        for backend in compiled() {
            if !backend.availability().is_available() || !backend.supports(suite, Operation::Eval) {
                continue;
            }
            let params = ChainParams::new(EVAL_STEPS, 1).unwrap();
            g.bench_function(backend.name(), |b| {
                let mut v = Hash32([1; 32]);
                b.iter(|| {
                    v = backend
                        .evaluate(suite, &v, params, &EvalControl::none())
                        .unwrap()[0]
                })
            });
        }
        g.finish();
    }
}

/// One thread, a batch of `4 x lanes` copies of one valid segment.
fn verify(c: &mut Criterion) {
    for suite in HashSuite::ALL {
        let mut g = c.benchmark_group(format!("verify/{suite}"));
        let start = Hash32([2; 32]);
        let seg = Segment {
            start,
            end: suite.iterate(&start, SEGMENT_LEN),
            steps: SEGMENT_LEN,
        };
        for backend in compiled() {
            if !backend.availability().is_available() || !backend.supports(suite, Operation::Verify)
            {
                continue;
            }
            let k = 4 * backend.lanes();
            let segs = vec![seg; k];
            g.throughput(Throughput::Elements(k as u64 * SEGMENT_LEN));
            g.bench_with_input(BenchmarkId::new(backend.name(), k), &segs, |b, segs| {
                b.iter(|| {
                    assert!(backend
                        .verify(suite, segs, &VerifyOptions::threads(1))
                        .unwrap()
                        .is_valid())
                })
            });
        }
        g.finish();
    }
}

/// SHA-NI streams interleaved on one core: the measurement behind
/// `sha_ni::STREAMS`.
#[cfg(target_arch = "x86_64")]
fn sha_ni_streams(c: &mut Criterion) {
    use montana_backends::platform::{Feature, Platform};
    use montana_backends::sha_ni::kernel;
    if !Platform::get().has(Feature::ShaNi) {
        eprintln!("skipping sha-ni streams: this CPU lacks SHA-NI");
        return;
    }
    fn run<const N: usize>(
        c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    ) {
        c.throughput(Throughput::Elements(N as u64 * EVAL_STEPS));
        c.bench_function(BenchmarkId::from_parameter(N), |b| {
            let mut w = [[7u32; 8]; N];
            // SAFETY: SHA-NI detected above.
            b.iter(|| unsafe { kernel::advance::<N>(&mut w, EVAL_STEPS) })
        });
    }
    let mut g = c.benchmark_group("sha-ni-streams");
    run::<1>(&mut g);
    run::<2>(&mut g);
    run::<3>(&mut g);
    run::<4>(&mut g);
    g.finish();
}

#[cfg(not(target_arch = "x86_64"))]
fn sha_ni_streams(_: &mut Criterion) {}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

criterion_group! {
    name = kernels;
    config = config();
    targets = eval, verify, sha_ni_streams
}
criterion_main!(kernels);
