//! Argument parsing and dispatch for the `montana` binary.
//!
//! One file per subcommand; each exposes an `Args` struct (clap derive) and a
//! `run(args) -> Result<(), CliError>`. Parse errors are reduced to their
//! first line so bad input always prints exactly one line and exits 2.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use montana_backends::choice::ChoiceInputs;
use montana_backends::{BackendChoice, GpuPolicy, PinScope, Ranking, Registry};

mod accounts;
mod backends;
mod bench;
mod calibrate;
mod devnet;
mod error;
mod genesis;
mod interrupt;
mod keys;
mod logging;
mod number;
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
#[command(
    name = "montana",
    version,
    about,
    propagate_version = true,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Evaluate, verify and inspect TimeChain proofs.
    #[command(subcommand, arg_required_else_help = true)]
    Vdf(vdf::VdfCommand),
    /// List the compute backends of this build and what this host can run.
    Backends(backends::Args),
    /// Check every available backend (or one) against the scalar oracle.
    Selftest(selftest::Args),
    /// Measure every available backend against the plain crate loops.
    Bench(bench::Args),
    /// Manage the node's identity keys.
    #[command(subcommand, arg_required_else_help = true)]
    Keys(keys::KeysCommand),
    /// Create a network's genesis manifest.
    #[command(subcommand, arg_required_else_help = true)]
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
    /// Show a node's balances at its last cemented window (works while it runs).
    Accounts(accounts::Args),
}

/// Parses the command line, runs the command, and maps errors to exit codes.
pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // `montana`, `montana vdf`: the full help, as --help prints it.
            print!("{}", e.render());
            return ExitCode::SUCCESS;
        }
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{}", parse_error_line(&e.render().to_string()));
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
        Command::Accounts(args) => accounts::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.code)
        }
    }
}

/// Clap's error as one line: its first paragraph names the problem (and,
/// for missing arguments, lists them on the following lines), and a `tip:`
/// (a similar subcommand or flag exists) follows in parentheses.
fn parse_error_line(text: &str) -> String {
    let mut paragraphs = text
        .split("\n\n")
        .map(|p| {
            p.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
        })
        .filter(|p| !p.is_empty());
    let mut line = paragraphs.next().unwrap_or_default().join(" ");
    let tips: Vec<String> = paragraphs
        .flatten()
        .filter(|l| l.starts_with("tip:"))
        .map(str::to_string)
        .collect();
    if !tips.is_empty() {
        line = format!("{line} ({})", tips.join("; "));
    }
    line
}

/// The user's backend choice: `flag` (a verb's `--backend`, meaning
/// `scope`) over `MONTANA_BACKEND`, with `MONTANA_DISABLE_BACKENDS` and the
/// GPU probe variables. The only place the program reads these variables;
/// everything below gets the typed value, so they mean the same for every
/// verb (the devnet's nodes inherit them).
pub fn backend_choice(flag: Option<&str>, scope: PinScope) -> BackendChoice {
    use montana_backends::choice::{ENV_BACKEND, ENV_DISABLE, ENV_GPU_ALLOW_CPU, ENV_VK_DRIVERS};
    let var = |name: &str| std::env::var(name).ok();
    let vk: Vec<Option<String>> = ENV_VK_DRIVERS.iter().map(|v| var(v)).collect();
    let vk: Vec<Option<&str>> = vk.iter().map(Option::as_deref).collect();
    let (backend, disable) = (var(ENV_BACKEND), var(ENV_DISABLE));
    BackendChoice::parse(ChoiceInputs {
        flag,
        flag_scope: Some(scope),
        env_backend: backend.as_deref(),
        env_disable: disable.as_deref(),
        gpu: GpuPolicy::parse(var(ENV_GPU_ALLOW_CPU).as_deref(), &vk),
    })
}

/// Every compiled backend with the user's choice applied (`flag`: the
/// verb's `--backend`); an unknown name fails naming where it came from.
pub fn registry_with(flag: Option<&str>, scope: PinScope) -> Result<Registry, CliError> {
    Registry::new(montana_backends::registry::compiled())
        .with_choice(backend_choice(flag, scope))
        .map_err(CliError::bad_input)
}

/// [`registry_with`] for verbs without `--backend`.
pub fn registry() -> Result<Registry, CliError> {
    registry_with(None, PinScope::Exactly)
}

/// This host's rate cache: `$XDG_CACHE_HOME/montana/rates-KEY.toml`, else
/// `$HOME/.cache/montana/...`; `None` when neither is set.
pub fn host_rates_path() -> Option<std::path::PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|d| !d.is_empty())
                .map(|h| std::path::PathBuf::from(h).join(".cache"))
        })?;
    let key = montana_calibration::rates::host_key(montana_calibration::PROGRAM_VERSION);
    Some(
        base.join("montana")
            .join(montana_calibration::rates::file_name(&key)),
    )
}

/// `auto`'s ranking for this host: the rate cache when there is one (a
/// corrupt one is ignored with one warning line), else the static ranks.
pub fn host_ranking() -> Ranking {
    let (ranking, warning) = montana_calibration::rates::ranking_at(host_rates_path().as_deref());
    if let Some(w) = warning {
        eprintln!("warning: {w}");
    }
    ranking
}

/// Merges measured rates into this host's rate cache; a cache that cannot
/// be written is a warning, not a failure (the measurement stands).
pub fn save_host_rates(rates: &[montana_backends::Rate]) {
    let Some(path) = host_rates_path() else {
        return;
    };
    let key = montana_calibration::rates::host_key(montana_calibration::PROGRAM_VERSION);
    if let Err(e) = montana_calibration::rates::save(&path, &key, rates) {
        eprintln!(
            "warning: cannot write the rate cache {}: {e}",
            path.display()
        );
    }
}

/// Prints a value as one line of JSON on standard output.
pub fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string(value).expect("serialising plain data cannot fail")
    );
}

/// Checks, before any long measurement, that `path` can be written as a
/// file: not a directory, its parent creatable, a file creatable there.
/// `flag` names the option in the error line.
pub fn check_writable_file(path: &std::path::Path, flag: &str) -> Result<(), CliError> {
    let fail = |why: String| CliError::bad_input(format!("{flag} {}: {why}", path.display()));
    if path.is_dir() {
        return Err(fail("is a directory (give a file name)".into()));
    }
    let parent = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => std::path::PathBuf::from("."),
    };
    check_writable_dir(&parent).map_err(fail)
}

/// Creates `dir` if needed and checks that a file can be written in it.
pub fn check_writable_dir(dir: &std::path::Path) -> Result<(), String> {
    if dir.exists() && !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let probe = dir.join(format!(".montana-write-probe-{}", std::process::id()));
    std::fs::write(&probe, b"probe")
        .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}
