//! `montana bench`: hashes per second of every available backend, next to
//! the plain crate loops, in one run.
//!
//! The measuring lives in `montana_backends::bench` (calibration reuses it);
//! this file only parses arguments and prints.

use std::sync::atomic::Ordering;

use clap::Args as ClapArgs;
use montana_backends::bench::{self, BenchConfig};
use montana_vdf::HashSuite;

use super::number::group_f64;
use super::progress::Meter;
use super::{print_json, registry, CliError};

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Measure only this suite (sha256 or blake3); both by default.
    #[arg(long = "hash", value_name = "HASH")]
    pub suite: Option<HashSuite>,
    /// Seconds per measurement (each row is the median of 5 slices of it).
    #[arg(long, default_value_t = 1.0, value_parser = super::number::parse_positive_f64)]
    pub seconds: f64,
    /// Threads for the many-thread verification rows (default: all cores).
    #[arg(long, value_parser = super::number::parse_positive_usize)]
    pub threads: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the comparison report to DIR: bench.json (with a sweep of
    /// verify throughput against batch size) and SVG plots.
    #[arg(long, value_name = "DIR")]
    pub report: Option<std::path::PathBuf>,
    /// Largest batch of the --report sweep (batches double from 1).
    #[arg(long, value_name = "N", default_value_t = 4096, requires = "report",
          value_parser = super::number::parse_positive_u64)]
    pub max_batch: u64,
    /// Steps per segment in the --report sweep.
    #[arg(long, value_name = "L", default_value_t = 1024, requires = "report",
          value_parser = super::number::parse_positive_u64)]
    pub segment_len: u64,
}

pub fn run(args: Args) -> Result<(), CliError> {
    if !(args.seconds.is_finite() && args.seconds > 0.0 && args.seconds <= 3600.0) {
        return Err(CliError::bad_input(
            "--seconds must be a number above 0 and at most 3600",
        ));
    }
    if let Some(dir) = &args.report {
        // Before minutes of measuring, not after.
        super::check_writable_dir(dir)
            .map_err(|e| CliError::bad_input(format!("--report {}: {e}", dir.display())))?;
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
    let interrupted = super::interrupt::flag();
    let stop = || interrupted.load(Ordering::Relaxed);
    let meter = Meter::new(
        "bench",
        bench::planned_rows(&reg, &cfg) as u64,
        "measurements",
    );
    let report = bench::run_until(
        &reg,
        &cfg,
        |row| {
            meter.set_message(format!(
                "{} {}/{} on {} thread(s): {} hashes/s",
                row.backend,
                row.hash,
                row.op,
                row.threads,
                group_f64(row.hashes_per_sec)
            ));
            meter.inc(1);
        },
        &stop,
    )
    .map_err(|e| CliError::check_failed(format!("benchmark failed: {e}")))?;
    meter.finish();
    super::save_host_rates(&montana_calibration::rates::from_bench(&report));
    if args.json {
        print_json(&report);
    } else {
        print!("{}", report.table());
    }
    if let Some(dir) = &args.report {
        write_report(&reg, &cfg, &args, report, dir, &stop)?;
    }
    if stop() {
        return Err(CliError::interrupted(match &args.report {
            Some(dir) => format!(
                "bench interrupted; {} holds what was measured",
                dir.display()
            ),
            None => "bench interrupted; the table holds what was measured".into(),
        }));
    }
    Ok(())
}

/// `--report DIR`: the sweep, then bench.json and the plots. An interrupted
/// sweep writes the points measured so far. Report files of an earlier run
/// that this run did not write are removed: the directory describes one run.
fn write_report(
    reg: &montana_backends::Registry,
    cfg: &BenchConfig,
    args: &Args,
    report: bench::BenchReport,
    dir: &std::path::Path,
    stop: &dyn Fn() -> bool,
) -> Result<(), CliError> {
    use montana_calibration::report;
    let sweep = report::SweepConfig {
        suites: cfg.suites.clone(),
        threads: cfg.threads,
        segment_len: args.segment_len,
        max_batch: usize::try_from(args.max_batch).unwrap_or(usize::MAX),
        seconds_per_point: cfg.seconds / 5.0,
    };
    let meter = Meter::new(
        "bench --report sweep",
        report::planned_points(reg, &sweep) as u64,
        "points",
    );
    let points = report::sweep_until(
        reg,
        &sweep,
        &mut |p| {
            meter.set_message(format!("{} {} x {}", p.backend, p.hash.name(), p.segments));
            meter.inc(1);
        },
        stop,
    )
    .map_err(|e| CliError::check_failed(format!("benchmark failed: {e}")))?;
    meter.finish();
    let full = report::build(reg, report, points);
    let files = report::write(&full, dir).map_err(CliError::bad_input)?;
    remove_stale_report_files(dir, &files);
    if !args.json {
        println!(
            "report written to {} ({} files)",
            dir.display(),
            files.len()
        );
    }
    Ok(())
}

/// Whether `name` is a file `montana bench --report` writes.
fn is_report_file(name: &str) -> bool {
    name == "bench.json"
        || (name.ends_with(".svg")
            && (name.starts_with("hashes-per-sec-") || name.starts_with("verify-vs-batch-")))
}

/// Removes report files in `dir` that are not in `written` (left by an
/// earlier run, e.g. a plot of a suite this run did not measure).
fn remove_stale_report_files(dir: &std::path::Path, written: &[std::path::PathBuf]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name();
        if is_report_file(&name.to_string_lossy()) && !written.contains(&path) {
            let _ = std::fs::remove_file(&path);
        }
    }
}
