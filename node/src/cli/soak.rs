//! `montana soak --status ADDR... [--interval S] [--out FILE] [--duration S]`:
//! the soak watchdog (logic in `montana_node::ops::soak`). Stops at the end
//! of `--duration` or on SIGINT/SIGTERM (exit 0 either way, the file
//! complete up to the last poll).

use std::io::IsTerminal;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args as ClapArgs;
use indicatif::{ProgressBar, ProgressStyle};
use montana_node::ops::soak::{self, SoakConfig};

use super::CliError;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Status addresses (HOST:PORT) of the nodes to watch.
    #[arg(long = "status", value_name = "ADDR", num_args = 1.., required = true)]
    pub status: Vec<String>,
    /// Seconds between polls.
    #[arg(long, value_name = "S", default_value_t = 60.0)]
    pub interval: f64,
    /// The JSON-lines file to append to.
    #[arg(long, value_name = "FILE", default_value = "soak.jsonl")]
    pub out: PathBuf,
    /// Stop after this many seconds (default: until SIGINT or SIGTERM).
    #[arg(long, value_name = "S")]
    pub duration: Option<f64>,
    /// Rotate the file to FILE.1 when it would grow past this many bytes.
    #[arg(long, value_name = "N", default_value_t = soak::DEFAULT_MAX_BYTES)]
    pub max_bytes: u64,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn seconds(flag: &str, v: f64) -> Result<Duration, CliError> {
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| CliError::bad_input(format!("{flag} must be a positive number of seconds")))
}

fn resolve(text: &str) -> Result<SocketAddr, CliError> {
    text.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| CliError::bad_input(format!("invalid status address {text:?}")))
}

pub fn run(a: Args) -> Result<(), CliError> {
    let cfg = SoakConfig {
        targets: a
            .status
            .iter()
            .map(|s| resolve(s))
            .collect::<Result<_, _>>()?,
        interval: seconds("--interval", a.interval)?,
        out: a.out.clone(),
        duration: a.duration.map(|d| seconds("--duration", d)).transpose()?,
        max_bytes: a.max_bytes,
    };
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    let handler: extern "C" fn(libc::c_int) = on_signal;
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = ProgressBar::new_spinner();
        b.set_style(ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("static"));
        b.enable_steady_tick(Duration::from_millis(200));
        b.set_message(format!("first poll of {} node(s)", cfg.targets.len()));
        b
    });
    let polls = soak::run(&cfg, &STOP, |r| {
        let line = soak::progress_line(r);
        match &bar {
            Some(b) => b.set_message(line),
            None => eprintln!("{line}"),
        }
    })
    .map_err(|e| match e {
        soak::SoakError::Config(_) => CliError::bad_input(e),
        soak::SoakError::Write { .. } => CliError::bad_input(e),
        _ => CliError::check_failed(e),
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let why = if STOP.load(Ordering::SeqCst) {
        "stopped by signal"
    } else {
        "duration reached"
    };
    eprintln!(
        "soak: {polls} polls appended to {} ({why})",
        a.out.display()
    );
    Ok(())
}
