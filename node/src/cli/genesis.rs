//! `montana genesis new`: a genesis manifest from a peers file.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use montana_node::genesis::{Genesis, DEFAULT_CHECKPOINTS, DEFAULT_D, DEFAULT_WINDOW_SECS};
use montana_vdf::HashSuite;

use super::{print_json, CliError};

#[derive(Subcommand, Debug)]
pub enum GenesisCommand {
    /// Write a genesis manifest (JSON) and print its network id.
    New(NewArgs),
}

#[derive(Args, Debug)]
pub struct NewArgs {
    /// JSON list of peers: label, address, noise_public_key, signing_public_key, bootstrap.
    #[arg(long)]
    pub peers: PathBuf,
    /// Where to write the manifest (refuses to overwrite).
    #[arg(long)]
    pub out: PathBuf,
    /// Hash suite: sha256 or blake3.
    #[arg(long, default_value = "sha256")]
    pub hash: HashSuite,
    /// Steps per window (a multiple of --checkpoints).
    #[arg(long, default_value_t = DEFAULT_D, value_parser = super::number::parse_positive_u64)]
    pub d: u64,
    /// Checkpoints per proposal (at most 32,000).
    #[arg(long, default_value_t = DEFAULT_CHECKPOINTS, value_parser = super::number::parse_positive_u64)]
    pub checkpoints: u64,
    /// Target seconds per window.
    #[arg(long, default_value_t = DEFAULT_WINDOW_SECS, value_parser = super::number::parse_positive_f64)]
    pub window_secs: f64,
}

pub fn run(cmd: GenesisCommand) -> Result<(), CliError> {
    match cmd {
        GenesisCommand::New(a) => {
            let peers = Genesis::load_peers(&a.peers).map_err(CliError::bad_input)?;
            let g = Genesis::new(peers, a.hash, a.d, a.checkpoints, a.window_secs)
                .map_err(CliError::bad_input)?;
            if a.out.exists() {
                return Err(CliError::bad_input(format!(
                    "{} already exists (refusing to overwrite a genesis)",
                    a.out.display()
                )));
            }
            std::fs::write(&a.out, g.to_json()).map_err(|e| {
                CliError::bad_input(format!("cannot write {}: {e}", a.out.display()))
            })?;
            print_json(&serde_json::json!({
                "network_id": hex::encode(g.network_id()),
                "out": a.out.display().to_string(),
                "peers": g.peers.len(),
            }));
            Ok(())
        }
    }
}
