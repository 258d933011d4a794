//! `montana selftest`: is every backend on this machine right?
//!
//! Random proofs made by the scalar oracle are checked through each available
//! backend (or the one named): evaluations must match checkpoint for
//! checkpoint, valid batches must verify, and a corrupted checkpoint must be
//! reported at its index. First, once per backend, segment lengths around
//! every boundary it has (each power of two up to `2^--max-exp` steps, a
//! GPU's dispatch splits) in one mixed batch. This is how a new machine, or
//! a GPU server, is checked with the binary alone.

use std::time::{Duration, Instant};

use clap::Args as ClapArgs;
use montana_backends::conformance::{self, Report, Shape};
use montana_vdf::{Backend, VerifyOptions};
use rand::SeedableRng;

use super::{registry, CliError};

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Check only this backend.
    #[arg(long)]
    pub backend: Option<String>,
    /// Time budget in seconds, shared by the backends checked (each gets at least one round).
    #[arg(long, default_value_t = 5.0, value_parser = super::number::parse_f64)]
    pub seconds: f64,
    /// Seed for the random cases (printed, so a failure can be replayed).
    #[arg(long, value_parser = super::number::parse_u64)]
    pub seed: Option<u64>,
    /// Check segment lengths around every power of two up to 2^EXP steps
    /// (and each backend's dispatch splits) once per backend; 0 skips.
    #[arg(long, value_name = "EXP", default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=30))]
    pub max_exp: u32,
}

pub fn run(args: Args) -> Result<(), CliError> {
    if !(args.seconds.is_finite() && args.seconds >= 0.0) {
        return Err(CliError::bad_input(
            "--seconds must be a non-negative number",
        ));
    }
    let reg = registry()?;
    let backends: Vec<std::sync::Arc<dyn Backend>> = match &args.backend {
        Some(name) if name != "auto" => {
            let b = reg
                .all()
                .iter()
                .find(|b| b.name() == name)
                .cloned()
                .ok_or_else(|| {
                    CliError::bad_input(format!(
                        "unknown backend '{name}' (known: {})",
                        reg.names().join(", ")
                    ))
                })?;
            // Named: the gpu backend may open a software adapter.
            montana_backends::registry::mark_named(name);
            if let Some(reason) = reg.availability(b.as_ref()).reason() {
                return Err(CliError::bad_input(format!(
                    "backend '{name}' is not available on this host: {reason}"
                )));
            }
            vec![b]
        }
        _ => reg
            .all()
            .iter()
            .filter(|b| reg.availability(b.as_ref()).is_available())
            .cloned()
            .collect(),
    };
    let seed = args.seed.unwrap_or_else(rand::random);
    println!("selftest seed {seed}");
    let budget = Duration::from_secs_f64(args.seconds / backends.len().max(1) as f64);
    let threads = VerifyOptions::default().threads;
    for backend in &backends {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let started = Instant::now();
        let mut total = Report::default();
        if args.max_exp > 0 {
            let splits = conformance::splits(backend.as_ref());
            let report = conformance::check_boundaries(
                backend.as_ref(),
                args.max_exp,
                &splits,
                &VerifyOptions::threads(threads),
                &mut rng,
            )
            .map_err(|d| CliError::check_failed(format!("selftest failed: {d}")))?;
            total.add(report);
        }
        let mut rounds = 0u64;
        loop {
            // Alternate single-threaded and all-core verification, and every
            // few rounds use long segments and large batches.
            let opts = VerifyOptions::threads(if rounds.is_multiple_of(2) { 1 } else { threads });
            let shape = if rounds % 4 == 3 {
                Shape {
                    max_checkpoints: 256,
                    max_segment_len: 3_000,
                    max_proofs: 4,
                }
            } else {
                Shape::default()
            };
            let report = conformance::random_round(backend.as_ref(), &mut rng, shape, &opts)
                .map_err(|d| CliError::check_failed(format!("selftest failed: {d}")))?;
            total.add(report);
            rounds += 1;
            if started.elapsed() >= budget {
                break;
            }
        }
        println!(
            "{:<8} ok: {rounds} rounds, {} evaluations, {} verify batches, {} segments ({:.1} s)",
            backend.name(),
            total.evaluations,
            total.batches,
            total.segments,
            started.elapsed().as_secs_f64()
        );
    }
    println!(
        "selftest passed: {} backends agree with the scalar oracle",
        backends.len()
    );
    Ok(())
}
