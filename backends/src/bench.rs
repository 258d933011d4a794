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

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use montana_vdf::{
    Backend, BackendError, ChainParams, EvalControl, Hash32, HashSuite, Operation, Segment,
    VerifyOptions, VerifyOutcome,
};
use serde::Serialize;

use crate::platform::Platform;
use crate::registry::Registry;
use crate::scalar;

/// Timed slices per measurement; the reported rate is their median.
pub const SLICES: usize = 5;

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

/// The machine a report comes from.
#[derive(Clone, Debug, Serialize)]
pub struct HostInfo {
    pub cpu: String,
    pub features: Vec<String>,
}

impl HostInfo {
    /// This host: the CPU model name and the detected SIMD features.
    pub fn detect() -> HostInfo {
        HostInfo {
            cpu: cpu_model().unwrap_or_else(|| std::env::consts::ARCH.to_string()),
            features: Platform::get()
                .feature_names()
                .into_iter()
                .map(String::from)
                .collect(),
        }
    }
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

/// One measured figure.
#[derive(Clone, Debug, Serialize)]
pub struct BenchRow {
    /// A backend name, or `crate-sha2` / `crate-blake3` for the plain loops.
    pub backend: String,
    pub hash: HashSuite,
    pub op: Operation,
    pub threads: usize,
    /// Verification batch size K (verify rows only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segments: Option<usize>,
    /// Steps per segment L (verify rows only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment_len: Option<u64>,
    /// The GPU adapter (GPU rows only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adapter: Option<String>,
    pub hashes_per_sec: f64,
}

/// A whole run: `montana bench --json` prints exactly this.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub host: HostInfo,
    pub results: Vec<BenchRow>,
    /// Batch sizes from which one engine overtakes another (filled once a GPU
    /// backend exists; empty for CPU-only builds).
    pub crossover: BTreeMap<String, serde_json::Value>,
}

/// The plain-crate row name for a suite.
pub fn crate_row_name(suite: HashSuite) -> &'static str {
    match suite {
        HashSuite::Sha256 => "crate-sha2",
        HashSuite::Blake3 => "crate-blake3",
    }
}

/// Runs `work(n)` (which does about n hashes and returns how many it did) in
/// slices of about `budget / SLICES`, after sizing n, and returns the median
/// hashes per second.
fn median_rate(
    budget: Duration,
    mut work: impl FnMut(u64) -> Result<u64, BackendError>,
) -> Result<f64, BackendError> {
    let slice = budget / SLICES as u32;
    let mut n = 256u64;
    // Size one call to about a fifth of a slice (at least ~2 ms).
    let target = (slice / 5).max(Duration::from_millis(2));
    loop {
        let t = Instant::now();
        work(n)?;
        let dt = t.elapsed();
        if dt >= target || n >= 1 << 40 {
            break;
        }
        let grow = (target.as_secs_f64() / dt.as_secs_f64().max(1e-6)).clamp(1.5, 16.0);
        n = ((n as f64) * grow) as u64;
    }
    let mut rates = Vec::with_capacity(SLICES);
    for _ in 0..SLICES {
        let t = Instant::now();
        let mut done = 0u64;
        while t.elapsed() < slice || done == 0 {
            done += work(n)?;
        }
        rates.push(done as f64 / t.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    Ok(rates[SLICES / 2])
}

fn budget(seconds: f64) -> Duration {
    Duration::from_secs_f64(seconds.clamp(0.05, 3600.0))
}

/// The plain crate loop on one core: `sha2::Sha256::digest` or `blake3::hash`.
pub fn measure_crate(suite: HashSuite, seconds: f64) -> f64 {
    let mut v = Hash32([0x5a; 32]);
    let rate = median_rate(budget(seconds), |n| {
        scalar::advance(suite, &mut v, n);
        Ok(n)
    });
    std::hint::black_box(v);
    rate.unwrap_or(0.0)
}

/// One chain through `backend.evaluate`, hashes per second.
pub fn measure_eval(
    backend: &dyn Backend,
    suite: HashSuite,
    seconds: f64,
) -> Result<f64, BackendError> {
    let mut v = Hash32([0xa5; 32]);
    median_rate(budget(seconds), |n| {
        let params = ChainParams::new(n, 1)?;
        v = backend.evaluate(suite, &v, params, &EvalControl::none())?[0];
        Ok(n)
    })
}

/// A verification measurement and the batch shape it used.
#[derive(Clone, Copy, Debug)]
pub struct VerifyRate {
    pub segments: usize,
    pub segment_len: u64,
    pub hashes_per_sec: f64,
}

/// Verification on `threads` threads: a batch of `lanes x threads x 4`
/// segments (every lane of every thread busy, with slack for stealing),
/// segment length sized to the budget; hashes per second over the batch.
pub fn measure_verify(
    backend: &dyn Backend,
    suite: HashSuite,
    threads: usize,
    seconds: f64,
) -> Result<VerifyRate, BackendError> {
    let threads = threads.max(1);
    let segments = backend.lanes().max(1) * threads * 4;
    let opts = VerifyOptions::threads(threads);
    // Segment length: grown until one batch takes about a fifth of a slice.
    let target = (budget(seconds) / (5 * SLICES as u32)).max(Duration::from_millis(2));
    let start = Hash32([0x3c; 32]);
    let mut len = 16u64;
    let batch = |len: u64| {
        let seg = Segment {
            start,
            end: suite.iterate(&start, len),
            steps: len,
        };
        vec![seg; segments]
    };
    let mut segs = batch(len);
    loop {
        let t = Instant::now();
        check(backend.verify(suite, &segs, &opts)?)?;
        let dt = t.elapsed();
        if dt >= target || len >= 1 << 30 {
            break;
        }
        let grow = (target.as_secs_f64() / dt.as_secs_f64().max(1e-6)).clamp(1.5, 16.0);
        len = ((len as f64) * grow) as u64;
        segs = batch(len);
    }
    let per_call = (segments as u64) * len;
    let rate = median_rate(budget(seconds), |n| {
        let batches = n.div_ceil(per_call).max(1);
        for _ in 0..batches {
            check(backend.verify(suite, &segs, &opts)?)?;
        }
        Ok(batches * per_call)
    })?;
    Ok(VerifyRate {
        segments,
        segment_len: len,
        hashes_per_sec: rate,
    })
}

fn check(o: VerifyOutcome) -> Result<(), BackendError> {
    match o {
        VerifyOutcome::Valid => Ok(()),
        VerifyOutcome::Invalid { first_bad_segment } => Err(BackendError::Device {
            backend: "bench".into(),
            message: format!("rejected a valid benchmark segment ({first_bad_segment})"),
        }),
    }
}

/// Measures the crate loops and every available backend of `registry` for
/// each suite of `cfg`; `on_row` sees each row as it is measured.
pub fn run(
    registry: &Registry,
    cfg: &BenchConfig,
    mut on_row: impl FnMut(&BenchRow),
) -> Result<BenchReport, BackendError> {
    let mut results = Vec::new();
    let mut push = |row: BenchRow, results: &mut Vec<BenchRow>| {
        on_row(&row);
        results.push(row);
    };
    for &suite in &cfg.suites {
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
        let hps = measure_crate(suite, cfg.seconds);
        push(
            row(crate_row_name(suite), Operation::Eval, 1, hps),
            &mut results,
        );
        for b in registry.all() {
            if !registry.availability(b.as_ref()).is_available() {
                continue;
            }
            let adapter = b.adapter().map(|a| a.name);
            if b.supports(suite, Operation::Eval) {
                let hps = measure_eval(b.as_ref(), suite, cfg.seconds)?;
                let mut r = row(b.name(), Operation::Eval, 1, hps);
                r.adapter = adapter.clone();
                push(r, &mut results);
            }
            if b.supports(suite, Operation::Verify) {
                let mut counts = vec![1];
                if cfg.threads > 1 {
                    counts.push(cfg.threads);
                }
                for threads in counts {
                    let m = measure_verify(b.as_ref(), suite, threads, cfg.seconds)?;
                    let mut r = row(b.name(), Operation::Verify, threads, m.hashes_per_sec);
                    r.segments = Some(m.segments);
                    r.segment_len = Some(m.segment_len);
                    r.adapter = adapter.clone();
                    push(r, &mut results);
                }
            }
        }
    }
    Ok(BenchReport {
        host: HostInfo::detect(),
        results,
        crossover: BTreeMap::new(),
    })
}

impl BenchReport {
    /// The plain-crate rate of a suite in this report.
    pub fn crate_rate(&self, suite: HashSuite) -> Option<f64> {
        self.results
            .iter()
            .find(|r| r.hash == suite && r.backend == crate_row_name(suite))
            .map(|r| r.hashes_per_sec)
    }

    /// A fixed-width table, with each rate also as a ratio to its suite's
    /// crate loop.
    pub fn table(&self) -> String {
        let mut out = format!(
            "host: {} [{}]\n{:<14} {:<7} {:<7} {:>7} {:>9} {:>11} {:>14} {:>9}\n",
            self.host.cpu,
            self.host.features.join(", "),
            "backend",
            "hash",
            "op",
            "threads",
            "segments",
            "segment_len",
            "hashes/s",
            "x crate"
        );
        for r in &self.results {
            let ratio = self
                .crate_rate(r.hash)
                .filter(|c| *c > 0.0)
                .map(|c| format!("{:.2}", r.hashes_per_sec / c))
                .unwrap_or_else(|| "-".into());
            let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            out.push_str(&format!(
                "{:<14} {:<7} {:<7} {:>7} {:>9} {:>11} {:>14.0} {:>9}\n",
                r.backend,
                r.hash.name(),
                r.op.name(),
                r.threads,
                opt(r.segments.map(|s| s.to_string())),
                opt(r.segment_len.map(|s| s.to_string())),
                r.hashes_per_sec,
                ratio
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::compiled;

    #[test]
    fn a_short_run_reports_every_available_backend_and_the_crate_rows() {
        let registry = Registry::new(compiled());
        let cfg = BenchConfig {
            suites: HashSuite::ALL.to_vec(),
            seconds: 0.05,
            threads: 2,
        };
        let report = run(&registry, &cfg, |_| {}).unwrap();
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
        assert!(row.get("segments").is_none());
        assert!(report.table().contains("crate-blake3"));
    }
}
