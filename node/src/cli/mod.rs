//! Argument parsing and dispatch for the `montana` binary.
//!
//! One file per subcommand; each exposes an `Args` struct (clap derive) and a
//! `run(args) -> Result<(), CliError>`. Parse errors are reduced to their
//! first line so bad input always prints exactly one line and exits 2.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod backends;
mod bench;
mod calibrate;
mod devnet;
mod error;
mod genesis;
mod keys;
mod logging;
mod progress;
mod report;
mod selftest;
mod soak;
mod start;
mod status;
mod vdf;

pub use error::CliError;

/// montana: a hardware-accelerated TimeChain VDF node.
#[derive(Parser, Debug)]
#[command(name = "montana", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Evaluate, verify and inspect TimeChain proofs.
    #[command(subcommand)]
    Vdf(vdf::VdfCommand),
    /// List the compute backends of this build and what this host can run.
    Backends(backends::Args),
    /// Check every available backend (or one) against the scalar oracle.
    Selftest(selftest::Args),
    /// Measure every available backend against the plain crate loops.
    Bench(bench::Args),
    /// Manage the node's identity keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Create a network's genesis manifest.
    #[command(subcommand)]
    Genesis(genesis::GenesisCommand),
    /// Run a node until SIGINT or SIGTERM.
    Start(start::Args),
    /// Run a local devnet of node processes on loopback to convergence.
    Devnet(devnet::Args),
    /// Show a running node's status (window, lag, peers, heartbeats).
    Status(status::Args),
    /// Measure this host's backends for a network: can it propose, can it follow?
    Calibrate(calibrate::Args),
    /// Poll nodes' /status and append one JSON line per poll to a file.
    Soak(soak::Args),
    /// Turn a soak file into report.md with SVG plots and a verdict per component.
    Report(report::Args),
}

/// Parses the command line, runs the command, and maps errors to exit codes.
pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's first paragraph names the problem (and, for missing
            // arguments, lists them on the following lines): one line of it.
            let text = e.render().to_string();
            let first: Vec<&str> = text
                .lines()
                .skip_while(|l| l.trim().is_empty())
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            eprintln!("{}", first.join(" "));
            return ExitCode::from(error::BAD_INPUT);
        }
    };
    let result = match cli.command {
        Command::Vdf(cmd) => vdf::run(cmd),
        Command::Backends(args) => backends::run(args),
        Command::Selftest(args) => selftest::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Keys(cmd) => keys::run(cmd),
        Command::Genesis(cmd) => genesis::run(cmd),
        Command::Start(args) => start::run(args),
        Command::Devnet(args) => devnet::run(args),
        Command::Status(args) => status::run(args),
        Command::Calibrate(args) => calibrate::run(args),
        Command::Soak(args) => soak::run(args),
        Command::Report(args) => report::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.code)
        }
    }
}

/// The registry with this process's environment overrides applied.
pub fn registry() -> Result<montana_backends::Registry, CliError> {
    Ok(montana_backends::Registry::from_env()?)
}

/// Prints a value as one line of JSON on standard output.
pub fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string(value).expect("serialising plain data cannot fail")
    );
}
