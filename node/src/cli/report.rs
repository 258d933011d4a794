//! `montana report --soak FILE [--status ADDR...] [--logs FILE...] [--out DIR]`:
//! the retrospective of a soak (logic in `montana_node::ops::report`).
//! Prints one line per component verdict; exit 1 if any verdict is FAIL.

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args as ClapArgs;
use montana_node::ops::report::{self, ReportInput, Verdict};
use montana_node::ops::soak;
use montana_node::status;

use super::CliError;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// The soak file written by `montana soak` (FILE.1 is read first when present).
    #[arg(long, value_name = "FILE")]
    pub soak: PathBuf,
    /// Also show these nodes' live /status (HOST:PORT).
    #[arg(long = "status", value_name = "ADDR", num_args = 1..)]
    pub status: Vec<String>,
    /// Node logs to count the most frequent warnings and errors in.
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub logs: Vec<PathBuf>,
    /// Directory for report.md and the SVG plots.
    #[arg(long, value_name = "DIR", default_value = "soak-report")]
    pub out: PathBuf,
}

pub fn run(a: Args) -> Result<(), CliError> {
    let records = soak::read_records(&a.soak).map_err(CliError::bad_input)?;
    let problems = if a.logs.is_empty() {
        None
    } else {
        Some(report::frequent_problems(&a.logs).map_err(CliError::bad_input)?)
    };
    let live: Vec<(String, Result<status::StatusSnapshot, String>)> = a
        .status
        .iter()
        .map(|text| {
            let s = text
                .to_socket_addrs()
                .ok()
                .and_then(|mut x| x.next())
                .ok_or_else(|| format!("invalid status address {text:?}"))
                .and_then(|addr| {
                    status::fetch(addr, Duration::from_secs(5)).map_err(|e| e.to_string())
                });
            (text.clone(), s)
        })
        .collect();
    let input = ReportInput {
        soak_path: &a.soak,
        records: &records,
        live: &live,
        problems: problems.as_deref(),
    };
    let analysis = report::write(&a.out, &input).map_err(CliError::bad_input)?;
    for v in &analysis.verdicts {
        println!("{:<10} {:<7} {}", v.component, v.verdict.name(), v.evidence);
    }
    println!(
        "wrote {} ({} records)",
        a.out.join(report::REPORT_FILE).display(),
        records.len()
    );
    if analysis.verdicts.iter().any(|v| v.verdict == Verdict::Fail) {
        return Err(CliError::check_failed(
            "a component failed its rule (see the report)",
        ));
    }
    Ok(())
}
