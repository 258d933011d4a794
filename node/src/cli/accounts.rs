//! `montana accounts --data-dir DIR [--limit N] [--json]`: the balances of
//! a node's last cemented window, with that window and its state root.
//! Opens the database read-only, so it works while the node runs.
//!
//! Exit codes: 0 printed; 2 the data dir or its database cannot be read
//! (absent, not a montana database, another schema version, corrupt), one
//! line on stderr.

use std::path::PathBuf;

use clap::Args as ClapArgs;
use montana_node::ops::accounts::{AccountsReport, DEFAULT_LIMIT};

use super::{print_json, CliError};

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// The node's data directory (its database is DIR/db).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Show the N highest balances (0: all).
    #[arg(long, default_value_t = DEFAULT_LIMIT)]
    pub limit: usize,
    /// Print one line of JSON (docs/SPEC.md 11.6).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<(), CliError> {
    let report = AccountsReport::read(&args.data_dir, args.limit).map_err(CliError::bad_input)?;
    if args.json {
        print_json(&report);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
