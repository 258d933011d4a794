//! Measuring backends: hashes per second, as `montana bench` reports them
//! and as calibration will reuse them.
//!
//! Every figure is a median over several timed slices (the machines we run on
//! are shared and noisy), and every report carries the plain crate loops
//! (`crate-sha2`, `crate-blake3`: `sha2::Sha256::digest` / `blake3::hash` in a
//! loop on one core) so each figure reads as a ratio from the same run.
//!
//! A verification batch is K copies of one valid segment: lanes and threads
//! never share work, so copies cost exactly what distinct segments cost, and
//! building the batch takes one chain of L steps instead of K.

mod measure;
mod report;

use std::collections::BTreeMap;

use montana_vdf::{BackendError, HashSuite, Operation, VerifyOptions};

pub use measure::{
    measure_crate, measure_eval, measure_verify, median, time_valid_verify, VerifyRate, SLICES,
};
pub use report::{crate_row_name, BenchReport, BenchRow, HostInfo};

use crate::registry::Registry;

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub suites: Vec<HashSuite>,
    /// Wall-clock budget of each measurement (each row), in seconds.
    pub seconds: f64,
    /// The "many threads" count for verification (1 is always measured).
    pub threads: usize,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            suites: HashSuite::ALL.to_vec(),
            seconds: 1.0,
            threads: VerifyOptions::default().threads,
        }
    }
}

/// Measures the crate loops and every available backend of `registry` for
/// each suite of `cfg`; `on_row` sees each row as it is measured.
///
/// The load on a shared machine drifts during a run, so the crate baseline
/// is measured again before each backend and after the last (half a budget
/// each) and its row is the median of those: a ratio then compares figures
/// taken across the same stretch of time, not against one early sample.
pub fn run(
    registry: &Registry,
    cfg: &BenchConfig,
    on_row: impl FnMut(&BenchRow),
) -> Result<BenchReport, BackendError> {
    run_until(registry, cfg, on_row, &|| false)
}

/// The rows [`run`] measures for `cfg` on `registry` (for progress).
pub fn planned_rows(registry: &Registry, cfg: &BenchConfig) -> usize {
    let per_suite = |suite| {
        registry
            .all()
            .iter()
            .filter(|b| registry.availability(b.as_ref()).is_available())
            .map(|b| {
                let eval = usize::from(b.supports(suite, Operation::Eval));
                let verify = if b.supports(suite, Operation::Verify) {
                    1 + usize::from(cfg.threads > 1)
                } else {
                    0
                };
                eval + verify
            })
            .sum::<usize>()
            + 1
    };
    cfg.suites.iter().map(|s| per_suite(*s)).sum()
}

/// [`run`], stopping early once `stop()` says so (checked before each
/// measurement): the report then holds the rows measured so far (a suite
/// cut short has no crate row).
pub fn run_until(
    registry: &Registry,
    cfg: &BenchConfig,
    mut on_row: impl FnMut(&BenchRow),
    stop: &dyn Fn() -> bool,
) -> Result<BenchReport, BackendError> {
    let mut results = Vec::new();
    'suites: for &suite in &cfg.suites {
        let row = |backend: &str, op, threads, hps| BenchRow {
            backend: backend.to_string(),
            hash: suite,
            op,
            threads,
            segments: None,
            segment_len: None,
            adapter: None,
            hashes_per_sec: hps,
        };
        // Warm-up: clocks, caches and page faults before the first figure.
        measure_crate(suite, (cfg.seconds / 4.0).min(0.25));
        let crate_at = results.len();
        let mut crate_rates = Vec::new();
        for b in registry.all() {
            if !registry.availability(b.as_ref()).is_available() {
                continue;
            }
            if stop() {
                break 'suites;
            }
            crate_rates.push(measure_crate(suite, cfg.seconds / 2.0));
            let adapter = b.adapter().map(|a| a.name);
            if b.supports(suite, Operation::Eval) {
                let hps = measure_eval(b.as_ref(), suite, cfg.seconds)?;
                let mut r = row(b.name(), Operation::Eval, 1, hps);
                r.adapter = adapter.clone();
                on_row(&r);
                results.push(r);
            }
            if b.supports(suite, Operation::Verify) {
                let mut counts = vec![1];
                if cfg.threads > 1 {
                    counts.push(cfg.threads);
                }
                for threads in counts {
                    if stop() {
                        break 'suites;
                    }
                    let m = measure_verify(b.as_ref(), suite, threads, cfg.seconds)?;
                    let mut r = row(b.name(), Operation::Verify, threads, m.hashes_per_sec);
                    r.segments = Some(m.segments);
                    r.segment_len = Some(m.segment_len);
                    r.adapter = adapter.clone();
                    on_row(&r);
                    results.push(r);
                }
            }
        }
        crate_rates.push(measure_crate(suite, cfg.seconds / 2.0));
        let r = row(
            crate_row_name(suite),
            Operation::Eval,
            1,
            median(&crate_rates),
        );
        on_row(&r);
        results.insert(crate_at, r);
    }
    Ok(BenchReport {
        host: HostInfo::detect(),
        results,
        crossover: BTreeMap::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::compiled;

    #[test]
    fn a_short_run_reports_every_available_backend_and_the_crate_rows() {
        // Without the GPU backend: its availability is process-wide state
        // (named, probed, device lost) that the GPU tests running beside
        // this one change, so the rows it plans and measures could differ
        // (CI failed so: 25 rows measured, 29 planned). The GPU's bench
        // figures have their own test in `gpu::tests`.
        let registry = Registry::new(
            compiled()
                .into_iter()
                .filter(|b| b.kind() != montana_vdf::BackendKind::Gpu)
                .collect(),
        );
        let cfg = BenchConfig {
            suites: HashSuite::ALL.to_vec(),
            seconds: 0.05,
            threads: 2,
        };
        let mut seen = 0;
        let report = run(&registry, &cfg, |_| seen += 1).unwrap();
        assert_eq!(report.results.len(), planned_rows(&registry, &cfg));
        assert_eq!(seen, report.results.len());
        for suite in HashSuite::ALL {
            assert!(report.crate_rate(suite).unwrap() > 0.0);
            for b in registry
                .all()
                .iter()
                .filter(|b| b.availability().is_available())
            {
                for op in Operation::ALL {
                    if b.supports(suite, op) {
                        assert!(
                            report.results.iter().any(|r| r.backend == b.name()
                                && r.hash == suite
                                && r.op == op
                                && r.hashes_per_sec > 0.0),
                            "{} {suite}/{op}",
                            b.name()
                        );
                    }
                }
            }
        }
        let json = serde_json::to_value(&report).unwrap();
        assert!(json["host"]["cpu"].is_string());
        assert!(json["crossover"].is_object());
        let row = &json["results"][0];
        assert_eq!(row["backend"], "crate-sha2");
        assert_eq!(row["op"], "eval");
        assert!(row["segments"].is_null() && row.get("adapter").is_none());
        assert!(report.table().contains("crate-blake3"));
    }

    #[test]
    fn a_stopped_run_keeps_the_rows_measured_so_far() {
        let registry = Registry::new(vec![std::sync::Arc::new(crate::ScalarBackend)]);
        let cfg = BenchConfig {
            suites: vec![HashSuite::Sha256],
            seconds: 0.02,
            threads: 1,
        };
        let none = run_until(&registry, &cfg, |_| {}, &|| true).unwrap();
        assert!(none.results.is_empty());
        // Stop after the first row: the eval row is kept, verify is skipped.
        let rows = std::cell::Cell::new(0);
        let some = run_until(&registry, &cfg, |_| rows.set(rows.get() + 1), &|| {
            rows.get() >= 1
        })
        .unwrap();
        assert_eq!(some.results.len(), 1, "{:?}", some.results);
        assert_eq!(some.results[0].op, Operation::Eval);
    }
}
