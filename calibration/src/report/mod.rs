//! `montana bench --report DIR`: the comparison report for benchmark authors.
//!
//! The `montana bench` measurements (every backend next to the plain crate
//! loops) plus a sweep of verification throughput against batch size, as
//! JSON and as SVG plots drawn with `plotters`:
//!
//! - `bench.json`: the bench report (`host`, `results`, `crossover`) and the
//!   sweep (`verify_vs_batch`).
//! - `hashes-per-sec-<suite>.svg`: one bar per backend, operation and thread
//!   count.
//! - `verify-vs-batch-<suite>.svg`: throughput against batch size, one line
//!   per backend: where a GPU overtakes the CPU (a GPU pays a fixed cost per
//!   call, so it wins only on batches large enough to fill it).
//!
//! `crossover` names, for each GPU backend, the smallest swept batch from
//! which on it beats every CPU backend at every larger batch (`null` when it
//! never does).

mod plot;
mod sweep;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use montana_backends::bench::BenchReport;
use montana_backends::Registry;
use montana_vdf::{BackendKind, HashSuite};
use serde::Serialize;

pub use sweep::{planned_points, sweep, sweep_until, BatchPoint, SweepConfig};

/// Everything `bench.json` holds.
#[derive(Clone, Debug, Serialize)]
pub struct ComparisonReport {
    #[serde(flatten)]
    pub bench: BenchReport,
    pub verify_vs_batch: Vec<BatchPoint>,
}

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {path}: {message}")]
    Write { path: String, message: String },
    #[error("cannot draw {plot}: {message}")]
    Plot { plot: String, message: String },
}

/// Builds the report: `bench` plus the sweep, with `crossover` filled in.
pub fn build(
    registry: &Registry,
    mut bench: BenchReport,
    points: Vec<BatchPoint>,
) -> ComparisonReport {
    let gpus: Vec<&str> = registry
        .all()
        .iter()
        .filter(|b| b.kind() == BackendKind::Gpu)
        .map(|b| b.name())
        .collect();
    for suite in HashSuite::ALL {
        for gpu in &gpus {
            if points.iter().any(|p| p.hash == suite && p.backend == *gpu) {
                bench.crossover.insert(
                    format!("{gpu}/{}", suite.name()),
                    crossover(&points, suite, gpu, &gpus),
                );
            }
        }
    }
    ComparisonReport {
        bench,
        verify_vs_batch: points,
    }
}

/// `{"batch": n, "over": best CPU backend there}` or `{"batch": null}`.
fn crossover(
    points: &[BatchPoint],
    suite: HashSuite,
    gpu: &str,
    gpus: &[&str],
) -> serde_json::Value {
    /// Per batch size: the GPU's rate and the best CPU backend's.
    type Contest<'a> = (Option<f64>, Option<(&'a str, f64)>);
    let mut by_batch: BTreeMap<usize, Contest> = BTreeMap::new();
    for p in points.iter().filter(|p| p.hash == suite) {
        let e = by_batch.entry(p.segments).or_default();
        if p.backend == gpu {
            e.0 = Some(p.hashes_per_sec);
        } else if !gpus.contains(&p.backend.as_str())
            && e.1.is_none_or(|(_, r)| p.hashes_per_sec > r)
        {
            e.1 = Some((&p.backend, p.hashes_per_sec));
        }
    }
    // Walk from the largest batch down while the GPU stays ahead.
    let mut from = None;
    for (batch, (g, cpu)) in by_batch.iter().rev() {
        match (g, cpu) {
            (Some(g), Some((name, c))) if g >= c => from = Some((*batch, *name)),
            (Some(_), None) => {}
            _ => break,
        }
    }
    match from {
        Some((batch, over)) => serde_json::json!({ "batch": batch, "over": over }),
        None => serde_json::json!({ "batch": null }),
    }
}

/// Writes `bench.json` and the plots into `dir` (created if needed);
/// returns the files written.
pub fn write(report: &ComparisonReport, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    let io = |path: &Path, e: std::io::Error| ReportError::Write {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let mut written = Vec::new();
    let mut put = |name: String, text: String| -> Result<(), ReportError> {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| io(&path, e))?;
        written.push(path);
        Ok(())
    };
    put(
        "bench.json".into(),
        serde_json::to_string_pretty(report).expect("a report is plain data") + "\n",
    )?;
    let suites: Vec<HashSuite> = HashSuite::ALL
        .into_iter()
        .filter(|s| report.bench.results.iter().any(|r| r.hash == *s))
        .collect();
    for suite in suites {
        let name = format!("hashes-per-sec-{}.svg", suite.name());
        let svg = plot::rates(&report.bench, suite).map_err(|message| ReportError::Plot {
            plot: name.clone(),
            message,
        })?;
        put(name, svg)?;
        if report.verify_vs_batch.iter().any(|p| p.hash == suite) {
            let name = format!("verify-vs-batch-{}.svg", suite.name());
            let svg = plot::verify_vs_batch(&report.verify_vs_batch, suite, &report.bench.host.cpu)
                .map_err(|message| ReportError::Plot {
                    plot: name.clone(),
                    message,
                })?;
            put(name, svg)?;
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(backend: &str, segments: usize, hps: f64) -> BatchPoint {
        BatchPoint {
            backend: backend.into(),
            hash: HashSuite::Sha256,
            threads: 2,
            segments,
            segment_len: 1024,
            adapter: None,
            hashes_per_sec: hps,
        }
    }

    #[test]
    fn crossover_is_where_the_gpu_stays_ahead() {
        let pts = vec![
            point("gpu", 1, 1.0),
            point("avx2", 1, 50.0),
            point("scalar", 1, 10.0),
            point("gpu", 64, 60.0),
            point("avx2", 64, 50.0),
            point("gpu", 16, 55.0),
            point("avx2", 16, 50.0),
            point("gpu", 4, 40.0),
            point("avx2", 4, 50.0),
        ];
        let c = crossover(&pts, HashSuite::Sha256, "gpu", &["gpu"]);
        assert_eq!(c, serde_json::json!({"batch": 16, "over": "avx2"}));
        let slow: Vec<BatchPoint> = pts.iter().filter(|p| p.segments < 16).cloned().collect();
        assert_eq!(
            crossover(&slow, HashSuite::Sha256, "gpu", &["gpu"]),
            serde_json::json!({"batch": null})
        );
    }
}
