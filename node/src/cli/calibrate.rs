//! `montana calibrate`: can this host evaluate and follow this network, and
//! with which backends? Writes the calibration file the node starts from.
//!
//! Exit codes: 0 when the host can at least follow, 3 (one line on stderr)
//! when it cannot, unless `--allow-slow`; 2 for bad input. The file is
//! written in every measured case: it records the measurements either way.
//! `--recommend-d` instead prints the D that makes a window last
//! `--window-secs` on this host (the genesis tool).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use clap::Args as ClapArgs;
use indicatif::{ProgressBar, ProgressStyle};
use montana_calibration::file::FILE_NAME;
use montana_calibration::{
    calibrate::recommend, BackendMeasurement, CalibrationError, CalibrationFile,
    CalibrationRequest, MeasureConfig, NetworkParams, Progress,
};
use montana_vdf::HashSuite;
use serde::Serialize;

use super::number::group;
use super::progress::Meter;
use super::{print_json, registry, CliError};

/// Exit code when the host cannot follow the network.
pub const CANNOT_FOLLOW: u8 = 3;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Hash suite of the network [default: sha256].
    #[arg(long, value_name = "H")]
    pub hash: Option<String>,
    /// Iterations per window [default: 325000000].
    #[arg(long, value_name = "D", value_parser = super::number::parse_positive_u64)]
    pub d: Option<u64>,
    /// Checkpoints per window proof [default: 6500].
    #[arg(long, value_name = "K", value_parser = super::number::parse_positive_u64)]
    pub checkpoints: Option<u64>,
    /// Target window duration in seconds [default: 60].
    #[arg(long, value_name = "S", value_parser = super::number::parse_positive_f64)]
    pub window_secs: Option<f64>,
    /// Take hash, d, checkpoints and window_secs from a genesis manifest.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["hash", "d", "checkpoints", "window_secs"])]
    pub genesis: Option<PathBuf>,
    /// Verification threads [default: every CPU].
    #[arg(long, value_name = "T", value_parser = super::number::parse_positive_usize)]
    pub threads: Option<usize>,
    /// Short measurements (a few seconds in all), as the node does at start-up.
    #[arg(long)]
    pub quick: bool,
    /// Length of each timed run in milliseconds (overrides the defaults).
    #[arg(long, value_name = "MS", value_parser = super::number::parse_positive_u64)]
    pub run_ms: Option<u64>,
    /// Timed runs per measurement (overrides the defaults).
    #[arg(long, value_name = "N", value_parser = super::number::parse_positive_usize)]
    pub runs: Option<usize>,
    /// Write DIR/calibration.toml (where the node looks for it).
    #[arg(long, value_name = "DIR", conflicts_with = "out")]
    pub data_dir: Option<PathBuf>,
    /// Write the calibration to FILE [default: ./calibration.toml].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Exit 0 even when this host cannot follow.
    #[arg(long)]
    pub allow_slow: bool,
    /// Print the D (a multiple of K) that makes a window last --window-secs
    /// here (full measurements take a while; add --quick for a few seconds).
    #[arg(long, requires = "window_secs", conflicts_with_all = ["d", "genesis", "data_dir", "out", "allow_slow"])]
    pub recommend_d: bool,
}

pub fn run(args: Args) -> Result<(), CliError> {
    let params = network_params(&args)?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 {
        return Err(CliError::bad_input("--threads must be at least 1"));
    }
    let mut config = if args.quick {
        MeasureConfig::quick()
    } else {
        MeasureConfig::full()
    };
    if let Some(ms) = args.run_ms {
        if ms == 0 {
            return Err(CliError::bad_input("--run-ms must be at least 1"));
        }
        let runs = args.runs.unwrap_or(config.eval_runs);
        config = MeasureConfig::uniform(Duration::from_millis(ms), runs);
    }
    if let Some(runs) = args.runs {
        if runs == 0 {
            return Err(CliError::bad_input("--runs must be at least 1"));
        }
        config.eval_runs = runs;
        config.verify_runs = runs;
    }
    let reg = registry()?;
    let req = CalibrationRequest {
        registry: &reg,
        params,
        threads,
        config,
        quick: args.quick,
        program_version: montana_calibration::PROGRAM_VERSION.into(),
    };
    let path = match (&args.data_dir, &args.out) {
        (Some(dir), _) => dir.join(FILE_NAME),
        (None, Some(out)) => out.clone(),
        (None, None) => PathBuf::from(FILE_NAME),
    };
    if !args.recommend_d {
        // Before minutes of measuring, not after.
        let flag = if args.data_dir.is_some() {
            "--data-dir"
        } else {
            "--out"
        };
        super::check_writable_file(&path, flag)?;
    }
    let bars = Bars::new();
    let progress: &dyn Progress = &bars;

    if args.recommend_d {
        if !args.quick {
            eprintln!(
                "calibrate: measuring this host's eval rate (full measurements take a while; --quick takes a few seconds)"
            );
        }
        let rec = recommend(&req, progress).map_err(from_calibration)?;
        if args.json {
            print_json(&rec);
        } else {
            println!(
                "D = {} (K = {}): a {} s window at {} steps/s with {} ({})",
                group(rec.d),
                group(rec.checkpoints),
                rec.window_secs,
                si(rec.eval_hashes_per_sec),
                rec.eval_backend,
                rec.hash.name()
            );
        }
        return Ok(());
    }

    let file = montana_calibration::calibrate(&req, progress).map_err(from_calibration)?;
    drop(bars);
    super::save_host_rates(&montana_calibration::rates::from_calibration(&file));
    file.save(&path)
        .map_err(|e| CliError::bad_input(format!("cannot write {}: {e}", path.display())))?;
    if args.json {
        print_json(&JsonReport {
            verdict: &file.verdict,
            network: &file.network,
            threads: file.settings.threads,
            quick: file.settings.quick,
            file: path.display().to_string(),
            created: &file.created,
            measurements: &file.measurements,
        });
    } else {
        print_table(&file, &path);
    }
    match file.verdict.cannot_follow_reason(&file.network) {
        Some(reason) if !args.allow_slow => Err(CliError {
            code: CANNOT_FOLLOW,
            message: reason,
        }),
        _ => Ok(()),
    }
}

/// The network: the genesis file, else the flags over Montana's defaults.
fn network_params(args: &Args) -> Result<NetworkParams, CliError> {
    if let Some(path) = &args.genesis {
        return montana_calibration::network::from_genesis_file(path).map_err(from_calibration);
    }
    let m = NetworkParams::MONTANA;
    let hash = match &args.hash {
        Some(h) => HashSuite::from_str(h)?,
        None => m.hash,
    };
    let checkpoints = args.checkpoints.unwrap_or(m.checkpoints);
    // --recommend-d measures D; any valid placeholder will do.
    let d = if args.recommend_d {
        checkpoints
    } else {
        args.d.unwrap_or(m.d)
    };
    NetworkParams::new(
        hash,
        d,
        checkpoints,
        args.window_secs.unwrap_or(m.window_secs),
    )
    .map_err(|e| from_calibration(e.into()))
}

fn from_calibration(e: CalibrationError) -> CliError {
    match e {
        CalibrationError::NothingMeasured { .. } | CalibrationError::File { .. } => {
            CliError::check_failed(e)
        }
        _ => CliError::bad_input(e),
    }
}

/// The `--json` output: the verdict's fields at top level, then the rest.
#[derive(Serialize)]
struct JsonReport<'a> {
    #[serde(flatten)]
    verdict: &'a montana_calibration::Verdict,
    #[serde(flatten)]
    network: &'a NetworkParams,
    threads: usize,
    quick: bool,
    file: String,
    created: &'a str,
    measurements: &'a [BackendMeasurement],
}

/// `12.3 M` style rates.
fn si(x: f64) -> String {
    match x {
        x if x >= 1e9 => format!("{:.2} G", x / 1e9),
        x if x >= 1e6 => format!("{:.2} M", x / 1e6),
        x if x >= 1e3 => format!("{:.2} k", x / 1e3),
        x => format!("{x:.1} "),
    }
}

fn opt_secs(x: Option<f64>) -> String {
    x.map_or("-".into(), |s| format!("{s:.3}"))
}

fn print_table(file: &CalibrationFile, path: &std::path::Path) {
    let n = &file.network;
    let d = n.d as f64;
    println!(
        "calibration for {}, D = {}, K = {}, window {} s, {} verify thread(s){}",
        n.hash.name(),
        group(n.d),
        group(n.checkpoints),
        n.window_secs,
        file.settings.threads,
        if file.settings.quick { ", quick" } else { "" }
    );
    println!(
        "{:<8} {:<6} {:>5} {:>14} {:>13} {:>14} {:>15}  note",
        "backend",
        "kind",
        "lanes",
        "eval steps/s",
        "window eval s",
        "verify steps/s",
        "window verify s"
    );
    for m in &file.measurements {
        let eval = m.eval.as_ref().map(|e| e.hashes_per_sec);
        let verify = m.verify.as_ref().map(|v| v.hashes_per_sec);
        let note: Vec<&str> = [
            m.note.as_deref(),
            m.eval_error.as_deref(),
            m.verify_error.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect();
        println!(
            "{:<8} {:<6} {:>5} {:>14} {:>13} {:>14} {:>15}  {}",
            m.backend,
            m.kind,
            m.lanes,
            eval.map_or("-".into(), si),
            opt_secs(eval.map(|r| d / r)),
            verify.map_or("-".into(), si),
            opt_secs(verify.map(|r| d / r)),
            note.join("; ")
        );
    }
    let v = &file.verdict;
    let yes = |b: bool| if b { "yes" } else { "no" };
    println!(
        "can_evaluate: {}  (window eval {} s of {} s, margin {}, backend {})",
        yes(v.can_evaluate),
        opt_secs(v.window_eval_secs),
        n.window_secs,
        v.margin
            .map_or("-".into(), |m| format!("{:.1}%", m * 100.0)),
        v.eval_backend.as_deref().unwrap_or("none")
    );
    println!(
        "can_follow:   {}  (window verify {} s, limit {} s = 25% of the window, backend {})",
        yes(v.can_follow),
        opt_secs(v.window_verify_secs),
        n.window_secs * montana_calibration::FOLLOW_SHARE,
        v.verify_backend.as_deref().unwrap_or("none")
    );
    println!("role:         {}", v.role);
    println!("written to    {}", path.display());
}

/// Progress of a calibration: one bar per measurement on a terminal;
/// otherwise a plain line every few seconds naming the measurement under
/// way (see `progress.rs`).
enum Bars {
    Terminal(Mutex<Option<ProgressBar>>),
    Plain(Meter),
}

impl Bars {
    fn new() -> Self {
        if std::io::stderr().is_terminal() {
            Bars::Terminal(Mutex::new(None))
        } else {
            Bars::Plain(Meter::new("calibrate", 0, "measurements done"))
        }
    }
}

impl Progress for Bars {
    fn begin(&self, label: &str, planned_ms: u64) {
        match self {
            Bars::Terminal(slot) => {
                let bar = ProgressBar::new(planned_ms.max(1));
                bar.set_style(
                    ProgressStyle::with_template("{msg:<22} [{bar:30}] {percent:>3}%")
                        .expect("static template")
                        .progress_chars("=> "),
                );
                bar.set_message(label.to_string());
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar);
            }
            Bars::Plain(m) => m.set_message(format!("measuring {label}")),
        }
    }

    fn update(&self, done_ms: u64) {
        match self {
            Bars::Terminal(slot) => {
                if let Some(bar) = &*slot.lock().unwrap_or_else(|e| e.into_inner()) {
                    bar.set_position(done_ms.min(bar.length().unwrap_or(done_ms)));
                }
            }
            Bars::Plain(m) => m.inc(0),
        }
    }

    fn end(&self) {
        match self {
            Bars::Terminal(slot) => {
                if let Some(bar) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    bar.finish_and_clear();
                }
            }
            Bars::Plain(m) => m.inc(1),
        }
    }
}
