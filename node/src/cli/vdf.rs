//! `montana vdf eval | verify | timechain`: proofs from the command line.
//!
//! `eval --json` writes the proof JSON of `montana_vdf::json` plus `backend`
//! and `seconds`; `verify` reads it back (from a file or standard input) and
//! answers `{"valid":true,...}` (exit 0) or `{"valid":false,
//! "first_bad_segment":i,...}` (exit 1).

use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Subcommand};
use montana_backends::PinScope;
use montana_vdf::json::ProofJson;
use montana_vdf::{
    Backend, ChainParams, EvalControl, Hash32, HashSuite, Operation, TimeChain, VerifyOptions,
    VerifyOutcome,
};
use serde::Serialize;

use super::number::{group, group_f64};
use super::{host_ranking, print_json, progress, registry_with, CliError};

#[derive(Subcommand, Debug)]
pub enum VdfCommand {
    /// Evaluate one chain and print its checkpointed proof.
    Eval(EvalArgs),
    /// Verify a proof (JSON, from FILE or standard input).
    Verify(VerifyArgs),
    /// Compute the TimeChain value T(W) from genesis.
    Timechain(TimechainArgs),
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Hash suite: sha256 or blake3.
    #[arg(long = "hash", value_name = "HASH", default_value = "sha256")]
    pub suite: HashSuite,
    /// Start value, 64 hex digits (default: the suite's TimeChain genesis value T0).
    #[arg(long)]
    pub seed: Option<Hash32>,
    /// N, the number of steps (1..=2^40).
    #[arg(long, value_parser = super::number::parse_positive_u64)]
    pub iterations: u64,
    /// K, evenly spaced checkpoints (must divide N).
    #[arg(long, default_value_t = 1, value_parser = super::number::parse_positive_u64)]
    pub checkpoints: u64,
    /// Backend name, or auto.
    #[arg(long, default_value = "auto")]
    pub backend: String,
    /// Print the proof as JSON (the input of `montana vdf verify`).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Backend name, or auto.
    #[arg(long, default_value = "auto")]
    pub backend: String,
    /// Worker threads (default: all cores).
    #[arg(long, value_parser = super::number::parse_positive_usize)]
    pub threads: Option<usize>,
    /// Proof JSON file; standard input when absent or "-".
    pub file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct TimechainArgs {
    /// W, the window whose value T(W) to compute (0 = genesis).
    #[arg(long, value_parser = super::number::parse_u64)]
    pub windows: u64,
    /// D, steps per window.
    #[arg(long, value_parser = super::number::parse_positive_u64)]
    pub d: u64,
    /// Hash suite: sha256 or blake3.
    #[arg(long = "hash", value_name = "HASH", default_value = "sha256")]
    pub suite: HashSuite,
    /// Backend name, or auto.
    #[arg(long, default_value = "auto")]
    pub backend: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: VdfCommand) -> Result<(), CliError> {
    match cmd {
        VdfCommand::Eval(a) => eval(a),
        VdfCommand::Verify(a) => verify(a),
        VdfCommand::Timechain(a) => timechain(a),
    }
}

#[derive(Serialize)]
struct EvalOutput {
    #[serde(flatten)]
    proof: ProofJson,
    backend: &'static str,
    seconds: f64,
}

fn eval(a: EvalArgs) -> Result<(), CliError> {
    let params = ChainParams::new(a.iterations, a.checkpoints)?;
    let backend = registry_with(Some(&a.backend), PinScope::Exactly)?
        .resolve(a.suite, Operation::Eval, &host_ranking())?
        .backend;
    let seed = a.seed.unwrap_or_else(|| TimeChain::new(a.suite, 1).t0());

    let meter = progress::Meter::steps("vdf eval", params.iterations());
    let report = |done: u64| meter.set_position(done);
    let ctl = EvalControl {
        cancel: None,
        progress: Some(&report),
    };
    let started = Instant::now();
    let proof = backend.prove(a.suite, &seed, params, &ctl)?;
    let seconds = started.elapsed().as_secs_f64();
    meter.finish();

    if a.json {
        print_json(&EvalOutput {
            proof: ProofJson::from(&proof),
            backend: backend.name(),
            seconds,
        });
    } else {
        println!("hash        {}", a.suite);
        println!("seed        {}", proof.start());
        println!("iterations  {}", group(proof.iterations()));
        println!("checkpoints {}", group(proof.checkpoints().len() as u64));
        println!("output      {}", proof.output());
        println!(
            "backend     {} ({:.3} s, {} steps/s)",
            backend.name(),
            seconds,
            group_f64(proof.iterations() as f64 / seconds.max(1e-9))
        );
    }
    Ok(())
}

#[derive(Serialize)]
struct VerifyOutput {
    valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_bad_segment: Option<usize>,
    hash: HashSuite,
    iterations: u64,
    checkpoints: usize,
    backend: &'static str,
    seconds: f64,
}

fn verify(a: VerifyArgs) -> Result<(), CliError> {
    let opts = match a.threads {
        Some(0) => return Err(CliError::bad_input("--threads must be at least 1")),
        Some(t) => VerifyOptions::threads(t),
        None => VerifyOptions::default(),
    };
    let text = read_input(a.file.as_ref())?;
    let proof = montana_vdf::json::from_str(&text)?;
    // Resolved as a node resolves (one path): the backend comes in the
    // fallback wrapper, so one that fails on the device (a GPU lost),
    // flunks the known-bad sample or rejects a segment the scalar oracle
    // accepts is left for the next in the ranking; `backend` names the one
    // that answered.
    let backend = registry_with(Some(&a.backend), PinScope::Exactly)?
        .resolve(proof.suite(), Operation::Verify, &host_ranking())?
        .backend;
    let segments = proof.segments();
    let started = Instant::now();
    let outcome = backend.verify(proof.suite(), &segments, &opts)?;
    let used = backend.name();
    let out = VerifyOutput {
        valid: outcome.is_valid(),
        first_bad_segment: match outcome {
            VerifyOutcome::Valid => None,
            VerifyOutcome::Invalid { first_bad_segment } => Some(first_bad_segment),
        },
        hash: proof.suite(),
        iterations: proof.iterations(),
        checkpoints: proof.checkpoints().len(),
        backend: used,
        seconds: started.elapsed().as_secs_f64(),
    };
    print_json(&out);
    match out.first_bad_segment {
        None => Ok(()),
        Some(i) => Err(CliError::check_failed(format!(
            "proof is invalid: segment {i} does not verify"
        ))),
    }
}

fn read_input(file: Option<&PathBuf>) -> Result<String, CliError> {
    let mut text = String::new();
    match file {
        Some(p) if p.as_os_str() != "-" => {
            text = std::fs::read_to_string(p)
                .map_err(|e| CliError::bad_input(format!("cannot read {}: {e}", p.display())))?;
        }
        _ => {
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| CliError::bad_input(format!("cannot read standard input: {e}")))?;
        }
    }
    Ok(text)
}

#[derive(Serialize)]
struct TimechainOutput {
    hash: HashSuite,
    d: u64,
    windows: u64,
    t0: Hash32,
    t: Hash32,
    backend: &'static str,
    seconds: f64,
}

fn timechain(a: TimechainArgs) -> Result<(), CliError> {
    // Same bounds as one window's chain.
    ChainParams::new(a.d, 1)?;
    let backend = registry_with(Some(&a.backend), PinScope::Exactly)?
        .resolve(a.suite, Operation::Eval, &host_ranking())?
        .backend;
    let chain = TimeChain::new(a.suite, a.d);
    let total = a.d.saturating_mul(a.windows);
    let meter = progress::Meter::steps("vdf timechain", total);
    let started = Instant::now();
    let mut t = chain.t0();
    for w in 0..a.windows {
        let report = |done: u64| meter.set_position(w * a.d + done);
        let ctl = EvalControl {
            cancel: None,
            progress: Some(&report),
        };
        t = chain.next(&backend, &t, &ctl)?;
    }
    meter.finish();
    let out = TimechainOutput {
        hash: a.suite,
        d: a.d,
        windows: a.windows,
        t0: chain.t0(),
        t,
        backend: backend.name(),
        seconds: started.elapsed().as_secs_f64(),
    };
    if a.json {
        print_json(&out);
    } else {
        print!("{}", timechain_text(&out));
    }
    Ok(())
}

/// The text form of `vdf timechain`: labels padded to one column.
fn timechain_text(out: &TimechainOutput) -> String {
    let t_label = format!("T({})", out.windows);
    let rows = [
        ("hash", out.hash.to_string()),
        ("d", group(out.d)),
        ("windows", group(out.windows)),
        ("t0", out.t0.to_string()),
        (t_label.as_str(), out.t.to_string()),
        ("backend", format!("{} ({:.3} s)", out.backend, out.seconds)),
    ];
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(l, v)| format!("{l:<width$}  {v}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timechain_text_is_aligned() {
        let out = TimechainOutput {
            hash: HashSuite::Sha256,
            d: 1_000_000,
            windows: 12_345,
            t0: Hash32([1; 32]),
            t: Hash32([2; 32]),
            backend: "scalar",
            seconds: 0.5,
        };
        let text = timechain_text(&out);
        let columns: Vec<usize> = text
            .lines()
            .map(|l| {
                let label_end = l.find(' ').unwrap();
                label_end + l[label_end..].find(|c: char| c != ' ').unwrap()
            })
            .collect();
        assert_eq!(columns.len(), 6, "{text}");
        assert!(columns.iter().all(|c| *c == columns[0]), "{text}");
        assert!(text.contains("T(12345)"), "{text}");
        assert!(text.contains("1,000,000"), "{text}");
    }
}
