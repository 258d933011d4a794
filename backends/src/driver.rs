//! Shared plumbing around backend kernels.
//!
//! A kernel only knows how to advance hash values; the rules of the spec
//! (checkpoint spacing, cancellation, progress, "first" failing index whatever
//! order threads finish in) are applied here once for every CPU backend.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use montana_vdf::{BackendError, ChainParams, EvalControl, Hash32, Segment, VerifyOutcome};
use rayon::prelude::*;

/// Steps between cancellation checks and progress reports (~10 ms of SHA-256).
pub const EVAL_CHUNK: u64 = 1 << 18;

/// Runs one chain of `params` from `start`, calling `advance(v, n)` to apply
/// n steps to v, and collects the K checkpoints.
pub fn evaluate_chain(
    start: &Hash32,
    params: ChainParams,
    ctl: &EvalControl<'_>,
    mut advance: impl FnMut(&mut Hash32, u64),
) -> Result<Vec<Hash32>, BackendError> {
    let seg = params.segment_len();
    let mut v = *start;
    let mut done = 0u64;
    let mut out = Vec::with_capacity(params.checkpoints() as usize);
    for _ in 0..params.checkpoints() {
        let mut left = seg;
        while left > 0 {
            if ctl.is_cancelled() {
                return Err(BackendError::Cancelled);
            }
            let n = left.min(EVAL_CHUNK);
            advance(&mut v, n);
            left -= n;
            done += n;
            ctl.report(done);
        }
        out.push(v);
    }
    Ok(out)
}

/// Verifies `segments` in groups of `lanes` on `threads` threads.
///
/// `kernel(group)` checks one group (at most `lanes` segments, possibly of
/// uneven lengths) and returns the index within the group of its first false
/// claim. The result is the lowest failing index of the whole batch: groups
/// after an already-found failure are skipped, groups before it never are.
pub fn verify_batch<K>(
    segments: &[Segment],
    lanes: usize,
    threads: usize,
    kernel: K,
) -> VerifyOutcome
where
    K: Fn(&[Segment]) -> Option<usize> + Sync,
{
    let lanes = lanes.max(1);
    if threads <= 1 || segments.len() <= lanes {
        for (g, group) in segments.chunks(lanes).enumerate() {
            if let Some(j) = kernel(group) {
                return VerifyOutcome::Invalid {
                    first_bad_segment: g * lanes + j,
                };
            }
        }
        return VerifyOutcome::Valid;
    }
    let found = AtomicUsize::new(usize::MAX);
    pool(threads).install(|| {
        segments
            .par_chunks(lanes)
            .enumerate()
            .for_each(|(g, group)| {
                let base = g * lanes;
                if base >= found.load(Ordering::Relaxed) {
                    return;
                }
                if let Some(j) = kernel(group) {
                    found.fetch_min(base + j, Ordering::Relaxed);
                }
            })
    });
    match found.into_inner() {
        usize::MAX => VerifyOutcome::Valid,
        i => VerifyOutcome::Invalid {
            first_bad_segment: i,
        },
    }
}

/// One rayon pool per thread count, built on first use and kept: a node
/// verifies every window with the same count.
fn pool(threads: usize) -> Arc<rayon::ThreadPool> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    pools
        .entry(threads)
        .or_insert_with(|| {
            Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("montana-verify-{i}"))
                    .build()
                    .expect("building a thread pool"),
            )
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use montana_vdf::HashSuite;
    use std::sync::atomic::AtomicBool;

    fn seg(ok: bool) -> Segment {
        Segment {
            start: Hash32::ZERO,
            end: if ok { Hash32::ZERO } else { Hash32([1; 32]) },
            steps: 1,
        }
    }

    // A kernel that treats start == end as a true claim.
    fn kernel(group: &[Segment]) -> Option<usize> {
        group.iter().position(|s| s.start != s.end)
    }

    #[test]
    fn reports_the_lowest_failing_index_for_any_thread_count() {
        for n in [1usize, 2, 7, 8, 9, 100, 1000] {
            for bad in [0, n / 3, n - 1] {
                let mut segs = vec![seg(true); n];
                segs[bad] = seg(false);
                if bad + 5 < n {
                    segs[bad + 5] = seg(false);
                }
                if n > 1 {
                    segs[n - 1] = seg(false);
                }
                for lanes in [1, 3, 8] {
                    for threads in [1, 2, 4] {
                        assert_eq!(
                            verify_batch(&segs, lanes, threads, kernel),
                            VerifyOutcome::Invalid {
                                first_bad_segment: bad
                            },
                            "n={n} bad={bad} lanes={lanes} threads={threads}"
                        );
                    }
                }
            }
            assert!(verify_batch(&vec![seg(true); n], 8, 2, kernel).is_valid());
        }
        assert!(verify_batch(&[], 8, 2, kernel).is_valid());
    }

    #[test]
    fn evaluation_places_checkpoints_and_stops_when_cancelled() {
        let suite = HashSuite::Blake3;
        let params = ChainParams::new(12, 3).unwrap();
        let cps = evaluate_chain(&Hash32::ZERO, params, &EvalControl::none(), |v, n| {
            *v = suite.iterate(v, n)
        })
        .unwrap();
        assert_eq!(cps[0], suite.iterate(&Hash32::ZERO, 4));
        assert_eq!(cps[2], suite.iterate(&Hash32::ZERO, 12));

        let cancel = AtomicBool::new(true);
        let ctl = EvalControl {
            cancel: Some(&cancel),
            progress: None,
        };
        assert_eq!(
            evaluate_chain(&Hash32::ZERO, params, &ctl, |_, _| {}),
            Err(BackendError::Cancelled)
        );
    }

    #[test]
    fn progress_reaches_the_total() {
        let last = std::sync::atomic::AtomicU64::new(0);
        let report = |d: u64| last.store(d, Ordering::Relaxed);
        let ctl = EvalControl {
            cancel: None,
            progress: Some(&report),
        };
        let params = ChainParams::new(3 * EVAL_CHUNK + 6, 2).unwrap();
        evaluate_chain(&Hash32::ZERO, params, &ctl, |_, _| {}).unwrap();
        assert_eq!(last.load(Ordering::Relaxed), params.iterations());
    }
}
