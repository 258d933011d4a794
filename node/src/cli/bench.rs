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
    Ok(())
}
