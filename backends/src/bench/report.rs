//! What a run produced: rows, the host, and their table and JSON forms.

use std::collections::BTreeMap;

use montana_vdf::{HashSuite, Operation};
use serde::Serialize;

use crate::platform::Platform;

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
    /// Verification batch size K (verify rows; `null` for eval rows).
    pub segments: Option<usize>,
    /// Steps per segment L (verify rows; `null` for eval rows).
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
    /// The human table; rates grouped in thousands (`115,201,469`).
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
                "{:<14} {:<7} {:<7} {:>7} {:>9} {:>11} {:>14} {:>9}\n",
                r.backend,
                r.hash.name(),
                r.op.name(),
                r.threads,
                opt(r.segments.map(|s| s.to_string())),
                opt(r.segment_len.map(|s| s.to_string())),
                grouped(r.hashes_per_sec),
                ratio
            ));
        }
        out
    }
}

/// A rate rounded to an integer with thousands separators.
fn grouped(x: f64) -> String {
    if !(x.is_finite() && x >= 0.0) {
        return format!("{x:.0}");
    }
    let digits = format!("{x:.0}");
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod grouping_tests {
    #[test]
    fn rates_are_grouped_in_thousands() {
        assert_eq!(super::grouped(115_201_469.4), "115,201,469");
        assert_eq!(super::grouped(999.0), "999");
        assert_eq!(super::grouped(1_000.0), "1,000");
        assert_eq!(super::grouped(0.0), "0");
    }
}
