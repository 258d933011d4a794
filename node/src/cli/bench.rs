//! `montana bench`: hashes per second of every available backend, next to
//! the plain crate loops, in one run.
//!
//! The measuring lives in `montana_backends::bench` (calibration reuses it);
//! this file only parses arguments and prints.

use std::io::IsTerminal as _;

use clap::Args as ClapArgs;
use montana_backends::bench::{self, BenchConfig};
use montana_vdf::HashSuite;

use super::{print_json, registry, CliError};

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Measure only this suite (sha256 or blake3); both by default.
    #[arg(long = "hash", value_name = "HASH")]
    pub suite: Option<HashSuite>,
    /// Seconds per measurement (each row is the median of 5 slices of it).
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
    /// Threads for the many-thread verification rows (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the comparison report to DIR: bench.json (with a sweep of
    /// verify throughput against batch size) and SVG plots.
    #[arg(long, value_name = "DIR")]
    pub report: Option<std::path::PathBuf>,
    /// Largest batch of the --report sweep (batches double from 1).
    #[arg(long, value_name = "N", default_value_t = 4096, requires = "report")]
    pub max_batch: usize,
    /// Steps per segment in the --report sweep.
    #[arg(long, value_name = "L", default_value_t = 1024, requires = "report")]
    pub segment_len: u64,
}

pub fn run(args: Args) -> Result<(), CliError> {
    if !(args.seconds.is_finite() && args.seconds > 0.0 && args.seconds <= 3600.0) {
        return Err(CliError::bad_input(
            "--seconds must be a number above 0 and at most 3600",
        ));
    }
    if args.threads == Some(0) {
        return Err(CliError::bad_input("--threads must be at least 1"));
    }
    let reg = registry()?;
    let mut cfg = BenchConfig {
        seconds: args.seconds,
        ..BenchConfig::default()
    };
    if let Some(s) = args.suite {
        cfg.suites = vec![s];
    }
    if let Some(t) = args.threads {
        cfg.threads = t;
    }
    let live = std::io::stderr().is_terminal();
    let report = bench::run(&reg, &cfg, |row| {
        if live {
            eprintln!(
                "measured {} {}/{} on {} thread(s): {:.0} hashes/s",
                row.backend, row.hash, row.op, row.threads, row.hashes_per_sec
            );
        }
    })
    .map_err(|e| CliError::check_failed(format!("benchmark failed: {e}")))?;
    if args.json {
        print_json(&report);
    } else {
        print!("{}", report.table());
    }
    if let Some(dir) = &args.report {
        write_report(&reg, &cfg, &args, report, dir)?;
    }
    Ok(())
}

/// `--report DIR`: the sweep, then bench.json and the plots.
fn write_report(
    reg: &montana_backends::Registry,
    cfg: &BenchConfig,
    args: &Args,
    report: bench::BenchReport,
    dir: &std::path::Path,
) -> Result<(), CliError> {
    use montana_calibration::report;
    if args.max_batch == 0 || args.segment_len == 0 {
        return Err(CliError::bad_input(
            "--max-batch and --segment-len must be at least 1",
        ));
    }
    let sweep = report::SweepConfig {
        suites: cfg.suites.clone(),
        threads: cfg.threads,
        segment_len: args.segment_len,
        max_batch: args.max_batch,
        seconds_per_point: cfg.seconds / 5.0,
    };
    let points = report::sweep(reg, &sweep)
        .map_err(|e| CliError::check_failed(format!("benchmark failed: {e}")))?;
    let full = report::build(reg, report, points);
    let files = report::write(&full, dir).map_err(CliError::bad_input)?;
    if !args.json {
        println!(
            "report written to {} ({} files)",
            dir.display(),
            files.len()
        );
    }
    Ok(())
}
