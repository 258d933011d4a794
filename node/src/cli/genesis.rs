//! `montana genesis new`: a genesis manifest (version 2) from a peers file
//! and the consensus rules given as flags.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use montana_node::consensus::active::Quorum;
use montana_node::consensus::state::Emission;
use montana_node::genesis::{
    ConsensusParams, Genesis, Synthetic, DEFAULT_CHECKPOINTS, DEFAULT_D,
    DEFAULT_EMISSION_PER_WINDOW, DEFAULT_PROPOSER_BPS, DEFAULT_WINDOW_SECS, MAX_ACCOUNTS,
};
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
    /// A window is cemented by more than this fraction of the active
    /// weight: NUM/DEN, at least 1/2 and below 1.
    #[arg(long, default_value = "2/3", value_parser = parse_quorum)]
    pub quorum: Quorum,
    /// Seconds without a proposal or beacon before the next round
    /// (default: 3 x --window-secs).
    #[arg(long, value_parser = super::number::parse_positive_f64)]
    pub proposer_timeout_secs: Option<f64>,
    /// Units minted per cemented window.
    #[arg(long, default_value_t = DEFAULT_EMISSION_PER_WINDOW, value_parser = super::number::parse_u64)]
    pub emission_per_window: u64,
    /// The proposer's share of each window's emission, in basis points
    /// (0 to 10,000); the rest goes to the window's precommitters.
    #[arg(long, default_value_t = DEFAULT_PROPOSER_BPS, value_parser = parse_bps)]
    pub proposer_bps: u16,
    /// N synthetic initial accounts (scale tests), kept in the manifest as
    /// their count and seed: ids SHA-256("montana/synthetic-account" ||
    /// seed u64 LE || i u64 LE), balances 1 to 1,000,000 from the id.
    #[arg(long, default_value_t = 0, value_parser = super::number::parse_u64)]
    pub accounts: u64,
    /// The seed of the synthetic accounts (needs --accounts).
    #[arg(long, default_value_t = 0, value_parser = super::number::parse_u64)]
    pub accounts_seed: u64,
}

/// `NUM/DEN`, checked like the genesis checks it.
pub fn parse_quorum(s: &str) -> Result<Quorum, String> {
    let (n, d) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not NUM/DEN (e.g. 2/3)"))?;
    let part = |t: &str| {
        t.trim()
            .parse::<u16>()
            .map_err(|_| format!("{s:?} is not NUM/DEN with integers 0 to 65,535"))
    };
    Quorum::new(part(n)?, part(d)?)
}

/// Basis points, 0 to 10,000.
fn parse_bps(s: &str) -> Result<u16, String> {
    let v = super::number::parse_u64(s)?;
    if v > 10_000 {
        return Err(format!("{v} is over 10,000 basis points"));
    }
    Ok(v as u16)
}

/// The consensus rules the flags ask for.
fn consensus(a: &NewArgs) -> Result<ConsensusParams, CliError> {
    if a.accounts > MAX_ACCOUNTS as u64 {
        return Err(CliError::bad_input(format!(
            "--accounts {} is over the cap of {MAX_ACCOUNTS}",
            a.accounts
        )));
    }
    let mut c = ConsensusParams::defaults(a.window_secs);
    c.quorum = a.quorum;
    if let Some(t) = a.proposer_timeout_secs {
        c.proposer_timeout_secs = t;
    }
    c.emission =
        Emission::new(a.emission_per_window, a.proposer_bps).map_err(CliError::bad_input)?;
    if a.accounts == 0 && a.accounts_seed != 0 {
        return Err(CliError::bad_input(
            "--accounts-seed needs --accounts N with N >= 1",
        ));
    }
    c.synthetic = Synthetic {
        count: a.accounts,
        seed: a.accounts_seed,
    };
    Ok(c)
}

pub fn run(cmd: GenesisCommand) -> Result<(), CliError> {
    match cmd {
        GenesisCommand::New(a) => {
            let peers = Genesis::load_peers(&a.peers).map_err(CliError::bad_input)?;
            let c = consensus(&a)?;
            let g = Genesis::new_with(peers, a.hash, a.d, a.checkpoints, a.window_secs, c)
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
                "accounts": g.accounts.len(),
            }));
            Ok(())
        }
    }
}
