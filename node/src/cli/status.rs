//! `montana status --addr HOST:PORT | --data-dir DIR [--json]`: a running
//! node's `/status`, as a table or (with `--json`) one line of JSON.
//!
//! `--data-dir` reads the address the node wrote to `DIR/status.addr`
//! (written while the node runs, removed when it stops).
//!
//! One rule for the exit code, whichever way the node is named: 2 when the
//! arguments are wrong (an address that does not parse, a data dir that does
//! not exist); 1 when the node is not running or does not answer (no
//! `status.addr` in an existing data dir, nothing listening on the address,
//! a bad answer). A stopped node is exit 1 via `--data-dir` and via `--addr`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args as ClapArgs;
use montana_node::status::{self, StatusSnapshot, STATUS_ADDR_FILE};

use super::{print_json, CliError};

const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(ClapArgs, Debug)]
#[group(required = true, multiple = false, id = "target")]
pub struct Target {
    /// The node's status address (HOST:PORT).
    #[arg(long)]
    pub addr: Option<String>,
    /// The node's data directory (reads DIR/status.addr).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(ClapArgs, Debug)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// Print the status as one line of JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<(), CliError> {
    let addr = resolve(&args.target)?;
    let snapshot = status::fetch(addr, TIMEOUT).map_err(CliError::check_failed)?;
    if args.json {
        print_json(&snapshot);
    } else {
        print!("{}", table(&snapshot));
    }
    Ok(())
}

fn resolve(t: &Target) -> Result<SocketAddr, CliError> {
    let text = match (&t.addr, &t.data_dir) {
        (Some(a), _) => a.clone(),
        (None, Some(dir)) => {
            if !dir.is_dir() {
                return Err(CliError::bad_input(format!(
                    "data dir {} does not exist (give the node's --data-dir)",
                    dir.display()
                )));
            }
            let path = dir.join(STATUS_ADDR_FILE);
            match std::fs::read_to_string(&path) {
                Ok(text) => text.trim().to_string(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(CliError::check_failed(format!(
                        "no node is running on {} ({} is absent: a running node writes it)",
                        dir.display(),
                        path.display()
                    )))
                }
                Err(e) => {
                    return Err(CliError::bad_input(format!(
                        "cannot read {}: {e}",
                        path.display()
                    )))
                }
            }
        }
        (None, None) => return Err(CliError::bad_input("give --addr or --data-dir")),
    };
    text.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| CliError::bad_input(format!("invalid status address {text:?}")))
}

fn table(s: &StatusSnapshot) -> String {
    let mut out = format!(
        "label      {}\nphase      {}\nwindow     {} (lag {})\nchain      {}, d = {}\n\
         backends   eval {}, verify {}\nrates      eval {:.3} MH/s, verify {:.3} MH/s\n",
        s.label,
        s.phase_shown(),
        s.window,
        s.lag,
        s.hash,
        s.d,
        s.eval_backend,
        s.verify_backend,
        s.eval_rate / 1e6,
        s.verify_rate / 1e6
    );
    out += &format!(
        "{:<6} {:<12} {:<9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
        "peer", "label", "state", "ok/5m", "err/5m", "close/5m", "ok/1h", "err/1h", "close/1h"
    );
    for p in &s.peers {
        out += &format!(
            "{:<6} {:<12} {:<9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
            p.peer.0,
            p.label,
            if p.connected { "up" } else { "down" },
            p.heartbeats_ok_5m,
            p.heartbeat_errors_5m,
            p.closed_5m,
            p.heartbeats_ok_1h,
            p.heartbeat_errors_1h,
            p.closed_1h
        );
    }
    out
}
