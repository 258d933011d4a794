//! `montana keys new --dir DIR`: a node identity, secrets written mode 0600.
//! The public keys go to stdout as JSON; stderr names the files written.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use montana_node::keys::{NodeKeys, NOISE_SECRET_FILE, PUBLIC_FILE, SIGNING_SECRET_FILE};

use super::{print_json, CliError};

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Generate a Noise static key (X25519) and a signing key (ML-DSA-65).
    New(NewArgs),
}

#[derive(Args, Debug)]
pub struct NewArgs {
    /// Directory for the key files (created if absent; existing keys are kept).
    #[arg(long)]
    pub dir: PathBuf,
}

pub fn run(cmd: KeysCommand) -> Result<(), CliError> {
    match cmd {
        KeysCommand::New(a) => {
            let keys = NodeKeys::generate().map_err(CliError::check_failed)?;
            keys.save(&a.dir).map_err(CliError::bad_input)?;
            print_json(&keys.public_keys());
            let f = |name: &str| a.dir.join(name).display().to_string();
            eprintln!(
                "keys: wrote {} and {} (secret, mode 0600) and {} (public)",
                f(NOISE_SECRET_FILE),
                f(SIGNING_SECRET_FILE),
                f(PUBLIC_FILE)
            );
            Ok(())
        }
    }
}
