//! The per-host rate cache: what `montana bench` and `montana calibrate`
//! measured on this host, kept so that `auto` picks from measurements
//! everywhere (`montana vdf`, the devnet, a node started with
//! `--skip-calibration`), not only where a node's calibration file exists.
//!
//! One TOML file per host, named after [`host_key`] (the CPU model, its
//! hashing features, the logical CPU count and the program version: what
//! the rates depend on; GPUs are not probed for it, and a GPU that is gone
//! is simply unavailable at resolution). The CLI decides where it lives
//! (`$XDG_CACHE_HOME/montana/`, else `~/.cache/montana/`) and passes the path
//! in. A write merges: a rate replaces the earlier one of the same backend,
//! suite, operation and thread count. A cache that does not parse is
//! ignored (the caller warns once) and rewritten by the next measurement.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use montana_backends::{Ranking, Rate};
use montana_vdf::{HashSuite, Operation};
use serde::{Deserialize, Serialize};

use crate::file::CalibrationFile;

/// The cache format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// One rate as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Row {
    backend: String,
    hash: String,
    op: String,
    threads: usize,
    hashes_per_sec: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct CacheFile {
    format: u32,
    host: String,
    #[serde(default)]
    rates: Vec<Row>,
}

/// The key of this host: 16 hex digits of SHA-256 over what rates depend on.
pub fn host_key(program_version: &str) -> String {
    let (model, features, cpus) = crate::fingerprint::cpu_identity();
    let text = format!("{model}\n{}\n{cpus}\n{program_version}", features.join(" "));
    HashSuite::Sha256.hash(text.as_bytes()).to_hex()[..16].to_string()
}

/// The cache file's name for `key` (in the directory the CLI chose).
pub fn file_name(key: &str) -> String {
    format!("rates-{key}.toml")
}

fn parse_op(s: &str) -> Option<Operation> {
    Operation::ALL.into_iter().find(|o| o.name() == s)
}

/// The rates in the cache at `path`: `Ok(None)` when there is none,
/// `Err(why)` (one line) when it exists but cannot be used.
pub fn load(path: &Path) -> Result<Option<Vec<Rate>>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let bad = |m: String| format!("{}: {m}", path.display());
    let file: CacheFile = toml::from_str(&text).map_err(|e| {
        bad(e
            .to_string()
            .lines()
            .next()
            .unwrap_or("invalid TOML")
            .to_string())
    })?;
    if file.format != FORMAT_VERSION {
        return Err(bad(format!(
            "format {} (this build reads {FORMAT_VERSION})",
            file.format
        )));
    }
    file.rates
        .into_iter()
        .map(|r| {
            let suite = HashSuite::from_str(&r.hash).map_err(|e| bad(e.to_string()))?;
            let op = parse_op(&r.op).ok_or_else(|| bad(format!("unknown operation '{}'", r.op)))?;
            if !(r.hashes_per_sec.is_finite() && r.hashes_per_sec > 0.0) || r.threads == 0 {
                return Err(bad(format!("impossible rate for {}", r.backend)));
            }
            Ok(Rate {
                backend: r.backend,
                suite,
                op,
                threads: r.threads,
                hashes_per_sec: r.hashes_per_sec,
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// `auto`'s ranking on this host: the cache's rates, else the static ranks.
/// The second value is a warning line when a cache exists but was ignored.
pub fn ranking_at(path: Option<&Path>) -> (Ranking, Option<String>) {
    match path.map(load) {
        Some(Ok(Some(rates))) if !rates.is_empty() => (Ranking::Measured(rates), None),
        Some(Err(why)) => (
            Ranking::Static,
            Some(format!(
                "ignoring the rate cache ({why}); using the static ranking"
            )),
        ),
        _ => (Ranking::Static, None),
    }
}

/// Merges `rates` into the cache at `path` (created with its directory; an
/// unusable old cache is replaced), written atomically.
pub fn save(path: &Path, host: &str, rates: &[Rate]) -> std::io::Result<()> {
    let mut all = load(path).ok().flatten().unwrap_or_default();
    all.retain(|old| {
        !rates.iter().any(|new| {
            new.backend == old.backend
                && new.suite == old.suite
                && new.op == old.op
                && new.threads == old.threads
        })
    });
    all.extend(rates.iter().cloned());
    let file = CacheFile {
        format: FORMAT_VERSION,
        host: host.to_string(),
        rates: all
            .into_iter()
            .map(|r| Row {
                backend: r.backend,
                hash: r.suite.name().to_string(),
                op: r.op.name().to_string(),
                threads: r.threads,
                hashes_per_sec: r.hashes_per_sec,
            })
            .collect(),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let text = toml::to_string_pretty(&file).expect("rates are plain data");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// The rates a calibration measured (eligible backends).
pub fn from_calibration(file: &CalibrationFile) -> Vec<Rate> {
    match crate::calibrate::ranking(file.network.hash, &file.measurements) {
        Ranking::Measured(rates) => rates,
        Ranking::Static => Vec::new(),
    }
}

/// The rates of a `montana bench` report (its crate rows left out).
pub fn from_bench(report: &montana_backends::bench::BenchReport) -> Vec<Rate> {
    report
        .results
        .iter()
        .filter(|r| !r.backend.starts_with("crate-"))
        .map(|r| Rate {
            backend: r.backend.clone(),
            suite: r.hash,
            op: r.op,
            threads: r.threads,
            hashes_per_sec: r.hashes_per_sec,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(backend: &str, op: Operation, threads: usize, hps: f64) -> Rate {
        Rate {
            backend: backend.into(),
            suite: HashSuite::Sha256,
            op,
            threads,
            hashes_per_sec: hps,
        }
    }

    #[test]
    fn the_cache_round_trips_and_merges() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(file_name("abc"));
        assert_eq!(load(&path), Ok(None));
        assert_eq!(ranking_at(Some(&path)), (Ranking::Static, None));
        let first = [
            rate("sha-ni", Operation::Verify, 1, 100.0),
            rate("avx512", Operation::Verify, 1, 200.0),
        ];
        save(&path, "abc", &first).unwrap();
        assert_eq!(load(&path).unwrap().unwrap(), first);
        // A new sha-ni rate replaces the old one; other rates stay.
        let again = [
            rate("sha-ni", Operation::Verify, 1, 300.0),
            rate("sha-ni", Operation::Verify, 2, 500.0),
        ];
        save(&path, "abc", &again).unwrap();
        let rates = load(&path).unwrap().unwrap();
        assert_eq!(rates.len(), 3, "{rates:?}");
        let (ranking, warning) = ranking_at(Some(&path));
        assert_eq!(warning, None);
        assert_eq!(
            ranking.rate("sha-ni", HashSuite::Sha256, Operation::Verify),
            Some(300.0)
        );
        assert_eq!(
            ranking.rate("avx512", HashSuite::Sha256, Operation::Verify),
            Some(200.0)
        );
    }

    #[test]
    fn a_corrupt_cache_is_ignored_with_one_warning_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file_name("k"));
        for text in [
            "not = [toml",
            "format = 9\nhost = \"k\"\n",
            "format = 1\nhost = \"k\"\n[[rates]]\nbackend = \"x\"\nhash = \"md5\"\nop = \"eval\"\nthreads = 1\nhashes_per_sec = 1.0\n",
            "format = 1\nhost = \"k\"\n[[rates]]\nbackend = \"x\"\nhash = \"sha256\"\nop = \"eval\"\nthreads = 1\nhashes_per_sec = -1.0\n",
        ] {
            std::fs::write(&path, text).unwrap();
            let (ranking, warning) = ranking_at(Some(&path));
            assert_eq!(ranking, Ranking::Static, "{text}");
            let warning = warning.expect("one warning");
            assert!(!warning.contains('\n'), "{warning}");
            assert!(warning.contains(&path.display().to_string()), "{warning}");
        }
        save(&path, "k", &[rate("scalar", Operation::Eval, 1, 9.0)]).unwrap();
        assert_eq!(load(&path).unwrap().unwrap().len(), 1);
    }

    #[test]
    fn the_host_key_is_stable_and_depends_on_the_version() {
        let a = host_key("montana 0.1.0");
        assert_eq!(a.len(), 16);
        assert_eq!(a, host_key("montana 0.1.0"));
        assert_ne!(a, host_key("montana 0.2.0"));
    }
}
